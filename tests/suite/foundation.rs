//! The foundation: listeners on port 0, the shared TLS acceptor, the admin CLI, config
//! validation, data kept across restarts, clean exit on SIGTERM.

use crate::harness::*;

#[test]
fn every_listener_binds_port_zero_and_implicit_tls_uses_the_dev_certificate() {
    let server = TestServer::start();
    for service in SERVICES {
        assert_ne!(server.addr(service).port(), 0, "{service}");
    }
    // A real TLS client: Python's ssl, verifying against the dev CA, refusing TLS < 1.2.
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
for port in sys.argv[2:]:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            print(port, tls.version(), tls.getpeercert()["subject"][0][0][1])
# TLS 1.1 must be refused.
old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
old.check_hostname = False
old.verify_mode = ssl.CERT_NONE
old.maximum_version = ssl.TLSVersion.TLSv1_1
try:
    old.minimum_version = ssl.TLSVersion.TLSv1
except ValueError:
    pass
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as raw:
    try:
        old.wrap_socket(raw, server_hostname="localhost")
        print("TLS1.1 accepted")
    except (ssl.SSLError, OSError):
        print("TLS1.1 refused")
"#;
    let ports: Vec<String> = ["imaps", "pop3s", "submissions"]
        .iter()
        .map(|s| server.addr(s).port().to_string())
        .collect();
    let mut args = vec![ca_cert().display().to_string()];
    args.extend(ports);
    let out = python_ok(script, &args);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("localhost") && l.contains("TLSv1.3"))
            .count(),
        3,
        "{out}"
    );
    assert!(out.contains("TLS1.1 refused"), "{out}");
}

#[test]
fn config_with_three_mistakes_reports_all_three_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "hostname = \"mx.example.com\"\ndata_dir = \"d\"\n[listen]\nimap = [\"localhost:143x\"]\n[limits]\nmax_connections = 0\n[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    for key in ["listen.imap[0]", "limits.max_connections", "log.format"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn admin_cli_manages_domains_users_and_aliases_and_data_survives_restart() {
    let mut server = TestServer::setup("", |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            "primary.example.com:25",
            "--alert",
            "ops@example.net",
        ]);
        s.add_user("anna@example.com", PASSWORD);
        s.admin_ok(&["alias", "add", "sales@example.com", "anna@example.com"]);
        // Policy: the error says which rule failed; nothing is created.
        let weak = s.admin(
            &["user", "add", "bob@example.com", "--password-stdin"],
            Some("weakpass\n"),
        );
        assert!(!weak.status.success());
        let err = String::from_utf8_lossy(&weak.stderr);
        assert!(
            err.contains("an upper-case letter") && err.contains("a digit"),
            "{err}"
        );
        // Unknown domain: clear error.
        let stray = s.admin(
            &["user", "add", "eve@nowhere.example", "--password-stdin"],
            Some("Correct1horse\n"),
        );
        assert!(String::from_utf8_lossy(&stray.stderr)
            .contains("nowhere.example is not a protected domain; add it first"));
    });
    server.stop();
    let shown = server.admin_ok(&["domain", "show", "example.com"]);
    assert!(
        shown.contains("primary.example.com:25") && shown.contains("ops@example.net"),
        "{shown}"
    );
    let users = server.admin_ok(&["user", "list"]);
    assert!(
        users.contains("anna@example.com") && !users.contains("bob@"),
        "{users}"
    );
    let aliases = server.admin_ok(&["alias", "list", "example.com", "--format", "csv"]);
    assert!(
        aliases.contains("sales@example.com,anna@example.com"),
        "{aliases}"
    );
    let user = server.admin_ok(&["user", "show", "anna@example.com"]);
    for mailbox in ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(user.contains(mailbox), "{mailbox} missing:\n{user}");
    }
    server.admin_ok(&["user", "deactivate", "anna@example.com"]);
    assert!(server
        .admin_ok(&["user", "show", "anna@example.com"])
        .contains("Inactive"));
    let removal = server.admin(&["user", "remove", "anna@example.com"], None);
    assert!(!removal.status.success(), "removal without --yes must be refused");
    let removing_domain = server.admin(&["domain", "remove", "example.com"], None);
    assert!(String::from_utf8_lossy(&removing_domain.stderr).contains("still has users"));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = TestServer::start();
    let status = server.stop().expect("server was running");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_running_server_holds_the_database_and_admin_commands_reach_it_through_its_socket() {
    let server = TestServer::start();
    let listed = server.admin_ok(&["user", "list"]);
    assert!(listed.contains("anna@example.com"), "{listed}");
    // With its socket gone the CLI cannot reach the server, and says why.
    std::fs::remove_file(server.dir.path().join("data/admin.sock")).unwrap();
    let out = server.admin(&["user", "list"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
