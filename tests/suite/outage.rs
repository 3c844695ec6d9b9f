//! Outage engine, detection side: Postfix's `smtp-sink` stands in for the primary; the
//! monitor engages when it stops and recovers when it comes back, the notifications are
//! queued, and the outage/queue/track commands show all of it.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A real SMTP server playing the primary: `smtp-sink` on a fixed loopback port, killed
/// on drop.
struct Sink {
    port: u16,
    child: Option<Child>,
}

impl Sink {
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start(port: u16) -> Sink {
        let mut sink = Sink { port, child: None };
        sink.up();
        sink
    }

    fn up(&mut self) {
        assert!(self.child.is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new("/usr/sbin/smtp-sink")
                .args(["-u", "root", &format!("127.0.0.1:{}", self.port), "10"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start smtp-sink (Debian package postfix)");
            // It listens at once, or exits (port still held by the last one).
            loop {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(Instant::now() < deadline, "smtp-sink did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "smtp-sink kept failing to start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.down();
    }
}

/// Waits for a log line with every one of `needles` (the log may colour field names).
fn wait_for_log(server: &mut TestServer, needles: &[&str], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let log = server.log();
        if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} within {limit:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one message for anna@example.com to the MX listener; returns its Message-ID.
fn send_one(server: &TestServer, message_id: &str) {
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("bob@example.net", ["anna@example.com"],
           ("Subject: during the outage\r\nMessage-ID: <%s>\r\n\r\nHello\r\n" % sys.argv[2]).encode())
s.quit()
"#;
    python_ok(
        script,
        &[server.addr("smtp").port().to_string(), message_id.to_string()],
    );
}

fn queue_ids(list: &str, kind: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(kind))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn primary_down_engages_outage_and_back_up_drains_to_normal() {
    let mut sink = Sink::start(Sink::free_port());
    let relay = format!("127.0.0.1:{}", sink.port);
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &relay,
            "--probe-interval",
            "1",
            "--failures",
            "2",
            "--successes",
            "2",
            "--alert",
            "ops@example.net",
            "--alert",
            "noc@example.org",
        ]);
        s.add_user("anna@example.com", PASSWORD);
    });
    // The primary is up: probes succeed, nothing changes.
    wait_for_log(&mut server, &["probe succeeded"], Duration::from_secs(20));

    sink.down();
    wait_for_log(
        &mut server,
        &["outage state changed", "Outage", "2 failed probe(s)"],
        Duration::from_secs(30),
    );
    // Mail arriving during the outage is spooled, and that is announced once.
    send_one(&server, "spooled-1@example.net");
    wait_for_log(
        &mut server,
        &["notice queued", "SpoolingBegan"],
        Duration::from_secs(20),
    );

    // A restart in the middle of the outage stays in it.
    server.stop();
    let status = server.admin_ok(&["outage", "status"]);
    assert!(status.contains("example.com"), "{status}");
    let line = status.lines().find(|l| l.starts_with("example.com")).unwrap();
    assert!(line.contains(" outage "), "{status}");
    assert!(line.contains("2 failed probe(s) in a row"), "{status}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[5], "1", "one message queued: {status}");
    let list = server.admin_ok(&["queue", "list", "example.com"]);
    let relay_ids = queue_ids(&list, "relay");
    assert_eq!(relay_ids.len(), 1, "{list}");
    // No redeliverer on this branch: drop the spooled message so draining can finish.
    server.admin_ok(&["queue", "purge", &relay_ids[0], "--yes"]);

    server.restart();
    wait_for_log(
        &mut server,
        &["resuming outage state", "Outage"],
        Duration::from_secs(20),
    );
    sink.up();
    wait_for_log(
        &mut server,
        &["outage state changed", "Draining", "successful probe(s)"],
        Duration::from_secs(30),
    );
    wait_for_log(
        &mut server,
        &["outage state changed", "Normal", "all spooled mail released"],
        Duration::from_secs(20),
    );
    server.stop();

    let status = server.admin_ok(&["outage", "status", "--history"]);
    let line = status.lines().find(|l| l.starts_with("example.com")).unwrap();
    assert!(line.contains(" normal "), "{status}");
    let transitions: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.split_once("UTC  ").unwrap().1)
        .collect();
    assert_eq!(transitions.len(), 3, "{status}");
    assert!(
        transitions[0].starts_with("normal -> outage: 2 failed probe(s)"),
        "{status}"
    );
    assert!(
        transitions[1].starts_with("outage -> draining: primary reachable again"),
        "{status}"
    );
    assert!(
        transitions[2].starts_with("draining -> normal: all spooled mail released"),
        "{status}"
    );

    // The four notices, in order, each to both alert recipients (tracking keeps them
    // whatever outbound delivery has done with the queue entries since).
    let track = server.admin_ok(&["track", "--address", "noc@example.org"]);
    let notices: Vec<&str> = track
        .lines()
        .filter_map(|l| {
            l.split_once("notice '")
                .map(|(_, r)| r.split('\'').next().unwrap())
        })
        .collect();
    assert_eq!(notices, ["lost", "spooling", "restored", "released"], "{track}");
    assert!(track.contains("ops@example.net, noc@example.org"), "{track}");
}

#[test]
fn outage_queue_and_track_commands() {
    // The outage is started while the server is stopped (before it ever runs); the
    // server adopts it. Counts below come from `queue list` at the time, since outbound
    // delivery (another part of the server) may already have sent the notices.
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com", "--alert", "ops@example.net"]);
        s.add_user("anna@example.com", PASSWORD);
        let out = s.admin_ok(&["outage", "start", "example.com", "--reason", "maintenance window"]);
        assert!(out.contains("example.com: outage since"), "{out}");
        assert!(out.contains("(maintenance window)"), "{out}");
    });
    wait_for_log(
        &mut server,
        &["resuming outage state", "Outage"],
        Duration::from_secs(20),
    );
    send_one(&server, "cli-1@example.net");
    wait_for_log(
        &mut server,
        &["notice queued", "SpoolingBegan"],
        Duration::from_secs(20),
    );
    server.stop();

    let again = server.admin_ok(&["outage", "start", "example.com"]);
    assert!(again.contains("already in a manual outage"), "{again}");
    let status = server.admin_ok(&["outage", "status"]);
    assert!(status.starts_with("DOMAIN"), "{status}");
    let line = status.lines().find(|l| l.starts_with("example.com")).unwrap();
    assert!(line.contains(" outage "), "{status}");
    assert!(line.contains("manual: maintenance window"), "{status}");
    assert_eq!(line.split_whitespace().nth(5), Some("1"), "{status}");

    let list = server.admin_ok(&["queue", "list"]);
    assert!(list.starts_with("ID  KIND"), "{list}");
    assert!(list.contains("waiting: outage"), "{list}");
    let relay = queue_ids(&list, "relay");
    assert_eq!(relay.len(), 1, "{list}");
    assert!(list.contains("<bob@example.net>"), "{list}");
    let entries = queue_ids(&list, "relay").len() + queue_ids(&list, "notification").len();
    assert!(list.contains(&format!("{entries} entr")), "{list}");

    let show = server.admin_ok(&["queue", "show", &relay[0]]);
    assert!(show.contains("kind:          relay"), "{show}");
    assert!(show.contains("message-id:    <cli-1@example.net>"), "{show}");
    assert!(show.contains("anna@example.com"), "{show}");
    assert!(show.contains("pending"), "{show}");
    assert!(show.contains("received"), "{show}");

    // Notices to the alert recipients are never held: only the relay entry is.
    let held = server.admin_ok(&["queue", "hold", "example.com"]);
    let plural = |n: usize| if n == 1 { "entry" } else { "entries" };
    assert!(held.starts_with("1 entry of example.com held\n"), "{held}");
    let list = server.admin_ok(&["queue", "list", "example.com"]);
    assert_eq!(list.matches("held").count(), 1, "{list}");
    let status = server.admin_ok(&["outage", "status", "example.com"]);
    assert!(status.contains("queue held: 1 entry waiting"), "{status}");
    let released = server.admin_ok(&["queue", "release", "example.com"]);
    assert_eq!(released.trim(), "1 entry of example.com released");
    // The domain is still in its outage: a retry cannot send the relay entry and says so.
    let retried = server.admin_ok(&["queue", "retry", &relay[0]]);
    assert!(retried.starts_with("0 entries due now"), "{retried}");
    assert!(
        retried.contains(&format!("1 waiting for the end of their domain's outage, left as they are (`outage stop DOMAIN` releases them): {}", relay[0])),
        "{retried}"
    );
    let retried = server.admin_ok(&["queue", "retry", "example.com"]);
    let others = entries - 1;
    assert!(
        retried.starts_with(&format!("{others} {} due now", plural(others))),
        "{retried}"
    );

    let refused = server.admin(&["queue", "purge", &relay[0]], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let track = server.admin_ok(&["track", "--message-id", "cli-1@example.net"]);
    assert!(track.contains("received"), "{track}");
    assert!(track.contains("from <bob@example.net>"), "{track}");
    assert!(track.contains("stored"), "{track}");
    assert!(track.contains("queued"), "{track}");
    assert!(
        track.contains(&format!("now: queue {} (relay) for anna@example.com", relay[0])),
        "{track}"
    );
    let by_address = server.admin_ok(&["track", "--address", "bob@example.net", "--since", "2020-01-01"]);
    assert!(by_address.contains("from <bob@example.net>"), "{by_address}");
    let none = server.admin_ok(&["track", "--address", "bob@example.net", "--since", "2999-01-01"]);
    assert_eq!(none.trim(), "no message found");

    server.admin_ok(&["queue", "purge", &relay[0], "--yes"]);
    let track = server.admin_ok(&["track", "--message-id", "<cli-1@example.net>"]);
    assert!(track.contains("purged"), "{track}");
    assert!(!track.contains("now: queue"), "{track}");

    let out = server.admin_ok(&["outage", "stop", "example.com"]);
    assert!(out.contains("example.com: draining since"), "{out}");
    let refused = server.admin(&["outage", "stop", "example.com"], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not in an outage"));

    // The server notices the stop made while it was down: the relay queue is empty, so
    // draining ends on its first look.
    server.restart();
    wait_for_log(
        &mut server,
        &["outage state changed", "Normal", "all spooled mail released"],
        Duration::from_secs(20),
    );
    server.stop();
    let status = server.admin_ok(&["outage", "status", "--history"]);
    let line = status.lines().find(|l| l.starts_with("example.com")).unwrap();
    assert!(line.contains(" normal "), "{status}");
    assert_eq!(status.matches(" -> ").count(), 3, "{status}");
    let track = server.admin_ok(&["track", "--address", "ops@example.net"]);
    let notices: Vec<&str> = track
        .lines()
        .filter_map(|l| {
            l.split_once("notice '")
                .map(|(_, r)| r.split('\'').next().unwrap())
        })
        .collect();
    assert_eq!(notices, ["lost", "spooling", "restored", "released"], "{track}");
}
