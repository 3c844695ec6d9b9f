//! SMTP with Python's smtplib: recipient validation on the MX side (never a relay),
//! delivery into INBOX for users and aliases, and submission rules (AUTH only after TLS,
//! sender restricted to the user's addresses).

use crate::harness::*;

fn server() -> TestServer {
    TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("gone@example.com", PASSWORD);
        s.admin_ok(&["user", "deactivate", "gone@example.com"]);
        s.admin_ok(&["alias", "add", "sales@example.com", "anna@example.com"]);
    })
}

fn inbox_count(server: &TestServer) -> u64 {
    let script = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
p.user("anna@example.com"); p.pass_("Correct1horse")
print(p.stat()[0]); p.quit()
"#;
    python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn mx_accepts_only_valid_recipients_of_protected_domains() {
    let server = server();
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
code, text = s.ehlo("filter.example.net")
print("ehlo", code, "PIPELINING" in text.decode(), "AUTH" in text.decode())
s.mail("someone@example.net")
for rcpt in ["nobody@example.com", "gone@example.com", "victim@elsewhere.org", "anna@example.com", "sales@example.com"]:
    print(rcpt, *s.rcpt(rcpt))
code, text = s.data(b"Subject: hello\r\nMessage-ID: <m1@example.net>\r\n\r\nHi Anna\r\n")
print("data", code, text.decode())
s.quit()
"#;
    let out = python_ok(script, &[server.addr("smtp").port().to_string()]);
    assert!(
        out.contains("ehlo 250 True False"),
        "MX must not offer AUTH:\n{out}"
    );
    assert!(out.contains("nobody@example.com 550 b'5.1.1"), "{out}");
    assert!(out.contains("gone@example.com 550 b'5.2.1"), "{out}");
    assert!(out.contains("victim@elsewhere.org 550 b'5.7.1"), "{out}");
    assert!(out.contains("anna@example.com 250"), "{out}");
    assert!(out.contains("sales@example.com 250"), "{out}");
    assert!(out.contains("data 250 2.0.0"), "{out}");
    // Sent to anna and to her alias: one message, delivered once to her INBOX.
    assert_eq!(inbox_count(&server), 1);
}

#[test]
fn submission_requires_tls_for_auth_and_restricts_the_sender() {
    let server = server();
    let script = r#"
import smtplib, ssl, sys
ca, port, port_tls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("laptop")
print("auth before tls offered:", s.has_extn("auth"))
s.starttls(context=ssl.create_default_context(cafile=ca))
s.ehlo("laptop")
print("auth after tls:", s.esmtp_features.get("auth"))
s.login("anna@example.com", "Correct1horse")
try:
    s.sendmail("ceo@example.com", ["friend@example.org"], b"From: ceo@example.com\r\nSubject: x\r\n\r\nspoof\r\n")
except smtplib.SMTPSenderRefused as e:
    print("sender refused", e.smtp_code)
try:
    s.sendmail("anna@example.com", ["friend@example.org"], b"From: ceo@example.com\r\nSubject: x\r\n\r\nspoof\r\n")
except smtplib.SMTPDataError as e:
    print("from header refused", e.smtp_code)
s.sendmail("sales@example.com", ["friend@example.org", "anna@example.com"],
           b"From: Sales <sales@example.com>\r\nSubject: offer\r\n\r\nhello\r\n")
print("sent")
s.quit()
s = smtplib.SMTP_SSL("127.0.0.1", port_tls, context=ssl.create_default_context(cafile=ca), timeout=30)
try:
    s.login("anna@example.com", "Wrong1horse")
except smtplib.SMTPAuthenticationError as e:
    print("bad password", e.smtp_code)
s.quit()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("submission").port().to_string(),
            server.addr("submissions").port().to_string(),
        ],
    );
    assert!(out.contains("auth before tls offered: False"), "{out}");
    let mechanisms = out
        .lines()
        .find(|l| l.starts_with("auth after tls:"))
        .unwrap_or_default();
    assert!(
        mechanisms.contains("PLAIN") && mechanisms.contains("LOGIN"),
        "{out}"
    );
    assert!(out.contains("sender refused 553"), "{out}");
    assert!(out.contains("from header refused 553"), "{out}");
    assert!(out.contains("sent"), "{out}");
    assert!(out.contains("bad password 535"), "{out}");
    // The local recipient got the message.
    assert_eq!(inbox_count(&server), 1);
}

#[test]
fn a_message_acknowledged_with_250_survives_sigkill_right_after() {
    let mut server = server();
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("filter.example.net")
for i in range(5):
    s.sendmail("x@example.net", ["anna@example.com"], b"Subject: durable %d\r\n\r\nbody\r\n" % i)
print("acknowledged 5")
sys.stdout.flush()
"#;
    let out = python_ok(script, &[server.addr("smtp").port().to_string()]);
    assert!(out.contains("acknowledged 5"), "{out}");
    // No SIGTERM, no chance to flush anything: the 250s were only given after synced writes.
    server.kill();
    server.start_again();
    assert_eq!(inbox_count(&server), 5);
}
