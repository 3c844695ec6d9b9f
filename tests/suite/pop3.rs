//! POP3 with Python's poplib over TLS: both login styles, sizes that agree with RETR for
//! dot-leading lines and 8-bit bodies, deletions only at QUIT, UIDLs stable across a
//! restart, plaintext logins refused before STLS.

use crate::harness::*;

/// Delivers `count` messages to anna through the MX listener (smtplib), including a
/// dot-leading line and an 8-bit body.
pub fn deliver_samples(server: &TestServer, count: usize) {
    let script = r#"
import smtplib, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    for i in range(count):
        body = ("From: sender@example.net\r\nTo: anna@example.com\r\nSubject: sample %d\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                "first line\r\n.leading dot\r\n..two dots\r\nGr\u00fc\u00dfe aus K\u00f6ln\r\n.\r\nend %d\r\n" % (i, i)).encode("utf-8")
        s.sendmail("sender@example.net", ["anna@example.com"], body)
print("sent", count)
"#;
    let out = python_ok(
        script,
        &[server.addr("smtp").port().to_string(), count.to_string()],
    );
    assert!(out.contains(&format!("sent {count}")), "{out}");
}

const POP_CLIENT: &str = r#"
import poplib, ssl, sys, base64, json
ca, port, mode, action = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
if mode == "user":
    p.user("anna@example.com"); p.pass_("Correct1horse")
else:
    blob = base64.b64encode(b"\0anna@example.com\0Correct1horse").decode()
    resp = p._shortcmd("AUTH PLAIN " + blob)
    assert resp.startswith(b"+OK"), resp
count, total = p.stat()
listed = {int(l.split()[0]): int(l.split()[1]) for l in p.list()[1]}
uidls = [l.decode().split()[1] for l in p.uidl()[1]]
sizes_ok = True
retr_total = 0
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    # poplib strips CRLF and un-stuffs dots: rebuild the octets the server sent.
    rebuilt = sum(len(l) + 2 for l in lines)
    if rebuilt != listed[n]:
        sizes_ok = False
        print("size mismatch", n, rebuilt, listed[n], file=sys.stderr)
    retr_total += rebuilt
    if n == 1:
        text = b"\r\n".join(lines)
        assert b".leading dot" in text and b"..two dots" in text and "K\u00f6ln".encode() in text, text
top = p.top(1, 1)[1] if count else []
if action == "dele-quit":
    p.dele(1); p.quit()
elif action == "dele-drop":
    p.dele(1); p.sock.close()
else:
    p.quit()
print(json.dumps({"count": count, "total": total, "retr_total": retr_total, "sizes_ok": sizes_ok,
                  "uidls": uidls, "top_has_body_line": b"first line" in top}))
"#;

fn pop(server: &TestServer, mode: &str, action: &str) -> serde_json::Value {
    let out = python_ok(
        POP_CLIENT,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
            mode.into(),
            action.into(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad client output {out}: {e}"))
}

#[test]
fn pop3_sizes_match_retr_and_deletes_only_at_quit_and_uidls_survive_restart() {
    let mut server = TestServer::start();
    deliver_samples(&server, 3);

    let first = pop(&server, "user", "none");
    assert_eq!(first["count"], 3);
    assert_eq!(first["sizes_ok"], true, "{first}");
    assert_eq!(
        first["total"], first["retr_total"],
        "STAT total must equal the octets RETR sent"
    );
    assert_eq!(first["top_has_body_line"], true);

    // DELE then a dropped connection: nothing deleted.
    let dropped = pop(&server, "plain", "dele-drop");
    assert_eq!(dropped["count"], 3);
    assert_eq!(pop(&server, "user", "none")["count"], 3);

    // UIDLs are the same after a restart.
    let before = pop(&server, "user", "none")["uidls"].clone();
    server.restart();
    let after = pop(&server, "plain", "none")["uidls"].clone();
    assert_eq!(before, after);

    // DELE then QUIT: gone, and the remaining UIDLs are unchanged.
    pop(&server, "user", "dele-quit");
    let left = pop(&server, "user", "none");
    assert_eq!(left["count"], 2);
    assert_eq!(
        left["uidls"].as_array().unwrap()[..],
        before.as_array().unwrap()[1..]
    );
}

#[test]
fn pop3_refuses_plaintext_login_until_stls() {
    let server = TestServer::start();
    let script = r#"
import poplib, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
p = poplib.POP3("127.0.0.1", port, timeout=30)
caps = p.capa()
assert "STLS" in caps and "USER" not in caps, caps
try:
    p.user("anna@example.com")
    print("user accepted before TLS")
except poplib.error_proto as e:
    print("refused:", e)
p.stls(context=ssl.create_default_context(cafile=ca))
caps = p.capa()
assert "USER" in caps and "STLS" not in caps, caps
p.user("anna@example.com"); p.pass_("Correct1horse")
print("stat", p.stat()); p.quit()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3").port().to_string(),
        ],
    );
    assert!(out.contains("refused: b'-ERR [AUTH]"), "{out}");
    assert!(out.contains("stat (0, 0)"), "{out}");
}

#[test]
fn pop3_wrong_password_and_unknown_user_get_the_same_answer() {
    let server = TestServer::start();
    let script = r#"
import poplib, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
for user, pw in [("anna@example.com", "Wrong1horse"), ("ghost@example.com", "Correct1horse")]:
    p = poplib.POP3_SSL("127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=30)
    p.user(user)
    try:
        p.pass_(pw)
        print("accepted")
    except poplib.error_proto as e:
        print(e)
    p.close()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0], lines[1],
        "replies differ, which reveals which users exist"
    );
    assert!(lines[0].contains("[AUTH]"), "{out}");
}

/// fetchmail (a real POP3 client with UIDL tracking) with `keep`: the second run must
/// fetch nothing new.
#[test]
fn fetchmail_keep_twice_fetches_nothing_new_the_second_time() {
    if std::process::Command::new("fetchmail")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("fetchmail is not installed (bash .ci/run installs it)");
    }
    let server = TestServer::start();
    deliver_samples(&server, 4);
    let work = server.dir.path();
    let rc = work.join("fetchmailrc");
    let out_file = work.join("fetched");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 service {port} protocol pop3 uidl\n  user \"anna@example.com\" there password \"{PASSWORD}\" is anna here\n  ssl sslcertck sslcertfile \"{ca}\" sslcommonname localhost\n  keep\n  mda \"/bin/sh -c 'cat >> {out}'\"\n",
            port = server.addr("pop3s").port(),
            ca = ca_cert().display(),
            out = out_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = || {
        let child = std::process::Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .arg("--idfile")
            .arg(work.join("fetchids"))
            .args(["--nodetach", "--nosyslog", "-v"])
            .env("HOME", work)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, std::time::Duration::from_secs(120))
    };
    let first = run();
    let log = String::from_utf8_lossy(&first.stderr).to_string() + &String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "first fetchmail run failed:\n{log}");
    let fetched = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(fetched.matches("Subject: sample").count(), 4, "{log}");
    let second = run();
    let log2 = String::from_utf8_lossy(&second.stderr).to_string() + &String::from_utf8_lossy(&second.stdout);
    // Exit code 1 is fetchmail's "no new mail".
    assert_eq!(
        second.status.code(),
        Some(1),
        "second run should find nothing new:\n{log2}"
    );
    let fetched = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(
        fetched.matches("Subject: sample").count(),
        4,
        "messages fetched twice:\n{log2}"
    );
}
