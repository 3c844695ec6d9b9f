//! `understudy store copy` cut off and resumed: a RocksDB store with a few thousand
//! records copied into PostgreSQL, the copy SIGKILLed mid-way (as soon as its progress
//! lines say it is between 0 and the total), run again: it resumes where the killed run
//! stopped, not from the beginning, and verifies counts and checksums; then the same
//! back from PostgreSQL into a new RocksDB directory, whose summary equals the original.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;
// The one throwaway PostgreSQL of this test binary (a second `mod` of the file would
// start a second server in the same directory).
use crate::postgres::pg;

const MESSAGES: usize = 150;
/// Small batches, so the copy takes many synced writes and the kill lands mid-way.
const BATCH: &str = "10";

const DELIVER: &str = r#"
import smtplib, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
for n in range(count):
    s.sendmail("someone@example.net", ["anna@example.com"],
               f"Subject: copy {n}\r\nMessage-ID: <copy{n}@example.net>\r\n\r\nbody {n}\r\n".encode())
s.quit()
print("sent", count)
"#;

fn copy_args(from: &str, to: &str) -> Vec<String> {
    [
        "store",
        "copy",
        "--from",
        from,
        "--to",
        to,
        "--tls",
        "off",
        "--batch-records",
        BATCH,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `progress: DONE/TOTAL rows` as numbers.
fn progress(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("progress: ")?.strip_suffix(" rows")?;
    let (done, total) = rest.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// Starts a copy and SIGKILLs it once a progress line shows it between 0 and the total;
/// returns the records that line said were copied (synced in the target).
fn copy_killed_mid_way(from: &str, to: &str) -> u64 {
    let mut child = Command::new(BIN)
        .args(copy_args(from, to))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let copied = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no progress line with the copy mid-way ({e}); saw {seen:?}"));
        seen.push(line.clone());
        if let Some((done, total)) = progress(&line) {
            assert!(
                done < total,
                "the copy reached its end before it was killed: {seen:?}"
            );
            if done > 0 {
                break done;
            }
        }
    };
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the killed copy exited with {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(
        !stdout.contains("verified"),
        "the copy finished before the kill: {stdout}"
    );
    copied
}

/// Runs the copy to its end; returns (stdout, stderr).
fn copy_to_the_end(from: &str, to: &str) -> (String, String) {
    let out = Command::new(BIN).args(copy_args(from, to)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("both sides verified"), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The `resuming: N of M records` count of a rerun.
fn resumed(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("resuming: "))
        .unwrap_or_else(|| panic!("the rerun did not resume: {stderr}"));
    line["resuming: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// The per-family lines of a copy's report (family, count, checksum).
fn families(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.contains(" records  sha256 "))
        .collect()
}

#[test]
fn a_store_copy_killed_mid_way_resumes_where_it_stopped_in_both_directions() {
    // example.com with anna@example.com.
    let mut server = TestServer::start();
    let sent = python_ok(
        DELIVER,
        &[server.addr("smtp").port().to_string(), MESSAGES.to_string()],
    );
    assert!(sent.contains(&format!("sent {MESSAGES}")), "{sent}");
    server.stop();
    let rocks = format!("rocksdb:{}", server.dir.path().join("data/db").display());
    let pg_dir = tempfile::tempdir().unwrap();
    let postgres = format!("postgres:{}", pg::url_for(pg_dir.path()));

    // RocksDB -> PostgreSQL, killed, resumed.
    let copied = copy_killed_mid_way(&rocks, &postgres);
    let (there, stderr) = copy_to_the_end(&rocks, &postgres);
    let from = resumed(&stderr);
    assert!(
        from >= copied,
        "resumed at {from}, but the killed run had already reported {copied}: {stderr}"
    );
    eprintln!("rocksdb -> postgres: killed after {copied} records reported, resumed at {from}");
    let first = stderr.lines().find_map(progress).unwrap();
    assert_eq!(
        first.0, from,
        "the rerun started from {first:?}, not where it resumed: {stderr}"
    );
    assert!(
        there
            .lines()
            .any(|l| l.starts_with("messages") && l.contains(&format!(" {MESSAGES} records"))),
        "{there}"
    );

    // PostgreSQL -> a new RocksDB directory, killed, resumed.
    let back = format!("rocksdb:{}", server.dir.path().join("back").display());
    let copied = copy_killed_mid_way(&postgres, &back);
    let (again, stderr) = copy_to_the_end(&postgres, &back);
    let from = resumed(&stderr);
    eprintln!("postgres -> rocksdb: killed after {copied} records reported, resumed at {from}");
    assert!(from >= copied, "{stderr}");
    assert_eq!(
        families(&there),
        families(&again),
        "the round trip changed the store"
    );
    assert!(families(&there).len() > 10, "{there}");

    // A finished copy leaves no progress record behind: the next run starts over.
    let (_, stderr) = copy_to_the_end(&postgres, &back);
    assert!(!stderr.contains("resuming"), "{stderr}");
}
