//! The docs walked as a newcomer would (issue 18): every command in the code blocks of
//! docs/operations.md and of the README is run, in the order the page gives it, against
//! a throwaway installation made from the shipped configuration (config/understudy.toml,
//! config/dev.toml): /etc/understudy, /var/lib/understudy and /var/backups/understudy
//! moved into a temporary directory, listeners on port 0, and the example hosts mapped
//! to local stand-ins (`smtp-sink` as the primary and as the alert recipients' server,
//! a throwaway slapd shaped like Active Directory as the `[[ldap]]` example's
//! `dc1.example.com`, the console listener for `https://127.0.0.1:8443`).
//! Placeholders (`DOMAIN`, `ID`, `TRACKING-ID`, the example id `000000002A`, `$TOKEN`)
//! become real values: the test makes a queue entry, messages deleted during an outage,
//! and the first administrator with an API token (as the page says, `admin add root
//! --totp`, `admin token add`), when a command first needs one. `systemctl
//! start|stop|status|enable --now` and `cargo run -- serve` act on the test's server,
//! and every `systemctl`/`journalctl` command must have its check in
//! debian/ci-systemd.sh, which CI runs against the packaged unit under a real systemd.
//! The configuration examples are checked with `check-config` on top of the shipped
//! configuration; the `[[ldap]]` one also serves `ldap sync`. Commands that build or
//! install the package are named in `NOT_HERE` with the CI step that runs them, and
//! `package_commands_are_what_ci_runs` holds them to what .ci/run and
//! debian/ci-install.sh run, word for word. A command that fails, or one that is
//! neither run nor named, fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::ldap::{logins, Slapd};
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
    (
        "apt-get install",
        ".ci/run installs these packages (package_commands_are_what_ci_runs)",
    ),
    (
        "cargo install cargo-deb",
        ".ci/run installs cargo-deb so (package_commands_are_what_ci_runs)",
    ),
    (
        "cargo deb",
        "debian/ci-install.sh, around the binary the suite tested (package_commands_are_what_ci_runs)",
    ),
    (
        "dpkg -i",
        "debian/ci-install.sh installs the package so and checks it (package_commands_are_what_ci_runs)",
    ),
    ("cargo test --workspace --locked", ".ci/run runs it as written"),
    (
        "contrib/roundcube/setup-debian.sh",
        "installs nginx and PHP-FPM and sets up a web server: debian/ci-webmail.sh runs it \
         under debian/ci-systemd.sh's systemd and logs in to Roundcube over HTTPS",
    ),
];

/// The package commands of operations.md's "Install" and where CI runs them: the
/// script, a word that picks the line there, and the words CI adds, each for a reason.
const PACKAGE_COMMANDS: &[(&str, &str, &str, &[&str])] = &[
    // `-qq` keeps CI's log short; stdin from /dev/null: no terminal. The page's
    // packages stand among .ci/run's `packages` (CI installs the test peers too).
    (
        "apt-get install",
        ".ci/run",
        "\"${missing[@]}\"",
        &["-qq", "<", "/dev/null"],
    ),
    ("cargo install cargo-deb", ".ci/run", "cargo-deb", &[]),
    // Around the debug binary the suite has just tested (no second, release build);
    // `--fast` compresses less; DEB_FLAGS for a local run.
    (
        "cargo deb",
        "debian/ci-install.sh",
        "--output",
        &[
            "--no-build",
            "--fast",
            "${DEB_FLAGS:-}",
            "--profile",
            "\"$profile\"",
        ],
    ),
    ("dpkg -i", "debian/ci-install.sh", "$deb", &[]),
];

/// CI's shell variables and the page's words they stand for.
const CI_WORDS: &[(&str, &str)] = &[("\"$deb\"", "understudy.deb")];

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
    /// An API token of the first administrator, for `$TOKEN`.
    token: Option<String>,
    /// The directory the `[[ldap]]` example names (dc1.example.com), once a command
    /// needs it.
    directory: Option<Slapd>,
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
            token: None,
            directory: None,
            ran: Vec::new(),
        };
        let mut table: toml::Table = walk.moved(base).parse().unwrap();
        for (_, addrs) in table["listen"].as_table_mut().unwrap().iter_mut() {
            *addrs = toml::Value::Array(vec!["127.0.0.1:0".into()]);
        }
        if let Some(web) = table.get_mut("web").and_then(|w| w.as_table_mut()) {
            web.insert("listen".into(), "127.0.0.1:0".into());
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
            if let Some(web) = self.server.addrs.get("web") {
                command = command.replace("https://127.0.0.1:8443", &format!("https://{web}"));
            }
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
            .envs(self.token.iter().map(|t| ("TOKEN", t)))
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
        if command == "cargo test --workspace --locked" {
            let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
            assert!(
                ci.lines().any(|l| l == command),
                "{place}: .ci/run does not run this command as written"
            );
        }
        if command.starts_with("contrib/roundcube/setup-debian.sh") {
            // debian/ci-webmail.sh takes the command from the page and runs it.
            let script = std::fs::read_to_string(repo().join("debian/ci-webmail.sh")).unwrap();
            let ci = std::fs::read_to_string(repo().join("debian/ci-systemd.sh")).unwrap();
            assert!(
                script.contains("contrib\\/roundcube\\/setup-debian.sh")
                    && ci.contains(". debian/ci-webmail.sh"),
                "{place}: debian/ci-webmail.sh does not run it"
            );
        }
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
        if command.contains("$TOKEN") {
            self.api_token();
        }
        if command.starts_with("understudy ldap sync") {
            self.directory();
        }
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
        self.check_effect(&place, &command, &stdout);
        eprintln!("walk: ok: {place}");
        self.ran.push(command);
    }

    /// What a command promises beyond its output, checked where the walk can see it.
    fn check_effect(&mut self, place: &str, command: &str, stdout: &str) {
        if command.contains("$TOKEN") && command.contains("/outage") {
            // The API's answer, and the outage it started as the CLI sees it; then the
            // outage ends, as the page's next steps expect a domain in normal service.
            let answer: serde_json::Value = serde_json::from_str(stdout)
                .unwrap_or_else(|e| panic!("{place}: not the API's JSON answer ({e}): {stdout}"));
            assert_eq!(answer["domain"], "example.com", "{place}: {answer}");
            assert_eq!(answer["already"], false, "{place}: {answer}");
            let status = self.admin_ok(&["outage", "status"]);
            assert!(
                status.contains("primary down"),
                "{place}: `outage status` shows no outage started over the API:\n{status}"
            );
            self.admin_ok(&["outage", "stop", "example.com"]);
        }
        if command.starts_with("understudy ldap sync") {
            // The server synced the directory itself when the reload added it; the new
            // hire came after that, so only these commands bring him in.
            let exists = self
                .server
                .admin(&["user", "show", NEW_HIRE], None)
                .status
                .success();
            if command.contains("--dry-run") {
                assert!(
                    stdout.contains(&format!("would create {NEW_HIRE}"))
                        && stdout.contains("dry run, nothing changed: ldap sync example.com:"),
                    "{place}: the dry run does not report the new hire:\n{stdout}"
                );
                assert!(!exists, "{place}: the dry run created {NEW_HIRE}");
            } else {
                assert!(
                    stdout.contains("ldap sync example.com:") && exists,
                    "{place}: {NEW_HIRE} was not synced:\n{stdout}"
                );
                // `login = "bind"`: the directory checks the password.
                assert_eq!(
                    logins(&self.server, &[(NEW_HIRE, NEW_HIRE_PASSWORD)]),
                    [format!("{NEW_HIRE}:OK")],
                    "{place}: the new hire cannot log in with the directory's password"
                );
            }
        }
    }

    /// The first administrator and an API token, made as the page says (`understudy
    /// admin add root --totp`, which prompts for the password, and `understudy admin
    /// token add NAME --label TEXT`), in `$TOKEN`; and `ca.pem`, the CA of the `[tls]`
    /// certificate the console serves.
    fn api_token(&mut self) {
        if self.token.is_some() {
            return;
        }
        std::fs::copy(ca_cert(), self.cwd.join("ca.pem")).unwrap();
        let input = format!("{NEW_PASSWORD}\n{NEW_PASSWORD}\n");
        let add = self.shell(
            &format!(
                "script -qec {} /dev/null",
                sh_quote("understudy admin add root --totp")
            ),
            Some(&input),
        );
        let text = String::from_utf8_lossy(&add.stdout);
        assert!(
            add.status.success() && text.contains("otpauth://"),
            "admin add root --totp: {text}{}",
            String::from_utf8_lossy(&add.stderr)
        );
        let out = self.shell("understudy admin token add root --label walk", None);
        let text = String::from_utf8_lossy(&out.stdout);
        self.token = text
            .split_whitespace()
            .find(|w| w.starts_with("us_"))
            .map(str::to_string);
        assert!(
            out.status.success() && self.token.is_some(),
            "admin token add: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The directory of operations.md's `[[ldap]]` example, as Active Directory shapes it
    /// (a service account under `OU=Service Accounts`, staff under `OU=Staff`, `user`
    /// entries with `objectCategory`, `userAccountControl`, `proxyAddresses`), served by
    /// a throwaway slapd over ldaps; the example, with `dc1.example.com` mapped to it, is
    /// added to the running server's configuration and put in force with SIGHUP, as the
    /// page's "Reload" says. Once the server has synced it, a new hire joins the directory.
    fn directory(&mut self) {
        if self.directory.is_some() {
            return;
        }
        let slapd = Slapd::start_with(AD_SCHEMA, &ad_staff(), true);
        self.directory_files();
        let mut section = ldap_example();
        let section_table = section.as_table_mut().unwrap();
        assert_eq!(section_table["url"].as_str(), Some("ldaps://dc1.example.com"));
        section_table.insert("url".into(), slapd.url().into());
        let mut config: toml::Table = std::fs::read_to_string(&self.config).unwrap().parse().unwrap();
        let section: toml::Table = self.moved(&toml::to_string(&section).unwrap()).parse().unwrap();
        config.insert("ldap".into(), vec![toml::Value::Table(section)].into());
        std::fs::write(&self.config, toml::to_string(&config).unwrap()).unwrap();
        let hup = Command::new("kill")
            .args(["-HUP", &self.server.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let mut log = String::new();
        wait_until(
            Duration::from_secs(60),
            "the server's own sync of the directory",
            || {
                log = plain_log(&mut self.server);
                log.contains("ldap sync domain=example.com") || log.contains("ldap sync failed")
            },
        );
        assert!(
            !log.contains("ldap sync failed"),
            "the server could not sync the example's directory:\n{log}"
        );
        assert!(
            self.server
                .admin(&["user", "show", "carla@example.com"], None)
                .status
                .success(),
            "the server's sync did not create carla@example.com:\n{log}"
        );
        slapd.modify("ldapadd", AD_NEW_HIRE);
        self.directory = Some(slapd);
    }

    /// The files the examples name: the `[[ldap]]` directory's CA and the service
    /// account's password, the S3 secret key file.
    fn directory_files(&self) {
        let etc = self.root.join("etc/understudy");
        std::fs::copy(ca_cert(), etc.join("ldap-ca.pem")).unwrap();
        std::fs::write(etc.join("ldap-password"), "Service1secret\n").unwrap();
        set_mode(&etc.join("ldap-password"), 0o600);
        // The secret key file of the `[store.s3]` example.
        std::fs::write(etc.join("s3-secret"), "S3secret\n").unwrap();
        set_mode(&etc.join("s3-secret"), 0o600);
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
        self.directory_files();
        let path = self.root.join("etc/understudy/example.toml");
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

/// The `[[ldap]]` example of operations.md (the README's `ldap sync` refers to it).
fn ldap_example() -> toml::Value {
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let block = code_blocks(&doc)
        .into_iter()
        .find(|b| b.lines.first().is_some_and(|l| l == "[[ldap]]"))
        .expect("an [[ldap]] example in docs/operations.md");
    let mut table: toml::Table = block.lines.join("\n").parse().unwrap();
    let mut sections = table.remove("ldap").unwrap().as_array().unwrap().clone();
    assert_eq!(sections.len(), 1);
    sections.remove(0)
}

/// What Active Directory's schema has and OpenLDAP's lacks, for the `active-directory`
/// preset's filter and attributes (a private test OID arc; `objectCategory` is a plain
/// string here, where AD keeps a DN that its filters match by short name).
const AD_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.10 NAME 'objectCategory'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.11 NAME 'userAccountControl'
\tEQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.12 NAME 'proxyAddresses'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.99999.1.13 NAME 'userPrincipalName'
\tEQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.10 NAME 'user' SUP inetOrgPerson STRUCTURAL
\tMAY ( objectCategory $ userAccountControl $ proxyAddresses $ userPrincipalName ) )
";

/// The example's directory: its service account and base DN, one member of staff with
/// aliases, one disabled (`userAccountControl` 514 = 512 | 0x2) and known only by UPN,
/// and Bob, whom the page made by hand before: with `login = "bind"` the directory
/// checks every password of the domain, so he is in it with the password the walk gave
/// him (the sync adopts him).
fn ad_staff() -> String {
    format!(
        "{AD_STAFF}
dn: CN=Bob Stone,OU=Staff,DC=example,DC=com
objectClass: user
objectCategory: person
cn: Bob Stone
sn: Stone
displayName: Bob Stone
mail: bob@example.com
userAccountControl: 512
userPassword: {NEW_PASSWORD}
"
    )
}

const AD_STAFF: &str = "\
dn: DC=example,DC=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: OU=Service Accounts,DC=example,DC=com
objectClass: organizationalUnit
ou: Service Accounts

dn: CN=understudy,OU=Service Accounts,DC=example,DC=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: understudy
userPassword: Service1secret

dn: OU=Staff,DC=example,DC=com
objectClass: organizationalUnit
ou: Staff

dn: CN=Carla Diaz,OU=Staff,DC=example,DC=com
objectClass: user
objectCategory: person
cn: Carla Diaz
sn: Diaz
displayName: Carla Diaz
mail: carla@example.com
userPrincipalName: carla@example.com
proxyAddresses: SMTP:carla@example.com
proxyAddresses: smtp:c.diaz@example.com
proxyAddresses: X500:/o=Example/ou=Exchange/cn=Recipients/cn=carla
userAccountControl: 512
userPassword: Carla1secret

dn: CN=Dag Holm,OU=Staff,DC=example,DC=com
objectClass: user
objectCategory: person
cn: Dag Holm
sn: Holm
userPrincipalName: dag@example.com
userAccountControl: 514
userPassword: Dag1secret
";

const NEW_HIRE: &str = "erik@example.com";
const NEW_HIRE_PASSWORD: &str = "Erik1secret";
const AD_NEW_HIRE: &str = "\
dn: CN=Erik Lund,OU=Staff,DC=example,DC=com
objectClass: user
objectCategory: person
cn: Erik Lund
sn: Lund
displayName: Erik Lund
mail: erik@example.com
userAccountControl: 512
userPassword: Erik1secret
";

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

/// The Debian package's build and install commands on the page are, word for word, what
/// CI runs (.ci/run, debian/ci-install.sh), but for the words `PACKAGE_COMMANDS` lists:
/// a change on either side that the other does not follow fails here.
#[test]
fn package_commands_are_what_ci_runs() {
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let on_page: Vec<String> = code_blocks(&doc)
        .iter()
        .flat_map(commands)
        .map(|(_, c)| strip_comment(&c))
        .filter(|c| PACKAGE_COMMANDS.iter().any(|(p, ..)| c.starts_with(p)))
        .collect();
    assert_eq!(
        on_page.len(),
        PACKAGE_COMMANDS.len(),
        "the page's package commands: {on_page:#?}"
    );
    for ((prefix, script, marker, ci_only), page) in PACKAGE_COMMANDS.iter().zip(&on_page) {
        assert!(page.starts_with(prefix), "{page} is not the page's `{prefix}`");
        let text = std::fs::read_to_string(repo().join(script)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains(prefix) && l.contains(marker))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{script}: the lines that run `{prefix}`: {lines:#?}"
        );
        let line = &lines[0][lines[0].find(prefix).unwrap()..];
        // The simple command: up to a pipe, a list operator or a redirection of stderr.
        let mut ci: Vec<String> = line
            .split_whitespace()
            .take_while(|w| !matches!(*w, "|" | "||" | "&&" | ";" | "2>&1" | "\\"))
            .map(|w| {
                CI_WORDS
                    .iter()
                    .find(|(var, _)| var == &w)
                    .map_or(w, |(_, word)| word)
                    .to_string()
            })
            .collect();
        for word in *ci_only {
            let at = ci.iter().position(|w| w == word).unwrap_or_else(|| {
                panic!(
                    "{script} runs `{}` without {word}: update PACKAGE_COMMANDS",
                    ci.join(" ")
                )
            });
            ci.remove(at);
        }
        let mut page: Vec<String> = page.split_whitespace().map(str::to_string).collect();
        if let Some(at) = ci.iter().position(|w| w == "\"${missing[@]}\"") {
            // apt-get: the page's packages are among those .ci/run installs.
            ci.remove(at);
            let listed: Vec<&str> = text
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("packages=(")
                        .or_else(|| l.strip_prefix("packages+=("))
                })
                .flat_map(|l| l.trim_end_matches(')').split_whitespace())
                .collect();
            let packages: Vec<String> = page.drain(ci.len()..).collect();
            for package in &packages {
                assert!(
                    listed.contains(&package.as_str()),
                    "operations.md installs {package}, which {script} does not: {listed:?}"
                );
            }
        }
        assert_eq!(
            page, ci,
            "operations.md and {script} run `{prefix}` differently (words CI may add: {ci_only:?})"
        );
    }
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
