//! Administration while the server runs: commands go through the admin socket and take
//! effect at once (a new user logs in, a deactivated user's POP3 and SMTP sessions end),
//! CSV bulk import (errors by line, dry run, idempotence, generated passwords), user
//! policies, and the socket's owner-only access (mode 0600 and the peer uid check).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;

const POP_LOGIN: &str = r#"
import poplib, ssl, sys
ca, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3_SSL("127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=30)
try:
    p.user(user); p.pass_(password)
except poplib.error_proto as e:
    print("refused", e.args[0].decode()); sys.exit(0)
print("stat", p.stat()[0]); p.quit()
"#;

fn pop_login(server: &TestServer, user: &str, password: &str) -> String {
    python_ok(
        POP_LOGIN,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
            user.into(),
            password.into(),
        ],
    )
}

/// Logs in over POP3 and SMTP submission, says "ready", waits for a line on stdin, then
/// reads (without sending anything) what each server says next.
const HELD_SESSIONS: &str = r#"
import poplib, smtplib, ssl, sys
ca, pop_port, sub_port, user, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3_SSL("127.0.0.1", pop_port, context=ctx, timeout=20)
p.user(user); p.pass_(password)
s = smtplib.SMTP_SSL("127.0.0.1", sub_port, context=ctx, timeout=20)
s.login(user, password)
print("ready", flush=True)
sys.stdin.readline()
print("pop3:", p.file.readline().decode().strip(), "| then:", repr(p.file.readline()), flush=True)
print("smtp:", s.getreply(), flush=True)
"#;

#[test]
fn admin_commands_take_effect_at_once_on_a_running_server() {
    let server = TestServer::start();
    // A user added while the server runs can log in straight away.
    server.add_user("bob@example.com", "Bobs1password");
    let out = pop_login(&server, "bob@example.com", "Bobs1password");
    assert!(out.contains("stat 0"), "{out}");

    // Bob holds a POP3 and an SMTP session; deactivating him ends both.
    let mut client = Command::new("python3")
        .arg("-c")
        .arg(HELD_SESSIONS)
        .args([
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
            server.addr("submissions").port().to_string(),
            "bob@example.com".into(),
            "Bobs1password".into(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60));
    assert_eq!(first.as_deref(), Ok("ready"), "client did not log in");
    let out = server.admin_ok(&["user", "deactivate", "bob@example.com"]);
    assert!(out.contains("bob@example.com is now Inactive"), "{out}");
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let output = wait_output(client, Duration::from_secs(60));
    let text: Vec<String> = rx.try_iter().collect();
    let text = text.join("\n");
    assert!(
        text.contains("pop3: -ERR session ended by the administrator | then: b''"),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("smtp: (421,"), "{text}");
    // And he cannot log in again; reactivated, he can.
    assert!(pop_login(&server, "bob@example.com", "Bobs1password").contains("refused"));
    server.admin_ok(&["user", "activate", "bob@example.com"]);
    assert!(pop_login(&server, "bob@example.com", "Bobs1password").contains("stat 0"));
}

#[test]
fn user_policies_and_passwords_change_through_the_socket() {
    let mut server = TestServer::start();
    let shown = server.admin_ok(&[
        "user",
        "set",
        "anna@example.com",
        "--access",
        "read-only",
        "--quota",
        "1000000",
        "--name",
        "Anna Berg",
    ]);
    for expected in [
        "name:          Anna Berg",
        "access:        ReadOnly (user)",
        "access window: Always (domain default)",
        "quota:         1000000 bytes",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in:\n{shown}");
    }
    // Outage-only access takes effect for the next login at once (no outage now).
    server.admin_ok(&[
        "user",
        "set",
        "anna@example.com",
        "--access-window",
        "outage-only",
    ]);
    let refused = pop_login(&server, "anna@example.com", PASSWORD);
    assert!(
        refused.contains("refused -ERR [SYS/TEMP] your own mail server is working"),
        "{refused}"
    );
    server.admin_ok(&["user", "set", "anna@example.com", "--domain-access"]);
    assert!(pop_login(&server, "anna@example.com", PASSWORD).contains("stat 0"));

    // The policy names the rule that failed; nothing changes.
    let weak = server.admin(
        &["user", "passwd", "anna@example.com", "--stdin"],
        Some("alllowercase1\n"),
    );
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("the password needs an upper-case letter"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );
    let out = server.admin(
        &["user", "passwd", "anna@example.com", "--stdin", "--force-reset"],
        Some("Temporary9pass\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = server.admin_ok(&["user", "show", "anna@example.com"]);
    assert!(shown.contains("password:      set (must be changed)"), "{shown}");
    // A temporary password is refused with a reply saying it must be changed.
    assert!(
        pop_login(&server, "anna@example.com", "Temporary9pass").contains("your password must be changed")
    );
    // Unknown users fail with a non-zero exit and the reason on stderr.
    let missing = server.admin(&["user", "show", "nobody@example.com"], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no user nobody@example.com"), "{stderr}");

    // A killed server leaves its socket behind: the CLI notices nobody listens and opens
    // the database itself, and the next server replaces the stale socket.
    server.kill();
    assert!(server.dir.path().join("data/admin.sock").exists());
    let offline = server.admin_ok(&["user", "show", "anna@example.com"]);
    assert!(offline.contains("name:          Anna Berg"), "{offline}");
    server.restart();
    server.admin_ok(&["user", "deactivate", "anna@example.com"]);
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("admin command") && l.contains("User Deactivate")),
        "{log}"
    );
}

const USERS_CSV: &str = "\
address,name,password,aliases,status
anna@example.com,Anna Berg,,anna.berg@example.com,active
bob@example.com,Bob,Bobs1password,b@example.com;robert@example.com,
carl@example.com,Carl,,,
not an address,X,,,
bob@example.com,Bob again,,,
dora@example.com,Dora,weak,,
eve@example.com,Eve,,,active,extra
";

#[test]
fn csv_import_on_a_running_server_reports_bad_rows_and_is_idempotent() {
    let server = TestServer::start();
    let csv = server.dir.path().join("users.csv");
    std::fs::write(&csv, USERS_CSV).unwrap();
    let csv = csv.to_str().unwrap();
    let before = server.admin_ok(&["user", "list"]);

    let dry = server.admin(&["user", "import", csv, "--dry-run"], None);
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(!dry.status.success(), "bad rows make the exit status non-zero");
    assert!(
        dry_out.contains("line 4: would create carl@example.com"),
        "{dry_out}"
    );
    assert!(
        dry_out.contains(
            "dry run, nothing changed: would have 2 created, 1 updated, 0 unchanged, 4 with errors"
        ),
        "{dry_out}"
    );
    assert_eq!(server.admin_ok(&["user", "list"]), before);

    let passwords = server.dir.path().join("passwords.txt");
    let run = server.admin(
        &[
            "user",
            "import",
            csv,
            "--passwords-out",
            passwords.to_str().unwrap(),
        ],
        None,
    );
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!run.status.success());
    for expected in [
        "line 2: updated anna@example.com: name, +alias anna.berg@example.com",
        "line 3: created bob@example.com: name, password, +alias b@example.com, +alias robert@example.com",
        "line 4: created carl@example.com: name, password",
        "line 5: 'not an address' is not a valid mail address",
        "line 6: bob@example.com appears again (first on line 3)",
        "line 7: password for dora@example.com refused: the password needs at least 8 characters, an upper-case letter, a digit",
        "line 8: expected at most 5 columns (address, name, password, aliases, status), found 6",
        "import: 2 created, 1 updated, 0 unchanged, 4 with errors",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(err.contains("4 row(s) had errors"), "{err}");
    // Not a terminal: plain progress lines.
    assert!(err.contains("progress: 7/7 rows"), "{err}");
    // Only carl got a generated password (anna keeps hers), in a private file.
    let mode = std::fs::metadata(&passwords).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let generated = std::fs::read_to_string(&passwords).unwrap();
    assert_eq!(generated.lines().count(), 1, "{generated}");
    let carl_password = generated.trim().strip_prefix("carl@example.com,").unwrap();
    assert!(pop_login(&server, "carl@example.com", carl_password).contains("stat 0"));
    assert!(pop_login(&server, "bob@example.com", "Bobs1password").contains("stat 0"));
    assert!(pop_login(&server, "anna@example.com", PASSWORD).contains("stat 0"));
    let aliases = server.admin_ok(&["alias", "list", "--format", "csv"]);
    assert!(
        aliases.contains("robert@example.com,bob@example.com"),
        "{aliases}"
    );

    // The same file again changes nothing and generates no password.
    let again = server.admin(&["user", "import", csv], None);
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(
        again_out.contains("import: 0 created, 0 updated, 3 unchanged, 4 with errors"),
        "{again_out}"
    );
    assert!(!again_out.contains("generated passwords"), "{again_out}");
}

#[test]
fn admin_socket_is_private_and_refuses_other_users() {
    let mut server = TestServer::start();
    let data = server.dir.path().join("data");
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode");

    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: cannot run a client as another user; only the mode was checked");
        return;
    }
    // `nobody` cannot even reach it: the data directory is 0700 and the socket 0600.
    let probe = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect failed", e.errno); sys.exit(0)
s.settimeout(20)
try:
    s.sendall(b'{"command":{"User":{"List":{"domain":null}}}}\n')
    data = s.recv(65536)
except (BrokenPipeError, ConnectionResetError):
    data = b""
print("answer", repr(data))
"#;
    let as_nobody = |label: &str| {
        let out = wait_output(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    probe,
                ])
                .arg(&socket)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let denied = as_nobody("default permissions");
    assert!(denied.contains("connect failed 13"), "{denied}");

    // With the file permissions opened up (as a careless admin might), the server's own
    // check of the peer's uid still refuses: the connection closes without an answer.
    for dir in [server.dir.path(), data.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody("opened permissions");
    assert!(refused.contains("answer b''"), "{refused}");
    // The server logs after it has closed the connection: wait for the line.
    wait_until(Duration::from_secs(10), "the refusal to be logged", || {
        server
            .log()
            .contains("admin socket: refusing a process of another user")
    });
    // The server's own user is still served.
    assert!(server.admin_ok(&["user", "list"]).contains("anna@example.com"));
}
