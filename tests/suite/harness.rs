//! `TestServer`: starts the real server with its own data directory and port 0 for every
//! listener, reads back the bound addresses, and stops it on drop. Every wait has a
//! deadline so a hang fails fast.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The server binary; `UNDERSTUDY_TEST_BIN` (read at build time) points the tests at a
/// copy, for when other checkouts share the target directory and relink its binary.
pub const BIN: &str = match option_env!("UNDERSTUDY_TEST_BIN") {
    Some(bin) => bin,
    None => env!("CARGO_BIN_EXE_understudy"),
};
pub const PASSWORD: &str = "Correct1horse";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ca_cert() -> PathBuf {
    repo().join("certs-dev/ca.crt")
}

/// Python raw-socket client for hostile-input and security scripts, run with
/// `ca_and_ports` arguments: `P[service]` is a port, `C(port, tls)` a connection with
/// `send`, `expect(regex)` (reads until the pattern, fails if the server closes first),
/// `starttls()`, `closed()` (true once the server has ended the connection) and `close()`.
pub const RAW_CLIENT_PY: &str = r#"
import socket, ssl, sys, re, time, base64, smtplib, imaplib, statistics
CA = sys.argv[1]
P = dict(a.split("=") for a in sys.argv[2:])
P = {k: int(v) for k, v in P.items()}
CTX = ssl.create_default_context(cafile=CA)
USER, PASSWORD = "anna@example.com", "Correct1horse"

class C:
    def __init__(self, port, tls=False, source=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=20,
                                     source_address=(source, 0) if source else None)
        self.s = CTX.wrap_socket(s, server_hostname="127.0.0.1") if tls else s
        self.buf = b""
    def starttls(self):
        assert self.buf == b"", self.buf
        self.s = CTX.wrap_socket(self.s, server_hostname="127.0.0.1")
    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return False
    def _recv(self):
        try:
            return self.s.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            return b""
    def expect(self, pattern):
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out.decode("latin-1")
            d = self._recv()
            if not d:
                raise AssertionError(f"closed before {pattern!r}; got {self.buf[-300:]!r}")
            self.buf += d
    def closed(self, within=20):
        self.s.settimeout(within)
        while True:
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, ssl.SSLError, OSError):
                return True
            if not d:
                return True
            self.buf += d
    def close(self):
        self.s.close()
"#;

/// Every service the test config listens on.
pub const SERVICES: [&str; 7] = [
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "submission",
    "submissions",
    "smtp",
];

/// Arguments for a Python client: the dev CA, then `service=port` for every service.
pub fn ca_and_ports(server: &TestServer) -> Vec<String> {
    let mut args = vec![ca_cert().display().to_string()];
    args.extend(SERVICES.iter().map(|s| format!("{s}={}", server.addr(s).port())));
    args
}

pub struct TestServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addrs: HashMap<String, SocketAddr>,
    /// Lines the server wrote on stderr (its log), collected in the background.
    log: mpsc::Receiver<String>,
    log_lines: Vec<String>,
    env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft and hard) for the server process, if set.
    nofile: Option<u64>,
}

/// Configuration text for a test server in `dir`, every listener on port 0.
pub fn test_config(dir: &Path, extra: &str) -> String {
    let certs = repo().join("certs-dev");
    let mut text = format!(
        r#"hostname = "localhost"
data_dir = "{data}"

[tls]
certificate = "{certs}/server.crt"
private_key = "{certs}/server.key"

[listen]
imap = ["127.0.0.1:0"]
imaps = ["127.0.0.1:0"]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
smtp = ["127.0.0.1:0"]

[log]
level = "debug"
"#,
        data = dir.join("data").display(),
        certs = certs.display()
    );
    text.push_str(extra);
    text
}

impl TestServer {
    /// A server with domain example.com and user anna@example.com (password `PASSWORD`).
    pub fn start() -> TestServer {
        TestServer::setup("", |s| {
            s.admin_ok(&["domain", "add", "example.com"]);
            s.add_user("anna@example.com", PASSWORD);
        })
    }

    /// Writes the config, runs `prepare` (admin commands on the stopped server), starts.
    pub fn setup(extra_config: &str, prepare: impl FnOnce(&TestServer)) -> TestServer {
        TestServer::setup_with_env(extra_config, &[], prepare)
    }

    /// As `setup`, with extra environment variables for the server process.
    pub fn setup_with_env(
        extra_config: &str,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&TestServer),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("understudy.toml");
        std::fs::write(&config, test_config(dir.path(), extra_config)).expect("write config");
        let (_tx, log) = mpsc::channel();
        let mut server = TestServer {
            child: None,
            dir,
            config,
            addrs: HashMap::new(),
            log,
            log_lines: Vec::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            nofile: None,
        };
        prepare(&server);
        server.launch();
        server
    }

    /// A server on a configuration file the test wrote itself (in `dir`), not started:
    /// `start_again` starts it.
    pub fn on_config(dir: tempfile::TempDir, config: PathBuf) -> TestServer {
        let (_tx, log) = mpsc::channel();
        TestServer {
            child: None,
            dir,
            config,
            addrs: HashMap::new(),
            log,
            log_lines: Vec::new(),
            env: Vec::new(),
            nofile: None,
        }
    }

    /// Whether the server process is running (started and not yet exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// As `setup`, the server limited to `nofile` file descriptors (soft and hard), as a
    /// host with a low LimitNOFILE would have it.
    pub fn setup_with_nofile(
        extra_config: &str,
        nofile: u64,
        prepare: impl FnOnce(&TestServer),
    ) -> TestServer {
        let mut server = TestServer::setup_with_env(extra_config, &[], |_| {});
        server.stop();
        server.nofile = Some(nofile);
        prepare(&server);
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut command = Command::new(BIN);
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .args(["--config", self.config.to_str().expect("utf-8 path"), "serve"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start understudy");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (log_tx, log_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.log = log_rx;
        self.addrs.clear();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening ") {
                        let (service, addr) = rest.split_once(' ').expect("listening line");
                        self.addrs
                            .insert(service.to_string(), addr.parse().expect("address"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log: Vec<String> = self.log.try_iter().collect();
                    panic!(
                        "server did not become ready within 60 s; log:\n{}",
                        log.join("\n")
                    );
                }
            }
        }
        self.child = Some(child);
    }

    pub fn addr(&self, service: &str) -> SocketAddr {
        *self
            .addrs
            .get(service)
            .unwrap_or_else(|| panic!("no {service} listener"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not stop within 40 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("server is running")
    }

    /// Waits (bounded) for a server that was signalled to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 40 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory (after `stop` or `wait_exit`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        self.launch();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs an admin command against this server's configuration.
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run admin command");
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        wait_output(child, Duration::from_secs(60))
    }

    /// Runs an admin command and asserts that it succeeded; returns its stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args, None);
        assert!(
            out.status.success(),
            "understudy {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn add_user(&self, address: &str, password: &str) {
        let out = self.admin(
            &["user", "add", address, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Everything the server logged so far.
    pub fn log(&mut self) -> String {
        self.log_lines.extend(self.log.try_iter());
        self.log_lines.join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

/// Waits for a child with a deadline and collects its output.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for child"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("child process did not finish within {limit:?}");
        }
    }
}

/// Runs a Python 3 script (a real protocol client) with arguments; returns its output.
pub fn python(script: &str, args: &[String]) -> Output {
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    wait_output(child, Duration::from_secs(120))
}

/// Asserts that a client script succeeded and returns its stdout.
pub fn python_ok(script: &str, args: &[String]) -> String {
    let out = python(script, args);
    assert!(
        out.status.success(),
        "python client failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The start of a Python script that drives `imapclient` (PyPI) over IMAPS, as the
/// client tests do: the dev CA in `CA`, the IMAPS port in `PORT` (the script's first two
/// arguments; further ones follow in `sys.argv[3:]`), `ctx` to verify the server, and
/// `connect()`, a client logged in as anna@example.com.
pub const IMAPCLIENT_PY: &str = r#"
import base64, datetime, imaplib, imapclient, smtplib, ssl, sys, threading, time
CA, PORT = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=CA)
def connect(user="anna@example.com", password="Correct1horse"):
    c = imapclient.IMAPClient("127.0.0.1", port=PORT, ssl=True, ssl_context=ctx, timeout=30)
    c.login(user, password)
    return c
"#;

/// Runs `script` after [`IMAPCLIENT_PY`] against the server's IMAPS port, with `args`
/// after the CA and the port; asserts that it succeeded.
pub fn imapclient(server: &TestServer, script: &str, args: &[String]) -> Printed {
    let mut all = vec![
        ca_cert().display().to_string(),
        server.addr("imaps").port().to_string(),
    ];
    all.extend_from_slice(args);
    Printed(python_ok(&format!("{IMAPCLIENT_PY}{script}"), &all))
}

/// What a client script printed: one line per finding, each starting with its name.
pub struct Printed(pub String);

impl Printed {
    /// The first line that starts with the words `prefix`; the test fails without one.
    pub fn line(&self, prefix: &str) -> String {
        self.0
            .lines()
            .find(|l| {
                l.strip_prefix(prefix)
                    .is_some_and(|rest| prefix.ends_with(' ') || rest.is_empty() || rest.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", self.0))
            .to_string()
    }
}

impl std::ops::Deref for Printed {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Printed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh RSA key (PEM path) and its public key as DKIM's `p=` value.
pub fn dkim_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("dkim.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let public = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl pkey -in {} -pubout -outform DER | base64 -w0",
            key.display()
        ))
        .output()
        .unwrap();
    (key, String::from_utf8(public.stdout).unwrap())
}

/// Polls `cond` until it holds or the deadline passes (then the test fails).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The domain's phase as `outage status` shows it ("normal", "outage", "draining").
pub fn phase(server: &TestServer, domain: &str) -> String {
    let status = server.admin_ok(&["outage", "status", domain]);
    let line = status
        .lines()
        .find(|l| l.starts_with(domain))
        .unwrap_or_else(|| panic!("no {domain} in:\n{status}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

/// The log without terminal colour codes.
pub fn plain_log(server: &mut TestServer) -> String {
    let log = server.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn wait_log(server: &mut TestServer, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = plain_log(server);
        if log.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "log never showed {needle:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
