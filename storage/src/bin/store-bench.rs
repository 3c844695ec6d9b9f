//! Store benchmark and crash-test driver: delivers messages with synced writes from
//! several threads and prints figures (or, with --ack, one line per acknowledged
//! delivery so a test can kill it with SIGKILL and check that nothing acked was lost).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use understudy_storage::mailbox::DeliveryRequest;
use understudy_storage::{Domain, NewQueueEntry, QueueKind, Store, StoreOptions, SystemClock};

struct Args {
    dir: PathBuf,
    count: u64,
    writers: u64,
    size: usize,
    users: u64,
    ack: bool,
    /// A PostgreSQL store instead of RocksDB in --dir (plain connection).
    postgres: Option<String>,
    /// Bodies in this S3 bucket (`http://127.0.0.1:9000/bucket`; keys from
    /// S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY, "bench" when unset).
    s3: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: PathBuf::from("bench-db"),
        count: 2000,
        writers: 1,
        size: 10 * 1024,
        users: 64,
        ack: false,
        postgres: None,
        s3: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--count" => args.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--writers" => args.writers = value()?.parse().map_err(|e| format!("--writers: {e}"))?,
            "--size" => args.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--users" => args.users = value()?.parse().map_err(|e| format!("--users: {e}"))?,
            "--ack" => args.ack = true,
            "--postgres" => args.postgres = Some(value()?),
            "--s3" => args.s3 = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn message(n: u64, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender@example.net\r\nTo: user@bench.example\r\nSubject: message {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    )
    .into_bytes();
    // Base64-like lines from a small PRNG: as incompressible as a real attachment, so the
    // bytes-on-disk figure is not flattered by compression.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while m.len() < size {
        for _ in 0..76 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            m.push(ALPHABET[(state % 64) as usize]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let bodies = match &args.s3 {
        None => understudy_storage::BodyOptions::Store,
        Some(url) => {
            let (endpoint, bucket) = url.rsplit_once('/').ok_or("--s3: ENDPOINT/BUCKET")?;
            let key = |name: &str| std::env::var(name).unwrap_or_else(|_| "bench".into());
            understudy_storage::BodyOptions::S3(understudy_storage::S3Options {
                endpoint: endpoint.into(),
                bucket: bucket.into(),
                region: "us-east-1".into(),
                access_key_id: key("S3_ACCESS_KEY_ID"),
                secret_access_key: key("S3_SECRET_ACCESS_KEY"),
                prefix: "bodies".into(),
                allow_http: endpoint.starts_with("http://"),
                timeout: understudy_storage::S3Options::DEFAULT_TIMEOUT,
                grace: understudy_storage::S3Options::DEFAULT_GRACE,
            })
        }
    };
    let options = StoreOptions {
        statistics: true,
        bodies,
        ..StoreOptions::default()
    };
    let store = match &args.postgres {
        Some(url) => {
            let pg = understudy_storage::PgOptions {
                url: url.clone(),
                password: None,
                pool_size: (args.writers as usize).max(4),
                tls: understudy_storage::PgTls::Off,
            };
            Store::open_postgres(&pg, options, Arc::new(SystemClock))
        }
        None => Store::open_with(&args.dir, options, Arc::new(SystemClock)),
    }
    .map_err(|e| e.to_string())?;
    if store
        .domain("bench.example")
        .map_err(|e| e.to_string())?
        .is_none()
    {
        store
            .add_domain(&Domain::new("bench.example"))
            .map_err(|e| e.to_string())?;
    }
    let mut users = Vec::new();
    for i in 0..args.users {
        let address = format!("user{i}@bench.example");
        let user = match store.user_by_address(&address).map_err(|e| e.to_string())? {
            Some(u) => u,
            None => store.create_user(&address, "", None).map_err(|e| e.to_string())?,
        };
        users.push(user.id);
    }
    let users = Arc::new(users);
    let next = Arc::new(AtomicU64::new(0));
    let syncs_before = store.wal_syncs();
    let start = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..args.writers {
        let store = store.clone();
        let users = users.clone();
        let next = next.clone();
        let (count, size, ack) = (args.count, args.size, args.ack);
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= count {
                    return Ok(());
                }
                let body = message(n, size);
                let user = users[(n as usize) % users.len()];
                let req = DeliveryRequest {
                    body: &body,
                    users: vec![user],
                    queue: vec![NewQueueEntry {
                        kind: QueueKind::Relay,
                        domain: "bench.example".into(),
                        mail_from: "sender@example.net".into(),
                        recipients: vec![(
                            format!("user{}@bench.example", (n as usize) % users.len()),
                            Some(user),
                        )],
                        next_attempt: 0,
                        sent_copy: false,
                    }],
                    message_id: Some(format!("<{n}@bench>")),
                    summary: format!("bench message {n}"),
                };
                let outcome = store.deliver(&req).map_err(|e| e.to_string())?;
                if ack {
                    // Printed only after deliver() returned, i.e. after the synced write.
                    println!("acked {n} user {user} uid {}", outcome.stored[0].2);
                }
            }
        }));
    }
    for t in threads {
        t.join().map_err(|_| "writer thread panicked".to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let syncs = store.wal_syncs() - syncs_before;
    if !args.ack {
        store.flush().map_err(|e| e.to_string())?;
        let bytes = store.disk_usage().map_err(|e| e.to_string())?;
        println!(
            "backend={} bodies={} writers={} messages={} size={}B elapsed={:.2}s deliveries/s={:.0} wal_syncs={} deliveries/sync={:.2} disk_bytes={} bytes/message={:.0}",
            store.backend_name(),
            store.bodies_kind(),
            args.writers,
            args.count,
            args.size,
            elapsed,
            args.count as f64 / elapsed,
            syncs,
            args.count as f64 / syncs.max(1) as f64,
            bytes,
            bytes as f64 / args.count as f64
        );
    }
    Ok(())
}
