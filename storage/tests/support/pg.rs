//! A throwaway PostgreSQL 15 for tests: `initdb` into a temporary directory (as the
//! `postgres` user when the tests run as root, since PostgreSQL refuses root), listening
//! on 127.0.0.1 and a socket in that directory only, trust authentication, stopped and
//! removed when the test process exits. One server per test process; each store gets a
//! schema of its own (`url_for`), so tests do not see each other's tables.
//!
//! `UNDERSTUDY_TEST_PG=host=... port=...` makes a process (a test's child) use a server
//! already started instead.

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
    let dir = std::env::temp_dir().join(format!("understudy-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let _ = DATA_DIR.set(dir.clone());
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
    let port = free_port();
    let spawn = Spawn {
        bin: bin.clone(),
        data: data.clone(),
        dir: dir.clone(),
        port,
        ids,
    };
    launch(&spawn);
    // SAFETY: registers a plain function with no arguments.
    unsafe {
        libc::atexit(stop_server);
    }
    let base = format!("host=127.0.0.1 port={port} user=postgres");
    wait_ready(&bin, port);
    Server {
        base,
        spawn: Some(spawn),
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
    let pid = rx.recv().unwrap();
    PID.store(pid as i32, Ordering::SeqCst);
}

/// Stops this process's server (a fast shutdown: clients are disconnected) and starts
/// it again on the same port and data. Only for a test binary of its own: every store
/// of the process loses its connections.
pub fn restart() {
    let spawn = server()
        .spawn
        .clone()
        .expect("restart of a server this process did not start");
    let pid = PID.swap(0, Ordering::SeqCst);
    // SAFETY: signals and waits for the child this process started; no pointers.
    unsafe {
        libc::kill(pid, libc::SIGINT);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    launch(&spawn);
    wait_ready(&spawn.bin, spawn.port);
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
    let out = Command::new(bin_dir().join("psql"))
        .args([
            &format!("{} dbname=postgres", server().base),
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

/// A URL for a store of its own, named after `dir` (so reopening the same directory
/// reopens the same store): a schema created on first use and put first in the search
/// path.
pub fn url_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let schema = format!("t{:016x}", h.finish());
    psql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
    format!(
        "{} dbname=postgres options='-c search_path={schema}'",
        server().base
    )
}
