//! Roundcube on a real Understudy: Debian's Roundcube under `php -S` on loopback, laid
//! out by `contrib/roundcube/php-server.sh` from `understudy webmail print-config
//! roundcube` (the one-command set-up's own pieces).
//!
//! - Over HTTP as a browser would: a client logs in, and a guesser behind the same
//!   webmail host locks out only its own address (IMAP ID x-originating-ip,
//!   `auth.webmail_hosts`).
//! - In headless Chromium (`tests/browser/webmail.js`: npm `playwright-core`, Debian's
//!   `chromium`), during an outage (the primary, an `smtp-sink`, down): a user reads
//!   mail spooled over the MX port, opens an attachment and an attached message, sorts
//!   and threads (server-side SORT and THREAD, checked in Roundcube's IMAP log),
//!   searches, moves and deletes, replies and writes to remote addresses (landing
//!   DKIM-signed at a sink playing the remote MX, copies in Sent), keeps a draft and
//!   sends it; a read-only user reads but cannot send; a wrong password and twenty
//!   failed logins of another user lock out only the guesser's address. After recovery
//!   the primary gets every kept message and not the deleted one. Screenshots go to
//!   `<target>/tmp/webmail/`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::delivery::{assert_dkim_pass, received_message};
use crate::harness::*;
use crate::sink::{free_port, header, DumpSink};

/// Roundcube under PHP's built-in server (its own process group, ended on drop).
pub struct Roundcube {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
}

impl Roundcube {
    /// Writes Roundcube's settings for `server` with `understudy webmail print-config
    /// roundcube`, lays out an instance in `dir` and serves it on a free loopback port.
    /// `extra` is PHP included after the settings.
    pub fn start(server: &TestServer, dir: &Path, extra: &str) -> Roundcube {
        std::fs::create_dir_all(dir).unwrap();
        let imaps = server.addr("imaps").port().to_string();
        let submissions = server.addr("submissions").port().to_string();
        let ca = ca_cert().display().to_string();
        let settings = server.admin_ok(&[
            "webmail",
            "print-config",
            "roundcube",
            "--connect",
            "127.0.0.1",
            "--imap-port",
            &imaps,
            "--smtp-port",
            &submissions,
            "--ca-file",
            &ca,
            "--product-name",
            "Example Webmail",
        ]);
        std::fs::write(dir.join("settings.php"), settings).unwrap();
        std::fs::write(dir.join("extra.php"), format!("<?php\n{extra}\n")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("php-server.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(repo().join("contrib/roundcube/php-server.sh"))
            .arg(dir.join("instance"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir.join("settings.php"))
            .arg(dir.join("extra.php"))
            .env("PHP_CLI_SERVER_WORKERS", "4")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run contrib/roundcube/php-server.sh");
        let mut roundcube = Roundcube {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = roundcube.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "php-server.sh exited with {status}:\n{}",
                    std::fs::read_to_string(dir.join("php-server.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "Roundcube did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        roundcube
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Roundcube's own log file `name` (imap, smtp, errors), empty if not written yet.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("instance/logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Roundcube {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The workers PHP forks share the script's process group; PHP's built-in
            // server ignores SIGTERM while it has workers, and keeps nothing to save.
            // SAFETY: signals only the process group this test started.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// Mail for the outage, sent in over the MX port by smtplib: an attachment, an attached
/// message, three to sort, a thread of three, one to search for, one to move, one to
/// delete and one for the read-only user. `Message-ID`s are `<NAME@outside.test>`.
const SPOOL: &str = r#"
import smtplib, sys
from email.message import EmailMessage
from email.utils import make_msgid
port = int(sys.argv[1])
def msg(name, sender, subject, date, body, to="anna@example.com", **headers):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Date"] = sender, to, subject, date
    m["Message-ID"] = "<%s@outside.test>" % name
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(body)
    return m
out = []
m = msg("report", "Carol Client <carol@outside.test>", "Quarterly report",
        "Mon, 02 Nov 2026 09:00:00 +0000", "The report is attached.\n")
m.add_attachment(b"%PDF-1.4\n% quarterly figures\n%%EOF\n", maintype="application",
                 subtype="pdf", filename="report-q3.pdf")
out.append(m)
inner = msg("contract-inner", "Legal <legal@outside.test>", "The contract, signed",
            "Sun, 01 Nov 2026 08:00:00 +0000", "Signed by both parties on page 7.\n",
            to="dave@outside.test")
m = msg("contract", "Dave Partner <dave@outside.test>", "Fwd: the contract",
        "Mon, 02 Nov 2026 10:00:00 +0000", "See the attached message.\n")
m.add_attachment(inner)
out.append(m)
# Sorting: date order Zebra, Mango, Apple; sender order Amy, Ben, Zoe; subject order
# Apple, Mango, Zebra; arrival order Zebra, Apple, Mango: each sort differs.
out.append(msg("zebra", "Ben Brown <ben@outside.test>", "Zebra crossing",
               "Sun, 01 Nov 2026 07:00:00 +0000", "Sort me.\n"))
out.append(msg("apple", "Zoe Zimmer <zoe@outside.test>", "Apple harvest",
               "Tue, 03 Nov 2026 07:00:00 +0000", "Sort me.\n"))
out.append(msg("mango", "Amy Adams <amy@outside.test>", "Mango season",
               "Mon, 02 Nov 2026 07:00:00 +0000", "Sort me.\n"))
out.append(msg("lunch-1", "Eve <eve@outside.test>", "Lunch plans",
               "Mon, 02 Nov 2026 11:00:00 +0000", "Lunch on Friday?\n"))
out.append(msg("lunch-2", "Frank <frank@outside.test>", "Re: Lunch plans",
               "Mon, 02 Nov 2026 11:30:00 +0000", "Friday works.\n",
               In_Reply_To="<lunch-1@outside.test>", References="<lunch-1@outside.test>"))
out.append(msg("lunch-3", "Eve <eve@outside.test>", "Re: Lunch plans",
               "Mon, 02 Nov 2026 12:00:00 +0000", "Noon then.\n",
               In_Reply_To="<lunch-2@outside.test>",
               References="<lunch-1@outside.test> <lunch-2@outside.test>"))
out.append(msg("invoice", "Billing <billing@outside.test>", "Invoice 4711",
               "Mon, 02 Nov 2026 13:00:00 +0000", "Please pay invoice 4711.\n"))
out.append(msg("archive-me", "Gina <gina@outside.test>", "Keep for the records",
               "Mon, 02 Nov 2026 14:00:00 +0000", "File this one.\n"))
out.append(msg("delete-me", "Spammy <spammy@outside.test>", "Unwanted offer",
               "Mon, 02 Nov 2026 15:00:00 +0000", "Delete this one.\n"))
out.append(msg("for-reader", "Carol Client <carol@outside.test>", "For the read-only user",
               "Mon, 02 Nov 2026 16:00:00 +0000", "You can read this.\n",
               to="reader@example.com"))
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
s.ehlo("filter.outside.test")
for m in out:
    s.send_message(m, from_addr=m["From"].addresses[0].addr_spec, to_addrs=[str(m["To"].addresses[0].addr_spec)])
s.quit()
print("spooled", len(out))
"#;

/// The test's Roundcube settings beyond `print-config`: the IMAP and SMTP logs the
/// assertions read, and the browser's address from `X-Forwarded-For` as from a proxy
/// in front (each browser context plays a different client).
const ROUNDCUBE_EXTRA: &str = r#"
$config['imap_debug'] = true;
$config['smtp_debug'] = true;
$config['log_driver'] = 'file';
$config['proxy_whitelist'] = ['127.0.0.1'];
"#;

/// The subjects in one of a user's mailboxes, via imaplib.
fn subjects(server: &TestServer, user: &str, mailbox: &str) -> Vec<String> {
    let script = r#"
import imaplib, ssl, sys, email
from email.header import decode_header, make_header
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=30)
m.login(sys.argv[3], "Correct1horse")
m.select(sys.argv[4], readonly=True)
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for part in data:
    if isinstance(part, tuple):
        print(str(make_header(decode_header(email.message_from_bytes(part[1])["Subject"] or ""))))
m.logout()
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            user.to_string(),
            mailbox.to_string(),
        ],
    );
    out.lines().map(str::to_string).collect()
}

/// Logs in to Roundcube as a browser at `client` would (the form's token, the session
/// cookie, `X-Forwarded-For` as from a proxy in front) and asks for INBOX's list.
const HTTP_CLIENT: &str = r#"
import http.cookiejar, re, sys, urllib.parse, urllib.request, urllib.error
base, user, password, client = sys.argv[1:5]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
opener.addheaders = [("X-Forwarded-For", client)]
page = opener.open(base, timeout=60).read().decode()
print("hint", "company email address" in page)
token = re.search(r'name="_token" value="([^"]+)"', page).group(1)
form = urllib.parse.urlencode({"_token": token, "_task": "login", "_action": "login",
    "_timezone": "UTC", "_url": "", "_user": user, "_pass": password}).encode()
try:
    page = opener.open(base + "?_task=login", form, timeout=120).read().decode()
except urllib.error.HTTPError as e:
    page = e.read().decode()
token = re.search(r'"request_token":"([^"]+)"', page)
if "_task=mail" not in page or not token:
    print("login failed", "Login failed" in page)
    sys.exit(0)
print("logged in")
url = base + "?" + urllib.parse.urlencode({"_task": "mail", "_action": "list", "_mbox": "INBOX",
    "_page": "1", "_sort": "date_DESC", "_remote": "1"})
req = urllib.request.Request(url, headers={"X-Roundcube-Request": token.group(1),
                                           "X-Requested-With": "XMLHttpRequest"})
print("list", opener.open(req, timeout=120).read().decode())
"#;

fn http_login(roundcube: &Roundcube, user: &str, password: &str, client: &str) -> String {
    python_ok(
        HTTP_CLIENT,
        &[
            roundcube.url(),
            user.to_string(),
            password.to_string(),
            client.to_string(),
        ],
    )
}

#[test]
fn roundcube_from_print_config_logs_in_and_names_each_client() {
    let config = "\n[auth]\nwebmail_hosts = [\"127.0.0.1\"]\nmax_failures = 3\nfailure_delay_ms = 0\n";
    let mut server = TestServer::setup(config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let out = python_ok(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("carol@outside.test", ["anna@example.com"],
           b"From: carol@outside.test\r\nTo: anna@example.com\r\nSubject: Over the MX port\r\n\r\nHi\r\n")
s.quit()
print("sent")
"#,
        &[server.addr("smtp").port().to_string()],
    );
    assert!(out.contains("sent"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let roundcube = Roundcube::start(&server, tmp.path(), ROUNDCUBE_EXTRA);
    // A guesser at one address fails for fifteen users: five times max_failures.
    for n in 0..15 {
        let out = http_login(
            &roundcube,
            &format!("guess{n}@example.com"),
            "wrong",
            "198.51.100.66",
        );
        assert!(out.contains("login failed True"), "{out}");
    }
    // That address is locked out, right password or not...
    let out = http_login(&roundcube, "anna@example.com", PASSWORD, "198.51.100.66");
    assert!(out.contains("login failed True"), "{out}");
    // ...while the same webmail host logs in a user at another address, who sees the
    // message listed, and the login page carries the hint.
    let out = http_login(&roundcube, "anna@example.com", PASSWORD, "198.51.100.7");
    assert!(out.contains("hint True"), "{out}");
    assert!(out.contains("logged in"), "{out}");
    assert!(out.contains("Over the MX port"), "{out}");
    let log = plain_log(&mut server);
    assert!(
        log.lines().any(|l| l.contains("imap login")
            && l.contains("client=198.51.100.7")
            && l.contains("peer=127.0.0.1")),
        "no login naming the client"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("too many failures") && l.contains("peer=198.51.100.66")),
        "the guesser was not locked out by its own address"
    );
    // Roundcube used IMAP over TLS to the imaps port, and server-side SORT.
    let imap = roundcube.log("imap");
    assert!(
        imap.contains("UID SORT (DATE)") || imap.contains("SORT (DATE)"),
        "{imap}"
    );
    server.stop();
}

#[test]
fn roundcube_in_chromium_during_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let mut primary = DumpSink::start(&tmp.path().join("primary"));
    let remote = DumpSink::start(&tmp.path().join("remote"));
    let (key, public) = dkim_key(tmp.path());
    let key_path = key.display().to_string();
    let relay = primary.addr();
    // max_failures 3: five times that (the per-address lock-out of a client IP) is
    // fifteen, fewer than the twenty failures the guesser makes from the webmail host.
    let config = format!(
        "\n[auth]\nwebmail_hosts = [\"127.0.0.1\"]\nmax_failures = 3\nfailure_delay_ms = 0\n\
         \n[delivery]\npoll_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n\
         outage_recheck_secs = 1\nroutes = {{ \"outside.test\" = \"{remote}\", \"remote.test\" = \"{remote}\" }}\n",
        remote = remote.addr()
    );
    let mut server = TestServer::setup(&config, |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            &relay,
            "--relay-tls",
            "disabled",
            "--probe-interval",
            "1",
            "--failures",
            "2",
            "--successes",
            "2",
            "--dkim-selector",
            "sel",
            "--dkim-key",
            &key_path,
        ]);
        for user in ["anna", "bob", "reader"] {
            s.add_user(&format!("{user}@example.com"), PASSWORD);
        }
        s.admin_ok(&["user", "set", "reader@example.com", "--access", "read-only"]);
    });

    primary.down();
    wait_until(Duration::from_secs(30), "the outage to engage", || {
        phase(&server, "example.com") == "outage"
    });
    let out = python_ok(SPOOL, &[server.addr("smtp").port().to_string()]);
    assert!(out.contains("spooled 12"), "{out}");

    let roundcube = Roundcube::start(&server, &tmp.path().join("roundcube"), ROUNDCUBE_EXTRA);
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("webmail");
    let _ = std::fs::remove_dir_all(&screenshots);
    let browser_config = serde_json::json!({
        "base": roundcube.url(),
        "password": PASSWORD,
        "screenshots": screenshots.display().to_string(),
    });
    let out = crate::browser::run_browser_script("webmail.js", &browser_config);
    print!("{out}");
    assert!(out.contains("webmail tests passed"), "{out}");
    for name in ["inbox", "message", "attached-message", "threads"] {
        let file = screenshots.join(format!("{name}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing or empty", file.display());
    }

    // Server-side SORT and THREAD: Roundcube asked, Understudy answered (sender order
    // by display name, as SORT=DISPLAY is offered, RFC 5957).
    let imap = roundcube.log("imap");
    for asked in [
        "UID SORT (DATE)",
        "UID SORT (DISPLAYFROM)",
        "UID SORT (SUBJECT)",
        "UID THREAD REFERENCES",
    ] {
        assert!(imap.contains(asked), "no {asked} in Roundcube's IMAP log");
    }
    assert!(imap.contains("S: * SORT "), "no SORT answer in the IMAP log");
    assert!(imap.contains("S: * THREAD ("), "no THREAD answer in the IMAP log");
    // Logins were counted against the client addresses Roundcube named, not its own.
    let log = plain_log(&mut server);
    assert!(
        log.lines()
            .any(|l| l.contains("login failed") && l.contains("peer=198.51.100.66")),
        "the guesser's failures were not counted against its address"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("imap login") && l.contains("client=198.51.100.7")),
        "anna's login does not name her address"
    );

    // The reply and the new mail left DKIM-signed for the remote MX, copies in Sent.
    wait_until(Duration::from_secs(30), "the sent mail at the remote MX", || {
        let got: Vec<String> = remote.messages().into_iter().map(|(_, m)| m).collect();
        [
            "Re: Quarterly report",
            "Hello from the webmail",
            "Draft for later",
        ]
        .iter()
        .all(|s| got.iter().any(|m| header(m, "subject").as_deref() == Some(s)))
    });
    for (_, dump) in remote.messages() {
        let subject = header(&dump, "subject").unwrap_or_default();
        assert!(
            dump.contains("DKIM-Signature:") && dump.contains("s=sel"),
            "{subject}: not DKIM-signed: {dump}"
        );
        assert!(dump.contains("d=example.com"), "{dump}");
    }
    let reply = remote
        .messages()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| header(m, "subject").as_deref() == Some("Re: Quarterly report"))
        .unwrap();
    assert!(reply.contains("X-Rcpt-Args: <carol@outside.test>"), "{reply}");
    assert_eq!(
        header(&reply, "in-reply-to").as_deref(),
        Some("<report@outside.test>"),
        "{reply}"
    );
    assert_dkim_pass(&received_message(&reply), &public);
    let sent = subjects(&server, "anna@example.com", "Sent");
    for s in [
        "Re: Quarterly report",
        "Hello from the webmail",
        "Draft for later",
    ] {
        assert!(sent.iter().any(|x| x == s), "no {s} in Sent: {sent:?}");
    }
    assert!(
        subjects(&server, "anna@example.com", "Drafts").is_empty(),
        "the sent draft is gone from Drafts"
    );
    assert_eq!(
        subjects(&server, "anna@example.com", "Archive"),
        vec!["Keep for the records".to_string()]
    );
    // The read-only user sent nothing.
    assert!(
        !remote
            .messages()
            .iter()
            .any(|(_, m)| m.contains("From: reader@example.com") || m.contains("<reader@example.com>")),
        "the read-only user's mail went out"
    );

    // The primary comes back: everything kept is redelivered, the deleted one is not.
    primary.up();
    wait_until(Duration::from_secs(60), "the drain to finish", || {
        phase(&server, "example.com") == "normal" && {
            let ids = primary.message_id_counts(None);
            ids.contains_key("<invoice@outside.test>") && ids.contains_key("<for-reader@outside.test>")
        }
    });
    wait_until(Duration::from_secs(30), "the queue to empty", || {
        let list = server.admin_ok(&["queue", "list"]);
        list.lines().last().unwrap_or_default().starts_with('0')
    });
    let ids = primary.message_id_counts(None);
    for name in [
        "report",
        "contract",
        "zebra",
        "apple",
        "mango",
        "lunch-1",
        "lunch-2",
        "lunch-3",
        "invoice",
        "archive-me",
        "for-reader",
    ] {
        assert_eq!(
            ids.get(&format!("<{name}@outside.test>")),
            Some(&1),
            "{name}: {ids:?}"
        );
    }
    assert!(
        !ids.contains_key("<delete-me@outside.test>"),
        "the deleted message was redelivered: {ids:?}"
    );
    server.stop();
}
