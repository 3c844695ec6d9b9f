//! Admin commands that say what happened (issue 18 items 6, 8, 10, 11, 12): queue
//! states and what a retry did, listings with headers, password state, access and last
//! logins, `--format json|csv`, domain settings that can be set and are shown, refused
//! relay hosts and alert recipients, and the server's password policy deciding.

use crate::harness::*;

fn imap_login(server: &TestServer, user: &str, password: &str) -> String {
    let script = r#"
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
try:
    m.login(sys.argv[3], sys.argv[4])
except imaplib.IMAP4.error as e:
    print("refused", e); sys.exit(0)
print("status", m.status("Sent", "(MESSAGES)")[1][0].decode())
m.logout()
"#;
    python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            user.into(),
            password.into(),
        ],
    )
}

fn mx_send(server: &TestServer, count: usize) {
    let script = r#"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    for i in range(int(sys.argv[2])):
        s.sendmail("sender@outside.net", ["anna@example.com"],
                   b"From: sender@outside.net\r\nSubject: queued\r\n\r\nbody\r\n")
"#;
    python_ok(
        script,
        &[server.addr("smtp").port().to_string(), count.to_string()],
    );
}

#[test]
fn queue_and_user_listings_say_what_is_going_on_in_text_json_and_csv() {
    let closed = crate::sink::free_port();
    let relay = format!("127.0.0.1:{closed}");
    let server = TestServer::setup("", |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &relay,
            "--engagement",
            "manual",
        ]);
        s.add_user("anna@example.com", PASSWORD);
        s.admin_ok(&["user", "add", "bob@example.com"]);
        s.admin_ok(&["alias", "add", "sales@example.com", "anna@example.com"]);
    });
    server.admin_ok(&["outage", "start", "example.com", "--reason", "drill"]);
    mx_send(&server, 2);

    let list = server.admin_ok(&["queue", "list"]);
    let header = list.lines().next().unwrap();
    for column in ["ID", "KIND", "TO", "TRACKING", "STATE"] {
        assert!(header.contains(column), "{column} missing: {list}");
    }
    let relay_lines: Vec<&str> = list.lines().filter(|l| l.contains(" relay ")).collect();
    assert_eq!(relay_lines.len(), 2, "{list}");
    for l in &relay_lines {
        assert!(l.contains("waiting: outage"), "{list}");
        assert!(l.contains("anna@example.com"), "recipients shown: {list}");
    }
    let retry = server.admin_ok(&["queue", "retry", "example.com"]);
    assert!(retry.contains("0 entries due now"), "{retry}");
    assert!(
        retry.contains("2 waiting for the end of their domain's outage"),
        "{retry}"
    );
    server.admin_ok(&["queue", "hold", "example.com"]);
    let retry = server.admin_ok(&["queue", "retry"]);
    assert!(retry.contains("held, left as they are"), "{retry}");
    let json = server.admin_ok(&["queue", "list", "--format", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entries = parsed["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .filter(|e| e["kind"] == "relay")
            .all(|e| e["state"]["state"] == "held"),
        "{json}"
    );

    // Users: a header, password state, access, last login per protocol.
    assert!(imap_login(&server, "anna@example.com", PASSWORD).contains("status"));
    let users = server.admin_ok(&["user", "list"]);
    let mut lines = users.lines();
    let header = lines.next().unwrap();
    for column in [
        "ADDRESS",
        "STATUS",
        "PASSWORD",
        "ACCESS",
        "LAST IMAP",
        "LAST POP3",
    ] {
        assert!(header.contains(column), "{column} missing: {users}");
    }
    let anna = users.lines().find(|l| l.starts_with("anna@")).unwrap();
    assert!(anna.contains("set") && anna.contains("full"), "{anna}");
    assert!(anna.contains("UTC"), "IMAP login time shown: {anna}");
    let bob = users.lines().find(|l| l.starts_with("bob@")).unwrap();
    assert!(bob.contains("not set") && bob.contains("never"), "{bob}");

    let json: serde_json::Value =
        serde_json::from_str(&server.admin_ok(&["user", "list", "--format", "json"])).unwrap();
    let anna = json
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["address"] == "anna@example.com")
        .unwrap();
    assert!(
        anna["last_login"]["imap"].as_i64().unwrap() > 1_700_000_000,
        "{anna}"
    );
    assert_eq!(anna["password"], "set");
    assert!(anna.get("password_hash").is_none(), "never the hash");
    let csv = server.admin_ok(&["user", "list", "--format", "csv"]);
    assert!(csv.starts_with("ADDRESS,STATUS,PASSWORD,ACCESS,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let aliases = server.admin_ok(&["alias", "list", "--format", "csv"]);
    assert_eq!(aliases, "ALIAS,DELIVERS TO\nsales@example.com,anna@example.com\n");
    let domains = server.admin_ok(&["domain", "list"]);
    assert!(domains.starts_with("DOMAIN"), "{domains}");
}

#[test]
fn domain_settings_are_checked_set_and_shown_and_save_sent_keeps_a_copy() {
    let server = TestServer::start();
    let bad = server.admin(
        &["domain", "add", "bad.test", "--relay-host", "bad host:99999"],
        None,
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("relay host 'bad host:99999' is not host[:port]"),
        "{err}"
    );
    let inside = server.admin(
        &["domain", "set", "example.com", "--alert", "ops@example.com"],
        None,
    );
    assert!(!inside.status.success());
    let err = String::from_utf8_lossy(&inside.stderr);
    assert!(err.contains("ops@example.com is inside example.com"), "{err}");

    let shown = server.admin_ok(&[
        "domain",
        "set",
        "example.com",
        "--redeliver-deleted",
        "true",
        "--save-sent",
        "true",
        "--alert",
        "ops@example.net",
    ]);
    assert!(shown.contains("redeliver deleted:   yes"), "{shown}");
    assert!(shown.contains("save sent:           yes"), "{shown}");

    let script = r#"
import smtplib, ssl, sys
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
s.login("anna@example.com", "Correct1horse")
s.sendmail("anna@example.com", ["friend@elsewhere.org"], b"From: anna@example.com\r\nTo: friend@elsewhere.org\r\nSubject: hi\r\n\r\nhello\r\n")
s.quit()
"#;
    python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("submissions").port().to_string(),
        ],
    );
    let status = imap_login(&server, "anna@example.com", PASSWORD);
    assert!(status.contains("(MESSAGES 1)"), "a copy in Sent: {status}");
}

/// The CLI hashes the password, but the policy that decides is the running server's,
/// as last reloaded, whatever configuration the CLI read (item 11).
#[test]
fn the_servers_password_policy_decides_after_a_reload() {
    let mut server = TestServer::start();
    let strict = std::fs::read_to_string(&server.config).unwrap() + "\n[password_policy]\nmin_length = 16\n";
    let lenient = server.dir.path().join("cli.toml");
    std::fs::copy(&server.config, &lenient).unwrap();
    std::fs::write(&server.config, strict).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    wait_log(&mut server, "configuration reloaded");
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&lenient)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        wait_output(child, std::time::Duration::from_secs(60))
    };
    // The CLI's own configuration would accept 10 characters; the server does not.
    let out = run(
        &["user", "add", "carl@example.com", "--password-stdin"],
        "Ten1chars!\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 16 characters"), "{err}");
    // A CSV import through the socket meets the reloaded policy too.
    let import = server.dir.path().join("users.csv");
    std::fs::write(&import, "dora@example.com,Dora,Ten1chars!\n").unwrap();
    let out = run(&["user", "import", import.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("at least 16 characters"), "{text}");
    let users = server.admin_ok(&["user", "list"]);
    assert!(!users.contains("carl@") && !users.contains("dora@"), "{users}");
}
