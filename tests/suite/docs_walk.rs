//! The docs walked as a newcomer would (issue 18): every command in the code blocks of
//! docs/operations.md and of the README is run, in the order the page gives it, against
//! a throwaway installation made from the shipped configuration (config/understudy.toml,
//! config/dev.toml): /etc/understudy, /var/lib/understudy and /var/backups/understudy
//! moved into a temporary directory, listeners on port 0, and the example hosts mapped
//! to local stand-ins (`smtp-sink` as the primary and as the alert recipients' server).
//! Placeholders (`DOMAIN`, `ID`, `TRACKING-ID`, the example id `000000002A`) become real
//! values: the test makes a queue entry, and messages deleted during an outage, when a
//! command first needs one. `systemctl start|stop|status|enable --now` and `cargo run
//! -- serve` act on the test's server, and every `systemctl`/`journalctl` command must
//! have its check in debian/ci-systemd.sh, which CI runs against the packaged unit
//! under a real systemd. The configuration examples are checked with
//! `check-config` on top of the shipped configuration. Commands that build or install
//! the package are named in `NOT_HERE` with the CI step or test
//! that runs them. A command that fails, or one that is neither run nor named, fails
//! the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::sink::{free_port, DumpSink};

/// First words that make a code block a block of shell commands.
const SHELL: &[&str] = &[
    "understudy",
    "sudo",
    "echo",
    "printf",
    "curl",
    "swaks",
    "alias",
    "systemctl",
    "journalctl",
    "apt-get",
    "cargo",
    "dpkg",
    "cp",
    "install",
    "contrib/roundcube/setup-debian.sh",
];

/// Commands of the docs this test does not run, and what runs them.
const NOT_HERE: &[(&str, &str)] = &[
    ("apt-get install", ".ci/run installs the build and test packages"),
    ("cargo install cargo-deb", ".ci/run installs cargo-deb"),
    (
        "cargo deb",
        "debian/ci-install.sh: cargo deb --no-build around the binary the suite tested",
    ),
    (
        "dpkg -i",
        "debian/ci-install.sh installs the package with dpkg and checks it",
    ),
    ("cargo test --workspace --locked", ".ci/run"),
    (
        "curl --cacert ca.pem -H \"Authorization: Bearer $TOKEN\"",
        "needs an admin account, its API token and the console listener: tests/suite/api.rs \
         posts the same outage start with a bearer token",
    ),
    (
        "contrib/roundcube/setup-debian.sh",
        "installs nginx and PHP-FPM and sets up a web server: not run anywhere yet; \
         tests/suite/webmail.rs runs Roundcube on the settings of `webmail print-config`",
    ),
    (
        "understudy ldap sync",
        "needs a directory: tests/suite/ldap.rs runs `ldap sync --dry-run`, `ldap sync` and \
         `ldap sync --domain example.com` against slapd",
    ),
];

/// What some commands must print, beyond exiting 0.
const EXPECT: &[(&str, &str)] = &[
    ("check-config", "configuration is valid"),
    ("curl -sS --cacert", "Hello Anna."),
    ("understudy track --address bob@example.com", "bob@example.com"),
    ("understudy queue redeliver", "queued again for the primary"),
    ("understudy domain dkim-keygen", "_domainkey.example.com. IN TXT"),
    (" backup /var", "backup written to"),
    ("understudy client-setup", "Incoming (IMAP)"),
];

const NEW_PASSWORD: &str = "Walk1password";

struct Block {
    /// 1-based line of the block's first line in its document.
    line: usize,
    lines: Vec<String>,
}

/// The code blocks of a Markdown page: fenced ones and indented ones (four spaces
/// more than the text around them, after a blank line; inside list items too).
fn code_blocks(doc: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim_start().starts_with("```") {
            let start = i + 1;
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                block.push(lines[i].trim().to_string());
                i += 1;
            }
            blocks.push(Block {
                line: start + 1,
                lines: block,
            });
            i += 1;
            continue;
        }
        let starts_block = !l.trim().is_empty()
            && indent(l) >= 4
            && (i == 0 || lines[i - 1].trim().is_empty())
            && !l.trim_start().starts_with("- ")
            && !l.trim_start().starts_with('|');
        if !starts_block {
            i += 1;
            continue;
        }
        let base = indent(l);
        let start = i;
        let mut block = Vec::new();
        while i < lines.len() {
            let l = lines[i];
            if l.trim().is_empty() {
                // A blank line continues the block if the next text is indented as much.
                let next = lines[i..].iter().find(|l| !l.trim().is_empty());
                match next {
                    Some(n) if indent(n) >= base => block.push(String::new()),
                    _ => break,
                }
            } else if indent(l) >= base {
                block.push(l[base..].to_string());
            } else {
                break;
            }
            i += 1;
        }
        while block.last().is_some_and(|l| l.is_empty()) {
            block.pop();
        }
        blocks.push(Block {
            line: start + 1,
            lines: block,
        });
    }
    blocks
}

/// The commands of a block with their lines: a line ending in `\` goes on on the next,
/// and so does a synopsis whose next line starts with an option (`[--flag N]`, `--flag`).
fn commands(block: &Block) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, line) in block.lines.iter().enumerate() {
        let text = line.trim();
        if text.is_empty() {
            open = false;
            continue;
        }
        let (text, continues) = match text.strip_suffix('\\') {
            Some(t) => (t.trim_end(), true),
            None => (text, false),
        };
        let goes_on = open || text.starts_with("[-") || text.starts_with("--");
        match out.last_mut() {
            Some((_, command)) if goes_on => {
                command.push(' ');
                command.push_str(text);
            }
            _ => out.push((block.line + n, text.to_string())),
        }
        open = continues;
    }
    out
}

/// The command without its trailing `# comment` (a `#` after whitespace, outside
/// quotes).
fn strip_comment(line: &str) -> String {
    let mut quote = None;
    let mut prev_space = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return line[..i].trim_end().to_string(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.trim_end().to_string()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A throwaway installation: the directories the package makes, moved under `root`.
struct Walk {
    server: TestServer,
    root: PathBuf,
    config: PathBuf,
    /// Working directory of the commands (users.csv, hello.eml, certs-dev/ land here).
    cwd: PathBuf,
    /// `understudy` and `sudo` for the commands' PATH.
    bin: PathBuf,
    primary: DumpSink,
    alerts: DumpSink,
    queue_entry: Option<(String, String)>,
    recoverable: Vec<String>,
    redelivered: usize,
    ran: Vec<String>,
}

impl Walk {
    /// `base` is the configuration text as shipped, before its paths are moved.
    fn new(base: &str, edit: impl FnOnce(&mut toml::Table, &Walk)) -> Walk {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let cwd = dir.path().join("cwd");
        let bin = dir.path().join("bin");
        for d in [
            root.join("etc/understudy/tls"),
            root.join("var/lib/understudy"),
            root.join("var/backups/understudy"),
            cwd.clone(),
            bin.clone(),
        ] {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::os::unix::fs::symlink(repo().join("certs-dev"), cwd.join("certs-dev")).unwrap();
        write_script(
            &bin.join("understudy"),
            &format!("#!/bin/sh\nexec {BIN} \"$@\"\n"),
        );
        // `sudo -u understudy understudy ...` and `sudo understudy ...`: the test is
        // already the right user.
        write_script(
            &bin.join("sudo"),
            "#!/bin/sh\nif [ \"$1\" = -u ]; then shift 2; fi\nexec \"$@\"\n",
        );
        let certs = repo().join("certs-dev");
        std::fs::copy(
            certs.join("server.crt"),
            root.join("etc/understudy/tls/fullchain.pem"),
        )
        .unwrap();
        let key = root.join("etc/understudy/tls/privkey.pem");
        std::fs::copy(certs.join("server.key"), &key).unwrap();
        set_mode(&key, 0o600);

        let config = root.join("etc/understudy/understudy.toml");
        let primary = DumpSink::start(&dir.path().join("primary"));
        let alerts = DumpSink::start(&dir.path().join("alerts"));
        let walk = Walk {
            server: TestServer::on_config(dir, config.clone()),
            root,
            config,
            cwd,
            bin,
            primary,
            alerts,
            queue_entry: None,
            recoverable: Vec::new(),
            redelivered: 0,
            ran: Vec::new(),
        };
        let mut table: toml::Table = walk.moved(base).parse().unwrap();
        for (_, addrs) in table["listen"].as_table_mut().unwrap().iter_mut() {
            *addrs = toml::Value::Array(vec!["127.0.0.1:0".into()]);
        }
        edit(&mut table, &walk);
        std::fs::write(&walk.config, toml::to_string(&table).unwrap()).unwrap();
        walk
    }

    /// The installation's paths moved under the throwaway root.
    fn moved(&self, text: &str) -> String {
        let root = self.root.display();
        text.replace("/etc/understudy/", &format!("{root}/etc/understudy/"))
            .replace("/var/lib/understudy", &format!("{root}/var/lib/understudy"))
            .replace(
                "/var/backups/understudy/$(date +%F)",
                "/var/backups/understudy/walk",
            )
            .replace(
                "/var/backups/understudy/2026-11-23",
                "/var/backups/understudy/walk",
            )
            .replace(
                "/var/backups/understudy",
                &format!("{root}/var/backups/understudy"),
            )
    }

    /// A command as written in the docs, made to run here.
    fn prepared(&mut self, command: &str) -> String {
        // Optional parts of a synopsis that take a value (`[--connect HOST]`): left out,
        // but for the ports a listener on port 0 does not tell.
        let ports = self.server.is_running().then(|| {
            (
                self.server.addr("imaps").port(),
                self.server.addr("submissions").port(),
            )
        });
        let mut kept = String::new();
        let mut rest = command;
        while let Some(start) = rest.find('[') {
            let Some(len) = rest[start..].find(']') else {
                break;
            };
            let group = &rest[start + 1..start + len];
            if group.contains(' ') {
                kept.push_str(&rest[..start]);
                match (group.split(' ').next(), ports) {
                    (Some("--imap-port"), Some((imaps, _))) => kept.push_str(&format!("--imap-port {imaps}")),
                    (Some("--smtp-port"), Some((_, submissions))) => {
                        kept.push_str(&format!("--smtp-port {submissions}"))
                    }
                    _ => {}
                }
            } else {
                kept.push_str(&rest[..start + len + 1]);
            }
            rest = &rest[start + len + 1..];
        }
        kept.push_str(rest);
        let command = kept.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut words = Vec::new();
        for word in command.split(' ') {
            let word = match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                // `[ID|DOMAIN]`: the first choice; `[--history]`: with it.
                Some(inner) => inner.split('|').next().unwrap_or(inner).to_string(),
                None => word.to_string(),
            };
            let word = match word.as_str() {
                "DOMAIN" => "example.com".to_string(),
                "ID" => self.queue_entry().0,
                "TRACKING-ID" | "000000002A" => {
                    if command.starts_with("understudy queue redeliver") {
                        let id = self.recoverable()[self.redelivered].clone();
                        self.redelivered += 1;
                        id
                    } else {
                        self.recoverable()[0].clone()
                    }
                }
                _ => word,
            };
            words.push(word);
        }
        let command = words
            .join(" ")
            .replace("[--domain example.com]", "--domain example.com");
        let mut command = self.moved(&command);
        if self.server.is_running() {
            let smtp = self.server.addr("smtp");
            let imaps = self.server.addr("imaps").port();
            command = command
                .replace("continuity.example.com:25", &smtp.to_string())
                .replace("smtp://127.0.0.1:2525", &format!("smtp://{smtp}"))
                .replace("imaps://localhost:1993", &format!("imaps://localhost:{imaps}"));
        }
        command.replace("mail.example.com:25", &self.primary.addr())
    }

    fn shell(&self, command: &str, stdin: Option<&str>) -> Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(command)
            .current_dir(&self.cwd)
            .env("PATH", path)
            .env("UNDERSTUDY_CONFIG", &self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).unwrap();
            }
        }
        wait_output(child, Duration::from_secs(120))
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        self.server.admin_ok(args)
    }

    fn set_bob_password(&self) {
        let out = self.server.admin(
            &["user", "passwd", "bob@example.com", "--stdin"],
            Some(&format!("{NEW_PASSWORD}\n")),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// A queue entry that stays: bob's mail to a host that refuses connections.
    fn queue_entry(&mut self) -> (String, String) {
        if let Some(entry) = &self.queue_entry {
            return entry.clone();
        }
        self.set_bob_password();
        python_ok(
            SUBMIT,
            &[
                ca_cert().display().to_string(),
                self.server.addr("submissions").port().to_string(),
                NEW_PASSWORD.to_string(),
            ],
        );
        let mut found = None;
        wait_until(Duration::from_secs(30), "bob's message in the queue", || {
            let listing: serde_json::Value =
                serde_json::from_str(&self.admin_ok(&["queue", "list", "--format", "json"])).unwrap();
            found = listing["entries"].as_array().unwrap().iter().find_map(|e| {
                (e["message_id"] == "<id@example.net>").then(|| {
                    (
                        e["id"].as_u64().unwrap().to_string(),
                        e["tracking"].as_str().unwrap().to_string(),
                    )
                })
            });
            found.is_some()
        });
        self.queue_entry = found;
        self.queue_entry.clone().unwrap()
    }

    /// Two messages bob deleted during an outage, recoverable for the primary.
    fn recoverable(&mut self) -> Vec<String> {
        if !self.recoverable.is_empty() {
            return self.recoverable.clone();
        }
        self.set_bob_password();
        self.admin_ok(&[
            "outage",
            "start",
            "example.com",
            "--reason",
            "walk: mail deleted on outage day",
        ]);
        let out = python_ok(
            DELETE,
            &[
                ca_cert().display().to_string(),
                self.server.addr("smtp").port().to_string(),
                self.server.addr("imaps").port().to_string(),
                NEW_PASSWORD.to_string(),
            ],
        );
        assert!(out.contains("deleted 2"), "{out}");
        self.admin_ok(&["outage", "stop", "example.com"]);
        for i in [1, 2] {
            let message_id = format!("<deleted-{i}@example.net>");
            let mut tracked = String::new();
            wait_until(Duration::from_secs(30), "a recoverable message", || {
                tracked = self.admin_ok(&["track", "--message-id", &message_id]);
                tracked.contains("recoverable until retention")
            });
            let id = tracked
                .lines()
                .find_map(|l| l.strip_prefix("message "))
                .unwrap()
                .trim()
                .to_string();
            self.recoverable.push(id);
        }
        self.recoverable.clone()
    }

    /// The commands of a page in order, and its configuration examples.
    fn page(&mut self, name: &str) {
        let doc = std::fs::read_to_string(repo().join(name)).unwrap();
        let blocks = code_blocks(&doc);
        // Files the page shows are there before its commands use them.
        for block in &blocks {
            if block.lines.first().is_some_and(|l| l.starts_with("address,")) {
                std::fs::write(self.cwd.join("users.csv"), block.lines.join("\n") + "\n").unwrap();
            }
        }
        for block in &blocks {
            let Some(first) = block.lines.iter().find(|l| !l.trim().is_empty()) else {
                continue;
            };
            let word = first.split_whitespace().next().unwrap_or("");
            if SHELL.contains(&word) {
                for (line, command) in commands(block) {
                    let word = command.split_whitespace().next().unwrap_or("");
                    assert!(
                        SHELL.contains(&word),
                        "{name}:{line}: a line in a block of commands that is not one: {command}"
                    );
                    self.command(name, line, &command);
                }
            } else if first.starts_with('[') {
                self.config_example(name, block);
            }
        }
    }

    fn command(&mut self, page: &str, line: usize, written: &str) {
        let command = strip_comment(written);
        let place = format!("{page}:{line}: {command}");
        if let Some((_, why)) = NOT_HERE.iter().find(|(p, _)| command.starts_with(p)) {
            eprintln!("walk: not here ({why}): {place}");
            return;
        }
        if command.starts_with("systemctl") || command.starts_with("journalctl") {
            // debian/ci-systemd.sh runs the page's systemd commands against the packaged
            // unit under a real systemd; each needs its check there.
            let script = std::fs::read_to_string(repo().join("debian/ci-systemd.sh")).unwrap();
            assert!(
                script.contains(&format!("\"{command}\")")),
                "{place}: debian/ci-systemd.sh has no check for this command"
            );
        }
        if command == "journalctl -u understudy -f" {
            eprintln!("walk: run against the unit by debian/ci-systemd.sh: {place}");
            self.ran.push(command);
            return;
        }
        match command.as_str() {
            "systemctl enable --now understudy"
            | "systemctl start understudy"
            | "cargo run --release -- serve" => {
                if !self.server.is_running() {
                    self.server.start_again();
                }
                eprintln!("walk: server started: {place}");
                self.ran.push(command);
                return;
            }
            "systemctl stop understudy" => {
                self.server.stop();
                eprintln!("walk: server stopped: {place}");
                self.ran.push(command);
                return;
            }
            "systemctl status understudy" => {
                assert!(self.server.is_running(), "{place}: the server is not running");
                self.admin_ok(&["outage", "status"]);
                eprintln!("walk: server running: {place}");
                self.ran.push(command);
                return;
            }
            _ => {}
        }
        assert!(!command.starts_with("systemctl"), "{place}: not walked");
        let prepared = self.prepared(&command);
        let out = if written.contains("# prompts") {
            // The password prompt reads the terminal: give it one.
            let input = format!("{NEW_PASSWORD}\n{NEW_PASSWORD}\n");
            self.shell(
                &format!("script -qec {} /dev/null", sh_quote(&prepared)),
                Some(&input),
            )
        } else {
            self.shell(&prepared, None)
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{place}\nran: {prepared}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
            plain_log(&mut self.server)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        for (prefix, needle) in EXPECT {
            if command.contains(prefix) {
                assert!(
                    stdout.contains(needle),
                    "{place}: no {needle:?} in:\n{stdout}\n{stderr}"
                );
            }
        }
        eprintln!("walk: ok: {place}");
        self.ran.push(command);
    }

    /// A configuration example, with the files it names, on top of the configuration
    /// the walk runs on, must pass `check-config`.
    fn config_example(&mut self, page: &str, block: &Block) {
        let example: toml::Table = self
            .moved(&block.lines.join("\n"))
            .parse()
            .unwrap_or_else(|e| panic!("{page}:{}: not TOML: {e}", block.line));
        let mut config: toml::Table = std::fs::read_to_string(&self.config).unwrap().parse().unwrap();
        for (key, value) in example {
            config.insert(key, value);
        }
        let etc = self.root.join("etc/understudy");
        std::fs::copy(ca_cert(), etc.join("ldap-ca.pem")).unwrap();
        std::fs::write(etc.join("ldap-password"), "Service1secret\n").unwrap();
        set_mode(&etc.join("ldap-password"), 0o600);
        let path = etc.join("example.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let out = self.shell(
            &format!("understudy --config {} check-config", path.display()),
            None,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("configuration is valid"),
            "{page}:{}: the example fails check-config:\n{stdout}\n{}",
            block.line,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("walk: example ok: {page}:{}", block.line);
        self.ran.push(format!("check-config with {page}:{}", block.line));
    }
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Bob sends a message to a host that refuses connections: it stays in the queue.
const SUBMIT: &str = r#"
import smtplib, ssl, sys
ca, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP_SSL("127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=30)
s.login("bob@example.com", password)
s.sendmail("bob@example.com", ["someone@dead.test"],
           b"From: Bob <bob@example.com>\r\nTo: someone@dead.test\r\nSubject: walk\r\nMessage-ID: <id@example.net>\r\n\r\nThis one stays queued.\r\n")
s.quit()
print("sent")
"#;

/// Two messages reach bob, who deletes them over IMAP.
const DELETE: &str = r#"
import imaplib, smtplib, ssl, sys
ca, mx, imaps, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with smtplib.SMTP("127.0.0.1", mx, timeout=30) as s:
    for i in (1, 2):
        s.sendmail("someone@example.net", ["bob@example.com"],
                   ("From: someone@example.net\r\nTo: bob@example.com\r\nSubject: deleted %d\r\nMessage-ID: <deleted-%d@example.net>\r\n\r\nDeleted on outage day.\r\n" % (i, i)).encode())
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
m.login("bob@example.com", password)
m.select("INBOX")
found = m.search(None, "SUBJECT", "deleted")[1][0].split()
for n in found:
    m.store(n, "+FLAGS", "\\Deleted")
m.expunge()
m.logout()
print("deleted", len(found))
"#;

#[test]
fn operations_md_walked_command_by_command() {
    let base = std::fs::read_to_string(repo().join("config/understudy.toml")).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let mut walk = Walk::new(&base, |config, walk| {
        config["metrics"]["listen"] = "127.0.0.1:0".into();
        let delivery = config["delivery"].as_table_mut().unwrap();
        let mut routes = toml::Table::new();
        routes.insert("example.net".into(), walk.alerts.addr().into());
        routes.insert("dead.test".into(), dead.clone().into());
        delivery.insert("routes".into(), routes.into());
    });
    walk.page("docs/operations.md");
    eprintln!("walk: {} commands and examples run", walk.ran.len());
    assert!(walk.ran.len() >= 45, "{:#?}", walk.ran);

    // What the failover test of "First-time setup" promises: the spooled mail reached
    // the primary, the alert recipients heard of the outage, and the recovered
    // messages went to the primary too.
    wait_until(Duration::from_secs(60), "the walk's mail at the primary", || {
        let counts = walk.primary.message_id_counts(None);
        let swaks = walk
            .primary
            .messages()
            .iter()
            .any(|(_, m)| m.contains("X-Mailer: swaks"));
        swaks
            && counts.contains_key("<deleted-1@example.net>")
            && counts.contains_key("<deleted-2@example.net>")
    });
    assert!(
        walk.alerts
            .messages()
            .iter()
            .any(|(_, m)| m.contains("outage started by an admin")),
        "no outage notice reached the alert recipients"
    );
}

#[test]
fn readme_first_steps_walked_command_by_command() {
    let base = std::fs::read_to_string(repo().join("config/dev.toml"))
        .unwrap()
        .replace("\"../data\"", "\"/var/lib/understudy\"")
        .replace(
            "../certs-dev/",
            &format!("{}/", repo().join("certs-dev").display()),
        );
    let mut walk = Walk::new(&base, |_, _| {});
    walk.page("README.md");
    eprintln!("walk: {} commands run", walk.ran.len());
    assert!(walk.ran.len() >= 12, "{:#?}", walk.ran);
}

/// The example configuration shows every section the server knows, so an admin sees
/// what can be set (`[metrics]` and `[autoconfig]` were missing).
#[test]
fn the_shipped_configuration_shows_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "hostname = \"h\"\ndata_dir = \"d\"\nno_such_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    let known = message
        .split("known: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of known keys in: {message}"));
    let sections: Vec<&str> = known
        .split(|c: char| c == ',' || c == ')' || c.is_whitespace())
        .filter(|w| w.starts_with('['))
        .collect();
    assert!(sections.len() >= 10, "{sections:?} from {message}");
    let shipped = std::fs::read_to_string(repo().join("config/understudy.toml")).unwrap();
    for section in sections {
        assert!(
            shipped
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(section)),
            "config/understudy.toml does not show {section}"
        );
    }
}
