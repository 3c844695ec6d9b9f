//! A local S3 stand-in for tests: PyPI `moto` in server mode (`moto_server`, installed
//! by `.ci/run`) on 127.0.0.1 and a free port, one per test process, stopped when the
//! process exits. Each store gets a bucket of its own (`bucket_for`), created here.
//! Objects are listed and written behind the store's back with boto3, a client that is
//! not the one under test.
//!
//! `UNDERSTUDY_TEST_S3=http://127.0.0.1:PORT` makes a process (a test's child) use a
//! stand-in already started instead.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use understudy_storage::{BodyOptions, S3Options};

/// The environment variable naming a running stand-in's endpoint.
pub const ENV: &str = "UNDERSTUDY_TEST_S3";
pub const ACCESS_KEY: &str = "understudy-test";
pub const SECRET_KEY: &str = "understudy-test-secret";

static ENDPOINT: OnceLock<String> = OnceLock::new();
static PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn stop_server() {
    let pid = PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signals and waits for the child this process started; no pointers.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// One plain HTTP request to the stand-in; its status code. Buckets are created and
/// the readiness probed this way (moto answers these unsigned).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.80}")))
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the S3 endpoint names no port")
}

/// Starts `moto_server` on `port` and waits until it answers; its pid.
pub fn spawn(port: u16) -> u32 {
    let mut command = Command::new("moto_server");
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only; runs in the child before exec. The stand-in goes when
        // this process does, even when it dies without running `stop_server`.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    // The parent-death signal fires when the spawning *thread* ends: spawn from a
    // thread that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Waited for by pid (`stop_server`, or the test that started it).
        #[allow(clippy::zombie_processes)]
        let child = command
            .spawn()
            .expect("moto_server is not installed (pip install 'moto[server]'; .ci/run does)");
        tx.send(child.id()).unwrap();
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/moto-api/").ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pid
}

/// The stand-in's endpoint, started on first use.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            if let Ok(endpoint) = std::env::var(ENV) {
                return endpoint;
            }
            let port = free_port();
            let pid = spawn(port);
            PID.store(pid as i32, Ordering::SeqCst);
            // SAFETY: registers a plain function with no arguments.
            unsafe {
                libc::atexit(stop_server);
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}

/// A bucket for the store in `dir` (created if absent): named from the directory, so a
/// store reopened, or opened by a child process, finds its bodies again.
pub fn bucket_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    let bucket = format!("understudy-{:016x}", h.finish());
    let code = http(port_of(&endpoint()), "PUT", &format!("/{bucket}")).expect("cannot reach moto_server");
    assert!(
        code == 200 || code == 409,
        "creating bucket {bucket}: HTTP {code}"
    );
    bucket
}

/// S3 options for the store in `dir` on the stand-in; `grace` for the sweep.
pub fn options_for(dir: &Path, grace: Duration) -> S3Options {
    S3Options {
        endpoint: endpoint(),
        bucket: bucket_for(dir),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        prefix: "bodies".into(),
        allow_http: true,
        timeout: Duration::from_secs(10),
        grace,
    }
}

pub fn bodies_for(dir: &Path, grace: Duration) -> BodyOptions {
    BodyOptions::S3(options_for(dir, grace))
}

/// Runs a boto3 snippet against the stand-in (`s3` is the client); its stdout.
pub fn boto3(script: &str) -> String {
    boto3_at(&endpoint(), script)
}

/// [`boto3`] against the stand-in at `endpoint`.
pub fn boto3_at(endpoint: &str, script: &str) -> String {
    let program = format!(
        "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{ACCESS_KEY}', \
         aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1')\n{script}\n"
    );
    let out = Command::new("python3").args(["-c", &program]).output().unwrap();
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The object names in `bucket` under `prefix`, listed by boto3.
pub fn list(bucket: &str, prefix: &str) -> Vec<String> {
    let script = format!(
        "p = s3.get_paginator('list_objects_v2')\n\
         for page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):\n    \
         for o in page.get('Contents', []): print(o['Key'])"
    );
    boto3(&script).lines().map(str::to_string).collect()
}

/// Writes an object as the store's own PUT would (`<prefix>/<hex sha-256>`), behind its
/// back: what a crash between a PUT and its commit leaves.
pub fn put_object(bucket: &str, key: &str, body: &[u8]) {
    let script = format!(
        "s3.put_object(Bucket='{bucket}', Key='{key}', Body=bytes.fromhex('{}'))",
        hex::encode(body)
    );
    boto3(&script);
}
