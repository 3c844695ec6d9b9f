//! Roundcube on a real Understudy: Debian's Roundcube under `php -S` on loopback, laid
//! out by `contrib/roundcube/php-server.sh` from `understudy webmail print-config
//! roundcube` (the one-command set-up's own pieces). A client logs in over HTTP as a
//! browser would, and a guesser behind the same webmail host locks out only its own
//! address (IMAP ID x-originating-ip, `auth.webmail_hosts`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::sink::free_port;

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

/// The test's Roundcube settings beyond `print-config`: the IMAP and SMTP logs the
/// assertions read, and the browser's address from `X-Forwarded-For` as from a proxy
/// in front (each browser context plays a different client).
const ROUNDCUBE_EXTRA: &str = r#"
$config['imap_debug'] = true;
$config['smtp_debug'] = true;
$config['log_driver'] = 'file';
$config['proxy_whitelist'] = ['127.0.0.1'];
"#;

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
    let log = crate::ldap::plain(&server.log());
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
