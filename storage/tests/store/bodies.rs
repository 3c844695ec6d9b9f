//! Property test of body reference counting: random interleavings of deliver, APPEND
//! (one message, or several in one batch), COPY, MOVE (also into the same mailbox),
//! expunge, queue completion and mailbox deletion, with bodies repeated on purpose, and
//! IMAP views holding what they show (`view_holds.rs`: opened, caught up, dropped), from
//! several threads at once, with the store reopened between rounds and, in a second
//! test, SIGKILLed at a random point of the workload. After every round: every message
//! record's and held entry's body exists and every reference count equals its
//! references (`Store::check_integrity`); every message a view shows stays readable;
//! once the views are gone (dropped, or the process killed and the store reopened) no
//! held entry is left.
//!
//! Seeds are printed; `BODIES_SEED=n` replays one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use understudy_storage::integrity::IntegrityReport;
use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::*;

/// splitmix64: small, seedable, good enough to pick operations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn open_unsynced(dir: &std::path::Path) -> Store {
    open_unsynced_at(dir, 1_700_000_000)
}

/// [`open_unsynced`] with the store's clock at `now`.
fn open_unsynced_at(dir: &std::path::Path, now: i64) -> Store {
    // Process kills, not power cuts, are simulated here: the OS keeps unsynced writes,
    // and skipping fsync keeps the test fast.
    let options = StoreOptions {
        sync_writes: false,
        cache_bytes: 8 << 20,
        write_buffer_bytes: 8 << 20,
        ..StoreOptions::default()
    };
    // The SIGKILL test below spawns children while this file's other test runs: between
    // fork and exec a child holds a copy of every descriptor, the directory lock's
    // included, so an open right after a drop may see `Locked` for a moment. Wait for
    // the lock with a deadline instead of failing on that window.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let clock = Arc::new(ManualClock::new(now));
        match super::open_store(dir, options.clone(), clock) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now()
            }
            result => {
                let store = result.unwrap();
                // Summaries and sort keys are written too, so the integrity check sees
                // them follow their bodies and messages.
                store.set_summariser(Arc::new(|body: &[u8]| BodySummary {
                    bytes: body[..body.len().min(16)].to_vec(),
                    sent_date: None,
                }));
                return store;
            }
        }
    }
}

/// Two users of one domain; returns their ids.
fn populate(store: &Store) -> Vec<u64> {
    store.add_domain(&Domain::new("example.com")).unwrap();
    ["anna", "bob"]
        .iter()
        .map(|n| {
            store
                .create_user(&format!("{n}@example.com"), n, None)
                .unwrap()
                .id
        })
        .collect()
}

fn users(store: &Store) -> Vec<u64> {
    ["anna", "bob"]
        .iter()
        .map(|n| {
            store
                .user_by_address(&format!("{n}@example.com"))
                .unwrap()
                .unwrap()
                .id
        })
        .collect()
}

/// A few bodies shared on purpose, and now and then a fresh one.
fn body(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(70) {
        format!("Subject: shared {}\r\n\r\nsame text\r\n", rng.below(4)).into_bytes()
    } else {
        format!("Subject: distinct {}\r\n\r\nown text\r\n", rng.next()).into_bytes()
    }
}

/// UIDs of a mailbox picked with repeats and with some that do not exist.
fn some_uids(store: &Store, user: u64, mailbox: u64, rng: &mut Rng) -> Vec<u32> {
    let Ok((_, messages)) = store.messages(user, mailbox) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 => out.push(1 + rng.below(500) as u32),
            _ if !messages.is_empty() => {
                let uid = messages[rng.below(messages.len())].uid;
                out.push(uid);
                if rng.chance(30) {
                    out.push(uid);
                }
            }
            _ => {}
        }
    }
    out
}

/// An IMAP session's selected mailbox as the store sees it: the hold, and the UIDs the
/// view shows (read after the hold was taken, or at its last catch-up).
struct View {
    hold: ViewHold,
    user: u64,
    shown: Vec<u32>,
}

impl View {
    /// What a view does at SELECT: hold first, then read, then advance to what it read.
    fn open(store: &Store, user: u64, mailbox: u64) -> Option<View> {
        let hold = store.hold_view(mailbox).unwrap()?;
        let mut view = View {
            hold,
            user,
            shown: Vec::new(),
        };
        view.catch_up(store).then_some(view)
    }

    /// A catch-up that tells the client everything: the view shows what exists now.
    fn catch_up(&mut self, store: &Store) -> bool {
        let Ok((mailbox, messages)) = store.messages(self.user, self.hold.mailbox()) else {
            return false;
        };
        self.shown = messages.iter().map(|m| m.uid).collect();
        self.hold.advance(mailbox.highest_modseq);
        true
    }

    /// Every message the view shows is readable, whoever expunged it meanwhile (unless
    /// its whole mailbox was deleted).
    fn check(&self, store: &Store, seed: u64) {
        for uid in &self.shown {
            match store.message_body_or_held(self.user, self.hold.mailbox(), *uid) {
                Ok(_) => {}
                Err(StoreError::NotFound(_)) if store.mailbox(self.user, self.hold.mailbox()).is_err() => {}
                Err(err) => panic!(
                    "seed {seed}: a view of mailbox {} shows uid {uid}, which cannot be read: {err}",
                    self.hold.mailbox()
                ),
            }
        }
    }
}

/// Opens, catches up, checks or drops one of this thread's views.
fn view_step(store: &Store, users: &[u64], views: &mut Vec<View>, rng: &mut Rng, seed: u64) {
    match rng.below(4) {
        0 if views.len() < 4 => {
            let user = users[rng.below(users.len())];
            let Ok(boxes) = store.mailboxes(user) else { return };
            let mailbox = boxes[rng.below(boxes.len())].id;
            if let Some(view) = View::open(store, user, mailbox) {
                views.push(view);
            }
        }
        1 if !views.is_empty() => {
            let i = rng.below(views.len());
            if !views[i].catch_up(store) {
                views.swap_remove(i);
            }
        }
        2 if !views.is_empty() => {
            views.swap_remove(rng.below(views.len()));
        }
        _ => {
            for view in views.iter() {
                view.check(store, seed);
            }
        }
    }
}

/// One random operation. Errors a concurrent writer may cause (a mailbox deleted under
/// us) are part of the game; damage is what `check_integrity` looks for.
fn step(store: &Store, users: &[u64], views: &mut Vec<View>, rng: &mut Rng, seed: u64) {
    if rng.chance(20) {
        return view_step(store, users, views, rng, seed);
    }
    let user = users[rng.below(users.len())];
    let Ok(boxes) = store.mailboxes(user) else { return };
    let pick = |rng: &mut Rng| boxes[rng.below(boxes.len())].id;
    match rng.below(9) {
        0 | 1 => {
            let body = body(rng);
            let mut to = vec![user];
            if rng.chance(40) {
                to.push(users[rng.below(users.len())]);
            }
            let queue = if rng.chance(50) {
                vec![NewQueueEntry {
                    kind: QueueKind::Relay,
                    domain: "example.com".into(),
                    mail_from: "someone@elsewhere.example".into(),
                    recipients: vec![("anna@example.com".into(), Some(users[0]))],
                    next_attempt: 0,
                    sent_copy: false,
                }]
            } else {
                Vec::new()
            };
            let _ = store.deliver(&DeliveryRequest {
                body: &body,
                users: to,
                queue,
                message_id: None,
                summary: "property test".into(),
            });
        }
        2 if rng.chance(50) => {
            let body = body(rng);
            let _ = store.append(user, pick(rng), &body, 0, &[], None);
        }
        2 => {
            // MULTIAPPEND: one batch, the first body repeated on purpose.
            let bodies: Vec<Vec<u8>> = (0..1 + rng.below(3)).map(|_| body(rng)).collect();
            let messages: Vec<NewMessage<'_>> = bodies
                .iter()
                .chain(bodies.first())
                .map(|body| NewMessage {
                    body,
                    flags: 0,
                    keywords: &[],
                    internal_date: None,
                })
                .collect();
            let _ = store.append_many(user, pick(rng), &messages);
        }
        3 => {
            let from = pick(rng);
            let uids = some_uids(store, user, from, rng);
            let _ = store.copy(user, from, &uids, pick(rng));
        }
        4 => {
            let from = pick(rng);
            let uids = some_uids(store, user, from, rng);
            // Sometimes into the same mailbox (RFC 6851 allows it).
            let to = if rng.chance(25) { from } else { pick(rng) };
            let _ = store.move_messages(user, from, &uids, to);
        }
        5 | 6 => {
            let from = pick(rng);
            let uids = some_uids(store, user, from, rng);
            let _ = store.expunge(user, from, &uids);
        }
        7 => {
            if let Ok(entries) = store.queue_entries(None) {
                if !entries.is_empty() {
                    let _ = store.purge(entries[rng.below(entries.len())].id);
                }
            }
        }
        _ => {
            // A scratch mailbox deleted while others deliver, copy and move into it.
            let name = format!("scratch{}", rng.below(2));
            if rng.chance(50) {
                let _ = store.create_mailbox(user, &name, None);
            } else {
                let _ = store.delete_mailbox(user, &name);
            }
        }
    }
}

fn assert_consistent(store: &Store, when: &str, seed: u64) -> IntegrityReport {
    let report = store.check_integrity().unwrap();
    assert!(
        report.is_ok(),
        "seed {seed}, {when}: {} problems, first: {:#?}",
        report.problems.len(),
        &report.problems[..report.problems.len().min(10)]
    );
    report
}

fn seeds() -> Vec<u64> {
    match std::env::var("BODIES_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => super::default_seeds(),
    }
}

#[test]
fn bodies_and_reference_counts_survive_random_concurrent_interleavings() {
    for seed in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let users = populate(&open_unsynced(dir.path()));
        let mut total_messages = 0;
        let mut total_held = 0;
        for round in 0..6 {
            let store = open_unsynced(dir.path());
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let store = store.clone();
                    let users = users.clone();
                    std::thread::spawn(move || {
                        let mut rng = Rng(seed * 1_000_003 + round * 101 + t);
                        let mut views = Vec::new();
                        for _ in 0..150 {
                            step(&store, &users, &mut views, &mut rng, seed);
                        }
                        views
                    })
                })
                .collect();
            let mut views = Vec::new();
            for t in threads {
                views.extend(t.join().unwrap());
            }
            // With the views still open: held bodies counted like the others, and every
            // message a view shows still readable.
            assert_consistent(&store, &format!("after round {round}, views open"), seed);
            for view in &views {
                view.check(&store, seed);
            }
            let held_open = store.held_messages().unwrap().len();
            total_held += held_open;
            drop(views);
            // The last holder gone, nothing is held any more.
            let held = store.held_messages().unwrap();
            assert!(
                held.is_empty(),
                "seed {seed}, round {round}: {} entries held with no view left (of {held_open})",
                held.len()
            );
            let report = assert_consistent(&store, &format!("after round {round}"), seed);
            total_messages = report.messages;
            // Reopen: what was written is what is read back, counts included.
            drop(store);
            let store = open_unsynced(dir.path());
            assert_consistent(&store, &format!("after reopening, round {round}"), seed);
        }
        eprintln!(
            "seed {seed}: consistent, {total_messages} messages at the end, {total_held} held for views at round ends"
        );
    }
}

/// The workload of the SIGKILL test, run in a child process (ignored when run alone).
#[test]
#[ignore = "child process of bodies_survive_sigkill_at_random_points"]
fn random_workload_child() {
    let Ok(dir) = std::env::var("BODIES_CHILD_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("BODIES_CHILD_SEED").unwrap().parse().unwrap();
    let store = open_unsynced(std::path::Path::new(&dir));
    let users = users(&store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            let users = users.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed * 7919 + t);
                let mut views = Vec::new();
                for i in 0u64..20_000 {
                    step(&store, &users, &mut views, &mut rng, seed);
                    if i % 20 == 0 {
                        println!("progress {t} {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn bodies_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    populate(&open_unsynced(dir.path()));
    let exe = std::env::current_exe().unwrap();
    for seed in seeds() {
        let mut rng = Rng(seed);
        for kill in 0..4 {
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "bodies::random_workload_child",
                    "--ignored",
                    "--nocapture",
                ])
                .envs(super::child_env())
                .env("BODIES_CHILD_DIR", dir.path())
                .env("BODIES_CHILD_SEED", (seed * 10 + kill).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Kill after a random number of progress reports: somewhere in the middle of
            // the four threads' operations, never at a quiet point.
            let wanted = 3 + rng.below(30);
            let stdout = child.stdout.take().unwrap();
            let seen = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("progress"))
                .take(wanted)
                .count();
            child.kill().unwrap();
            child.wait().unwrap();
            assert_eq!(seen, wanted, "the workload child stopped early");
            let mut store = open_unsynced(dir.path());
            assert_consistent(&store, &format!("after SIGKILL {kill}"), seed);
            if store.is_shared() {
                // Another node's sessions might still need what is held, so nothing is
                // released at open: the killed node's holds go once its lease has ended.
                drop(store);
                store = open_unsynced_at(dir.path(), 1_700_000_000 + NODE_LEASE_SECS + 1);
                store.sweep_view_holds().unwrap();
                assert_consistent(&store, &format!("after the sweep, SIGKILL {kill}"), seed);
            }
            // The killed process's views held bodies; no session survives it.
            assert_eq!(
                store.held_messages().unwrap().len(),
                0,
                "seed {seed}: held after SIGKILL {kill}"
            );
        }
    }
}
