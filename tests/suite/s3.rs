//! The server on a PostgreSQL store with its bodies in an S3 bucket (`[store] bodies =
//! "s3"`), against moto as the S3 stand-in (storage/tests/support/moto.rs): SMTP mail
//! served over IMAP with each body an object in the bucket (listed by boto3, another
//! client), and the bucket frozen (moto SIGSTOPped) under SMTP load: every reply while
//! it is silent is a 4xx, never a 250; everything acknowledged is in the mailbox after
//! it answers again, with no restart of the server.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::pg_cluster::{replies, unix_now, LIST_IDS, SENDERS};
use crate::postgres::{pg, store_section, DELIVER_AND_READ};

#[path = "../../storage/tests/support/moto.rs"]
pub(crate) mod moto;

/// The `[store]` sections for a PostgreSQL store of `dir` with bodies in a bucket of
/// its own on the stand-in at `endpoint`; the secret key goes in a 0600 file.
fn s3_store_config(dir: &Path, endpoint: &str, bucket: &str, timeout_secs: u64) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, format!("{}\n", moto::SECRET_KEY)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "{}bodies = \"s3\"\n\n[store.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
         access_key_id = \"{}\"\nsecret_key_file = \"{}\"\nprefix = \"mail\"\nallow_http = true\n\
         timeout_secs = {timeout_secs}\n",
        store_section(&pg::url_for(dir)),
        moto::ACCESS_KEY,
        secret.display()
    )
}

#[test]
fn smtp_mail_on_postgresql_with_s3_bodies_is_served_over_imap_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = moto::bucket_for(dir.path());
    let config = s3_store_config(dir.path(), &moto::endpoint(), &bucket, 10);
    let mut server = TestServer::setup(&config, |s| {
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
    // Four messages with four distinct bodies: four objects, named by their SHA-256.
    let objects = moto::list(&bucket, "mail/");
    assert_eq!(objects.len(), 4, "{objects:?}");
    assert!(
        objects
            .iter()
            .all(|o| o.len() == "mail/".len() + 64 && o[5..].bytes().all(|c| c.is_ascii_hexdigit())),
        "{objects:?}"
    );
    // The bodies are not in PostgreSQL: read back after a restart, from the bucket.
    server.restart();
    let out = python_ok(DELIVER_AND_READ, &args(&server, 5));
    assert!(out.contains("uids 1 2 3 4 5 6 7\n"), "{out}");
    assert!(out.contains("last body 7"), "{out}");
    assert_eq!(moto::list(&bucket, "mail/").len(), 8);
    // Nothing left in PostgreSQL to move, beside the running node.
    let moved = server.admin_ok(&["move-bodies"]);
    assert!(moved.contains("moved 0 bodies into the bucket"), "{moved}");
}

#[test]
fn a_silent_bucket_under_smtp_load_gets_4xx_and_loses_nothing_acknowledged() {
    let started = Instant::now();
    // A stand-in of this test's own, to freeze without stopping the other tests'.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let moto_pid = moto::spawn(port) as i32;
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let bucket = "understudy-frozen";
    let created = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .arg(format!("{endpoint}/{bucket}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&created.stdout), "200");
    let config = s3_store_config(dir.path(), &endpoint, bucket, 2);
    let server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("replies");
    let stop = tmp.path().join("stop");
    let senders = std::process::Command::new("python3")
        .args([
            "-c",
            SENDERS,
            out.to_str().unwrap(),
            stop.to_str().unwrap(),
            &server.addr("smtp").port().to_string(),
        ])
        .spawn()
        .unwrap();
    let accepted = |after: f64| {
        replies(&out)
            .iter()
            .filter(|r| r.code == "250" && r.at > after)
            .count()
    };
    wait_until(Duration::from_secs(60), "the node to accept", || {
        accepted(0.0) >= 20
    });

    // SAFETY: signals the stand-in this test started; no pointers.
    unsafe { libc::kill(moto_pid, libc::SIGSTOP) };
    let down_from = unix_now();
    let refused = || {
        replies(&out)
            .iter()
            .filter(|r| r.code.starts_with('4') && r.at > down_from)
            .count()
    };
    wait_until(Duration::from_secs(60), "4xx while the bucket is silent", || {
        refused() >= 3 && unix_now() > down_from + 3.0
    });
    let down_until = unix_now();
    // SAFETY: as above.
    unsafe { libc::kill(moto_pid, libc::SIGCONT) };
    let up_at = unix_now();
    wait_until(Duration::from_secs(60), "the node to accept again", || {
        accepted(up_at) >= 20
    });
    std::fs::write(&stop, b"").unwrap();
    let status = wait_output(senders, Duration::from_secs(60)).status;
    assert!(status.success(), "senders: {status}");

    let all = replies(&out);
    // A 250 for a commit made before the freeze may still be on its way: the window
    // starts half a second after.
    let while_down: Vec<_> = all
        .iter()
        .filter(|r| r.at > down_from + 0.5 && r.at < down_until)
        .collect();
    let accepted_while_down: Vec<_> = while_down
        .iter()
        .filter(|r| r.code == "250")
        .map(|r| &r.mid)
        .collect();
    assert!(
        accepted_while_down.is_empty(),
        "250 while the bucket was silent: {accepted_while_down:?}"
    );
    let other: Vec<_> = while_down
        .iter()
        .filter(|r| !r.code.starts_with('4') && r.code != "dropped")
        .map(|r| &r.code)
        .collect();
    assert!(other.is_empty(), "neither 4xx nor a cut connection: {other:?}");
    let acknowledged: Vec<&str> = all
        .iter()
        .filter(|r| r.code == "250")
        .map(|r| r.mid.as_str())
        .collect();
    let listed = python_ok(
        LIST_IDS,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    let in_mailbox: std::collections::HashSet<&str> = listed.lines().collect();
    let missing: Vec<&&str> = acknowledged
        .iter()
        .filter(|m| !in_mailbox.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the mailbox: {missing:?}"
    );
    let refused_count = while_down.iter().filter(|r| r.code.starts_with('4')).count();
    eprintln!(
        "s3 silent under load: {} sent, {} acknowledged, {refused_count} refused with 4xx while silent \
         ({:.1} s), {} objects in the bucket, whole test {:.1?}",
        all.len(),
        acknowledged.len(),
        down_until - down_from,
        moto::boto3_at(&endpoint, &format!(
            "print(sum(len(p.get('Contents', [])) for p in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}')))"
        ))
        .trim(),
        started.elapsed()
    );
    drop(server);
    // SAFETY: as above; the stand-in is this test's child.
    unsafe {
        libc::kill(moto_pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(moto_pid, &mut status, 0);
    }
}
