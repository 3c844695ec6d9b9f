//! Backup and restore (issue 18 item 2): a backup taken while the server serves is
//! owner-only (0700/0600) whatever the umask, holds the DKIM keys, and the server only
//! writes inside its data directory (as the systemd unit allows); `restore` refuses a
//! running server, then brings back the mail and the keys.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::*;
use crate::pop3::deliver_samples;

/// Every directory 0700 and every file 0600 under `root`.
fn assert_private(root: &Path) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir() {
        assert_eq!(mode, 0o700, "{}", root.display());
        for entry in std::fs::read_dir(root).unwrap() {
            assert_private(&entry.unwrap().path());
        }
    } else {
        assert_eq!(mode, 0o600, "{}", root.display());
    }
}

fn pop_count(server: &TestServer) -> String {
    let script = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
p.user("anna@example.com"); p.pass_("Correct1horse")
print(p.stat()[0]); p.quit()
"#;
    python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    )
    .trim()
    .to_string()
}

#[test]
fn backup_is_private_holds_the_dkim_keys_and_restore_refuses_a_running_server() {
    let mut server = TestServer::start();
    deliver_samples(&server, 3);
    server.admin_ok(&["domain", "dkim-keygen", "example.com"]);
    let key = server.dir.path().join("data/dkim/example.com.understudy.pem");
    let key_text = std::fs::read(&key).unwrap();
    let backups = server.dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    // A umask that would leave RocksDB's files world-readable.
    let backup = backups.join("b1");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; exec {BIN} --config {} backup {}",
            server.config.display(),
            backup.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backup written") && text.contains("1 DKIM key"),
        "{text}"
    );
    assert_private(&backup);
    assert_eq!(
        std::fs::read(backup.join("dkim/example.com.understudy.pem")).unwrap(),
        key_text
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("backup.json")).unwrap()).unwrap();
    assert_eq!(manifest["dkim_keys"][0]["domain"], "example.com", "{manifest}");
    // Nothing of the checkpoint stays behind in the data directory.
    let staging = server.dir.path().join("data/backup-staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    // A second backup into the same directory is refused rather than mixed.
    assert!(!server
        .admin(&["backup", backup.to_str().unwrap()], None)
        .status
        .success());

    // Changes after the backup, which the restore undoes.
    server.add_user("late@example.com", PASSWORD);
    let refused = server.admin(&["restore", backup.to_str().unwrap()], None);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("the server is running") && err.contains(&format!("(pid {})", server.pid())),
        "{err}"
    );
    server.stop();
    std::fs::remove_file(&key).unwrap();
    let out = server.admin_ok(&["restore", backup.to_str().unwrap()]);
    assert!(out.contains("restored the database"), "{out}");
    assert!(out.contains("DKIM key restored"), "{out}");
    assert_eq!(std::fs::read(&key).unwrap(), key_text);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.start_again();
    assert_eq!(pop_count(&server), "3");
    let users = server.admin_ok(&["user", "list"]);
    assert!(!users.contains("late@example.com"), "{users}");
    // The backup is untouched by the restore and can be restored again.
    assert!(backup.join("db/CURRENT").is_file());
}

/// Files under `root` not owned by `uid`.
fn not_owned_by(root: &Path, uid: u32, out: &mut Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(root).unwrap();
    if meta.uid() != uid {
        out.push(format!("{} (uid {})", root.display(), meta.uid()));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            not_owned_by(&entry.unwrap().path(), uid, out);
        }
    }
}

/// Root running admin commands with no server up (before the service's first start,
/// as the package's first steps allow) leaves the database its owner's: the service
/// user could not open a database root had written new files into.
#[test]
fn root_working_on_the_service_users_database_leaves_it_theirs() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let mut server = TestServer::start();
    server.stop();
    let data = server.dir.path().join("data");
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    server.admin_ok(&["domain", "add", "example.org"]);
    server.admin_ok(&["domain", "dkim-keygen", "example.org"]);
    server.add_user("carl@example.org", PASSWORD);
    let mut wrong = Vec::new();
    not_owned_by(&data, 65534, &mut wrong);
    assert!(wrong.is_empty(), "left to root: {wrong:#?}");
}
