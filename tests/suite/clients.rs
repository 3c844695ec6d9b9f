//! IMAP through third-party clients over TLS with the dev CA: `curl` fetching a message
//! over `imaps://`, `mbsync` (isync) syncing a mailbox both ways twice against a local
//! Maildir, and Python's `imapclient` driving every command a mail app uses, with IDLE
//! woken by a delivery from a second connection.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::pop3::deliver_samples;

/// Runs a client program with a deadline; returns (success, stdout, stderr).
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{program} not runnable (is it installed?): {e}"));
    let out = wait_output(child, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_fetches_a_message_over_imaps() {
    let server = TestServer::start();
    deliver_samples(&server, 2);
    let port = server.addr("imaps").port();
    let ca = ca_cert().display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let user = format!("anna@example.com:{PASSWORD}");
    let fetch = |url: &str| {
        let (ok, out, err) = run(
            "curl",
            &[
                "--silent",
                "--show-error",
                "--max-time",
                "30",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "--user",
                &user,
                url,
            ],
            &[],
        );
        assert!(ok, "curl {url} failed: {err}\n{out}");
        out
    };
    // A message by UID: curl sends SELECT then UID FETCH n BODY[] and prints the literal.
    let message = fetch(&format!("imaps://localhost:{port}/INBOX;UID=2"));
    assert!(message.contains("Subject: sample 1"), "{message}");
    assert!(message.contains("\r\n..two dots\r\n"), "{message:?}");
    assert!(message.contains("end 1"), "{message}");
    // One section of a message.
    let text = fetch(&format!("imaps://localhost:{port}/INBOX;UID=1;SECTION=TEXT"));
    assert!(
        text.starts_with("first line\r\n") && text.contains("end 0"),
        "{text:?}"
    );
    // The mailbox list (LIST "" *) with the special-use folders.
    let list = fetch(&format!("imaps://localhost:{port}/"));
    for name in ["INBOX", "Sent", "Drafts", "Trash"] {
        assert!(list.contains(name), "{name} missing:\n{list}");
    }
    // A custom request: SEARCH over the selected mailbox.
    let (ok, out, err) = run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--user",
            &user,
            "--request",
            "SEARCH SUBJECT \"sample 1\"",
            &format!("imaps://localhost:{port}/INBOX"),
        ],
        &[],
    );
    assert!(ok, "curl SEARCH failed: {err}");
    assert!(out.contains("* SEARCH 2"), "{out}");
    // A wrong password is refused and curl says so (exit 67: login denied).
    let (ok, _, err) = run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--user",
            "anna@example.com:Wrong1horse",
            &format!("imaps://localhost:{port}/INBOX;UID=1"),
        ],
        &[],
    );
    assert!(!ok, "wrong password accepted");
    assert!(err.to_lowercase().contains("login denied"), "{err}");
}

/// Names of the message files in a Maildir folder's `cur/` and `new/`.
fn maildir_files(folder: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(entries) = std::fs::read_dir(folder.join(sub)) {
            for e in entries.flatten() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names
}

/// The server's view of INBOX: `STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)`.
fn server_status(port: u16) -> String {
    python_ok(
        r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx, timeout=30)
m.login("anna@example.com", "Correct1horse")
print(m.status("INBOX", "(MESSAGES UIDNEXT HIGHESTMODSEQ)")[1][0].decode())
m.logout()
"#,
        &[ca_cert().display().to_string(), port.to_string()],
    )
}

#[test]
fn mbsync_syncs_both_ways_and_a_second_sync_changes_nothing() {
    let server = TestServer::start();
    deliver_samples(&server, 3);
    let port = server.addr("imaps").port();
    let home = server.dir.path().join("mbsync-home");
    let maildir = home.join("Mail");
    let inbox = maildir.join("INBOX");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).unwrap();
    }
    // A message only the local side has: the first sync must upload it.
    std::fs::write(
        inbox.join("new/1700000000.local1.host"),
        "From: anna@example.com\nTo: bob@example.net\nSubject: written offline\n\
         Message-ID: <offline-1@example.com>\n\nsent from the train\n",
    )
    .unwrap();
    let rc = home.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount understudy\n\
             Host localhost\n\
             Port {port}\n\
             User anna@example.com\n\
             Pass {PASSWORD}\n\
             SSLType IMAPS\n\
             CertificateFile {ca}\n\
             \n\
             IMAPStore remote\n\
             Account understudy\n\
             \n\
             MaildirStore local\n\
             Path {maildir}/\n\
             Inbox {inbox}\n\
             \n\
             Channel mail\n\
             Far :remote:\n\
             Near :local:\n\
             Patterns INBOX\n\
             Create Both\n\
             Expunge Both\n\
             SyncState *\n\
             Sync All\n",
            ca = ca_cert().display(),
            maildir = maildir.display(),
            inbox = inbox.display(),
        ),
    )
    .unwrap();
    let home_s = home.display().to_string();
    let rc_s = rc.display().to_string();
    let sync = || {
        // -V: what it did goes into the failure message.
        let (ok, out, err) = run("mbsync", &["-V", "-c", &rc_s, "-a"], &[("HOME", &home_s)]);
        assert!(ok, "mbsync failed:\nstdout:\n{out}\nstderr:\n{err}");
        format!("{out}\n{err}")
    };

    // A sync right after a sync must change nothing on either side: same Maildir files,
    // same mbsync state file (it records every pair of UIDs and the flags it knows), and
    // the same server mailbox (message count, UIDNEXT and HIGHESTMODSEQ move on any
    // change).
    let state = inbox.join(".mbsyncstate");
    let snapshot = || {
        (
            maildir_files(&inbox),
            std::fs::read_to_string(&state).unwrap(),
            server_status(port),
        )
    };
    let assert_noop_sync = |what: &str| {
        let before = snapshot();
        let log = sync();
        let after = snapshot();
        assert_eq!(before, after, "{what} changed something:\n{log}");
        after
    };

    let first = sync();
    let files = maildir_files(&inbox);
    assert_eq!(files.len(), 4, "3 downloaded + 1 local:\n{files:?}\n{first}");
    let after = assert_noop_sync("the second sync");
    assert!(after.2.contains("MESSAGES 4"), "{}", after.2);

    // Locally mark one downloaded message seen and flagged (Maildir info ":2,FS"); the
    // next sync must tell the server, and the one after must again change nothing.
    let downloaded = files
        .iter()
        .find(|n| !n.contains("local1"))
        .expect("a downloaded message")
        .clone();
    let base = downloaded.split(":2,").next().unwrap().to_string();
    let from = if inbox.join("cur").join(&downloaded).exists() {
        inbox.join("cur").join(&downloaded)
    } else {
        inbox.join("new").join(&downloaded)
    };
    std::fs::rename(&from, inbox.join("cur").join(format!("{base}:2,FS"))).unwrap();
    sync();
    let after = assert_noop_sync("the sync after the flag change was synced");
    assert_eq!(after.0.len(), 4, "{after:?}");

    // The server has the uploaded message and the flags set locally.
    let out = python_ok(
        r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx, timeout=30)
m.login("anna@example.com", "Correct1horse")
print("select", m.select("INBOX")[1][0].decode())
print("offline", m.search(None, "SUBJECT", '"written offline"')[1][0].decode())
print("flagged", m.search(None, "FLAGGED SEEN")[1][0].decode())
m.logout()
"#,
        &[ca_cert().display().to_string(), port.to_string()],
    );
    assert!(out.contains("select 4"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("offline ") && l.len() > "offline ".len()),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("flagged ") && l.split_whitespace().count() == 2),
        "{out}"
    );
}

#[test]
fn imapclient_drives_every_command_a_mail_app_uses() {
    let server = TestServer::start();
    deliver_samples(&server, 3);
    let script = r#"
PORT_SMTP = int(sys.argv[3])
c = connect()
print("caps", sorted(x.decode() for x in c.capabilities()))
print("folders", [(f[2], sorted(x.decode() for x in f[0])) for f in c.list_folders()])
print("special", c.find_special_folder(imapclient.imapclient.SENT), c.find_special_folder(imapclient.imapclient.TRASH))
print("enable", c.enable("CONDSTORE"))
sel = c.select_folder("INBOX")
print("select", sel[b"EXISTS"], "modseq" if b"HIGHESTMODSEQ" in sel else "nomodseq", sel[b"UIDVALIDITY"])
uids = c.search()
print("uids", uids)
data = c.fetch(uids, ["FLAGS", "ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]", "RFC822.SIZE", "INTERNALDATE", "MODSEQ"])
for uid in uids:
    d = data[uid]
    env = d[b"ENVELOPE"]
    body = d[b"BODY[]"]
    bs = d[b"BODYSTRUCTURE"]
    print("fetch", uid, env.subject.decode(), env.from_[0].mailbox.decode() + "@" + env.from_[0].host.decode(),
          "size-ok" if d[b"RFC822.SIZE"] == len(body) else "size-bad %d %d" % (d[b"RFC822.SIZE"], len(body)),
          bs[0].decode().lower(), bs[1].decode().lower(), d[b"INTERNALDATE"].year > 2000,
          d[b"MODSEQ"][0] > 0, d[b"FLAGS"])
print("search subject", c.search(["SUBJECT", "sample 1"]))
print("search body", c.search(["BODY", "Köln"], charset="UTF-8"))
before = max(d[b"MODSEQ"][0] for d in c.fetch(uids, ["MODSEQ"]).values())
print("store", c.add_flags(uids[0], [imapclient.SEEN, b"$Work"]))
after = c.fetch(uids[0], ["MODSEQ"])[uids[0]][b"MODSEQ"][0]
print("modseq grew", after > before)
print("changedsince", sorted(c.fetch(uids, ["FLAGS"], modifiers=["CHANGEDSINCE %d" % before]).keys()))
print("seen", c.search(["SEEN"]))
print("remove", c.remove_flags(uids[0], [b"$Work"]))
print("copy", c.copy(uids[1], "Archive"))
print("move", c.move(uids[2], "Trash"))
print("status", c.folder_status("Archive", ["MESSAGES", "UIDNEXT"]), c.folder_status("Trash", ["MESSAGES"]))
print("after move", c.search())
c.set_flags(uids[1], [imapclient.DELETED])
print("expunge", c.expunge())
print("left", c.search())
print("append", c.append("Drafts", b"From: anna@example.com\r\nSubject: draft\r\n\r\nunfinished\r\n", flags=[imapclient.DRAFT]))
c.select_folder("Drafts")
print("drafts", [(u, d[b"FLAGS"]) for u, d in c.fetch(c.search(), ["FLAGS"]).items()])
print("create", c.create_folder("Projects/2026"), c.folder_exists("Projects/2026"))
print("rename", c.rename_folder("Projects/2026", "Projects/2027"), c.folder_exists("Projects/2027"))
print("delete", c.delete_folder("Projects/2027"), c.folder_exists("Projects/2027"))
# IDLE woken by a second connection delivering over SMTP and by a second IMAP session
# appending.
c.select_folder("INBOX")
c.idle()
def deliver():
    with smtplib.SMTP("127.0.0.1", PORT_SMTP, timeout=30) as s:
        s.sendmail("bob@example.net", ["anna@example.com"],
                   b"From: bob@example.net\r\nTo: anna@example.com\r\nSubject: pushed\r\n\r\nwake up\r\n")
t0 = time.time()
threading.Thread(target=deliver).start()
resp = c.idle_check(timeout=10)
print("idle smtp", [r for r in resp if r[1] == b"EXISTS"], "%.1f" % (time.time() - t0) if time.time() - t0 > 1 else "<1s")
c2 = connect()
c2.append("INBOX", b"From: anna@example.com\r\nSubject: appended\r\n\r\nby the other session\r\n")
resp = c.idle_check(timeout=10)
print("idle append", [r for r in resp if r[1] == b"EXISTS"])
print("idle done", c.idle_done()[0])
print("final", c.search(["NOT", "DELETED"]), [d[b"ENVELOPE"].subject.decode() for d in c.fetch(c.search(), ["ENVELOPE"]).values()])
c2.logout()
print("logout", c.logout())
"#;
    let out = imapclient(&server, script, &[server.addr("smtp").port().to_string()]);
    for cap in ["'IDLE'", "'CONDSTORE'", "'MOVE'", "'UIDPLUS'", "'ENABLE'"] {
        assert!(out.line("caps").contains(cap), "{cap}: {out}");
    }
    assert!(out.line("folders").contains("'\\\\Sent'"), "{out}");
    assert_eq!(out.line("special"), "special Sent Trash", "{out}");
    assert!(out.line("enable").contains("CONDSTORE"), "{out}");
    assert!(out.line("select").starts_with("select 3 modseq"), "{out}");
    assert_eq!(out.line("uids"), "uids [1, 2, 3]", "{out}");
    let fetches: Vec<&str> = out.lines().filter(|l| l.starts_with("fetch ")).collect();
    assert_eq!(fetches.len(), 3, "{out}");
    for (i, f) in fetches.iter().enumerate() {
        assert!(
            f.starts_with(&format!(
                "fetch {} sample {i} sender@example.net size-ok text plain True True",
                i + 1
            )),
            "{f}"
        );
    }
    assert_eq!(out.line("search subject"), "search subject [2]", "{out}");
    assert_eq!(out.line("search body"), "search body [1, 2, 3]", "{out}");
    assert_eq!(out.line("modseq grew"), "modseq grew True", "{out}");
    assert_eq!(out.line("changedsince"), "changedsince [1]", "{out}");
    assert_eq!(out.line("seen"), "seen [1]", "{out}");
    assert_eq!(out.line("after move"), "after move [1, 2]", "{out}");
    assert!(out.line("status").contains("b'MESSAGES': 1"), "{out}");
    assert_eq!(out.line("left"), "left [1]", "{out}");
    assert!(out.line("append").contains("APPENDUID"), "{out}");
    assert!(out.line("drafts").contains("\\\\Draft"), "{out}");
    assert!(out.line("create").ends_with("True"), "{out}");
    assert!(out.line("rename").ends_with("True"), "{out}");
    assert!(out.line("delete").ends_with("False"), "{out}");
    assert!(out.line("idle smtp").contains("EXISTS"), "{out}");
    assert!(
        out.line("idle smtp").ends_with("<1s"),
        "IDLE push took over 1 s: {out}"
    );
    assert!(out.line("idle append").contains("EXISTS"), "{out}");
    assert!(
        out.line("final").contains("'pushed'") && out.line("final").contains("'appended'"),
        "{out}"
    );
}

/// Issue 14's defects as a real client meets them, where `imapclient` speaks the command
/// (it has no API for ESEARCH, so defect 7 has only the session's byte-exact test):
/// EXAMINE's RECENT (4), a new keyword announced in FLAGS before the FETCH that shows it
/// (3), sections inside a forwarded message (5), MOVE into the selected mailbox (9) and
/// LSUB keeping a subscription whose mailbox was deleted (8).
#[test]
fn imapclient_sees_recent_keywords_forwarded_parts_self_move_and_lasting_subscriptions() {
    let server = TestServer::start();
    deliver_samples(&server, 3);
    let script = r#"
a, b = connect(), connect()

# Defect 4: EXAMINE shows the \Recent that STATUS counts, without taking it.
print("status recent", b.folder_status("INBOX", ["RECENT"])[b"RECENT"])
print("examine recent", b.select_folder("INBOX", readonly=True)[b"RECENT"])
print("select recent", a.select_folder("INBOX")[b"RECENT"])
print("examine after select", b.select_folder("INBOX", readonly=True)[b"RECENT"])

# Defect 3: a keyword new to the mailbox is announced (FLAGS, PERMANENTFLAGS) before
# the FETCH that shows it, and SELECT lists it afterwards.
b.select_folder("INBOX")
b.add_flags([1], [b"$Important"])
seen = []
for r in a.noop()[1]:
    if r[0] == b"FLAGS":
        seen.append(("FLAGS", b"$Important" in r[1]))
    elif r[0] == b"OK" and r[1].startswith(b"[PERMANENTFLAGS"):
        seen.append(("PERMANENTFLAGS", b"$Important" in r[1]))
    elif len(r) > 1 and r[1] == b"FETCH":
        seen.append(("FETCH", r[0], b"$Important" in dict(zip(r[2][::2], r[2][1::2]))[b"FLAGS"]))
print("noop", seen)
print("select flags", b"$Important" in connect().select_folder("INBOX")[b"FLAGS"])

# Defect 5: the parts of a mail forwarded as a message (top-level message/rfc822).
forwarded = (b"From: anna@example.com\r\nSubject: Fwd: plans\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: message/rfc822\r\n\r\n"
             b"From: carol@example.org\r\nSubject: plans\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
             b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMeet at noon.\r\n"
             b"--inner\r\nContent-Type: text/html\r\n\r\n<p>Meet at noon.</p>\r\n--inner--\r\n")
uid = int(a.append("INBOX", forwarded).split(b"]")[0].split()[-1])
a.noop()
parts = a.fetch([uid], ["BODY.PEEK[1.HEADER]", "BODY.PEEK[1.1]", "BODY.PEEK[1.1.MIME]", "BODY.PEEK[1.2]"])[uid]
print("header", b"Subject: plans\r\n" in parts[b"BODY[1.HEADER]"], b"Fwd" in parts[b"BODY[1.HEADER]"])
print("1.1", parts[b"BODY[1.1]"])
print("1.1.MIME", parts[b"BODY[1.1.MIME]"])
print("1.2", parts[b"BODY[1.2]"])

# Defect 9: MOVE into the selected mailbox itself gives the message a new UID (COPYUID,
# which imapclient leaves among its imaplib connection's response codes).
a._imap.untagged_responses.pop("COPYUID", None)
a.move([2], "INBOX")
print("copyuid", [x.decode().split()[1:] for x in a._imap.untagged_responses.get("COPYUID", [])])
print("uids after", a.search())

# Defect 8: a subscription outlives its mailbox (LSUB lists it \Noselect) until the
# client unsubscribes; RENAME takes it along.
a.create_folder("Trips/2026")
a.subscribe_folder("Trips/2026")
a.rename_folder("Trips/2026", "Trips/2027")
print("lsub renamed", [(sorted(f[0]), f[2]) for f in a.list_sub_folders("", "Trips*")])
a.delete_folder("Trips/2027")
print("lsub deleted", [(sorted(f[0]), f[2]) for f in a.list_sub_folders("", "Trips*")])
print("list deleted", a.list_folders("", "Trips*"))
a.unsubscribe_folder("Trips/2027")
print("lsub unsubscribed", a.list_sub_folders("", "Trips*"))
a.logout(); b.logout()
"#;
    let out = imapclient(&server, script, &[]);
    assert_eq!(out.line("status recent"), "status recent 3", "{out}");
    assert_eq!(out.line("examine recent"), "examine recent 3", "{out}");
    assert_eq!(out.line("select recent"), "select recent 3", "{out}");
    assert_eq!(
        out.line("examine after select"),
        "examine after select 0",
        "{out}"
    );
    assert_eq!(
        out.line("noop"),
        "noop [('FLAGS', True), ('PERMANENTFLAGS', True), ('FETCH', 1, True)]",
        "{out}"
    );
    assert_eq!(out.line("select flags"), "select flags True", "{out}");
    assert_eq!(out.line("header"), "header True False", "{out}");
    assert_eq!(out.line("1.1 "), "1.1 b'Meet at noon.'", "{out}");
    assert_eq!(
        out.line("1.1.MIME"),
        "1.1.MIME b'Content-Type: text/plain; charset=utf-8\\r\\n\\r\\n'",
        "{out}"
    );
    assert_eq!(out.line("1.2"), "1.2 b'<p>Meet at noon.</p>'", "{out}");
    // The message that was UID 2 is now UID 5 (4 went to the forwarded mail).
    assert_eq!(out.line("copyuid"), "copyuid [['2', '5']]", "{out}");
    assert_eq!(out.line("uids after"), "uids after [1, 3, 4, 5]", "{out}");
    assert_eq!(
        out.line("lsub renamed"),
        "lsub renamed [([], 'Trips/2027')]",
        "{out}"
    );
    assert_eq!(
        out.line("lsub deleted"),
        "lsub deleted [([b'\\\\Noselect'], 'Trips/2027')]",
        "{out}"
    );
    assert_eq!(out.line("list deleted"), "list deleted []", "{out}");
    assert_eq!(out.line("lsub unsubscribed"), "lsub unsubscribed []", "{out}");
}
