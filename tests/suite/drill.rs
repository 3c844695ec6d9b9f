//! The outage drill of issue 18, end to end as an admin runs it: a manual outage, mail
//! in, users reading over IMAP and POP3, a reply sent, two messages deleted, the queue
//! held and released, the outage stopped; the primary gets exactly what it must (the
//! kept messages and the record of the sent reply, marked for its Sent folder), the
//! alert recipients get four notices in order, the first at once and the last with the
//! summary, and the admin recovers one deleted message with `queue redeliver`.

use std::time::Duration;

use crate::harness::*;
use crate::sink::{header, DumpSink};

const MX: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    for i in range(1, 19):
        rcpt = "anna@example.com" if i <= 12 else "bob@example.com"
        s.sendmail("sender@outside.test", [rcpt],
                   ("From: sender@outside.test\r\nTo: %s\r\nSubject: drill %d\r\nMessage-ID: <drill-%d@outside.test>\r\n\r\nmessage %d\r\n" % (rcpt, i, i, i)).encode())
print("sent 18")
"#;

/// Anna reads her INBOX over IMAP, deletes drill 1 and 2 and replies to drill 3.
const ANNA: &str = r#"
import imaplib, smtplib, ssl, sys
ca, imaps, submissions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx, timeout=30)
m.login("anna@example.com", "Correct1horse")
print("inbox", m.select("INBOX")[1][0].decode())
for n in m.search(None, "ALL")[1][0].split():
    subject = m.fetch(n, "(BODY[HEADER.FIELDS (SUBJECT)])")[1][0][1].decode().strip()
    if subject in ("Subject: drill 1", "Subject: drill 2"):
        m.store(n, "+FLAGS", "\\Deleted")
m.expunge()
print("left", m.select("INBOX")[1][0].decode())
m.logout()
s = smtplib.SMTP_SSL("127.0.0.1", submissions, context=ctx, timeout=30)
s.login("anna@example.com", "Correct1horse")
s.sendmail("anna@example.com", ["sender@outside.test"],
           b"From: Anna <anna@example.com>\r\nTo: sender@outside.test\r\nSubject: Re: drill 3\r\nIn-Reply-To: <drill-3@outside.test>\r\nMessage-ID: <reply-3@example.com>\r\n\r\nGot it.\r\n")
s.quit()
print("replied")
"#;

/// Bob reads his maildrop over POP3 and leaves it there.
const BOB: &str = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
p.user("bob@example.com"); p.pass_("Bobs1password")
n = p.stat()[0]
for i in range(1, n + 1):
    p.retr(i)
print("read", n); p.quit()
"#;

/// The notices the alert sink has received in full (it writes a file as the message
/// arrives), oldest first.
fn notices(sink: &DumpSink) -> Vec<String> {
    sink.messages()
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.contains("Understudy email continuity"))
        .collect()
}

fn subjects(sink: &DumpSink) -> Vec<String> {
    notices(sink)
        .iter()
        .filter_map(|m| header(m, "subject"))
        .collect()
}

#[test]
fn the_outage_drill_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = DumpSink::start(&tmp.path().join("primary"));
    let alerts = DumpSink::start(&tmp.path().join("alerts"));
    let internet = DumpSink::start(&tmp.path().join("internet"));
    // A long poll: notices and released mail must go out because something woke the
    // runner, not because it happened to look.
    let config = format!(
        "\n[delivery]\npoll_interval_secs = 60\nretry_initial_secs = 1\nretry_max_secs = 2\n\
         outage_recheck_secs = 1\nconnection_idle_secs = 5\noutbound_tls = \"disabled\"\n\
         routes = {{ \"alerts.test\" = \"{}\", \"outside.test\" = \"{}\" }}\n",
        alerts.addr(),
        internet.addr()
    );
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &primary.addr(),
            "--relay-tls",
            "disabled",
            "--engagement",
            "manual",
            "--alert",
            "ops@alerts.test",
        ]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("bob@example.com", "Bobs1password");
    });

    let started = std::time::Instant::now();
    server.admin_ok(&["outage", "start", "example.com", "--reason", "drill"]);
    wait_until(Duration::from_secs(20), "the first notice", || {
        notices(&alerts).len() == 1
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the first notice waited for a poll"
    );
    let first = &notices(&alerts)[0];
    assert!(first.contains("outage started by an admin"), "{first}");
    assert!(
        !first.contains("unreachable"),
        "a drill is not an unreachable primary: {first}"
    );

    assert!(python_ok(MX, &[server.addr("smtp").port().to_string()]).contains("sent 18"));
    let anna = python_ok(
        ANNA,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("submissions").port().to_string(),
        ],
    );
    assert!(
        anna.contains("inbox 12") && anna.contains("left 10") && anna.contains("replied"),
        "{anna}"
    );
    let bob = python_ok(
        BOB,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(bob.contains("read 6"), "{bob}");
    // The reply goes out to the internet at once; the primary gets nothing yet.
    wait_until(Duration::from_secs(20), "the reply at its recipient", || {
        internet
            .message_id_counts(None)
            .contains_key("<reply-3@example.com>")
    });
    wait_until(Duration::from_secs(20), "the spooling notice", || {
        notices(&alerts).len() == 2
    });
    assert!(primary.messages().is_empty());

    server.admin_ok(&["queue", "hold", "example.com"]);
    let stopped = server.admin_ok(&["outage", "stop", "example.com", "--reason", "drill over"]);
    assert!(stopped.contains("draining"), "{stopped}");
    wait_until(Duration::from_secs(20), "the restored notice", || {
        notices(&alerts).len() == 3
    });
    let status = server.admin_ok(&["outage", "status", "example.com"]);
    assert!(status.contains("queue held: 19 entries waiting"), "{status}");
    assert!(primary.messages().is_empty(), "held mail went out");

    server.admin_ok(&["queue", "release", "example.com"]);
    wait_until(Duration::from_secs(60), "the last notice", || {
        notices(&alerts).len() == 4
    });
    let status = server.admin_ok(&["outage", "status", "example.com"]);
    assert!(status.lines().nth(1).unwrap().contains(" normal "), "{status}");

    // The primary: the 16 messages kept and the record of the reply, each once.
    let counts = primary.message_id_counts(None);
    let mut expected: Vec<String> = (3..=18).map(|i| format!("<drill-{i}@outside.test>")).collect();
    expected.push("<reply-3@example.com>".into());
    expected.sort();
    let mut got: Vec<String> = counts.keys().cloned().collect();
    got.sort();
    assert_eq!(got, expected, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let record = primary
        .messages()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.contains("<reply-3@example.com>"))
        .unwrap();
    assert_eq!(
        header(&record, "x-understudy-sent").as_deref(),
        Some("yes"),
        "{record}"
    );
    assert!(record.contains("X-Rcpt-Args: <anna@example.com>"), "{record}");
    assert!(
        !internet
            .messages()
            .iter()
            .any(|(_, m)| m.contains("X-Understudy-Sent")),
        "only the primary's copy is marked"
    );

    // Four notices in order, the last with the summary.
    let subjects = subjects(&alerts);
    assert_eq!(subjects.len(), 4, "{subjects:?}");
    for (subject, expected) in subjects.iter().zip([
        "outage started by an admin",
        "mail is being spooled",
        "outage ended by an admin",
        "all spooled mail released",
    ]) {
        assert!(subject.contains(expected), "{subjects:?}");
    }
    let last = notices(&alerts).last().unwrap().clone();
    for line in [
        "Summary of the outage:",
        "Messages received: 18",
        "Messages sent:     1",
        "Delivered:         17",
        "Cancelled:         2",
        "Bounced:           0",
        "Still held:        0",
        "Lasted:",
    ] {
        assert!(last.contains(line), "{line} missing from:\n{last}");
    }

    // The admin recovers one of the deleted messages for the primary.
    let tracked = server.admin_ok(&["track", "--message-id", "<drill-1@outside.test>"]);
    assert!(tracked.contains("recoverable until retention"), "{tracked}");
    let id = tracked
        .lines()
        .find_map(|l| l.strip_prefix("message "))
        .unwrap()
        .trim()
        .to_string();
    let redelivered = server.admin_ok(&["queue", "redeliver", &id]);
    assert!(
        redelivered.contains("queued again for the primary"),
        "{redelivered}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !primary
        .message_id_counts(None)
        .contains_key("<drill-1@outside.test>")
    {
        if std::time::Instant::now() > deadline {
            panic!(
                "the recovered message never reached the primary\n{}\n{}\n{}",
                server.admin_ok(&["queue", "list"]),
                server.admin_ok(&["track", &id]),
                plain_log(&mut server)
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!primary
        .message_id_counts(None)
        .contains_key("<drill-2@outside.test>"));
    // Once recovered it is no longer recoverable.
    let again = server.admin(&["queue", "redeliver", &id], None);
    assert!(!again.status.success());
    wait_log(&mut server, "delivery attempt");
}
