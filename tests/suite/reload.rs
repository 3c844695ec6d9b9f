//! SIGHUP reloads what it says it reloads (issue 18 item 1): a changed `[delivery]`
//! route is used by the next message, changed `[smtp]` inbound checks apply to the next
//! message, and a section that needs a restart is named in the warning.

use std::time::Duration;

use crate::harness::*;
use crate::sink::DumpSink;

const SUBMIT: &str = r#"
import smtplib, ssl, sys
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
s.login("anna@example.com", "Correct1horse")
s.sendmail("anna@example.com", ["bob@remote.test"], ("From: anna@example.com\r\nTo: bob@remote.test\r\nSubject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\nhello\r\n" % (sys.argv[3], sys.argv[3])).encode())
s.quit()
"#;

const MX: &str = r#"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.sendmail("news@sender.test", ["anna@example.com"], ("From: news@sender.test\r\nSubject: %s\r\n\r\nbody\r\n" % sys.argv[2]).encode())
"#;

fn headers_of(server: &TestServer, subject: &str) -> String {
    let script = r#"
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
m.login("anna@example.com", "Correct1horse"); m.select("INBOX")
n = m.search(None, "SUBJECT", sys.argv[3])[1][0].split()[0]
print(m.fetch(n, "(BODY.PEEK[HEADER])")[1][0][1].decode())
m.logout()
"#;
    python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            subject.into(),
        ],
    )
}

fn hup(server: &TestServer) {
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
}

#[test]
fn sighup_applies_routes_and_inbound_checks_and_names_what_needs_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DumpSink::start(&tmp.path().join("first"));
    let second = DumpSink::start(&tmp.path().join("second"));
    let records = tmp.path().join("dns.toml");
    std::fs::write(&records, "[txt]\n\"sender.test\" = \"v=spf1 -all\"\n").unwrap();
    let section = |route: &str, verify: &str| {
        format!(
            "\n[delivery]\npoll_interval_secs = 1\noutbound_tls = \"disabled\"\nroutes = {{ \"remote.test\" = \"{route}\" }}\n\
             [smtp]\nverify_inbound = \"{verify}\"\ntrusted_relays = []\ntest_dns_records = \"{}\"\n",
            records.display()
        )
    };
    let mut server = TestServer::setup(&section(&first.addr(), "off"), |s| {
        s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let submissions = server.addr("submissions").port().to_string();
    let submit = |subject: &str| {
        python_ok(
            SUBMIT,
            &[
                ca_cert().display().to_string(),
                submissions.clone(),
                subject.into(),
            ],
        );
    };
    submit("before");
    wait_until(Duration::from_secs(30), "the first route", || {
        first
            .messages()
            .iter()
            .any(|(_, m)| m.contains("Subject: before"))
    });
    python_ok(MX, &[server.addr("smtp").port().to_string(), "plain".into()]);
    assert!(!headers_of(&server, "plain").contains("Authentication-Results"));

    // New route, inbound checks on, and a limit that needs a restart.
    let config = std::fs::read_to_string(&server.config).unwrap();
    let config = config.replace(
        &section(&first.addr(), "off"),
        &section(&second.addr(), "headers"),
    ) + "\n[limits]\nmax_recipients = 7\n";
    std::fs::write(&server.config, config).unwrap();
    hup(&server);
    wait_log(&mut server, "configuration reloaded");
    let log = plain_log(&mut server);
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap()
        .to_string();
    assert!(line.contains("restart_needed=limits"), "{line}");
    assert!(line.contains("smtp") && line.contains("delivery"), "{line}");

    submit("after");
    wait_until(Duration::from_secs(30), "the reloaded route", || {
        second
            .messages()
            .iter()
            .any(|(_, m)| m.contains("Subject: after"))
    });
    assert!(
        !first.messages().iter().any(|(_, m)| m.contains("Subject: after")),
        "the old route was used after the reload"
    );
    python_ok(MX, &[server.addr("smtp").port().to_string(), "verified".into()]);
    let headers = headers_of(&server, "verified");
    assert!(
        headers.contains("Authentication-Results: localhost;") && headers.contains("spf=fail"),
        "{headers}"
    );
}
