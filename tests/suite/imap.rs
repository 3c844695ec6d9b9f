//! IMAP with Python's imaplib (and a raw TLS socket for IDLE): login both ways, special-use
//! folders, FETCH of structure and sections, STORE/SEARCH/COPY/MOVE/EXPUNGE/APPEND, two
//! sessions kept consistent, IDLE pushing new mail, STARTTLS and LOGINDISABLED.

use crate::harness::*;
use crate::pop3::deliver_samples;

fn imap(server: &TestServer, script: &str) -> String {
    let prelude = r#"
import imaplib, ssl, sys, socket, time, base64
CA, PORT, PORT_PLAIN, PORT_SMTP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
CTX = ssl.create_default_context(cafile=CA)
def connect():
    m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX, timeout=30)
    m.login("anna@example.com", "Correct1horse")
    return m
def send(subject, body="hello\r\n"):
    import smtplib
    with smtplib.SMTP("127.0.0.1", PORT_SMTP, timeout=30) as s:
        s.sendmail("bob@example.net", ["anna@example.com"],
                   ("From: Bob <bob@example.net>\r\nTo: anna@example.com\r\nSubject: %s\r\n"
                    "Message-ID: <%s@example.net>\r\n\r\n%s" % (subject, subject.replace(" ", "-"), body)).encode())
"#;
    python_ok(
        &format!("{prelude}\n{script}"),
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("imap").port().to_string(),
            server.addr("smtp").port().to_string(),
        ],
    )
}

#[test]
fn imap_reads_folders_structure_and_sections_and_changes_flags() {
    let server = TestServer::start();
    deliver_samples(&server, 2);
    let out = imap(
        &server,
        r#"
m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX, timeout=30)
typ, caps = m.capability()
print("caps", caps[0].decode())
m.authenticate("PLAIN", lambda _: b"\0anna@example.com\0Correct1horse")
typ, boxes = m.list()
for b in boxes: print("list", b.decode())
typ, data = m.select("INBOX")
print("select", typ, data)
typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
print("fetch1", data[0].decode("utf-8", "replace"))
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("header", data[0][1])
typ, data = m.fetch("2", "(BODY[TEXT]<0.10>)")
print("partial", data[0][1])
typ, data = m.fetch("1:2", "(FLAGS)")
print("flags", data)
typ, data = m.store("1", "+FLAGS", "(\\Flagged $Important)")
print("store", data)
typ, data = m.search(None, "FLAGGED")
print("search flagged", data)
typ, data = m.search("UTF-8", "BODY", "leading")
print("search body", data)
# _simple_command returns the tagged reply text, where COPYUID lives (RFC 4315).
typ, data = m._simple_command("UID", "COPY", "1", "Archive")
print("copy", typ, data)
m.response("OK")  # forget earlier untagged OKs
typ, data = m._simple_command("UID", "MOVE", "2", "Trash")
# RFC 6851: COPYUID comes in an untagged OK before the EXPUNGE.
print("move", typ, data, m.response("OK"))
typ, data = m.status("Archive", "(MESSAGES UNSEEN UIDNEXT)")
print("status", data)
typ, data = m.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(time.time()), b"Subject: draft\r\n\r\nunfinished\r\n")
print("append", typ, data)
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
print("expunge", data)
typ, data = m.select("INBOX")
print("after", data)
m.logout()
"#,
    );
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    let caps = line("caps");
    for cap in [
        "IMAP4rev1",
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "CONDSTORE",
        "LITERAL+",
        "NAMESPACE",
    ] {
        assert!(caps.contains(cap), "{cap} missing: {caps}");
    }
    for (name, attr) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("list") && l.contains(attr) && l.contains(name)),
            "{name} with {attr} missing:\n{out}"
        );
    }
    assert!(line("select").contains("[b'2']"), "{out}");
    let fetch = line("fetch1");
    assert!(
        fetch.contains("ENVELOPE (") && fetch.contains("\"sample 0\""),
        "{fetch}"
    );
    assert!(
        fetch
            .to_ascii_lowercase()
            .contains("(\"text\" \"plain\" (\"charset\" \"utf-8\")"),
        "{fetch}"
    );
    assert!(line("header").contains("Subject: sample 0"), "{out}");
    assert!(line("partial").contains("b'first line'"), "{out}");
    assert!(line("search flagged").contains("[b'1']"), "{out}");
    assert!(line("search body").contains("b'1 2'"), "{out}");
    assert!(line("copy").contains("COPYUID"), "{out}");
    assert!(
        line("move").starts_with("move OK") && line("move").contains("COPYUID"),
        "{out}"
    );
    assert!(line("status").contains("MESSAGES 1"), "{out}");
    assert!(line("append").contains("APPENDUID"), "{out}");
    assert!(
        line("after").contains("[b'0']"),
        "INBOX should be empty after MOVE and EXPUNGE:\n{out}"
    );
}

#[test]
fn imap_sessions_see_each_others_changes_and_idle_pushes_new_mail() {
    let server = TestServer::start();
    deliver_samples(&server, 1);
    let out = imap(
        &server,
        r#"
a = connect(); b = connect()
print("a select", a.select("INBOX")[1])
print("b select", b.select("INBOX")[1])
print("a recent", a.response("RECENT"), "b recent", b.response("RECENT"))
send("second")
typ, data = a.noop()
print("a noop", a.response("EXISTS")[1][-1])
b.store("1", "+FLAGS", "(\\Deleted)"); b.expunge()
typ, data = a.noop()
print("a after expunge", a.response("EXPUNGE")[1][-1])
# IDLE over a raw TLS socket: imaplib has no IDLE before Python 3.14.
raw = CTX.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=10), server_hostname="localhost")
f = raw.makefile("rb")
f.readline()
raw.sendall(b"a1 LOGIN anna@example.com Correct1horse\r\na2 SELECT INBOX\r\n")
while not f.readline().startswith(b"a2 "): pass
raw.sendall(b"a3 IDLE\r\n")
print("idle", f.readline().decode().strip())
t0 = time.time()
send("third")
line = f.readline().decode().strip()
print("pushed", line, "within", "1s" if time.time() - t0 < 1.0 else "%.2fs" % (time.time() - t0))
raw.sendall(b"DONE\r\n")
while True:
    l = f.readline()
    if l.startswith(b"a3 "):
        print("done", l.decode().strip()); break
raw.close(); a.logout(); b.logout()
"#,
    );
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("a recent").contains("[b'1']") && line("a recent").contains("b recent ('RECENT', [b'0'])"),
        "\\Recent must go to exactly one session:\n{out}"
    );
    assert_eq!(line("a noop"), "a noop b'2'", "{out}");
    assert_eq!(line("a after expunge"), "a after expunge b'1'", "{out}");
    assert!(line("idle").starts_with("idle +"), "{out}");
    assert!(line("pushed").contains("EXISTS"), "{out}");
    assert!(line("done").contains("OK"), "{out}");
}

#[test]
fn imap_plain_port_requires_starttls_before_login() {
    let server = TestServer::start();
    let out = imap(
        &server,
        r#"
m = imaplib.IMAP4("127.0.0.1", PORT_PLAIN, timeout=30)
print("caps", " ".join(m.capabilities))
try:
    m.login("anna@example.com", "Correct1horse"); print("login accepted before TLS")
except imaplib.IMAP4.error as e:
    print("refused", e)
m.starttls(ssl_context=CTX)
print("caps after", " ".join(m.capabilities))
print("login", m.login("anna@example.com", "Correct1horse")[0])
try:
    m.login("anna@example.com", "Wrong1horse")
except imaplib.IMAP4.error as e:
    print("second login", e)
m.logout()
m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX, timeout=30)
for user, pw in [("anna@example.com", "Wrong1horse"), ("ghost@example.com", "Correct1horse")]:
    try:
        m.login(user, pw)
    except imaplib.IMAP4.error as e:
        print("fail", e)
"#,
    );
    let caps = out.lines().find(|l| l.starts_with("caps ")).unwrap_or_default();
    assert!(
        caps.contains("LOGINDISABLED") && caps.contains("STARTTLS"),
        "{out}"
    );
    assert!(out.contains("refused"), "{out}");
    let after = out
        .lines()
        .find(|l| l.starts_with("caps after"))
        .unwrap_or_default();
    assert!(
        !after.contains("LOGINDISABLED") && after.contains("AUTH=PLAIN"),
        "{out}"
    );
    assert!(out.contains("login OK"), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("fail")).collect();
    assert_eq!(fails.len(), 2, "{out}");
    assert_eq!(fails[0], fails[1], "replies reveal which users exist:\n{out}");
}

#[test]
fn per_user_session_limit_and_command_pacing() {
    let server = TestServer::setup(
        "[limits]\nmax_connections_per_user = 2\nmax_commands_per_second = 50\n",
        |s| {
            s.admin_ok(&["domain", "add", "example.com"]);
            s.add_user("anna@example.com", PASSWORD);
        },
    );
    let out = python_ok(
        r#"
import imaplib, poplib, ssl, sys, time
CTX = ssl.create_default_context(cafile=sys.argv[1])
PORT, POP = int(sys.argv[2]), int(sys.argv[3])
def imap():
    return imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX, timeout=30)
a, b, c = imap(), imap(), imap()
a.login("anna@example.com", "Correct1horse")
b.login("anna@example.com", "Correct1horse")
try:
    c.login("anna@example.com", "Correct1horse")
    print("third: logged in")
except imaplib.IMAP4.error as e:
    print("third:", e)
p = poplib.POP3_SSL("127.0.0.1", POP, context=CTX, timeout=30)
p.user("anna@example.com")
try:
    p.pass_("Correct1horse")
    print("pop: logged in")
except poplib.error_proto as e:
    print("pop:", e.args[0].decode())
# A session that ends gives its slot back.
a.logout()
deadline = time.time() + 10
while True:
    try:
        c.login("anna@example.com", "Correct1horse")
        print("third after logout: ok")
        break
    except imaplib.IMAP4.error as e:
        if time.time() > deadline:
            print("third after logout:", e)
            break
        c = imap()
# 150 pipelined NOOPs at 50/s with a burst of 100: all answered in order; the burst
# left about a second of debt, so the next command waits that long for its answer.
sock = b.socket()
def until(tag):
    data = b""
    while not data.endswith(tag + b" OK NOOP completed\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
sock.sendall(b"".join(b"n%d NOOP\r\n" % i for i in range(150)))
data = until(b"n149")
tags = [l.split(b" ")[0] for l in data.split(b"\r\n") if l.startswith(b"n")]
start = time.time()
sock.sendall(b"next NOOP\r\n")
until(b"next")
print("noops", len(tags), tags == [b"n%d" % i for i in range(150)], "paced", time.time() - start >= 0.9)
"#,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(
        out.contains("third: b'[LIMIT] Too many open connections for this account; close another mail app and try again'"),
        "{out}"
    );
    assert!(
        out.contains("pop: -ERR [IN-USE] too many open connections"),
        "{out}"
    );
    assert!(out.contains("third after logout: ok"), "{out}");
    assert!(out.contains("noops 150 True paced True"), "{out}");
}

/// RFC 6855 §7 with a real client: SMTPUTF8 mail (raw UTF-8 in From, Subject and an
/// attachment's filename) reaches Python's imaplib, which never enables UTF8=ACCEPT,
/// as ASCII: encoded-words that decode to the original text, RFC 2231 parameters, the
/// non-ASCII address in RFC 6857's group form. A session that enables UTF8=ACCEPT gets
/// the header as stored.
#[test]
fn a_client_without_utf8_accept_gets_smtputf8_headers_as_ascii() {
    let server = TestServer::start();
    let out = imap(
        &server,
        r#"
import smtplib, email.header, email.utils
message = ("From: Jörg Müller <jörg@example.net>\r\nTo: anna@example.com\r\n"
           "Subject: Grüße aus Köln\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo\r\n"
           "--b\r\nContent-Type: application/pdf\r\n"
           "Content-Disposition: attachment; filename=\"März.pdf\"\r\n\r\n%PDF\r\n--b--\r\n")
with smtplib.SMTP("127.0.0.1", PORT_SMTP, timeout=30) as s:
    s.ehlo()
    print("smtputf8", s.has_extn("smtputf8"))
    s.sendmail("jörg@example.net", ["anna@example.com"], message.encode(), mail_options=["SMTPUTF8"])
m = connect()
m.select("INBOX")
typ, data = m.fetch("1", "(ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
raw = data[0][0] + data[0][1] + data[1]
print("ascii", all(b < 128 for b in raw))
header = email.message_from_bytes(data[0][1])
subject = str(email.header.make_header(email.header.decode_header(header["Subject"])))
print("subject", subject)
sender = str(email.header.make_header(email.header.decode_header(header["From"])))
print("from", sender)
print("filename", b'"filename*" "utf-8\'\'M%C3%A4rz.pdf"' in raw)
m.logout()
m = connect()
print("enable", m.enable("UTF8=ACCEPT")[0])
m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("raw", data[0][1].decode("utf-8").strip())
m.logout()
"#,
    );
    assert!(out.contains("smtputf8 True"), "{out}");
    assert!(out.contains("ascii True"), "{out}");
    assert!(out.contains("subject Grüße aus Köln\n"), "{out}");
    assert!(out.contains("from Jörg Müller <jörg@example.net> :;\n"), "{out}");
    assert!(out.contains("filename True"), "{out}");
    assert!(out.contains("enable OK"), "{out}");
    assert!(out.contains("raw Subject: Grüße aus Köln\n"), "{out}");
}
