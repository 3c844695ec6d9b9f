//! A stand-in SMTP server for the end-to-end tests: Postfix's `smtp-sink` on a fixed
//! loopback port, dumping each accepted message to its own file in a directory, that can
//! be stopped and started again on the same port (a primary going down and coming back).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `smtp-sink` writing every message to `dir`; killed on drop.
pub struct DumpSink {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl DumpSink {
    /// Starts a sink on a free port dumping into `dir` (created).
    pub fn start(dir: &Path) -> DumpSink {
        std::fs::create_dir_all(dir).unwrap();
        let mut sink = DumpSink {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        sink.up();
        sink
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Starts listening again; retries while the port is still held by the last one.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "sink already running");
        let deadline = Instant::now() + Duration::from_secs(20);
        // smtp-sink refuses to run as root without a user to switch to.
        let uid = Command::new("id").arg("-un").output().unwrap();
        let root = String::from_utf8_lossy(&uid.stdout).trim() == "root";
        loop {
            let mut cmd = Command::new("/usr/sbin/smtp-sink");
            if root {
                cmd.args(["-u", "root"]);
            }
            let mut child = cmd
                .arg("-d")
                .arg(format!("{}/%M.", self.dir.display()))
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("64")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
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

    /// Stops listening (SIGKILL: connections in progress are cut).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every dumped message with the time its file was last written, oldest first.
    pub fn messages(&self) -> Vec<(SystemTime, String)> {
        Self::messages_in(&self.dir)
    }

    /// As `messages`, for a sink's directory (readable while another thread owns it).
    pub fn messages_in(dir: &Path) -> Vec<(SystemTime, String)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let at = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((at, text));
            }
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }

    /// How many dumped messages carry each Message-ID.
    pub fn message_id_counts(&self, complete_marker: Option<&str>) -> BTreeMap<String, usize> {
        Self::counts_in(&self.dir, complete_marker)
    }

    /// As `message_id_counts`, for a sink's directory. With `complete_marker`, only
    /// messages whose text reached it count: a sink killed mid-DATA leaves a stub.
    pub fn counts_in(dir: &Path, complete_marker: Option<&str>) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, text) in Self::messages_in(dir) {
            if complete_marker.is_some_and(|m| !text.contains(m)) {
                continue;
            }
            if let Some(id) = header(&text, "message-id") {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// A flapping primary: a thread that takes the sink down after `up` and brings it back
/// after `down`, again and again until `stop`, then leaves it up; it returns how often it
/// toggled. Each toggle is logged with the messages (complete up to `marker`) received.
pub fn flap(
    sink: Arc<Mutex<DumpSink>>,
    up: Duration,
    down: Duration,
    stop: Arc<AtomicBool>,
    marker: &'static str,
    started: Instant,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut toggles = 0;
        while !stop.load(Ordering::SeqCst) {
            let is_up = sink.lock().unwrap().is_up();
            std::thread::sleep(if is_up { up } else { down });
            let mut sink = sink.lock().unwrap();
            if sink.is_up() {
                sink.down();
            } else {
                sink.up();
            }
            toggles += 1;
            eprintln!(
                "{:>6.1?} toggle {toggles}: up={} delivered {}",
                started.elapsed(),
                sink.is_up(),
                DumpSink::counts_in(&sink.dir, Some(marker)).len()
            );
        }
        let mut sink = sink.lock().unwrap();
        if !sink.is_up() {
            sink.up();
        }
        toggles
    })
}

/// Asserts that the primary holds every one of `expected` (by Message-ID) and nothing
/// else, with at most `kills` extra copies in all (one per crash of a sender); returns
/// the Message-IDs held more than once, with their counts.
pub fn assert_all_with_one_duplicate_per_kill(
    counts: &BTreeMap<String, usize>,
    expected: &[String],
    kills: usize,
) -> Vec<(String, usize)> {
    let missing: Vec<&String> = expected.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(counts.len(), expected.len(), "{counts:?}");
    let duplicates: Vec<(String, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    let extra: usize = duplicates.iter().map(|(_, n)| n - 1).sum();
    assert!(
        extra <= kills,
        "{extra} duplicate deliveries after {kills} kills: {duplicates:?}"
    );
    duplicates
}

impl Drop for DumpSink {
    fn drop(&mut self) {
        self.down();
    }
}

/// The first value of header `name` in a dumped message, folded lines joined.
pub fn header(text: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((key, rest)) = line.split_once(':') {
            if key.eq_ignore_ascii_case(name) {
                value = Some(rest.trim().to_string());
            }
        }
    }
    value
}
