//! The server on the PostgreSQL store (`[store] backend = "postgres"`), against a
//! throwaway PostgreSQL 15 (storage/tests/support/pg.rs): admin commands before start,
//! SMTP delivery, IMAP with IDLE, a restart, and no RocksDB directory anywhere.

use crate::harness::*;

#[path = "../../storage/tests/support/pg.rs"]
pub(crate) mod pg;

pub(crate) fn store_config(dir: &std::path::Path) -> String {
    store_section(&pg::url_for(dir))
}

/// The `[store]` section for a PostgreSQL store at `url`.
pub(crate) fn store_section(url: &str) -> String {
    format!("\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\ntls = \"off\"\n")
}

pub(crate) const DELIVER_AND_READ: &str = r#"
import imaplib, smtplib, ssl, sys, threading, time
ca, smtp_port, imaps_port, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def send(n):
    s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
    s.sendmail("someone@example.net", ["anna@example.com"],
               f"Subject: pg {n}\r\nMessage-ID: <pg{n}@example.net>\r\n\r\nbody {n}\r\n".encode())
    s.quit()
for n in range(first, first + 3):
    send(n)
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=ctx, timeout=30)
m.login("anna@example.com", "Correct1horse")
m.select("INBOX")
typ, data = m.uid("SEARCH", None, "ALL")
print("uids", data[0].decode())
typ, data = m.uid("FETCH", data[0].split()[-1].decode(), "(BODY.PEEK[TEXT])")
print("last", data[0][1].decode().strip())
# IDLE, then a delivery from another connection: the session hears of it.
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
assert m.readline().startswith(b"+")
threading.Timer(0.2, send, args=(first + 3,)).start()
line = m.readline().decode().strip()
print("idle", line)
m.send(b"DONE\r\n")
while not m.readline().decode().startswith(tag):
    pass
m.logout()
"#;

#[test]
fn the_server_runs_on_postgresql_and_keeps_its_mail_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::setup(&store_config(dir.path()), |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let args = |server: &TestServer, first: u32| {
        vec![
            ca_cert().display().to_string(),
            server.addr("smtp").port().to_string(),
            server.addr("imaps").port().to_string(),
            first.to_string(),
        ]
    };
    let out = python_ok(DELIVER_AND_READ, &args(&server, 1));
    assert!(out.contains("uids 1 2 3\n"), "{out}");
    assert!(out.contains("last body 3"), "{out}");
    assert!(out.contains("idle * 4 EXISTS"), "{out}");

    server.restart();
    let out = python_ok(DELIVER_AND_READ, &args(&server, 5));
    assert!(out.contains("uids 1 2 3 4 5 6 7\n"), "{out}");
    assert!(out.contains("last body 7"), "{out}");
    assert!(out.contains("idle * 8 EXISTS"), "{out}");
    assert!(
        !server.dir.path().join("data/db").exists(),
        "a RocksDB directory was created although the store is PostgreSQL"
    );
}

/// Two servers (separate ports and data directories) on one PostgreSQL store.
fn two_nodes(dir: &std::path::Path) -> (TestServer, TestServer) {
    let config = store_config(dir);
    let a = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let b = TestServer::setup(&config, |_| {});
    (a, b)
}

/// Deliveries through both nodes at once, while an IMAP client on each node polls the
/// INBOX: every client only ever sees UIDs 1..n with no gap (commit order is UID order
/// across nodes), and in the end both see the same 60 UIDs.
const CONCURRENT: &str = r#"
import imaplib, smtplib, ssl, sys, threading
ca = sys.argv[1]
smtp_a, smtp_b, imaps_a, imaps_b = (int(p) for p in sys.argv[2:6])
errors = []
def send(port, node, count):
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        for i in range(count):
            s.sendmail("someone@example.net", ["anna@example.com"],
                       f"Subject: {node} {i}\r\nMessage-ID: <{node}{i}@example.net>\r\n\r\nvia {node}\r\n".encode())
        s.quit()
    except Exception as e:
        errors.append(f"send via {node}: {e!r}")
done = threading.Event()
seen = {}
def watch(port, node):
    try:
        m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
        m.login("anna@example.com", "Correct1horse")
        polls = 0
        while True:
            last = done.is_set()
            m.select("INBOX")
            typ, data = m.uid("SEARCH", None, "ALL")
            uids = [int(u) for u in data[0].split()]
            if uids != list(range(1, len(uids) + 1)):
                errors.append(f"IMAP on node {node} saw a gap: {uids}")
                break
            polls += 1
            if last:
                break
        seen[node] = (uids, polls)
        m.logout()
    except Exception as e:
        errors.append(f"watch on {node}: {e!r}")
watchers = [threading.Thread(target=watch, args=(imaps_a, "A")), threading.Thread(target=watch, args=(imaps_b, "B"))]
senders = [threading.Thread(target=send, args=(port, node, 15)) for port, node in
           [(smtp_a, "a1"), (smtp_b, "b1"), (smtp_a, "a2"), (smtp_b, "b2")]]
for t in watchers + senders:
    t.start()
for t in senders:
    t.join()
done.set()
for t in watchers:
    t.join()
print("errors", errors)
for node in sorted(seen):
    uids, polls = seen[node]
    print(node, "uids", len(uids), "last", uids[-1] if uids else 0, "polls", polls)
"#;

#[test]
fn two_nodes_take_concurrent_deliveries_to_one_mailbox_in_uid_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    let out = python_ok(
        CONCURRENT,
        &[
            ca_cert().display().to_string(),
            a.addr("smtp").port().to_string(),
            b.addr("smtp").port().to_string(),
            a.addr("imaps").port().to_string(),
            b.addr("imaps").port().to_string(),
        ],
    );
    assert!(out.contains("errors []"), "{out}");
    assert!(out.contains("A uids 60 last 60"), "{out}");
    assert!(out.contains("B uids 60 last 60"), "{out}");
}

/// IDLE on node A hears of a delivery through node B (LISTEN/NOTIFY between the
/// nodes). benches/cluster-idle.sh measures how soon; here it only has to arrive.
const IDLE_ACROSS: &str = r#"
import imaplib, smtplib, ssl, sys
ca, smtp_b, imaps_a = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = imaplib.IMAP4_SSL("127.0.0.1", imaps_a, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
m.login("anna@example.com", "Correct1horse")
m.select("INBOX")
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
assert m.readline().startswith(b"+")
s = smtplib.SMTP("127.0.0.1", smtp_b, timeout=30)
s.sendmail("someone@example.net", ["anna@example.com"], b"Subject: via B\r\n\r\nhello\r\n")
s.quit()
print("idle", m.readline().decode().strip())
m.send(b"DONE\r\n")
while not m.readline().decode().startswith(tag):
    pass
m.logout()
"#;

#[test]
fn idle_on_one_node_hears_a_delivery_through_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    let out = python_ok(
        IDLE_ACROSS,
        &[
            ca_cert().display().to_string(),
            b.addr("smtp").port().to_string(),
            a.addr("imaps").port().to_string(),
        ],
    );
    assert!(out.contains("idle * 1 EXISTS"), "{out}");
}

/// `understudy store copy`: a RocksDB store moved into PostgreSQL (verified by counts
/// and checksums), the server started on it keeps every message and UID, and the
/// PostgreSQL store copies back into a new RocksDB directory.
#[test]
fn store_copy_moves_a_rocksdb_store_into_postgresql_and_back() {
    let mut server = TestServer::start();
    let args = |server: &TestServer, first: u32| {
        vec![
            ca_cert().display().to_string(),
            server.addr("smtp").port().to_string(),
            server.addr("imaps").port().to_string(),
            first.to_string(),
        ]
    };
    let out = python_ok(DELIVER_AND_READ, &args(&server, 1));
    assert!(out.contains("uids 1 2 3\n"), "{out}");
    server.stop();

    let pg_dir = tempfile::tempdir().unwrap();
    let url = pg::url_for(pg_dir.path());
    let copy = |from: String, to: String| {
        let out = std::process::Command::new(BIN)
            .args(["store", "copy", "--from", &from, "--to", &to, "--tls", "off"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let db = server.dir.path().join("data/db");
    let copied = copy(format!("rocksdb:{}", db.display()), format!("postgres:{url}"));
    assert!(copied.contains("both sides verified"), "{copied}");
    assert!(
        copied
            .lines()
            .any(|l| l.starts_with("messages") && l.contains(" 4 records")),
        "{copied}"
    );

    let mut config = std::fs::read_to_string(&server.config).unwrap();
    config.push_str(&store_config(pg_dir.path()));
    std::fs::write(&server.config, config).unwrap();
    std::fs::rename(&db, server.dir.path().join("data/db.old")).unwrap();
    server.start_again();
    let out = python_ok(DELIVER_AND_READ, &args(&server, 5));
    assert!(out.contains("uids 1 2 3 4 5 6 7\n"), "{out}");
    assert!(out.contains("idle * 8 EXISTS"), "{out}");
    server.stop();

    let back = server.dir.path().join("back");
    let copied = copy(format!("postgres:{url}"), format!("rocksdb:{}", back.display()));
    assert!(
        copied
            .lines()
            .any(|l| l.starts_with("messages") && l.contains(" 8 records")),
        "{copied}"
    );
}

/// The relay queue drained through both nodes to a flapping primary (`smtp-sink`, down
/// for 2 s every 3 s), node A SIGKILLed twice mid-drain and started again: every message
/// reaches the primary, at most one extra copy per kill (the message A had in flight),
/// and both nodes sent (each claims its own entries: storage `lease.rs`): after each kill
/// the drain must go on through B before A starts again. Leases of 3 s, so the killed
/// node's claimed entries are taken over quickly.
#[test]
fn two_nodes_drain_one_queue_to_a_flapping_primary_through_two_sigkills() {
    use crate::e2e::{add_domain, delivery_config, queue_len, send_many};
    use crate::sink::DumpSink;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const COUNT: usize = 120;
    const MARKER: &str = "END-OF-MESSAGE";
    let started = Instant::now();
    let pg_dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut primary = DumpSink::start(&tmp.path().join("primary"));
    let alerts = DumpSink::start(&tmp.path().join("alerts"));
    let config = format!(
        "{}max_connections_per_host = 1\nlease_secs = 3\n{}",
        delivery_config(&[("alerts.test", &alerts.addr())]),
        store_config(pg_dir.path())
    );
    let relay = primary.addr();
    let mut a = TestServer::setup(&config, |s| add_domain(s, &relay, "2"));
    let mut b = TestServer::setup(&config, |_| {});

    primary.down();
    wait_until(Duration::from_secs(30), "the outage to engage", || {
        phase(&a, "example.com") == "outage"
    });
    // Spooled through both nodes.
    send_many(&a, "pga", COUNT / 2);
    send_many(&b, "pgb", COUNT / 2);
    eprintln!("{:>6.1?} {COUNT} spooled", started.elapsed());
    primary.up();
    let primary = Arc::new(Mutex::new(primary));
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = crate::sink::flap(
        primary.clone(),
        Duration::from_secs(3),
        Duration::from_secs(2),
        stop.clone(),
        MARKER,
        started,
    );
    let dir = primary.lock().unwrap().dir.clone();
    let delivered = || DumpSink::counts_in(&dir, Some(MARKER)).len();

    let mut kills = 0;
    for at in [COUNT / 3, 2 * COUNT / 3] {
        wait_until(Duration::from_secs(60), "the drain to progress", || {
            delivered() >= at
        });
        a.kill();
        kills += 1;
        // While A is down the drain goes on through B alone: B takes what is due and,
        // once their leases run out, the entries A had claimed.
        let before = delivered();
        if before < COUNT {
            wait_until(
                Duration::from_secs(30),
                "node B to deliver while A is down",
                || delivered() > before,
            );
        }
        eprintln!(
            "{:>6.1?} node A killed at {before} delivered, {} with A down; restarted",
            started.elapsed(),
            delivered()
        );
        a.start_again();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered() < COUNT {
        if Instant::now() > deadline {
            let list = a.admin_ok(&["queue", "list"]);
            panic!(
                "only {} of {COUNT} at the primary after 90 s\n{}",
                delivered(),
                list.lines().take(10).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let toggles = flapper.join().unwrap();
    wait_until(Duration::from_secs(60), "the queue to empty", || {
        phase(&a, "example.com") == "normal" && queue_len(&a) == 0
    });

    let counts = DumpSink::counts_in(&dir, Some(MARKER));
    let expected: Vec<String> = ["pga", "pgb"]
        .iter()
        .flat_map(|p| (0..COUNT / 2).map(move |n| format!("<{p}-{n}@outside.test>")))
        .collect();
    let duplicates = crate::sink::assert_all_with_one_duplicate_per_kill(&counts, &expected, kills);
    let extra: usize = duplicates.iter().map(|(_, n)| n - 1).sum();
    // Both nodes sent relay mail (a "delivery attempt" with a 250 in each log).
    let sent = |server: &mut TestServer| {
        plain_log(server)
            .lines()
            .filter(|l| l.contains("delivery attempt") && l.contains("reply=250"))
            .count()
    };
    let (by_a, by_b) = (sent(&mut a), sent(&mut b));
    let errors: Vec<String> = plain_log(&mut b)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .take(5)
        .map(str::to_string)
        .collect();
    assert!(
        by_b > 0,
        "B delivered while A was down, yet its log has no delivery attempt"
    );
    eprintln!(
        "pg cluster drain: {COUNT} messages, {kills} kills of node A, {toggles} primary toggles, \
         sent by B {by_b} / by A's last run {by_a}, {extra} duplicate(s) {duplicates:?}, \
         B's first errors {errors:?}, whole test {:.1?}",
        started.elapsed()
    );
}

/// A session on node A still shows a message a session on node B expunged: steps told
/// by the test on stdin, each reported on stdout.
const HELD_ACROSS: &str = r#"
import imaplib, ssl, sys
ca, imaps_a, imaps_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
def connect(port):
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=30)
    m.login("anna@example.com", "Correct1horse")
    return m
def step(name):
    print(name, flush=True)
    sys.stdin.readline()
a, b = connect(imaps_a), connect(imaps_b)
for round in (1, 2):
    a.select("INBOX")
    b.select("INBOX")
    b.store("2", "+FLAGS.SILENT", "(\\Deleted)")
    print("expunged", b.expunge()[1], flush=True)
    # Not told yet (no NOOP): message 2 is still there for A, with its text.
    typ, data = a.fetch("2", "(UID BODY.PEEK[TEXT])")
    print("fetch", typ, data[0][0].decode(), data[0][1].decode().strip(), flush=True)
    if round == 1:
        step("held")
        a.noop()
        print("told", a.untagged_responses.pop("EXPUNGE", None), flush=True)
        step("released")
step("kill me")
b.logout()
"#;

/// Issue 14 item 11 on a shared store: a FETCH on node A of a message a session on node
/// B expunged answers the message's data, as on one node (the hold is a row of the
/// store, `storage/src/view_holds.rs`). The body is freed once A is told, and once A's
/// node is SIGKILLed with a view still holding it, when its lease has ended; the store
/// is consistent at the end.
#[test]
fn a_fetch_on_one_node_reads_a_message_expunged_through_the_other() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = two_nodes(dir.path());
    for n in 1..=4 {
        let out = python_ok(
            r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("someone@example.net", ["anna@example.com"], f"Subject: {sys.argv[2]}\r\n\r\nbody {sys.argv[2]}\r\n".encode())
s.quit()
print("sent")
"#,
            &[b.addr("smtp").port().to_string(), n.to_string()],
        );
        assert!(out.contains("sent"), "{out}");
    }
    let held = || pg::query(dir.path(), "SELECT count(*) FROM understudy_held");
    let mut client = Command::new("python3")
        .arg("-c")
        .arg(HELD_ACROSS)
        .args([
            ca_cert().display().to_string(),
            a.addr("imaps").port().to_string(),
            b.addr("imaps").port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut until = |marker: &str| -> Vec<String> {
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == marker {
                return seen;
            }
            seen.push(line);
        }
        panic!("the client ended before {marker:?}: {seen:?}");
    };
    let seen = until("held");
    assert_eq!(
        seen,
        ["expunged [b'2']", "fetch OK 2 (UID 2 BODY[TEXT] {8} body 2"],
        "round 1"
    );
    assert_eq!(held(), "1", "B's expunge keeps the body for A's view");
    writeln!(stdin).unwrap();
    let seen = until("released");
    assert_eq!(seen, ["told [b'2']"]);
    wait_until(
        Duration::from_secs(10),
        "the body released once A was told",
        || held() == "0",
    );
    writeln!(stdin).unwrap();

    // Round 2: A's view holds UID 3 (message 2 now) when its node is SIGKILLed.
    let seen = until("kill me");
    assert_eq!(
        seen,
        ["expunged [b'2']", "fetch OK 2 (UID 3 BODY[TEXT] {8} body 3"],
        "round 2"
    );
    assert_eq!(held(), "1");
    a.kill();
    // A's lease (15 s) ends, then B's sweep (every 3 s) drops A's holds.
    wait_until(Duration::from_secs(60), "the dead node's hold released", || {
        held() == "0"
    });
    writeln!(stdin).unwrap();
    drop(stdin);
    assert!(client.wait().unwrap().success());
    assert_eq!(
        pg::query(
            dir.path(),
            "SELECT count(*) FROM understudy_view_holds WHERE substr(key, 1, 1) = 'h'"
        ),
        "0",
        "hold rows left"
    );
    b.stop();

    let store = understudy_storage::Store::open_postgres(
        &understudy_storage::PgOptions {
            url: pg::url_for(dir.path()),
            password: None,
            pool_size: 2,
            tls: understudy_storage::PgTls::Off,
        },
        understudy_storage::StoreOptions::default(),
        std::sync::Arc::new(understudy_storage::SystemClock),
    )
    .unwrap();
    // Every reference count equals its references (messages, the queue's copies for
    // the primary, held entries: none left).
    let report = store.check_integrity().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.messages, 2, "two messages left");
    assert!(store.held_messages().unwrap().is_empty());
}
