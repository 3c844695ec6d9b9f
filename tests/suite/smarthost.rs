//! A smarthost that wants a login (issue 18 item 10): outbound mail goes to it with
//! AUTH over STARTTLS (a second Understudy's submission port plays the ISP's relay: it
//! requires TLS and a login before it takes mail), and the password is never sent over
//! a connection without TLS. A reload that points the smarthost elsewhere takes effect
//! for the mail already waiting.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::*;
use crate::sink::DumpSink;

const SUBMIT: &str = r#"
import smtplib, ssl, sys
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
s.login("anna@example.com", "Correct1horse")
s.sendmail("anna@example.com", ["friend@remote.test"], ("From: anna@example.com\r\nTo: friend@remote.test\r\nSubject: via the smarthost\r\nMessage-ID: <%s>\r\n\r\nhello\r\n" % sys.argv[3]).encode())
s.quit()
"#;

fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("smarthost-password");
    std::fs::write(&file, "Relay2secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

#[test]
fn outbound_mail_logs_in_to_the_smarthost_over_tls_only() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = DumpSink::start(&tmp.path().join("remote"));
    // The ISP's relay: submission with STARTTLS and AUTH, delivering on to `remote`.
    let relay = TestServer::setup(
        &format!(
            "\n[delivery]\npoll_interval_secs = 1\noutbound_tls = \"disabled\"\nroutes = {{ \"remote.test\" = \"{}\" }}\n",
            remote.addr()
        ),
        |s| {
            s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
            s.add_user("anna@example.com", "Relay2secret");
        },
    );
    let smarthost = format!("localhost:{}", relay.addr("submission").port());
    let file = password_file(tmp.path());
    let server = TestServer::setup(
        &format!(
            "\n[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n\
             smarthost = \"{smarthost}\"\nsmarthost_user = \"anna@example.com\"\nsmarthost_password_file = \"{}\"\n\
             outbound_tls = \"required\"\ntls_ca_file = \"{}\"\n",
            file.display(),
            ca_cert().display()
        ),
        |s| {
            s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
            s.add_user("anna@example.com", PASSWORD);
        },
    );
    python_ok(
        SUBMIT,
        &[
            ca_cert().display().to_string(),
            server.addr("submissions").port().to_string(),
            "smarthost-1@example.com".into(),
        ],
    );
    wait_until(
        Duration::from_secs(30),
        "the message beyond the smarthost",
        || {
            remote
                .message_id_counts(None)
                .contains_key("<smarthost-1@example.com>")
        },
    );

    // A smarthost without STARTTLS: the login is not attempted in clear; the message
    // waits, saying why.
    let plain = DumpSink::start(&tmp.path().join("plain"));
    let mut server = TestServer::setup(
        &format!(
            "\n[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n\
             smarthost = \"{}\"\nsmarthost_user = \"anna@example.com\"\nsmarthost_password_file = \"{}\"\n",
            plain.addr(),
            file.display()
        ),
        |s| {
            s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
            s.add_user("anna@example.com", PASSWORD);
        },
    );
    python_ok(
        SUBMIT,
        &[
            ca_cert().display().to_string(),
            server.addr("submissions").port().to_string(),
            "smarthost-2@example.com".into(),
        ],
    );
    wait_log(&mut server, "the smarthost password is sent only over TLS");
    assert!(
        plain.messages().is_empty(),
        "sent through a smarthost without a login"
    );
    // The log line comes before the attempt's outcome is recorded.
    wait_until(Duration::from_secs(30), "the reason in the queue", || {
        server.admin_ok(&["queue", "list"]).contains("sent only over TLS")
    });

    // And a configuration that would send it in clear is refused.
    let config = std::fs::read_to_string(&server.config)
        .unwrap()
        .replace("smarthost_user", "outbound_tls = \"disabled\"\nsmarthost_user");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("delivery.outbound_tls: must not be \"disabled\" with a smarthost login"),
        "{err}"
    );

    // SIGHUP to the relay that offers TLS (issue 18 item 1: the smarthost and its login
    // reload): the waiting message goes out through it, without a restart.
    let config = std::fs::read_to_string(&server.config)
        .unwrap()
        .replace(&plain.addr(), &smarthost);
    std::fs::write(&server.config, config).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_log(&mut server, "configuration reloaded");
    wait_until(
        Duration::from_secs(30),
        "the waiting message through the reloaded smarthost",
        || {
            remote
                .message_id_counts(None)
                .contains_key("<smarthost-2@example.com>")
        },
    );
    assert!(plain.messages().is_empty());
}
