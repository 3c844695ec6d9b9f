//! SMTP with `swaks`, a second real client beside Python's smtplib (tests/suite/smtp.rs):
//! the MX receiver (valid, unknown, inactive and foreign recipients, an oversize message,
//! PIPELINING, STARTTLS checked against the dev CA) and submission (no AUTH before TLS,
//! wrong password, forged envelope and header senders, an alias as sender, local
//! delivery into INBOX). Every reply code is asserted exactly.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Runs swaks against `port` with `args`; returns its transcript (stdout and stderr).
fn swaks(port: u16, args: &[&str]) -> String {
    let child = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swaks");
    let out = wait_output(child, Duration::from_secs(60));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn server(extra: &str) -> TestServer {
    TestServer::setup(extra, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("gone@example.com", PASSWORD);
        s.admin_ok(&["user", "deactivate", "gone@example.com"]);
        s.admin_ok(&["alias", "add", "sales@example.com", "anna@example.com"]);
    })
}

/// Anna's INBOX over IMAPS: the number of messages and the last one's header block.
fn inbox(server: &TestServer) -> (u32, String) {
    let script = r#"
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
m.login("anna@example.com", "Correct1horse")
typ, data = m.select("INBOX")
n = int(data[0])
print(n)
if n:
    typ, data = m.fetch(str(n), "(BODY.PEEK[HEADER])")
    print(data[0][1].decode())
m.logout()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    let (count, headers) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    (count.trim().parse().unwrap(), headers.to_string())
}

#[test]
fn mx_receiver_with_swaks() {
    let server = server("[limits]\nmax_message_size = 20000\n");
    let port = server.addr("smtp").port();
    let mx = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "--ehlo",
            "filter.example.net",
            "--from",
            "someone@example.net",
            "--to",
            to,
        ];
        args.extend_from_slice(extra);
        swaks(port, &args)
    };

    let valid = mx("anna@example.com", &[]);
    assert!(valid.contains("<-  250 2.1.5 Ok"), "{valid}");
    assert!(valid.contains("<-  250 2.0.0 Ok: queued as "), "{valid}");
    let unknown = mx("nobody@example.com", &[]);
    assert!(
        unknown.contains("<** 550 5.1.1 Recipient address rejected: user unknown"),
        "{unknown}"
    );
    let inactive = mx("gone@example.com", &[]);
    assert!(
        inactive.contains("<** 550 5.2.1 Recipient address rejected: mailbox disabled"),
        "{inactive}"
    );
    let foreign = mx("victim@elsewhere.org", &[]);
    assert!(foreign.contains("<** 550 5.7.1 Relaying denied"), "{foreign}");
    assert!(!foreign.contains("queued as"), "{foreign}");

    // 30,000 octets in 100-octet lines against a 20,000-octet limit, sent without SIZE=.
    let body = "x".repeat(98) + "\n";
    let body = body.repeat(300);
    let oversize = mx("anna@example.com", &["--body", &body]);
    assert!(
        oversize.contains("<** 552 5.3.4 Message size exceeds fixed maximum message size"),
        "{}",
        &oversize[..oversize.len().min(3000)]
    );

    // PIPELINING: MAIL, both RCPTs and DATA in one write; the unknown recipient is
    // refused, the message goes to the valid one.
    let pipelined = mx("anna@example.com,nobody@example.com", &["--pipeline"]);
    assert!(pipelined.contains("250-PIPELINING"), "{pipelined}");
    assert!(
        pipelined.contains("<** 550 5.1.1 Recipient address rejected: user unknown"),
        "{pipelined}"
    );
    assert!(
        pipelined.contains("<-  354 End data with <CR><LF>.<CR><LF>"),
        "{pipelined}"
    );
    assert!(pipelined.contains("<-  250 2.0.0 Ok: queued as "), "{pipelined}");

    // STARTTLS offered (not required), certificate verified against the dev CA.
    let ca = ca_cert().display().to_string();
    let tls = mx(
        "sales@example.com",
        &[
            "-tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca,
            "--tls-sni",
            "localhost",
        ],
    );
    assert!(tls.contains("<-  220 2.0.0 Ready to start TLS"), "{tls}");
    assert!(tls.contains("=== TLS started with cipher"), "{tls}");
    assert!(tls.contains("<~  250 2.0.0 Ok: queued as "), "{tls}");

    // The valid, the pipelined and the STARTTLS message (to the alias) are in INBOX.
    let (count, last) = inbox(&server);
    assert_eq!(count, 3, "{last}");
    assert!(
        last.contains("with ESMTPS"),
        "the Received header records TLS:\n{last}"
    );
}

#[test]
fn submission_with_swaks() {
    let server = server("");
    let port = server.addr("submission").port();
    let ca = ca_cert().display().to_string();
    let tls: [&str; 6] = [
        "-tls",
        "--tls-verify",
        "--tls-ca-path",
        &ca,
        "--tls-sni",
        "localhost",
    ];

    // Before TLS: no AUTH advertised, so swaks cannot authenticate.
    let plain = swaks(
        port,
        &[
            "--from",
            "anna@example.com",
            "--to",
            "friend@example.org",
            "--auth",
            "PLAIN",
            "--auth-user",
            "anna@example.com",
            "--auth-password",
            PASSWORD,
        ],
    );
    assert!(plain.contains("<-  250 STARTTLS"), "{plain}");
    assert!(
        !plain.contains("250-AUTH") && !plain.contains("250 AUTH"),
        "{plain}"
    );
    assert!(plain.contains("Host did not advertise authentication"), "{plain}");

    let send = |from: &str, to: &str, password: &str, extra: &[&str]| {
        let mut args: Vec<&str> = tls.to_vec();
        args.extend_from_slice(&[
            "--from",
            from,
            "--to",
            to,
            "--auth",
            "LOGIN",
            "--auth-user",
            "anna@example.com",
            "--auth-password",
            password,
        ]);
        args.extend_from_slice(extra);
        swaks(port, &args)
    };
    let wrong = send("anna@example.com", "friend@example.org", "Wrong1horse", &[]);
    assert!(wrong.contains("<~  250 AUTH PLAIN LOGIN"), "{wrong}");
    assert!(
        wrong.contains("<~* 535 5.7.8 Authentication credentials invalid"),
        "{wrong}"
    );

    let forged_envelope = send("ceo@example.com", "friend@example.org", PASSWORD, &[]);
    assert!(
        forged_envelope.contains("<~  235 2.7.0 Authentication successful"),
        "{forged_envelope}"
    );
    assert!(
        forged_envelope.contains("<~* 553 5.7.1 Sender address is not owned by the user"),
        "{forged_envelope}"
    );
    let forged_header = send(
        "anna@example.com",
        "friend@example.org",
        PASSWORD,
        &["--header", "From: CEO <ceo@example.com>"],
    );
    assert!(
        forged_header.contains("<~* 553 5.7.1 From header address is not owned by the user"),
        "{forged_header}"
    );

    // Her alias as sender, to herself: accepted and delivered into her INBOX.
    let alias = send(
        "sales@example.com",
        "anna@example.com",
        PASSWORD,
        &[
            "--header",
            "From: Sales <sales@example.com>",
            "--header",
            "Subject: from the alias",
        ],
    );
    assert!(alias.contains("<~  250 2.1.0 Ok"), "{alias}");
    assert!(alias.contains("<~  250 2.0.0 Ok: queued as "), "{alias}");
    let (count, last) = inbox(&server);
    assert_eq!(count, 1, "only the accepted message was delivered:\n{last}");
    assert!(last.contains("Subject: from the alias"), "{last}");
    assert!(last.contains("with ESMTPSA"), "{last}");
}
