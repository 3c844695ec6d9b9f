//! Logs that answer "why" and one id per message (issue 18 items 3 and 4): refused
//! recipients logged with their reason, no colour codes when stderr is not a terminal,
//! admin audit lines that name their target, and the id of the `250 ... queued as`
//! reply in the `Received` header and the log, which `track` finds the message by.

use crate::harness::*;

#[test]
fn one_id_in_the_reply_the_received_header_and_the_log_and_track_finds_it() {
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("bob@example.com", "Bobs1password");
        s.admin_ok(&["user", "deactivate", "bob@example.com"]);
    });
    // smtplib's sendmail hides the DATA reply; send by hand to read it.
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("filter.example.net")
s.mail("sender@outside.net")
s.rcpt("anna@example.com")
code, text = s.data(b"From: sender@outside.net\r\nTo: anna@example.com\r\nSubject: one id\r\nMessage-ID: <one-id@outside.net>\r\n\r\nbody\r\n")
print("data", code, text.decode())
s.mail("sender@outside.net")
for r in ["nobody@example.com", "bob@example.com", "eve@elsewhere.org"]:
    print("refused", r, *s.rcpt(r))
s.quit()
"#;
    let out = python_ok(script, &[server.addr("smtp").port().to_string()]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("data 250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("no 250 reply in {out}"))
        .trim()
        .to_string();
    assert!(out.contains("refused nobody@example.com 550"), "{out}");
    assert!(out.contains("refused bob@example.com 550"), "{out}");
    assert!(out.contains("refused eve@elsewhere.org 550"), "{out}");

    // The Received header names the same id.
    let fetch = r#"
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
m.login("anna@example.com", "Correct1horse"); m.select("INBOX")
print(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")[1][0][1].decode())
m.logout()
"#;
    let header = python_ok(
        fetch,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    assert!(header.contains(&format!(" id {id}")), "{id} not in {header}");

    // `track ID` finds it, and names it the same way.
    let tracked = server.admin_ok(&["track", &id]);
    assert!(tracked.contains(&format!("message {id}")), "{tracked}");
    assert!(tracked.contains("received"), "{tracked}");
    // The same id in the queue's listing.
    let queue = server.admin_ok(&["queue", "list"]);
    assert!(queue.contains(&id), "{queue}");

    wait_log(&mut server, "recipient refused: relaying denied");
    let log = server.log();
    // The log line of the accepted message carries the id, and only that one.
    let accepted = log
        .lines()
        .find(|l| l.contains("message accepted"))
        .expect("message accepted line");
    assert!(accepted.contains(&format!("id={id}")), "{accepted}");
    for (rcpt, reason) in [
        ("nobody@example.com", "unknown recipient"),
        ("bob@example.com", "recipient deactivated"),
        ("eve@elsewhere.org", "relaying denied"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("recipient refused: {reason}")) && l.contains(rcpt)),
            "no refusal of {rcpt} ({reason}) in:\n{log}"
        );
    }
    // stderr is a pipe here, as under journald: no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI codes in a non-terminal log");
}

#[test]
fn admin_audit_lines_name_their_target() {
    let mut server = TestServer::start();
    let out = server.admin(
        &["user", "passwd", "anna@example.com", "--stdin"],
        Some("Another1horse\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.admin_ok(&["user", "deactivate", "anna@example.com"]);
    wait_log(&mut server, "ending the user's open sessions");
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("admin command")
            && l.contains("User Passwd")
            && l.contains("target=anna@example.com")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ending the user's open sessions") && l.contains("user=anna@example.com")),
        "{log}"
    );
    assert!(!log.contains("Another1horse"), "a password in the log");
}

/// Each failed login logs why it failed (issue 18 item 3), while every client gets the
/// same answer and no password reaches the log.
#[test]
fn failed_logins_log_their_reason_and_clients_all_get_the_same_answer() {
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com", "--monitoring", "false"]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("bob@example.com", "Bobs1password");
        s.admin_ok(&["user", "deactivate", "bob@example.com"]);
        s.admin_ok(&["user", "add", "carl@example.com"]);
        s.add_user("dora@example.com", "Doras1password");
        s.admin_ok(&[
            "user",
            "set",
            "dora@example.com",
            "--access-window",
            "outage-only",
        ]);
    });
    let script = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for user, password in [("nobody@example.com", "Guess1one"), ("bob@example.com", "Bobs1password"),
                       ("carl@example.com", "Guess1two"), ("anna@example.com", "Wrong1horse"),
                       ("dora@example.com", "Doras1password")]:
    m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx, timeout=30)
    try:
        m.login(user, password)
        print(user, "OK")
    except imaplib.IMAP4.error as e:
        print(user, "NO", e)
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("dora@"))
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(answers.len(), 4, "{out}");
    assert!(
        answers.iter().all(|a| a.starts_with("NO") && *a == answers[0]),
        "the answers differ or one succeeded: {out}"
    );
    assert!(out.contains("dora@example.com NO"), "{out}");
    for (user, reason) in [
        ("nobody@example.com", "no such user"),
        ("bob@example.com", "user inactive"),
        ("carl@example.com", "no password set"),
        ("anna@example.com", "wrong password"),
    ] {
        wait_until(
            std::time::Duration::from_secs(20),
            "the login failure's reason in the log",
            || {
                plain_log(&mut server).lines().any(|l| {
                    l.contains("login failed") && l.contains(&format!("user={user}")) && l.contains(reason)
                })
            },
        );
    }
    wait_log(
        &mut server,
        "login refused: mailbox reachable only during an outage",
    );
    let log = server.log();
    for password in [
        "Guess1one",
        "Bobs1password",
        "Guess1two",
        "Wrong1horse",
        "Doras1password",
    ] {
        assert!(!log.contains(password), "a password in the log");
    }
}
