//! The outage engine end to end, against `smtp-sink` playing the primary, the alert
//! recipients' server and a remote MX: the primary goes down, a thousand messages are
//! spooled and read over IMAP, the primary comes back and gets each kept message exactly
//! once; and a flapping primary with the server SIGKILLed twice mid-drain loses nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use understudy_storage::Store;

use crate::harness::*;
use crate::sink::{header, DumpSink};

/// Entries in the whole queue (relay, outbound and notifications).
pub(crate) fn queue_len(server: &TestServer) -> usize {
    let list = server.admin_ok(&["queue", "list"]);
    let last = list.lines().last().unwrap_or_default();
    last.split_whitespace().next().unwrap().parse().unwrap()
}

pub(crate) fn delivery_config(routes: &[(&str, &str)]) -> String {
    let routes: Vec<String> = routes.iter().map(|(d, a)| format!("\"{d}\" = \"{a}\"")).collect();
    format!(
        "\n[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n\
         outage_recheck_secs = 1\nconnection_idle_secs = 5\nroutes = {{ {} }}\n",
        routes.join(", ")
    )
}

pub(crate) fn add_domain(s: &TestServer, relay: &str, successes: &str) {
    s.admin_ok(&[
        "domain",
        "add",
        "example.com",
        "--relay-host",
        relay,
        "--relay-tls",
        "disabled",
        "--probe-interval",
        "1",
        "--failures",
        "2",
        "--successes",
        successes,
        "--alert",
        "ops@alerts.test",
    ]);
    s.add_user("anna@example.com", PASSWORD);
}

/// Sends `count` messages over one connection to the MX listener, Message-IDs
/// `<{prefix}-{n}@outside.test>`, each body ending in a completeness marker.
const SEND_MANY: &str = r#"
import smtplib, sys
port, prefix, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
s.ehlo("filter.outside.test")
for n in range(count):
    mid = "%s-%d@outside.test" % (prefix, n)
    s.sendmail("sender@outside.test", ["anna@example.com"],
               ("From: sender@outside.test\r\nTo: anna@example.com\r\nSubject: spooled %d\r\n"
                "Message-ID: <%s>\r\n\r\nHello %d\r\nEND-OF-MESSAGE\r\n" % (n, mid, n)).encode())
s.quit()
"#;

pub(crate) fn send_many(server: &TestServer, prefix: &str, count: usize) {
    python_ok(
        SEND_MANY,
        &[
            server.addr("smtp").port().to_string(),
            prefix.to_string(),
            count.to_string(),
        ],
    );
}

#[test]
fn outage_spools_a_thousand_and_the_primary_gets_each_kept_one_once() {
    const COUNT: usize = 1000;
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut primary = DumpSink::start(&tmp.path().join("primary"));
    let alerts = DumpSink::start(&tmp.path().join("alerts"));
    let remote = DumpSink::start(&tmp.path().join("remote"));
    let config = delivery_config(&[("alerts.test", &alerts.addr()), ("remote.test", &remote.addr())]);
    let relay = primary.addr();
    let server = TestServer::setup(&config, |s| add_domain(s, &relay, "2"));

    primary.down();
    wait_until(Duration::from_secs(30), "the outage to engage", || {
        phase(&server, "example.com") == "outage"
    });

    let t = Instant::now();
    send_many(&server, "e2e", COUNT);
    let received_in = t.elapsed();

    // The user sees them all, deletes ten and sends five.
    let script = r#"
import imaplib, ssl, sys, re
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=60)
m.login("anna@example.com", "Correct1horse")
typ, data = m.select("INBOX")
print("EXISTS", int(data[0]))
seqs = "1,2,111,222,333,444,555,666,777,1000"
typ, data = m.fetch(seqs, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
for part in data:
    if isinstance(part, tuple):
        print("DELETED", re.search(rb"<([^>]+)>", part[1]).group(1).decode())
m.store(seqs, "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
print("EXPUNGED", len([d for d in data if d]))
typ, data = m.select("INBOX")
print("EXISTS", int(data[0]))
m.logout()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("EXISTS {COUNT}"), "{out}");
    assert_eq!(lines.last().unwrap(), &format!("EXISTS {}", COUNT - 10), "{out}");
    assert!(out.contains("EXPUNGED 10"), "{out}");
    let deleted: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("DELETED "))
        .map(|id| format!("<{id}>"))
        .collect();
    assert_eq!(deleted.len(), 10, "{out}");

    let submit = r#"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[2]), timeout=30)
s.starttls(context=ssl.create_default_context(cafile=sys.argv[1]))
s.login("anna@example.com", "Correct1horse")
for n in range(5):
    mid = "sent-%d@example.com" % n
    s.sendmail("anna@example.com", ["bob@remote.test"],
               ("From: Anna <anna@example.com>\r\nTo: bob@remote.test\r\nSubject: sent %d\r\n"
                "Message-ID: <%s>\r\n\r\nHi Bob\r\n" % (n, mid)).encode())
s.quit()
"#;
    python_ok(
        submit,
        &[
            ca_cert().display().to_string(),
            server.addr("submission").port().to_string(),
        ],
    );
    // Outbound mail does not wait for the primary.
    wait_until(Duration::from_secs(30), "the sent mail at the remote MX", || {
        remote.message_id_counts(None).len() == 5
    });
    assert!(
        primary.messages().is_empty(),
        "nothing reached the primary while down"
    );

    let t = Instant::now();
    primary.up();
    wait_until(Duration::from_secs(60), "the drain to finish", || {
        phase(&server, "example.com") == "normal" && queue_len(&server) == 0
    });
    let drained_in = t.elapsed();

    let mut expected: BTreeMap<String, usize> = (0..COUNT)
        .map(|n| (format!("<e2e-{n}@outside.test>"), 1))
        .collect();
    for id in &deleted {
        expected.remove(id).expect("a deleted id was one of ours");
    }
    for n in 0..5 {
        expected.insert(format!("<sent-{n}@example.com>"), 1);
    }
    let got = primary.message_id_counts(None);
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let doubled: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    let unexpected: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty(), "never reached the primary: {missing:?}");
    assert!(
        doubled.is_empty(),
        "reached the primary more than once: {doubled:?}"
    );
    assert!(
        unexpected.is_empty(),
        "should not have reached the primary: {unexpected:?}"
    );
    assert_eq!(got, expected);

    // The last notice is delivered when the queue empties; the sink writes it out a
    // moment after its 250.
    wait_until(Duration::from_secs(30), "the four alerts", || {
        alerts.messages().len() >= 4
    });
    let subjects: Vec<String> = alerts
        .messages()
        .iter()
        .filter_map(|(_, text)| header(text, "subject"))
        .collect();
    assert_eq!(
        subjects,
        [
            "[Understudy] example.com: primary mail server unreachable, outage engaged",
            "[Understudy] example.com: mail is being spooled during the outage",
            "[Understudy] example.com: primary reachable again, releasing spooled mail",
            "[Understudy] example.com: all spooled mail released, back to normal",
        ]
    );
    eprintln!(
        "e2e: {COUNT} messages received in {received_in:.1?}, drained in {drained_in:.1?}, whole test {:.1?}",
        started.elapsed()
    );
}

#[test]
fn flapping_primary_and_two_sigkills_lose_nothing_and_show_each_duplicate() {
    // One connection to the primary, so that "the message in flight" at a kill is one.
    const COUNT: usize = 300;
    const MARKER: &str = "END-OF-MESSAGE";
    // Up a little longer than down: the monitor needs a probe or two to see it back.
    const UP: Duration = Duration::from_secs(3);
    const DOWN: Duration = Duration::from_secs(2);
    const SUCCESSES: &str = "2";
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut primary = DumpSink::start(&tmp.path().join("primary"));
    let alerts = DumpSink::start(&tmp.path().join("alerts"));
    let config = format!(
        "{}max_connections_per_host = 1\n",
        delivery_config(&[("alerts.test", &alerts.addr())])
    );
    let relay = primary.addr();
    let mut server = TestServer::setup(&config, |s| add_domain(s, &relay, SUCCESSES));

    primary.down();
    wait_until(Duration::from_secs(30), "the outage to engage", || {
        phase(&server, "example.com") == "outage"
    });
    send_many(&server, "flap", COUNT);
    eprintln!("{:>6.1?} {COUNT} spooled", started.elapsed());

    // The primary comes back, then flaps: up ~2 s, down ~2 s, until told to stop.
    primary.up();
    let primary = Arc::new(Mutex::new(primary));
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = crate::sink::flap(primary.clone(), UP, DOWN, stop.clone(), MARKER, started);
    let delivered = |primary: &Arc<Mutex<DumpSink>>| {
        let dir = primary.lock().unwrap().dir.clone();
        DumpSink::counts_in(&dir, Some(MARKER)).len()
    };

    // Two SIGKILLs while the queue drains, each restarted on the same data.
    let mut kills = 0;
    for fraction in [3, 2] {
        wait_until(Duration::from_secs(60), "the drain to progress", || {
            delivered(&primary) >= COUNT / fraction
        });
        server.kill();
        kills += 1;
        server.start_again();
        eprintln!("{:>6.1?} killed and restarted", started.elapsed());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered(&primary) < COUNT {
        if Instant::now() > deadline {
            let status = server.admin_ok(&["outage", "status", "--history"]);
            let list = server.admin_ok(&["queue", "list"]);
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!(
                "only {} of {COUNT} at the primary after 90 s\n{status}\n{}\nlog tail:\n{}",
                delivered(&primary),
                list.lines().take(10).collect::<Vec<_>>().join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let toggles = flapper.join().unwrap();
    wait_until(
        Duration::from_secs(60),
        "the outage to end and the queue to empty",
        || phase(&server, "example.com") == "normal" && queue_len(&server) == 0,
    );

    let counts = {
        let dir = primary.lock().unwrap().dir.clone();
        DumpSink::counts_in(&dir, Some(MARKER))
    };
    let expected: Vec<String> = (0..COUNT).map(|n| format!("<flap-{n}@outside.test>")).collect();
    let duplicates = crate::sink::assert_all_with_one_duplicate_per_kill(&counts, &expected, kills);
    for (id, _) in &duplicates {
        let track = server.admin_ok(&["track", "--message-id", id]);
        assert!(
            track.matches("attempt started").count() >= 2,
            "the duplicate {id} is not visible in tracking:\n{track}"
        );
    }
    // Every copy the primary holds was preceded by a tracked attempt, duplicate or not:
    // a copy without its "attempt started" would be a duplicate nobody could see.
    server.stop();
    let store = Store::open(&server.dir.path().join("data/db")).unwrap();
    for (id, copies) in &counts {
        let ids = store.tracking_ids_for_message_id(id).unwrap();
        let mut attempts = 0;
        for t in ids {
            attempts += store
                .tracking_events(t)
                .unwrap()
                .iter()
                .filter(|e| e.kind == "attempt started")
                .count();
        }
        assert!(attempts >= *copies, "{id}: {copies} copies, {attempts} attempts");
    }
    eprintln!(
        "e2e flapping: {COUNT} messages, {kills} kills, {toggles} primary toggles, {} duplicate(s) {duplicates:?}, whole test {:.1?}",
        duplicates.len(),
        started.elapsed()
    );
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A primary that writes each message to `dir`, and for the one whose Message-ID
/// contains `crash` first SIGKILLs the process in `pidfile`, then answers 250: the
/// server dies between the primary's acceptance and its own record of it.
const CRASHING_PRIMARY: &str = r#"
import os, signal, socket, sys, uuid
dirname, pidfile, crash, ready = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
open(ready, "w").write(str(srv.getsockname()[1]))
crashed = False
while True:
    conn, _ = srv.accept()
    conn.settimeout(30)
    f = conn.makefile("rb")
    def say(text):
        try:
            conn.sendall(text.encode() + b"\r\n")
        except OSError:
            pass
    say("220 crashing-primary ESMTP")
    try:
        while True:
            line = f.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"DATA":
                say("354 go ahead")
                data = []
                while True:
                    l = f.readline()
                    if not l or l == b".\r\n":
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                text = b"".join(data)
                with open(os.path.join(dirname, uuid.uuid4().hex), "wb") as out:
                    out.write(text)
                if crash.encode() in text and not crashed:
                    crashed = True
                    os.kill(int(open(pidfile).read()), signal.SIGKILL)
                say("250 2.0.0 queued")
            elif verb == b"QUIT":
                say("221 bye")
                break
            elif verb in (b"EHLO", b"HELO"):
                say("250 crashing-primary")
            else:
                say("250 ok")
    except OSError:
        pass
    conn.close()
"#;

#[test]
fn a_crash_between_the_primarys_250_and_our_record_resends_one_message_visibly() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("primary");
    std::fs::create_dir_all(&dump).unwrap();
    let pidfile = tmp.path().join("server.pid");
    let ready = tmp.path().join("primary.port");
    let primary = std::process::Command::new("python3")
        .arg("-c")
        .arg(CRASHING_PRIMARY)
        .args([&dump, &pidfile, std::path::Path::new("crash-1@"), &ready])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _primary = KillOnDrop(primary);
    wait_until(Duration::from_secs(20), "the primary to listen", || {
        std::fs::read_to_string(&ready).is_ok_and(|p| !p.is_empty())
    });
    let relay = format!("127.0.0.1:{}", std::fs::read_to_string(&ready).unwrap());
    let config = delivery_config(&[]);
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com", "--relay-host", &relay]);
        s.add_user("anna@example.com", PASSWORD);
        s.admin_ok(&["outage", "start", "example.com", "--reason", "test"]);
    });
    std::fs::write(&pidfile, server.pid().to_string()).unwrap();
    // Spooled first, so that the kill cannot cut the client's session short.
    send_many(&server, "crash", 3);
    server.admin_ok(&["outage", "stop", "example.com"]);
    let status = server.wait_exit();
    assert!(!status.success(), "killed by the primary: {status:?}");
    server.start_again();
    wait_until(Duration::from_secs(30), "the queue to empty", || {
        queue_len(&server) == 0
    });

    let counts = DumpSink::counts_in(&dump, Some("END-OF-MESSAGE"));
    let expected: BTreeMap<String, usize> = [
        ("<crash-0@outside.test>".to_string(), 1),
        ("<crash-1@outside.test>".to_string(), 2),
        ("<crash-2@outside.test>".to_string(), 1),
    ]
    .into();
    assert_eq!(counts, expected, "only the message in flight is sent twice");
    let track = server.admin_ok(&["track", "--message-id", "crash-1@outside.test"]);
    assert_eq!(track.matches("attempt started").count(), 2, "{track}");
    assert_eq!(track.matches("delivered").count(), 1, "{track}");
    let track = server.admin_ok(&["track", "--message-id", "crash-0@outside.test"]);
    assert_eq!(track.matches("attempt started").count(), 1, "{track}");
}
