//! IMAP extensions through real clients over TLS: SORT and THREAD with Python's
//! `imapclient` on mail delivered over SMTP (so the keys come from the summaries the
//! store wrote with each body), from two connections (the second one served from the
//! shared cache); QUOTA and STATUS=SIZE with `imapclient`; QRESYNC with `imapclient`
//! (and its imaplib for the SELECT parameter it lacks); MULTIAPPEND and BINARY with `imapclient`;
//! CATENATE and CONTEXT=SEARCH/SORT through imapclient's imaplib connection (no Python library
//! speaks them); IMAP4rev2 and UTF8=ACCEPT beside a rev1 session with imaplib and imapclient;
//! COMPRESS=DEFLATE with
//! Python's `zlib` (raw DEFLATE) on a TLS socket, since no Python IMAP library speaks it.

use crate::harness::*;

#[test]
fn imapclient_sorts_and_threads_mail_delivered_over_smtp() {
    let server = TestServer::start();
    let script = r#"
PORT_SMTP = int(sys.argv[3])
mails = [
    ("Zed <zed@example.net>", "Lunch", "<1@x>", "", "10:00"),
    ("amy@example.net", "Re: Lunch", "<2@x>", "<1@x>", "11:00"),
    ("Carol <carol@example.net>", "Budget", "<3@x>", "", "09:00"),
    ("bob@example.net", "Re: Re: Lunch", "<4@x>", "<1@x> <2@x>", "12:00"),
    ("Carol <carol@example.net>", "Re: [fin] Budget", "<5@x>", "<3@x>", "08:00"),
]
with smtplib.SMTP("127.0.0.1", PORT_SMTP, timeout=30) as s:
    for sender, subject, mid, refs, time in mails:
        head = "From: %s\r\nTo: anna@example.com\r\nSubject: %s\r\nMessage-ID: %s\r\n" % (sender, subject, mid)
        if refs:
            head += "References: %s\r\n" % refs
        head += "Date: Tue, 2 Jan 2024 %s:00 +0100\r\n\r\nhello\r\n" % time
        s.sendmail("sender@example.net", ["anna@example.com"], head.encode())
for n in (1, 2):
    c = connect()
    if n == 1:
        print("caps", sorted(x.decode() for x in c.capabilities() if x.startswith((b"SORT", b"THREAD", b"ESORT"))))
    c.select_folder("INBOX", readonly=True)
    print(n, "date", c.sort(["DATE"]))
    print(n, "subject", c.sort(["REVERSE", "SUBJECT", "DATE"]))
    print(n, "from", c.sort(["FROM"], ["NOT", "SUBJECT", "budget"]))
    print(n, "references", c.thread("REFERENCES"))
    print(n, "orderedsubject", c.thread("ORDEREDSUBJECT"))
    c.logout()
"#;
    let out = imapclient(&server, script, &[server.addr("smtp").port().to_string()]);
    let expected = "caps ['ESORT', 'SORT', 'SORT=DISPLAY', 'THREAD=ORDEREDSUBJECT', 'THREAD=REFERENCES']\n";
    assert!(out.starts_with(expected), "{out}");
    for n in [1, 2] {
        for (what, result) in [
            ("date", "[5, 3, 1, 2, 4]"),
            ("subject", "[1, 2, 4, 5, 3]"),
            ("from", "[2, 4, 1]"),
            ("references", "((3, 5), (1, 2, 4))"),
            ("orderedsubject", "((5, 3), (1, (2,), (4,)))"),
        ] {
            let line = format!("{n} {what} {result}");
            assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
        }
    }
}

#[test]
fn imapclient_reads_the_quota_the_administrator_set_and_mailbox_sizes() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 3);
    let script = r#"
step = sys.argv[3]
c = connect()
roots, quotas = c.get_quota_root("INBOX")
print(step, "root", roots.mailbox, roots.quota_roots)
print(step, "quotas", [(q.quota_root, q.resource, q.usage, q.limit) for q in quotas])
size = c.folder_status("INBOX", ["MESSAGES", "SIZE"])
c.select_folder("INBOX", readonly=True)
fetched = sum(d[b"RFC822.SIZE"] for d in c.fetch(c.search(), ["RFC822.SIZE"]).values())
print(step, "size", size[b"MESSAGES"], size[b"SIZE"] == fetched)
print(step, "kib", -(-size[b"SIZE"] // 1024))
c.logout()
"#;
    let before = imapclient(&server, script, &["before".into()]);
    server.admin_ok(&["user", "set", "anna@example.com", "--quota", "2097152"]);
    let after = imapclient(&server, script, &["after".into()]);
    // Use in KiB rounded up, as STATUS SIZE counts it.
    let kib = after
        .lines()
        .find_map(|l| l.strip_prefix("after kib "))
        .unwrap_or_else(|| panic!("{after}"));
    let quotas = format!("after quotas [('', 'STORAGE', {kib}, 2048)]");
    for line in [
        "before root INBOX []",
        "before quotas []",
        "before size 3 True",
        "after root INBOX ['']",
        &quotas,
        "after size 3 True",
    ] {
        assert!(
            before.lines().chain(after.lines()).any(|l| l == line),
            "no {line:?} in:\n{before}{after}"
        );
    }
}

#[test]
fn imapclient_resynchronises_with_qresync_after_another_session_expunged() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 4);
    // imapclient has ENABLE and FETCH modifiers but no SELECT parameters: the QRESYNC
    // SELECT goes through its imaplib connection, as a client library's escape hatch.
    let script = r#"
a = connect()
print("caps", b"QRESYNC" in a.capabilities())
print("enable", a.enable("QRESYNC"))
sel = a.select_folder("INBOX")
validity, known = sel[b"UIDVALIDITY"], sel[b"HIGHESTMODSEQ"]
b = connect()
b.select_folder("INBOX")
b.add_flags([2], [imapclient.SEEN])
b.set_flags([3], [imapclient.DELETED])
b.expunge()
print("noop", [r for r in a.noop()[1] if r[0] == b"VANISHED" or r[1] == b"FETCH"])
a._imap.untagged_responses.pop("VANISHED", None)
print("fetch", a.fetch([1, 2, 3, 4], ["FLAGS"], modifiers=["CHANGEDSINCE %d" % known, "VANISHED"]))
print("earlier", a._imap.untagged_responses.pop("VANISHED", None))
c = connect()
c.enable("QRESYNC")
typ, _ = c._imap._simple_command("SELECT", "INBOX (QRESYNC (%d %d 1:4))" % (validity, known))
print("select", typ, c._imap.untagged_responses.get("VANISHED"), c._imap.untagged_responses.get("FETCH"))
c.logout(); b.logout(); a.logout()
"#;
    let out = imapclient(&server, script, &[]);
    assert_eq!(out.line("caps"), "caps True");
    assert_eq!(out.line("enable"), "enable [b'QRESYNC']");
    assert!(out.line("noop").contains("(b'VANISHED', 3)"), "{out}");
    // Only UID 2 changed; UID 3 is reported vanished, not fetched.
    let fetch = out.line("fetch");
    assert!(
        fetch.starts_with("fetch {2: {b'SEQ': 2, b'FLAGS': (b'\\\\Seen', b'\\\\Recent'), b'MODSEQ': (")
            && fetch.ends_with(",)}}"),
        "{out}"
    );
    assert_eq!(out.line("earlier"), "earlier [b'(EARLIER) 3']");
    assert!(
        out.line("select")
            .starts_with("select OK [b'(EARLIER) 3'] [b'2 (UID 2 FLAGS (\\\\Seen) MODSEQ ("),
        "{out}"
    );
}

#[test]
fn imapclient_multiappends_drafts_in_one_command() {
    let server = TestServer::start();
    let script = r#"
c = connect()
print("caps", b"MULTIAPPEND" in c.capabilities())
one = b"From: anna@example.com\r\nSubject: one\r\n\r\nfirst\r\n"
when = datetime.datetime(2024, 2, 1, 10, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
print("append", c.multiappend("Drafts", [
    one,
    {"msg": b"From: anna@example.com\r\nSubject: two\r\n\r\n" + b"x" * 300000 + b"\r\n", "flags": [imapclient.DRAFT, b"$Later"], "date": when},
    {"msg": one, "flags": [imapclient.SEEN]},
]))
print("refused", c.multiappend("Nowhere", [one, one]))
c.select_folder("Drafts", readonly=True)
for uid, d in sorted(c.fetch(c.search(), ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()):
    print("msg", uid, sorted(d[b"FLAGS"]), d[b"INTERNALDATE"].isoformat()[:10], d[b"RFC822.SIZE"] > 300000,
          d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip().decode())
c.logout()
"#;
    let out = imapclient(&server, script, &[]);
    let want = [
        "caps True",
        "append ('OK', [b'[APPENDUID ",
        "msg 1 [b'\\\\Recent'] ",
        "msg 2 [b'$Later', b'\\\\Draft', b'\\\\Recent'] 2024-02-01 True Subject: two",
        "msg 3 [b'\\\\Recent', b'\\\\Seen'] ",
    ];
    for w in want {
        assert!(out.lines().any(|l| l.starts_with(w)), "no {w:?} in:\n{out}");
    }
    assert!(out.contains(" 1:3] APPEND completed'])"), "{out}");
    assert!(
        out.contains("refused ('NO', [b'[TRYCREATE] Mailbox does not exist'])"),
        "{out}"
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("msg ")).count(), 3, "{out}");
}

#[test]
fn imapclient_fetches_decoded_binary_parts() {
    let server = TestServer::start();
    let script = r#"
import imapclient, ssl, sys, smtplib, base64
PORT_SMTP = int(sys.argv[3])
# No NUL: imapclient reads no literal8, which the server uses only for data with NUL
# (the session tests cover that).
pdf = bytes(range(1, 256)) * 4
mail = (b"From: bob@example.net\r\nTo: anna@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nVoil=C3=A0 le rapport=\r\n.\r\n--b\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(pdf).replace(b"\n", b"\r\n") + b"--b--\r\n")
with smtplib.SMTP("127.0.0.1", PORT_SMTP, timeout=30) as s:
    s.sendmail("bob@example.net", ["anna@example.com"], mail)
c = connect()
print("caps", b"BINARY" in c.capabilities())
c.select_folder("INBOX")
d = c.fetch([1], ["BINARY.PEEK[1]", "BINARY.SIZE[2]", "FLAGS"])[1]
print("text", d[b"BINARY[1]"].decode("utf-8"))
print("size", d[b"BINARY.SIZE[2]"], len(pdf), d[b"FLAGS"])
d = c.fetch([1], ["BINARY[2]<0.1000>"])[1]
print("pdf", d[b"BINARY[2]<0>"] == pdf[:1000], c.get_flags([1])[1])
c.logout()
"#;
    let out = imapclient(&server, script, &[server.addr("smtp").port().to_string()]);
    for want in [
        "caps True",
        "text Voilà le rapport.",
        "size 1020 1020 (b'\\\\Recent',)",
        "pdf True (b'\\\\Seen', b'\\\\Recent')",
    ] {
        assert!(out.lines().any(|l| l == want), "no {want:?} in:\n{out}");
    }
}

#[test]
fn catenate_rebuilds_a_delivered_message_from_its_header_and_text_urls() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 1);
    // No Python library speaks CATENATE: the APPEND goes through imapclient's imaplib
    // connection (URL parts need no literal), the result is read back with imapclient.
    let script = r#"
c = connect()
print("caps", b"CATENATE" in c.capabilities())
validity = c.select_folder("INBOX")[b"UIDVALIDITY"]
original = c.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
typ, data = c._imap._simple_command("APPEND", 'Drafts CATENATE (URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=HEADER" '
                                    'URL "imap://anna%%40example.com@localhost/INBOX/;UID=1/;SECTION=TEXT")' % validity)
print("append", typ, c._imap.untagged_responses.get("APPENDUID") or data)
typ, data = c._imap._simple_command("APPEND", 'Drafts CATENATE (URL "/INBOX;UIDVALIDITY=%d/;UID=1")' % (validity + 1))
print("stale", typ, data)
c.select_folder("Drafts", readonly=True)
copy = c.fetch(c.search(), ["BODY.PEEK[]"])
print("copies", len(copy), list(copy.values())[0][b"BODY[]"] == original)
c.logout()
"#;
    let out = imapclient(&server, script, &[]);
    assert_eq!(out.line("caps"), "caps True");
    assert!(out.line("append").starts_with("append OK"), "{out}");
    assert!(
        out.line("stale")
            .starts_with("stale NO [b'[BADURL /INBOX;UIDVALIDITY="),
        "{out}"
    );
    assert_eq!(out.line("copies"), "copies 1 True");
}

#[test]
fn context_search_and_sort_page_and_update_over_the_real_store() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 3);
    // No Python library speaks CONTEXT=SEARCH: the searches go through imapclient's
    // imaplib connection, the change that updates the context through imapclient.
    let script = r#"
a = connect()
print("caps", b"CONTEXT=SEARCH" in a.capabilities() and b"CONTEXT=SORT" in a.capabilities())
a.select_folder("INBOX")
typ, _ = a._imap._simple_command("UID", "SEARCH RETURN (PARTIAL -1:-2) ALL")
print("partial", typ, a._imap.untagged_responses.pop("ESEARCH", None))
typ, _ = a._imap._simple_command("UID", "SEARCH RETURN (UPDATE) UNSEEN")
print("update", typ, a._imap.untagged_responses.pop("ESEARCH", None))
typ, _ = a._imap._simple_command("UID", "SORT RETURN (UPDATE PARTIAL 1:2) (ARRIVAL) UTF-8 ALL")
print("sort", typ, a._imap.untagged_responses.pop("ESEARCH", None))
b = connect()
b.select_folder("INBOX")
b.add_flags([2], [imapclient.SEEN])
# Seen, so UNSEEN does not change; dated 2001, so it arrives first by ARRIVAL.
b.append("INBOX", b"From: bob@example.net\r\nSubject: old\r\n\r\nnew\r\n", flags=[imapclient.SEEN],
         msg_time=datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc))
b.logout()
a._imap._simple_command("NOOP")
print("noop", a._imap.untagged_responses.pop("ESEARCH", None))
a.logout()
"#;
    let out = imapclient(&server, script, &[]);
    let tag = |l: &str| l.split('"').nth(1).unwrap_or_default().to_string();
    assert_eq!(out.line("caps"), "caps True");
    let partial = out.line("partial");
    assert_eq!(
        partial,
        format!(
            "partial OK [b'(TAG \"{}\") UID PARTIAL (-1:-2 2:3)']",
            tag(&partial)
        )
    );
    let update = out.line("update");
    assert_eq!(
        update,
        format!("update OK [b'(TAG \"{}\") UID ALL 1:3']", tag(&update))
    );
    let sort = out.line("sort");
    assert_eq!(
        sort,
        format!("sort OK [b'(TAG \"{}\") UID PARTIAL (1:2 1:2)']", tag(&sort))
    );
    // The UNSEEN context loses UID 2; the sort context gains the new UID 4 first.
    assert_eq!(
        out.line("noop"),
        format!(
            "noop [b'(TAG \"{}\") UID REMOVEFROM (0 2)', b'(TAG \"{}\") UID ADDTO (1 4)']",
            tag(&update),
            tag(&sort)
        )
    );
}

#[test]
fn compress_deflate_with_zlib_on_a_tls_socket() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 2);
    let script = r#"
import socket, ssl, sys, zlib
CA, PORT = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=CA)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=30), server_hostname="localhost")
buf = b""
def line_plain():
    global buf
    while b"\r\n" not in buf:
        buf += s.recv(65536)
    l, buf = buf.split(b"\r\n", 1)
    return l
print("greeting", line_plain()[:4])
s.sendall(b"a LOGIN anna@example.com Correct1horse\r\n")
print("login", line_plain().split(b"]")[-1])
s.sendall(b"c COMPRESS DEFLATE\r\n")
print("compress", line_plain())
assert buf == b"", buf
out = zlib.compressobj(6, zlib.DEFLATED, -15)
inp = zlib.decompressobj(-15)
def send(cmd):
    s.sendall(out.compress(cmd) + out.flush(zlib.Z_SYNC_FLUSH))
def until(tag):
    data = b""
    while not data.endswith(b"\r\n") or (b"\r\n" + tag + b" " not in b"\r\n" + data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += inp.decompress(chunk)
    return data
send(b"s SELECT INBOX\r\n")
print("select", [l for l in until(b"s").split(b"\r\n") if b"EXISTS" in l or l.startswith(b"s ")])
send(b"f FETCH 1:* (RFC822.SIZE BODY.PEEK[])\r\n")
data = until(b"f")
print("fetch", data.count(b"Subject: sample"), data.rstrip().rsplit(b"\r\n", 1)[-1])
# A command split across two writes, each sync-flushed.
send(b"n NO")
send(b"OP\r\n")
print("noop", until(b"n").rstrip())
send(b"l LOGOUT\r\n")
print("logout", until(b"l").rstrip().split(b"\r\n"))
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
        ],
    );
    for line in [
        "greeting b'* OK'",
        "login b' Logged in'",
        "compress b'c OK DEFLATE active'",
        "select [b'* 2 EXISTS', b's OK [READ-WRITE] SELECT completed']",
        "fetch 2 b'f OK FETCH completed'",
        "noop b'n OK NOOP completed'",
        "logout [b'* BYE Logging out', b'l OK LOGOUT completed']",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
}

#[test]
fn imap4rev2_and_utf8_accept_sessions_beside_a_rev1_session() {
    let server = TestServer::start();
    crate::pop3::deliver_samples(&server, 2);
    // imaplib speaks ENABLE UTF8=ACCEPT itself (it then sends UTF-8 strings); imapclient
    // sends ENABLE IMAP4rev2 but parses SEARCH answers only, so the rev2 SEARCH goes
    // through its imaplib connection. imaplib's own UTF8 APPEND puts `UTF8 (` inside the
    // literal (CPython's bug, not the protocol), so APPEND UTF8 is left to the
    // byte-exact session test.
    let script = r#"
u = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=ctx, timeout=30)
u.login("anna@example.com", "Correct1horse")
print("caps", "IMAP4REV2" in u.capabilities and "UTF8=ACCEPT" in u.capabilities)
print("enable", u.enable("UTF8=ACCEPT"))
print("enabled", u.untagged_responses.get("ENABLED"), u.utf8_enabled)
print("create", u.create('"Entwürfe"')[0])
print("utf8list", u.list('""', '"Entw*"'))
print("utf8select", u.select('"Entwürfe"'))
u.logout()
old = connect()
print("rev1list", [f[2] for f in old.list_folders(pattern="Entw*")])
new = connect()
print("rev2enable", new.enable("IMAP4rev2"))
sel = new.select_folder("INBOX")
print("rev2select", sorted(k.decode() for k in sel), sel[b"EXISTS"])
# The rev2 SELECT took no \Recent, so the rev1 session still gets it.
sel = old.select_folder("INBOX")
print("rev1select", sorted(k.decode() for k in sel), sel[b"RECENT"])
print("rev1search", old.search(["ALL"]))
print("rev1flags", old.get_flags([1]))
typ, _ = new._imap._simple_command("UID", "SEARCH ALL")
print("rev2search", typ, new._imap.untagged_responses.pop("ESEARCH", None), new._imap.untagged_responses.pop("SEARCH", None))
print("rev2flags", new.get_flags([1]))
new.logout()
old.logout()
"#;
    let out = imapclient(&server, script, &[]);
    assert_eq!(out.line("caps"), "caps True");
    assert_eq!(out.line("enable"), "enable ('OK', [b'ENABLE completed'])");
    assert_eq!(out.line("enabled"), "enabled [b'UTF8=ACCEPT'] True");
    assert_eq!(out.line("create"), "create OK");
    assert_eq!(
        out.line("utf8list"),
        "utf8list ('OK', [b'(\\\\HasNoChildren) \"/\" \"Entw\\xc3\\xbcrfe\"'])"
    );
    assert!(
        out.line("utf8select").starts_with("utf8select ('OK', [b'0'])"),
        "{out}"
    );
    // The rev1 session sees the same mailbox in modified UTF-7, decoded by imapclient.
    assert_eq!(out.line("rev1list"), "rev1list ['Entwürfe']");
    assert_eq!(
        out.line("rev1select"),
        "rev1select ['EXISTS', 'FLAGS', 'PERMANENTFLAGS', 'READ-WRITE', 'RECENT', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN'] 2"
    );
    assert_eq!(out.line("rev1search"), "rev1search [1, 2]");
    assert_eq!(out.line("rev1flags"), "rev1flags {1: (b'\\\\Recent',)}");
    assert_eq!(out.line("rev2enable"), "rev2enable [b'IMAP4rev2']");
    // No RECENT (imapclient would list it), the LIST SELECT sends in its place.
    assert_eq!(
        out.line("rev2select"),
        "rev2select ['EXISTS', 'FLAGS', 'LIST', 'PERMANENTFLAGS', 'READ-WRITE', 'UIDNEXT', 'UIDVALIDITY'] 2"
    );
    let search = out.line("rev2search");
    assert!(
        search.starts_with("rev2search OK [b'(TAG \"") && search.ends_with("\") UID ALL 1:2'] None"),
        "{out}"
    );
    assert_eq!(out.line("rev2flags"), "rev2flags {1: ()}");
}
