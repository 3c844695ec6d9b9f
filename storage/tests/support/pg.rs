//! A throwaway PostgreSQL 15 for tests: `initdb` into a temporary directory (as the
//! `postgres` user when the tests run as root, since PostgreSQL refuses root), listening
//! on 127.0.0.1 and a socket in that directory only, trust authentication, stopped and
//! removed when the test process exits. One server per test process; each store gets a
//! schema of its own (`url_for`), so tests do not see each other's tables.
//!
//! `UNDERSTUDY_TEST_PG=host=... port=...` makes a process (a test's child) use a server
//! already started instead. A test that stops PostgreSQL under load starts one of its
//! own ([`OwnServer`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming a running server's connection base.
pub const ENV: &str = "UNDERSTUDY_TEST_PG";

struct Server {
    /// `host=... port=... user=postgres`, without a database or options.
    base: String,
    /// What `restart` needs to start it again (None for a server of another process).
    spawn: Option<Spawn>,
}

#[derive(Clone)]
struct Spawn {
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static PID: AtomicI32 = AtomicI32::new(0);
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// uid and gid of the `postgres` user, read from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres"))
            .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
    })
}

extern "C" fn stop_server() {
    let pid = PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signals and waits for the child this process started; no pointers.
        unsafe {
            libc::kill(pid, libc::SIGINT);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }
    if let Some(dir) = DATA_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn start() -> Server {
    if let Ok(base) = std::env::var(ENV) {
        return Server { base, spawn: None };
    }
    let spawn = init(&format!("understudy-pg-{}", std::process::id()));
    let _ = DATA_DIR.set(spawn.dir.clone());
    launch(&spawn);
    // SAFETY: registers a plain function with no arguments.
    unsafe {
        libc::atexit(stop_server);
    }
    let base = format!("host=127.0.0.1 port={} user=postgres", spawn.port);
    wait_ready(&spawn.bin, spawn.port);
    Server {
        base,
        spawn: Some(spawn),
    }
}

/// `initdb` into a new directory `name` under the temporary directory, on a free port.
fn init(name: &str) -> Spawn {
    let bin = bin_dir();
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL 15 is not installed in {} (apt-get install postgresql-15; .ci/run does)",
        bin.display()
    );
    let root = unsafe { libc::geteuid() } == 0;
    let ids = if root {
        Some(postgres_ids().expect("running as root but there is no postgres user"))
    } else {
        None
    };
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let as_postgres = |command: &mut Command| {
        if let Some((uid, gid)) = ids {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_postgres(&mut initdb);
    let out = initdb.output().unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Spawn {
        bin,
        data,
        dir,
        port: free_port(),
        ids,
    }
}

fn wait_ready(bin: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not start within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the postmaster and records its pid for `stop_server`.
fn launch(spawn: &Spawn) {
    let pid = spawn_postmaster(spawn);
    PID.store(pid as i32, Ordering::SeqCst);
}

/// Starts a postmaster for `spawn` and returns its pid.
fn spawn_postmaster(spawn: &Spawn) -> u32 {
    let mut postgres = Command::new(spawn.bin.join("postgres"));
    postgres
        .args([
            "-D",
            spawn.data.to_str().unwrap(),
            "-p",
            &spawn.port.to_string(),
            "-k",
            spawn.dir.to_str().unwrap(),
        ])
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
        .args(["-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = spawn.ids {
            postgres.uid(uid).gid(gid);
        }
        // SAFETY: prctl only; runs in the child before exec. The server goes when this
        // process does, even when it dies without running `stop_server`.
        unsafe {
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
    }
    // The parent-death signal fires when the spawning *thread* ends: spawn from a
    // thread that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Waited for by `stop_server` (waitpid), at exit or restart.
        #[allow(clippy::zombie_processes)]
        let child = postgres.spawn().unwrap();
        tx.send(child.id()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// A fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends: clients disconnected,
/// open transactions rolled back) of the postmaster `pid`, waited for.
fn stop_postmaster(pid: i32) {
    // SAFETY: signals and waits for a child this process started; no pointers.
    unsafe {
        libc::kill(pid, libc::SIGINT);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Stops this process's server (a fast shutdown: clients are disconnected) and starts
/// it again on the same port and data. Only for a test binary of its own: every store
/// of the process loses its connections.
pub fn restart() {
    let spawn = server()
        .spawn
        .clone()
        .expect("restart of a server this process did not start");
    stop_postmaster(PID.swap(0, Ordering::SeqCst));
    launch(&spawn);
    wait_ready(&spawn.bin, spawn.port);
}

/// A PostgreSQL server a test owns and may stop and start again (on the same port and
/// data directory) while other tests of the process use the shared one; stopped and
/// removed when dropped.
pub struct OwnServer {
    spawn: Spawn,
    pid: i32,
}

impl OwnServer {
    pub fn start() -> OwnServer {
        use std::sync::atomic::AtomicU32;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "understudy-pg-{}-own{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let spawn = init(&name);
        let pid = spawn_postmaster(&spawn) as i32;
        wait_ready(&spawn.bin, spawn.port);
        OwnServer { spawn, pid }
    }

    /// `host=... port=... user=postgres`.
    pub fn base(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres", self.spawn.port)
    }

    /// A store URL on this server (a schema named after `dir`, as [`url_for`]).
    pub fn url_for(&self, dir: &Path) -> String {
        url_on(&self.base(), dir)
    }

    /// A fast shutdown, waited for: every client connection is cut.
    pub fn stop(&mut self) {
        if self.pid > 0 {
            stop_postmaster(self.pid);
            self.pid = 0;
        }
    }

    /// Starts it again on the same port and data directory; returns once it accepts.
    pub fn start_again(&mut self) {
        assert_eq!(self.pid, 0, "the server is running");
        self.pid = spawn_postmaster(&self.spawn) as i32;
        wait_ready(&self.spawn.bin, self.spawn.port);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.spawn.dir);
    }
}

fn server() -> &'static Server {
    SERVER.get_or_init(start)
}

/// The connection base (`host=... port=... user=postgres`) of this process's server,
/// for [`ENV`] in a child process.
pub fn base() -> String {
    server().base.clone()
}

/// Runs one SQL command as the superuser.
pub fn psql(sql: &str) {
    psql_on(&server().base, sql);
}

/// Runs one SQL command as the superuser of the server at `base`.
pub fn psql_on(base: &str, sql: &str) {
    let out = Command::new(bin_dir().join("psql"))
        .args([
            &format!("{base} dbname=postgres"),
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One value (`-t -A`) that `sql` reads from the store named after `dir` (as
/// [`url_for`]), as the superuser.
pub fn query(dir: &Path, sql: &str) -> String {
    let out = Command::new(bin_dir().join("psql"))
        .args([
            &url_for(dir),
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-t",
            "-A",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A URL for a store of its own, named after `dir` (so reopening the same directory
/// reopens the same store): a schema created on first use and put first in the search
/// path.
pub fn url_for(dir: &Path) -> String {
    url_on(&server().base, dir)
}

fn url_on(base: &str, dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let schema = format!("t{:016x}", h.finish());
    psql_on(base, &format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
    format!("{base} dbname=postgres options='-c search_path={schema}'")
}
