//! The queue runner against Postfix's `smtp-sink` standing in for the primary server and
//! for remote MX hosts: redelivery after an outage (once, original envelope, deleted
//! mail held back), outbound mail by static route with a DKIM signature verified by
//! `mail-auth`, a 4xx retried, and a 5xx bounced to the local sender's INBOX.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use understudy_storage::outage::{OutagePhase, OutageState};
use understudy_storage::Store;

use crate::harness::*;

/// A running `smtp-sink` that writes each message it accepts to a file in `dir`.
struct Sink {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sink {
    /// `extra`: smtp-sink options such as `-r RCPT` (4xx) or `-f RCPT` (5xx).
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Sink {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        // smtp-sink refuses to run as root without a user to switch to.
        let uid = Command::new("id").arg("-un").output().unwrap();
        let user = String::from_utf8_lossy(&uid.stdout).trim().to_string();
        if user == "root" {
            cmd.args(["-u", "root"]);
        }
        cmd.args(extra)
            .arg("-d")
            .arg(format!("{}/%M.", dir.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        let sink = Sink {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        wait_until(Duration::from_secs(10), "smtp-sink to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        sink
    }

    /// Every captured message as text.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    out.push(text);
                }
            }
        }
        out
    }

    fn with(&self, needle: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.contains(needle))
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets a domain's outage phase with the store API while the server is stopped.
fn set_phase(server: &TestServer, domain: &str, phase: OutagePhase) {
    let store = Store::open(&server.dir.path().join("data/db")).unwrap();
    store
        .set_outage_state(
            domain,
            &OutageState {
                phase,
                since: store.now(),
                reason: "test".into(),
                manual: true,
            },
        )
        .unwrap();
}

fn delivery_config(extra: &str) -> String {
    format!(
        "\n[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\noutage_recheck_secs = 1\nconnection_idle_secs = 5\n{extra}\n"
    )
}

const SEND_MX: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("filter.example.net")
for mid in sys.argv[2:]:
    s.sendmail("sender@outside.net", ["anna@example.com"],
               ("From: sender@outside.net\r\nTo: anna@example.com\r\nSubject: %s\r\nMessage-ID: <%s>\r\n\r\nHello\r\n.leading dot\r\n" % (mid, mid)).encode())
s.quit()
"#;

const SUBMIT: &str = r#"
import smtplib, ssl, sys
ca, port, rcpt, mid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.starttls(context=ssl.create_default_context(cafile=ca))
s.login("anna@example.com", "Correct1horse")
s.sendmail("anna@example.com", [rcpt],
           ("From: Anna <anna@example.com>\r\nTo: %s\r\nSubject: outbound %s\r\nMessage-ID: <%s>\r\n\r\nHi there\r\n" % (rcpt, mid, mid)).encode())
s.quit()
"#;

fn submit(server: &TestServer, rcpt: &str, mid: &str) {
    python_ok(
        SUBMIT,
        &[
            ca_cert().display().to_string(),
            server.addr("submission").port().to_string(),
            rcpt.to_string(),
            mid.to_string(),
        ],
    );
}

/// A stand-in primary (smtp-sink) and a server relaying example.com to it in plain SMTP,
/// with anna; `prepare` runs on the stopped server after that.
fn relaying_to_a_sink(dir: &Path, prepare: impl FnOnce(&TestServer)) -> (Sink, TestServer) {
    let port = free_port();
    let primary = Sink::start(&dir.join("primary"), port, &[]);
    let relay = format!("127.0.0.1:{port}");
    let server = TestServer::setup(&delivery_config(""), |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &relay,
            "--relay-tls",
            "disabled",
        ]);
        s.add_user("anna@example.com", PASSWORD);
        prepare(s);
    });
    (primary, server)
}

#[test]
fn relay_waits_for_the_outage_then_delivers_once_and_skips_deleted_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, mut server) =
        relaying_to_a_sink(tmp.path(), |s| set_phase(s, "example.com", OutagePhase::Outage));
    python_ok(
        SEND_MX,
        &[
            server.addr("smtp").port().to_string(),
            "kept@outside.net".into(),
            "deleted@outside.net".into(),
        ],
    );
    // The runner saw both entries and parked them: the primary is "down".
    wait_log(&mut server, "parked while their domain is in an outage");
    assert!(primary.messages().is_empty(), "nothing goes out during an outage");

    // The user deletes one message over POP3 (DELE + QUIT expunges it).
    let script = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
p.user("anna@example.com"); p.pass_("Correct1horse")
n = p.stat()[0]
for i in range(1, n + 1):
    text = b"\n".join(p.retr(i)[1])
    if b"<deleted@outside.net>" in text:
        p.dele(i); print("deleted", i)
p.quit()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(out.contains("deleted"), "{out}");
    assert!(primary.messages().is_empty());

    // The primary comes back.
    server.stop();
    set_phase(&server, "example.com", OutagePhase::Normal);
    server.restart();
    wait_until(Duration::from_secs(30), "the kept message at the primary", || {
        !primary.with("<kept@outside.net>").is_empty()
    });
    wait_log(&mut server, "recipients cancelled");
    server.stop();

    let kept = primary.with("<kept@outside.net>");
    assert_eq!(kept.len(), 1, "delivered exactly once");
    assert!(
        kept[0].contains("X-Mail-Args: <sender@outside.net>"),
        "{}",
        kept[0]
    );
    assert!(kept[0].contains("X-Rcpt-Args: <anna@example.com>"), "{}", kept[0]);
    assert!(
        kept[0].contains("\n.leading dot\n"),
        "dot-stuffing undone by the sink: {}",
        kept[0]
    );
    assert!(
        primary.with("<deleted@outside.net>").is_empty(),
        "deleted mail is not redelivered"
    );

    let store = Store::open(&server.dir.path().join("data/db")).unwrap();
    assert!(store.queue_entries(None).unwrap().is_empty(), "queue drained");
    let ids = store
        .tracking_ids_for_message_id("<deleted@outside.net>")
        .unwrap();
    let events = store.tracking_events(ids[0]).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "cancelled" && e.detail.contains("deleted by user")),
        "{events:?}"
    );
    let ids = store.tracking_ids_for_message_id("<kept@outside.net>").unwrap();
    let kinds: Vec<String> = store
        .tracking_events(ids[0])
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let started = kinds
        .iter()
        .position(|k| k == "attempt started")
        .expect("attempt started");
    let delivered = kinds.iter().position(|k| k == "delivered").expect("delivered");
    assert!(started < delivered, "{kinds:?}");
}

/// A ResolverCache holding the test's DKIM key record (no DNS in tests).
pub struct TxtCache(pub std::sync::Mutex<std::collections::HashMap<Box<str>, mail_auth::Txt>>);

impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: mail_auth::Txt, _valid_until: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Verifies a message's DKIM signature against `public`, published as
/// `sel._domainkey.example.com`.
pub fn assert_dkim_pass(message: &[u8], public: &str) {
    let cache = TxtCache(Default::default());
    let record: mail_auth::common::verify::DomainKey =
        mail_auth::common::parse::TxtRecordParser::parse(format!("v=DKIM1; k=rsa; p={public}").as_bytes())
            .unwrap();
    mail_auth::ResolverCache::insert(
        &cache,
        "sel._domainkey.example.com.".into(),
        record.into(),
        std::time::Instant::now() + Duration::from_secs(3600),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let authenticator = mail_auth::MessageAuthenticator::new_cloudflare().unwrap();
        let parsed = mail_auth::AuthenticatedMessage::parse(message).unwrap();
        let out = authenticator
            .verify_dkim(mail_auth::Parameters::new(&parsed).with_txt_cache(&cache))
            .await;
        out.iter().map(|o| o.result().clone()).collect::<Vec<_>>()
    });
    assert_eq!(
        results,
        vec![mail_auth::DkimResult::Pass],
        "{}",
        String::from_utf8_lossy(message)
    );
}

/// The message as the remote MX received it: smtp-sink's own headers (up to its
/// three-line Received header) and its trailing empty line removed, CRLF restored.
pub fn received_message(dump: &str) -> Vec<u8> {
    let lines: Vec<&str> = dump.split('\n').collect();
    let received = lines
        .iter()
        .position(|l| l.starts_with("Received: from "))
        .unwrap();
    let body = &lines[received + 3..];
    let mut out = body.join("\r\n");
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out.into_bytes()
}

#[test]
fn outbound_mail_follows_the_route_and_is_dkim_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = Sink::start(&tmp.path().join("remote"), free_port(), &[]);
    let primary = Sink::start(&tmp.path().join("primary"), free_port(), &[]);
    let (key, public) = dkim_key(tmp.path());
    let config = delivery_config(&format!(
        "routes = {{ \"remote.org\" = \"127.0.0.1:{}\" }}",
        remote.port
    ));
    let relay = format!("127.0.0.1:{}", primary.port);
    let key_path = key.display().to_string();
    let server = TestServer::setup(&config, |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &relay,
            "--dkim-selector",
            "sel",
            "--dkim-key",
            &key_path,
        ]);
        s.add_user("anna@example.com", PASSWORD);
    });
    submit(&server, "bob@remote.org", "out1@example.com");
    wait_until(Duration::from_secs(30), "the message at the remote MX", || {
        !remote.with("<out1@example.com>").is_empty()
    });
    // The sent-mail record reaches the primary too, addressed to the sender only.
    wait_until(Duration::from_secs(30), "the sent record at the primary", || {
        !primary.with("<out1@example.com>").is_empty()
    });
    let dump = remote.with("<out1@example.com>").remove(0);
    assert!(dump.contains("X-Rcpt-Args: <bob@remote.org>"), "{dump}");
    assert!(dump.contains("X-Mail-Args: <anna@example.com>"), "{dump}");
    let record = primary.with("<out1@example.com>").remove(0);
    assert!(record.contains("X-Rcpt-Args: <anna@example.com>"), "{record}");
    assert!(
        !record.contains("DKIM-Signature"),
        "relay copies are not re-signed: {record}"
    );

    let message = received_message(&dump);
    assert!(message.starts_with(b"DKIM-Signature:"), "{dump}");
    assert_dkim_pass(&message, &public);
}

#[test]
fn a_4xx_is_retried_and_a_5xx_bounces_to_the_senders_inbox() {
    let tmp = tempfile::tempdir().unwrap();
    let soft_port = free_port();
    let soft = Sink::start(&tmp.path().join("soft"), soft_port, &["-r", "RCPT"]);
    let hard = Sink::start(&tmp.path().join("hard"), free_port(), &["-f", "RCPT"]);
    let primary = Sink::start(&tmp.path().join("primary"), free_port(), &[]);
    let config = delivery_config(&format!(
        "routes = {{ \"later.org\" = \"127.0.0.1:{soft_port}\", \"bounce.org\" = \"127.0.0.1:{}\" }}",
        hard.port
    ));
    let relay = format!("127.0.0.1:{}", primary.port);
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com", "--relay-host", &relay]);
        s.add_user("anna@example.com", PASSWORD);
    });

    submit(&server, "carol@later.org", "soft1@example.com");
    wait_log(&mut server, "rcpt=carol@later.org reply=450");
    assert!(soft.messages().is_empty());
    // The remote server recovers: the next attempt (1 s back-off) gets through.
    drop(soft);
    let soft = Sink::start(&tmp.path().join("soft"), soft_port, &[]);
    wait_until(Duration::from_secs(30), "the retried message", || {
        !soft.with("<soft1@example.com>").is_empty()
    });

    submit(&server, "dave@bounce.org", "hard1@example.com");
    wait_log(&mut server, "DSN queued to the sender");
    let script = r#"
import poplib, ssl, sys
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
p.user("anna@example.com"); p.pass_("Correct1horse")
for i in range(1, p.stat()[0] + 1):
    print(b"\n".join(p.retr(i)[1]).decode("utf-8", "replace"))
    print("=====")
p.quit()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(out.contains("Undelivered Mail Returned to Sender"), "{out}");
    assert!(out.contains("multipart/report"), "{out}");
    assert!(out.contains("Final-Recipient: rfc822; dave@bounce.org"), "{out}");
    assert!(out.contains("Status: 5."), "{out}");
    assert!(
        out.contains("<hard1@example.com>"),
        "original headers attached: {out}"
    );
    assert!(hard.messages().is_empty());
}

#[test]
fn required_tls_is_verified_and_refuses_a_server_without_starttls() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = Sink::start(&tmp.path().join("plain"), free_port(), &[]);
    let primary = Sink::start(&tmp.path().join("primary"), free_port(), &[]);
    // Another Understudy plays the remote MX: it offers STARTTLS with the dev certificate.
    let remote = TestServer::setup("", |s| {
        s.admin_ok(&["domain", "add", "remote.org"]);
        s.add_user("bob@remote.org", PASSWORD);
    });
    let config = delivery_config(&format!(
        "outbound_tls = \"required\"\ntls_ca_file = \"{}\"\nroutes = {{ \"remote.org\" = \"localhost:{}\", \"plain.org\" = \"127.0.0.1:{}\" }}",
        ca_cert().display(),
        remote.addr("smtp").port(),
        plain.port
    ));
    let relay = format!("127.0.0.1:{}", primary.port);
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com", "--relay-host", &relay]);
        s.add_user("anna@example.com", PASSWORD);
    });
    submit(&server, "bob@remote.org", "tls1@example.com");
    submit(&server, "eve@plain.org", "tls2@example.com");
    wait_log(&mut server, "does not offer STARTTLS");
    assert!(plain.messages().iter().all(|m| !m.contains("<tls2@example.com>")));
    let script = r#"
import poplib, ssl, sys, time
deadline = time.time() + 30
while True:
    p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
    p.user("bob@remote.org"); p.pass_("Correct1horse")
    n = p.stat()[0]
    if n or time.time() > deadline:
        break
    p.quit(); time.sleep(0.1)
for i in range(1, n + 1):
    print(b"\n".join(p.retr(i)[1]).decode("utf-8", "replace"))
p.quit()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            remote.addr("pop3s").port().to_string(),
        ],
    );
    assert!(out.contains("<tls1@example.com>"), "{out}");
    assert!(out.contains("with ESMTPS"), "delivered over TLS: {out}");
}

/// Issue 19 item 5: a quoted local part was unquoted by the parser and written back raw,
/// so `MAIL FROM:<"x> AUTH=<ceo@example.test> SIZE=1 BODY=8BITMIME X=<y"@foreign.example>`
/// on the MX port reached the primary with forged AUTH/SIZE/BODY parameters. Now it is
/// quoted again on the way out.
#[test]
fn quoted_local_parts_cannot_inject_parameters_toward_the_primary() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, server) = relaying_to_a_sink(tmp.path(), |_| {});
    let script = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
f = s.makefile("rb")
def cmd(line, code):
    if line is not None:
        s.sendall(line.encode() + b"\r\n")
    reply = f.readline().decode()
    while reply[3:4] == "-":
        reply = f.readline().decode()
    assert reply.startswith(code), (line, reply)
cmd(None, "220")
cmd("EHLO filter.example.net", "250")
cmd('MAIL FROM:<"x> AUTH=<ceo@example.test> SIZE=1 BODY=8BITMIME X=<y"@foreign.example>', "250")
cmd("RCPT TO:<anna@example.com>", "250")
cmd("DATA", "354")
cmd("Subject: injected\r\nMessage-ID: <inject@foreign.example>\r\n\r\nhi\r\n.", "250")
cmd("QUIT", "221")
"#;
    python_ok(script, &[server.addr("smtp").port().to_string()]);
    wait_until(Duration::from_secs(30), "the message at the primary", || {
        !primary.with("<inject@foreign.example>").is_empty()
    });
    let dump = primary.with("<inject@foreign.example>").remove(0);
    let args = dump
        .lines()
        .find(|l| l.starts_with("X-Mail-Args:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        args.starts_with(
            r#"X-Mail-Args: <"x> AUTH=<ceo@example.test> SIZE=1 BODY=8BITMIME X=<y"@foreign.example>"#
        ),
        "{args}"
    );
}
