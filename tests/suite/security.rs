//! Security defaults, proven against the real server: no password accepted before TLS,
//! TLS 1.2+ only with forward-secret AEAD ciphers (checked with `openssl s_client`),
//! failed logins slowed and then locked out for a while, the same reply for an unknown
//! user as for a wrong password, a 0700 data directory and a 0600 admin socket, and no
//! password in any log line even at trace level.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{ca_and_ports, ca_cert, python_ok, wait_output, TestServer, PASSWORD, RAW_CLIENT_PY};

/// Login helpers for the three protocols, beside the harness's raw-socket client.
const PRELUDE: &str = r#"
def imap_login(user, password, source=None):
    """The tagged reply to LOGIN over implicit TLS, and how long it took."""
    c = C(P["imaps"], tls=True, source=source); c.expect(r"\* OK.*\r\n")
    t0 = time.time()
    c.send(f"l LOGIN {user} {password}\r\n".encode())
    line = c.expect(r"(?m)^l .*\r\n").split("\r\n")[-2]
    return line, time.time() - t0

def pop3_login(user, password):
    c = C(P["pop3s"], tls=True); c.expect(r"\+OK.*\r\n")
    c.send(f"USER {user}\r\n".encode()); c.expect(r"\r\n")
    c.send(f"PASS {password}\r\n".encode())
    return c.expect(r"\r\n")

def submission_login(user, password):
    c = C(P["submissions"], tls=True); c.expect(r"220 .*\r\n")
    c.send(b"EHLO x\r\n"); c.expect(r"250 .*\r\n")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    c.send(f"AUTH PLAIN {token}\r\n".encode())
    return c.expect(r"\r\n")
"#;

fn run(server: &TestServer, script: &str) -> String {
    python_ok(
        &format!("{RAW_CLIENT_PY}{PRELUDE}\n{script}"),
        &ca_and_ports(server),
    )
}

fn setup(extra: &str) -> TestServer {
    TestServer::setup(extra, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    })
}

#[test]
fn no_password_is_accepted_before_tls() {
    let server = TestServer::start();
    let out = run(
        &server,
        r#"
c = C(P["imap"]); greeting = c.expect(r"\* OK.*\r\n")
c.send(b"a CAPABILITY\r\n"); caps = c.expect(r"a OK.*\r\n")
assert "LOGINDISABLED" in caps and "AUTH=" not in caps and "STARTTLS" in caps, caps
c.send(f"b LOGIN {USER} {PASSWORD}\r\n".encode())
assert re.match(r"b (NO|BAD)", c.expect(r"b .*\r\n"))
c.send(b"c AUTHENTICATE PLAIN\r\n")
assert re.match(r"c (NO|BAD)", c.expect(r"c .*\r\n"))
c.send(b"d STARTTLS\r\n"); c.expect(r"d OK.*\r\n"); c.starttls()
c.send(b"e CAPABILITY\r\n"); caps = c.expect(r"e OK.*\r\n")
assert "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps, caps
c.send(f"f LOGIN {USER} {PASSWORD}\r\n".encode()); c.expect(r"f OK.*\r\n")
print("imap ok")

c = C(P["pop3"]); c.expect(r"\+OK.*\r\n")
c.send(b"CAPA\r\n"); caps = c.expect(r"\r\n\.\r\n")
assert "USER" not in caps and "SASL" not in caps and "STLS" in caps, caps
c.send(f"USER {USER}\r\n".encode()); assert c.expect(r"\r\n").startswith("-ERR")
c.send(f"PASS {PASSWORD}\r\n".encode()); assert c.expect(r"\r\n").startswith("-ERR")
c.send(b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n")
assert c.expect(r"\r\n").startswith("-ERR")
c.send(b"STLS\r\n"); c.expect(r"\+OK.*\r\n"); c.starttls()
c.send(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode()); c.expect(r"\+OK.*\r\n"); c.expect(r"\+OK.*\r\n")
print("pop3 ok")

c = C(P["submission"]); c.expect(r"220 .*\r\n")
c.send(b"EHLO x\r\n"); ehlo = c.expect(r"250 .*\r\n")
assert "AUTH" not in ehlo and "STARTTLS" in ehlo, ehlo
c.send(b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n")
line = c.expect(r"\r\n")
assert line[:3] in ("530", "503", "538"), line
c.send(b"MAIL FROM:<anna@example.com>\r\n")
assert c.expect(r"\r\n").startswith("530")
c.send(b"STARTTLS\r\n"); c.expect(r"220 .*\r\n"); c.starttls()
c.send(b"EHLO x\r\n"); ehlo = c.expect(r"250 .*\r\n")
assert "AUTH PLAIN" in ehlo, ehlo
print("submission ok")
"#,
    );
    assert!(
        out.contains("imap ok") && out.contains("pop3 ok") && out.contains("submission ok"),
        "{out}"
    );
}

/// Runs `openssl s_client` against `port` with `args`; true if a session was set up.
/// Returns the negotiated protocol and cipher line too.
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(ca_cert())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(cmd.spawn().expect("openssl"), Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let cipher = text
        .lines()
        .find(|l| l.contains("Cipher is") || l.trim_start().starts_with("Cipher    :"))
        .unwrap_or("")
        .trim()
        .to_string();
    let connected =
        text.contains("Verify return code: 0 (ok)") && !cipher.contains("(NONE)") && !cipher.is_empty();
    (
        connected,
        format!(
            "{cipher} | {}",
            text.lines().find(|l| l.contains("Protocol")).unwrap_or("").trim()
        ),
    )
}

#[test]
fn only_tls_1_2_and_later_with_forward_secret_aead_ciphers() {
    let server = TestServer::start();
    // SECLEVEL=0 makes the client willing to offer the old versions, so the refusal is
    // the server's.
    let old = ["-cipher", "DEFAULT:@SECLEVEL=0"];
    for (service, starttls) in [
        ("imaps", None),
        ("submissions", None),
        ("pop3s", None),
        ("imap", Some("imap")),
        ("smtp", Some("smtp")),
    ] {
        let port = server.addr(service).port();
        let mut base: Vec<&str> = Vec::new();
        if let Some(proto) = starttls {
            base.extend(["-starttls", proto]);
        }
        for version in ["-tls1", "-tls1_1"] {
            let args: Vec<&str> = base.iter().copied().chain([version]).chain(old).collect();
            let (ok, how) = s_client(port, &args);
            assert!(!ok, "{service} accepted {version}: {how}");
        }
        let args: Vec<&str> = base.iter().copied().chain(["-tls1_2"]).collect();
        let (ok, how) = s_client(port, &args);
        assert!(ok, "{service} refused TLS 1.2: {how}");
        assert!(
            how.contains("ECDHE") && (how.contains("GCM") || how.contains("CHACHA20")),
            "{service}: {how}"
        );
        let args: Vec<&str> = base.iter().copied().chain(["-tls1_3"]).collect();
        let (ok, how) = s_client(port, &args);
        assert!(ok, "{service} refused TLS 1.3: {how}");
        println!("{service}: TLS 1.0/1.1 refused; 1.2 and 1.3 accepted ({how})");
    }
    // Weak TLS 1.2 suites: RSA key exchange (no forward secrecy), CBC, 3DES, RC4, NULL.
    let port = server.addr("imaps").port();
    for weak in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "DES-CBC3-SHA",
        "RC4-SHA",
        "NULL-SHA256",
        "ECDHE-RSA-NULL-SHA",
    ] {
        let (ok, how) = s_client(port, &["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")]);
        assert!(!ok, "weak cipher {weak} accepted: {how}");
    }
}

#[test]
fn failed_logins_are_slowed_down_then_locked_out_for_a_while() {
    let server = setup("[auth]\nmax_failures = 3\nlockout_secs = 3\nfailure_delay_ms = 300\n");
    let out = run(
        &server,
        r#"
times = []
for i in range(3):
    line, took = imap_login(USER, "Wrong1horse")
    assert line.startswith("l NO [AUTHENTICATIONFAILED]"), line
    times.append(took)
print("failure delays: " + " ".join(f"{t:.2f}" for t in times))
assert times[0] >= 0.25 and times[1] >= 0.55 and times[2] >= 0.85, times
assert times[0] < times[1] < times[2], times
# Locked: even the right password is refused, at once.
line, took = imap_login(USER, PASSWORD)
assert line.startswith("l NO [UNAVAILABLE]"), line
locked_at = time.time()
# ... from the guessing address only: anna's own address still lets her in (issue 19
# item 6: anyone could lock any user out).
line, _ = imap_login(USER, PASSWORD, source="127.0.0.3")
assert line.startswith("l OK"), f"locked out from a clean source: {line}"
# Submission and POP3 share the lock-out.
assert submission_login(USER, PASSWORD)[:3] in ("454", "535"), "submission not locked"
assert pop3_login(USER, PASSWORD).startswith("-ERR"), "pop3 not locked"
# The lock-out ends.
while True:
    line, _ = imap_login(USER, PASSWORD)
    if line.startswith("l OK"):
        break
    assert time.time() - locked_at < 10, f"lock-out did not end: {line}"
    time.sleep(0.3)
print(f"lock-out ended after {time.time() - locked_at:.1f} s")

# Per address of the client: many addresses guessed from one IP lock that IP out
# (5 x max_failures), while another address is still served.
for i in range(15):
    line, _ = imap_login(f"guess{i}@example.com", "Wrong1horse")
    assert line.startswith("l NO"), line
line, _ = imap_login(USER, PASSWORD)
assert line.startswith("l NO [UNAVAILABLE]"), f"IP not locked: {line}"
line, _ = imap_login(USER, PASSWORD, source="127.0.0.2")
assert line.startswith("l OK"), f"other IP refused: {line}"
print("per-IP lock-out ok")
"#,
    );
    assert!(out.contains("per-IP lock-out ok"), "{out}");
    print!("{out}");
}

#[test]
fn unknown_users_and_wrong_passwords_get_the_same_reply() {
    let server = setup("[auth]\nmax_failures = 1000\nfailure_delay_ms = 0\n");
    let out = run(
        &server,
        r#"
unknown, wrong = [], []
for _ in range(7):  # interleaved, so warm-up and load hit both alike
    unknown.append(imap_login("nobody@example.com", "Wrong1horse"))
    wrong.append(imap_login(USER, "Wrong1horse"))
otherdomain = imap_login("nobody@unknown.example", "Wrong1horse")
texts = {l for l, _ in unknown + wrong + [otherdomain]}
assert len(texts) == 1, texts
print("imap reply:", texts.pop())
# Timing is not asserted here (the unit test auth::tests checks that an unknown user
# runs an argon2 verify too); the medians are printed for the record.
print("imap median s: unknown %.3f, wrong password %.3f" % (
    statistics.median(t for _, t in unknown), statistics.median(t for _, t in wrong)))
p = {pop3_login("nobody@example.com", "Wrong1horse"), pop3_login(USER, "Wrong1horse")}
assert len(p) == 1, p
print("pop3 reply:", p.pop().strip())
s = {submission_login("nobody@example.com", "Wrong1horse"), submission_login(USER, "Wrong1horse")}
assert len(s) == 1, s
print("submission reply:", s.pop().strip())
"#,
    );
    assert!(out.contains("submission reply:"), "{out}");
    print!("{out}");
}

#[test]
fn data_directory_is_0700_and_admin_socket_0600() {
    let server = TestServer::start();
    let data = server.dir.path().join("data");
    for dir in [data.clone(), data.join("db")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", dir.display());
    }
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}: {mode:o}", socket.display());
}

#[test]
fn no_password_reaches_the_log_even_at_trace_level() {
    let mut server =
        TestServer::setup_with_env("[auth]\nfailure_delay_ms = 0\n", &[("RUST_LOG", "trace")], |s| {
            s.admin_ok(&["domain", "add", "example.com"]);
            s.add_user("anna@example.com", PASSWORD);
        });
    let wrong = "Wrong1horse-secret";
    let script = format!(
        r#"
WRONG = "{wrong}"
for p in (PASSWORD, WRONG):
    imap_login(USER, p)
    pop3_login(USER, p)
    submission_login(USER, p)
    c = C(P["imaps"], tls=True); c.expect(r"\* OK.*\r\n")
    c.send(b"a AUTHENTICATE PLAIN\r\n"); c.expect(r"\+.*\r\n")
    c.send(base64.b64encode(f"\0{{USER}}\0{{p}}".encode()) + b"\r\n"); c.expect(r"(?m)^a .*\r\n")
    c = C(P["submissions"], tls=True); c.expect(r"220 .*\r\n")
    c.send(b"EHLO x\r\nAUTH LOGIN\r\n"); c.expect(r"334 .*\r\n")
    c.send(base64.b64encode(USER.encode()) + b"\r\n"); c.expect(r"334 .*\r\n")
    c.send(base64.b64encode(p.encode()) + b"\r\n"); c.expect(r"\r\n")
print("logged in")
"#
    );
    assert!(run(&server, &script).contains("logged in"));
    server.stop();
    let log = server.log();
    assert!(log.lines().count() > 100, "trace logging is not on:\n{log}");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [PASSWORD, wrong] {
        for needle in [
            secret.to_string(),
            b64(secret),
            b64(&format!("\0anna@example.com\0{secret}")),
        ] {
            let hits: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            assert!(hits.is_empty(), "{needle} in the log: {hits:?}");
        }
    }
    println!("{} trace log lines, no password in any", log.lines().count());
}

/// Issue 19 item 3: every failed login ran argon2 and then slept on tokio's blocking
/// pool, which every session step shares, so a flood of failed logins from many
/// addresses made everyone else wait (an MX delivery 81 s, a NOOP 127 s). Now the
/// hashing has its own small pool with a bounded queue and the failure delay is an
/// async sleep: while 1,000 connections from 20 addresses each pipeline three guesses
/// owed a 5 s delay each, an MX delivery and a logged-in user's NOOP are answered before
/// the first of those guesses is. (Ordering, not a timing threshold: before the fix both
/// waited behind the sleeping guesses.)
#[test]
fn a_failed_login_flood_does_not_hold_up_other_sessions() {
    let server = setup(
        "[auth]\nplaintext_networks = [\"127.0.0.0/8\"]\nfailure_delay_ms = 5000\nmax_failures = 1000\n\
         [limits]\nmax_connections = 2000\n",
    );
    let out = run(
        &server,
        r#"
import select, threading
honest = imaplib.IMAP4("127.0.0.1", P["imap"], timeout=120)
honest.login(USER, PASSWORD)
honest.select("INBOX")
flood = [C(P["imap"], source=f"127.0.1.{i // 50 + 1}") for i in range(1000)]
for c in flood:
    c.expect(r"\* OK.*\r\n")
first = {}
def watch():
    # Records when the first checked failure (AUTHENTICATIONFAILED) arrives.
    socks = {c.s: c for c in flood}
    deadline = time.monotonic() + 180
    while socks and time.monotonic() < deadline and "failure" not in first:
        ready, _, _ = select.select(list(socks), [], [], 1)
        for s in ready:
            c = socks[s]
            d = c._recv()
            if not d:
                del socks[s]
                continue
            c.buf += d
            if b"AUTHENTICATIONFAILED" in c.buf and "failure" not in first:
                first["failure"] = time.monotonic() - t0
watcher = threading.Thread(target=watch)
t0 = time.monotonic()
for i, c in enumerate(flood):
    c.send(b"".join(f"a{k} LOGIN guess{i}@example.com Wrong1horse\r\n".encode() for k in range(3)))
watcher.start()
# An MX delivery and a NOOP while the guesses are pending.
mx = C(P["smtp"]); mx.expect(r"220 .*\r\n")
mx.s.settimeout(170)
mx.send(b"EHLO peer.example\r\nMAIL FROM:<x@peer.example>\r\nRCPT TO:<anna@example.com>\r\nDATA\r\n")
mx.expect(r"354 .*\r\n")
mx.send(b"Subject: during the flood\r\n\r\nhello\r\n.\r\n")
assert mx.expect(r"\r\n").startswith("250"), "MX delivery refused"
mx_done = time.monotonic() - t0
assert honest.noop()[0] == "OK"
noop_done = time.monotonic() - t0
watcher.join()
temp = sum(1 for c in flood if b"[UNAVAILABLE]" in c.buf)
print(f"mx {mx_done:.2f}s noop {noop_done:.2f}s first failure {first.get('failure')}s temp-failed so far {temp}")
assert "failure" in first, "no failed login answered"
assert mx_done < first["failure"] and noop_done < first["failure"], "other sessions waited behind the flood"
print("flood did not hold up others")
"#,
    );
    assert!(out.contains("flood did not hold up others"), "{out}");
    print!("{out}");
}

/// Issue 19 item 9: a world-writable or world-readable TLS key passed `check-config`
/// with no word, and a data directory that existed at 0755 stayed so.
#[test]
fn key_modes_are_checked_and_a_loose_data_directory_is_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("server.key");
    std::fs::copy(crate::harness::repo().join("certs-dev/server.key"), &key).unwrap();
    let extra = format!(
        "\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        crate::harness::repo().join("certs-dev/server.crt").display(),
        key.display()
    );
    let server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        // Same server, its key swapped for the copy whose mode the test sets.
        let text = std::fs::read_to_string(&s.config).unwrap();
        let start = text.find("[tls]").unwrap();
        let end = start + text[start..].find("[listen]").unwrap();
        std::fs::write(
            &s.config,
            format!("{}{}\n{}", &text[..start], extra, &text[end..]),
        )
        .unwrap();
        for (mode, ok, says) in [
            (0o666, false, "writable by everyone"),
            (0o620, false, "writable by its group"),
            (0o644, true, "warning: tls.private_key: "),
            (0o600, true, ""),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let out = s.admin(&["check-config"], None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), ok, "mode {mode:o}: {stderr}");
            assert!(stderr.contains(says), "mode {mode:o}: {stderr}");
            if mode == 0o600 {
                assert!(!stderr.contains("warning"), "{stderr}");
            }
        }
        let data = s.dir.path().join("data");
        for dir in [&data, &data.join("db")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    });
    let data = server.dir.path().join("data");
    for dir in [data.clone(), data.join("db")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", dir.display());
    }
}

/// Issue 19 item 10: `RCPT TO:<postmaster>` (no domain) was refused as relaying;
/// RFC 5321 §4.5.1 says it must be accepted. It reaches postmaster@ a protected domain.
#[test]
fn bare_postmaster_is_accepted_and_delivered() {
    let server = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
        s.add_user("postmaster@example.com", PASSWORD);
    });
    let out = run(
        &server,
        r#"
mx = C(P["smtp"]); mx.expect(r"220 .*\r\n")
mx.send(b"EHLO peer.example\r\nMAIL FROM:<x@peer.example>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n")
mx.expect(r"250 .*\r\n250 .*\r\n")
rcpt = mx.expect(r"\r\n")
assert rcpt.startswith("250"), rcpt
mx.expect(r"354 .*\r\n")
mx.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
assert mx.expect(r"\r\n").startswith("250")
m = imaplib.IMAP4_SSL("127.0.0.1", P["imaps"], ssl_context=CTX, timeout=30)
m.login("postmaster@example.com", PASSWORD)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", "postmaster")
assert data[0].split(), data
print("postmaster reached")
"#,
    );
    assert!(out.contains("postmaster reached"), "{out}");
}
