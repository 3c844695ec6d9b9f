//! Two nodes on one PostgreSQL when things break (issue 17): one outage announced by one
//! set of four alerts while the leading node is SIGKILLed twice, and PostgreSQL itself
//! stopped and started again under SMTP load through both nodes. On failure each test
//! prints both nodes' log tails (and the alerts received), so a rare timeout says why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::e2e::{add_domain, delivery_config, queue_len, send_many};
use crate::harness::*;
use crate::postgres::pg::OwnServer;
use crate::postgres::{store_config, store_section};
use crate::sink::{header, DumpSink};

const LEADS: &str = "store: this node leads";
const LOG_TAIL: usize = 60;
const NAMES: [&str; 2] = ["A", "B"];

/// Two nodes, and what the failure report needs: each node's log length at its last
/// start (so "leads" is read from the current run's lines) and the alerts sink.
struct Cluster {
    nodes: [TestServer; 2],
    since_start: [usize; 2],
    alerts: Option<PathBuf>,
    started: Instant,
}

impl Cluster {
    fn new(a: TestServer, b: TestServer, alerts: Option<&Path>) -> Cluster {
        Cluster {
            nodes: [a, b],
            since_start: [0, 0],
            alerts: alerts.map(Path::to_path_buf),
            started: Instant::now(),
        }
    }

    /// The node that holds the leader lock in its current run, if one says so.
    fn leader(&mut self) -> Option<usize> {
        (0..2).find(|&i| {
            let log = plain_log(&mut self.nodes[i]);
            let current = log.get(self.since_start[i]..).unwrap_or("");
            match (current.rfind(LEADS), current.rfind("no longer the leading node")) {
                (Some(led), Some(lost)) => led > lost,
                (Some(_), None) => true,
                _ => false,
            }
        })
    }

    fn wait_leader(&mut self, what: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "no node leads ({what})");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL node `i`, wait for the other one to take the lead, then start `i` again
    /// on the same store; returns the new leader.
    fn kill_and_restart(&mut self, i: usize, when: &str) -> usize {
        self.nodes[i].kill();
        self.since_start[i] = plain_log(&mut self.nodes[i]).len();
        let other = self.wait_leader("after a kill");
        assert_eq!(other, 1 - i);
        self.nodes[i].start_again();
        eprintln!(
            "{:>6.1?} {when}: node {} killed and restarted; node {} leads",
            self.started.elapsed(),
            NAMES[i],
            NAMES[other]
        );
        other
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let log = plain_log(node);
            // The driver's statement lines drown everything else at debug level.
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("tokio_postgres")).collect();
            eprintln!(
                "---- node {} log without tokio_postgres, last {LOG_TAIL} of {} lines ----\n{}",
                NAMES[i],
                lines.len(),
                lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
            );
            let engine: Vec<&&str> = lines
                .iter()
                .filter(|l| {
                    ["outage", "probe", "lead", "notice", "store:"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .filter(|l| !l.contains("admin command"))
                .collect();
            eprintln!(
                "---- node {}: outage monitor and leader lines, last {LOG_TAIL} ----\n{}",
                NAMES[i],
                engine[engine.len().saturating_sub(LOG_TAIL)..]
                    .iter()
                    .map(|l| **l)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if let Some(dir) = &self.alerts {
            eprintln!("---- alerts received ----");
            for (at, text) in DumpSink::messages_in(dir) {
                eprintln!(
                    "{at:?} {} {}",
                    header(&text, "message-id").unwrap_or_default(),
                    header(&text, "subject").unwrap_or_default()
                );
            }
        }
    }
}

/// (Message-ID, subject) of each alert received, the first copy of each, in order.
fn distinct_alerts(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (_, text) in DumpSink::messages_in(dir) {
        let id = header(&text, "message-id").unwrap_or_default();
        if !out.iter().any(|(seen, _)| *seen == id) {
            out.push((id, header(&text, "subject").unwrap_or_default()));
        }
    }
    out
}

fn alert_subjects(dir: &Path) -> Vec<String> {
    DumpSink::messages_in(dir)
        .iter()
        .filter_map(|(_, text)| header(text, "subject"))
        .collect()
}

/// One outage through two nodes on one PostgreSQL, the leading node SIGKILLed (and
/// started again) twice: once just as the outage engaged, once just as the primary came
/// back. The outage monitor runs on the leader only and records each decision as one
/// compare-and-set write (`Store::record_outage_change`), so whichever node saw what,
/// the alert recipients get exactly the four notices of one outage, in order, each
/// decided and queued once (one Message-ID each); the only repeat allowed is the queue's
/// own, a notice whose delivery a kill cut after the alert server's 250 (at most one
/// per kill, the same Message-ID).
#[test]
fn one_outage_gives_one_set_of_four_alerts_while_the_leader_is_killed_twice() {
    let started = Instant::now();
    let pg_dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut primary = DumpSink::start(&tmp.path().join("primary"));
    let alerts = DumpSink::start(&tmp.path().join("alerts"));
    let config = format!(
        "{}lease_secs = 3\n{}",
        delivery_config(&[("alerts.test", &alerts.addr())]),
        store_config(pg_dir.path())
    );
    let relay = primary.addr();
    let a = TestServer::setup(&config, |s| add_domain(s, &relay, "2"));
    let b = TestServer::setup(&config, |_| {});
    let mut cluster = Cluster::new(a, b, Some(&alerts.dir));
    let first = cluster.wait_leader("at start");

    primary.down();
    wait_until(Duration::from_secs(30), "the outage to engage", || {
        phase(&cluster.nodes[0], "example.com") == "outage"
    });
    // Kill 1: the leader that engaged the outage, at once.
    let second = cluster.kill_and_restart(first, "the outage engaged");
    // The first notice is out before the spooled mail comes (the notices' order at the
    // sink is the order of their queue entries only if none waits out a dead lease).
    wait_until(Duration::from_secs(30), "the first alert", || {
        !distinct_alerts(&alerts.dir).is_empty()
    });
    send_many(&cluster.nodes[0], "pca", 3);
    send_many(&cluster.nodes[1], "pcb", 3);
    wait_until(Duration::from_secs(30), "the spooling alert", || {
        distinct_alerts(&alerts.dir).len() >= 2
    });

    // Kill 2: the leader now, just as the primary is back (it is counting successes).
    primary.up();
    let leader = cluster.wait_leader("before the second kill");
    let last = cluster.kill_and_restart(leader, "the primary is up");
    wait_until(Duration::from_secs(60), "the drain to finish", || {
        phase(&cluster.nodes[0], "example.com") == "normal" && queue_len(&cluster.nodes[0]) == 0
    });
    // Every notice was delivered (the queue is empty); the sink writes the last one a
    // moment after its 250.
    wait_until(Duration::from_secs(30), "the four alerts", || {
        distinct_alerts(&alerts.dir).len() >= 4
    });
    // Each notice decided once: four Message-IDs, one of each kind, in order. A node
    // SIGKILLed between the alert server's 250 and recording it sends that same notice
    // (same Message-ID) again once its lease runs out, as any queue entry: at most one
    // such copy per kill, counted apart.
    let distinct = distinct_alerts(&alerts.dir);
    assert_eq!(
        distinct.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        [
            "[Understudy] example.com: primary mail server unreachable, outage engaged",
            "[Understudy] example.com: mail is being spooled during the outage",
            "[Understudy] example.com: primary reachable again, releasing spooled mail",
            "[Understudy] example.com: all spooled mail released, back to normal",
        ]
    );
    let copies = alert_subjects(&alerts.dir).len() - distinct.len();
    assert!(copies <= 2, "{copies} resent copies for 2 kills");
    let got = primary.message_id_counts(None);
    assert_eq!(got.len(), 6, "{got:?}");
    let history = cluster.nodes[1].admin_ok(&["outage", "status", "example.com", "--history"]);
    let transitions: Vec<&str> = history.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(transitions.len(), 3, "one outage: {history}");
    eprintln!(
        "pg cluster outage: 4 alerts, each decided once, {copies} resent after a kill mid-delivery, \
         leaders {} -> {} -> {}, whole test {:.1?}\n{history}",
        NAMES[first],
        NAMES[second],
        NAMES[last],
        started.elapsed()
    );
}

/// Senders on both nodes' MX ports without a pause, one line per reply to `out`:
/// `time node message-id reply` (reply: the code, or `dropped` for a connection that
/// ended without one, which is never counted as accepted). Stops when `stop` exists.
pub(crate) const SENDERS: &str = r#"
import smtplib, sys, threading, time, os
out, stop, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
lock = threading.Lock()
log = open(out, "a", buffering=1)
def record(node, mid, reply):
    with lock:
        log.write(f"{time.time():.3f} {node} {mid} {reply}\n")
def close(s):
    try:
        s.close()
    except Exception:
        pass
    return None
def sender(node, port, thread):
    n = 0
    s = None
    while not os.path.exists(stop):
        mid = f"load-{node}{thread}-{n}@outside.test"
        n += 1
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", port, timeout=20)
                s.ehlo("filter.outside.test")
            s.sendmail("sender@outside.test", ["anna@example.com"],
                       (f"From: sender@outside.test\r\nTo: anna@example.com\r\nSubject: load\r\n"
                        f"Message-ID: <{mid}>\r\n\r\nHello\r\n").encode())
            record(node, mid, "250")
        except smtplib.SMTPRecipientsRefused as e:
            record(node, mid, str(list(e.recipients.values())[0][0]))
            s = close(s)
        except smtplib.SMTPResponseException as e:
            record(node, mid, str(e.smtp_code))
            s = close(s)
        except Exception:
            record(node, mid, "dropped")
            s = close(s)
            time.sleep(0.05)
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass
threads = [threading.Thread(target=sender, args=(node, port, t))
           for node, port in zip("ab", ports) for t in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

/// Message-IDs in anna's INBOX, read over IMAP through one node.
pub(crate) const LIST_IDS: &str = r#"
import imaplib, ssl, sys, re
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=60)
m.login("anna@example.com", "Correct1horse")
m.select("INBOX", readonly=True)
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
for part in data:
    if isinstance(part, tuple):
        found = re.search(rb"<([^>]+)>", part[1])
        if found:
            print(found.group(1).decode())
m.logout()
"#;

pub(crate) struct Reply {
    pub(crate) at: f64,
    pub(crate) node: String,
    pub(crate) mid: String,
    pub(crate) code: String,
}

pub(crate) fn replies(path: &Path) -> Vec<Reply> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some(Reply {
                at: parts.next()?.parse().ok()?,
                node: parts.next()?.to_string(),
                mid: parts.next()?.to_string(),
                code: parts.next()?.to_string(),
            })
        })
        .collect()
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// PostgreSQL (a server of this test's own) stopped with a fast shutdown for a few
/// seconds and started again on the same port and data while senders keep sending to
/// both nodes' MX: while it is down every reply is a 4xx (or the connection ends with
/// none, which no sender counts as accepted), never a 250; everything answered 250 is in
/// the mailbox afterwards, read over IMAP through each node; and both nodes accept
/// again without being restarted.
#[test]
fn postgresql_restarted_under_smtp_load_loses_nothing_acknowledged() {
    let started = Instant::now();
    let mut pg = OwnServer::start();
    let pg_dir = tempfile::tempdir().unwrap();
    let config = store_section(&pg.url_for(pg_dir.path()));
    let a = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let b = TestServer::setup(&config, |_| {});
    let mut cluster = Cluster::new(a, b, None);
    cluster.wait_leader("at start");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("replies");
    let stop = tmp.path().join("stop");
    let senders = std::process::Command::new("python3")
        .args([
            "-c",
            SENDERS,
            out.to_str().unwrap(),
            stop.to_str().unwrap(),
            &cluster.nodes[0].addr("smtp").port().to_string(),
            &cluster.nodes[1].addr("smtp").port().to_string(),
        ])
        .spawn()
        .unwrap();
    let accepted_by = |node: &str, after: f64| {
        replies(&out)
            .iter()
            .filter(|r| r.node == node && r.code == "250" && r.at > after)
            .count()
    };
    wait_until(Duration::from_secs(60), "both nodes to accept", || {
        accepted_by("a", 0.0) >= 20 && accepted_by("b", 0.0) >= 20
    });

    let stopping_at = unix_now();
    pg.stop();
    let down_from = unix_now();
    // Down until each node has refused some mail with a 4xx (at least 3 s).
    let refused_by = |node: &str| {
        replies(&out)
            .iter()
            .filter(|r| r.node == node && r.code.starts_with('4') && r.at > down_from)
            .count()
    };
    wait_until(Duration::from_secs(60), "4xx from both nodes while down", || {
        refused_by("a") >= 3 && refused_by("b") >= 3 && unix_now() > down_from + 3.0
    });
    let down_until = unix_now();
    pg.start_again();
    let up_at = unix_now();
    wait_until(Duration::from_secs(60), "both nodes to accept again", || {
        accepted_by("a", up_at) >= 20 && accepted_by("b", up_at) >= 20
    });
    std::fs::write(&stop, b"").unwrap();
    let status = wait_output(senders, Duration::from_secs(60)).status;
    assert!(status.success(), "senders: {status}");
    let recovered_in = replies(&out)
        .iter()
        .filter(|r| r.code == "250" && r.at > up_at)
        .map(|r| r.at - up_at)
        .fold(f64::INFINITY, f64::min);

    let all = replies(&out);
    // A 250 for a commit made before the shutdown began may still be on its way: the
    // window starts half a second after PostgreSQL was gone.
    let while_down: Vec<&Reply> = all
        .iter()
        .filter(|r| r.at > down_from + 0.5 && r.at < down_until)
        .collect();
    let accepted_while_down: Vec<&&Reply> = while_down.iter().filter(|r| r.code == "250").collect();
    assert!(
        accepted_while_down.is_empty(),
        "250 while PostgreSQL was down: {:?}",
        accepted_while_down
            .iter()
            .map(|r| (&r.node, &r.mid, r.at - down_from))
            .collect::<Vec<_>>()
    );
    let other: Vec<&&Reply> = while_down
        .iter()
        .filter(|r| !r.code.starts_with('4') && r.code != "dropped")
        .collect();
    assert!(
        other.is_empty(),
        "replies while down that are neither 4xx nor a cut connection: {:?}",
        other.iter().map(|r| (&r.node, &r.code)).collect::<Vec<_>>()
    );
    let acknowledged: Vec<&str> = all
        .iter()
        .filter(|r| r.code == "250")
        .map(|r| r.mid.as_str())
        .collect();
    for (node, name) in cluster.nodes.iter().zip(NAMES) {
        let listed = python_ok(
            LIST_IDS,
            &[
                ca_cert().display().to_string(),
                node.addr("imaps").port().to_string(),
            ],
        );
        let in_mailbox: std::collections::HashSet<&str> = listed.lines().collect();
        let missing: Vec<&&str> = acknowledged
            .iter()
            .filter(|m| !in_mailbox.contains(**m))
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged with 250 but not in the mailbox (read through node {name}): {missing:?}"
        );
    }
    // Nobody restarted a node: a node leads again (the leader lock was taken anew).
    cluster.wait_leader("after PostgreSQL came back");
    let dropped = while_down.iter().filter(|r| r.code == "dropped").count();
    eprintln!(
        "pg restart under load: {} sent, {} acknowledged, {} answered while down (all 4xx, {dropped} \
         connection(s) cut without a reply, not counted), PostgreSQL down {:.1} s (stop took {:.1} s), \
         first 250 {:.1} s after it was back, whole test {:.1?}",
        all.len(),
        acknowledged.len(),
        while_down.len() - dropped,
        down_until - down_from,
        down_from - stopping_at,
        recovered_in,
        started.elapsed()
    );
}

/// The leading node's leader-lock connection killed in PostgreSQL
/// (`pg_terminate_backend`): that node stops leading at once (its log says so, and it
/// probes no more), the other one takes over the outage monitor within a few seconds and
/// probes the primary from then on; the first, which never left, does not lead again
/// while the other holds the lock.
#[test]
fn a_terminated_leader_lock_connection_hands_monitoring_to_the_other_node() {
    let started = Instant::now();
    let pg_dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let primary = DumpSink::start(&tmp.path().join("primary"));
    let store = store_config(pg_dir.path());
    let schema = store
        .split("search_path=")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_string();
    let config = format!("{}{store}", delivery_config(&[]));
    let relay = primary.addr();
    let a = TestServer::setup(&config, |s| add_domain(s, &relay, "2"));
    let b = TestServer::setup(&config, |_| {});
    let mut cluster = Cluster::new(a, b, None);
    let first = cluster.wait_leader("at start");
    let probes = |cluster: &mut Cluster, i: usize, after: usize| {
        plain_log(&mut cluster.nodes[i])
            .get(after..)
            .unwrap_or("")
            .matches("probe succeeded")
            .count()
    };
    wait_until(Duration::from_secs(30), "the leader to probe", || {
        probes(&mut cluster, first, 0) >= 2
    });

    let terminated_at = Instant::now();
    crate::postgres::pg::psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = 72150173 AND objid::int = hashtext('{schema}') AND granted"
    ));
    let other = 1 - first;
    wait_until(Duration::from_secs(15), "the other node to lead", || {
        cluster.leader() == Some(other)
    });
    let took_over = terminated_at.elapsed();
    let log = plain_log(&mut cluster.nodes[first]);
    let stepped_down = log
        .rfind("no longer the leading node")
        .expect("the first node says it no longer leads");
    let seen = plain_log(&mut cluster.nodes[other]).len();
    wait_until(Duration::from_secs(15), "the new leader to probe", || {
        probes(&mut cluster, other, seen) >= 3
    });
    // The first node, alive all along, neither leads nor probes while the other leads.
    let log = plain_log(&mut cluster.nodes[first]);
    let after = &log[stepped_down..];
    assert!(!after.contains(LEADS), "the first node led again:\n{after}");
    assert_eq!(
        probes(&mut cluster, first, stepped_down),
        0,
        "the first node probed after it stopped leading:\n{after}"
    );
    eprintln!(
        "pg leader lock terminated: node {} stepped down, node {} led {:.1?} later, whole test {:.1?}",
        NAMES[first],
        NAMES[other],
        took_over,
        started.elapsed()
    );
}
