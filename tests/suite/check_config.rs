//! `check-config` and the CLI's errors (issue 18 items 5 and 12): every problem of a
//! configuration at once, including unknown keys and wrong types in several sections
//! and what `serve` would die of (a certificate that is not one, a key that does not
//! match it, two listeners on one port), relay hosts that do not resolve as warnings,
//! and errors that read as sentences.

use std::process::{Command, Stdio};

use crate::harness::*;

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = repo().join("certs-dev");
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            r#"hostname = "mx.example.com"
data_dir = "{data}"
listen_imap = 1
[tls]
certificate = "{garbage}"
private_key = "{certs}/server.key"
[listen]
imap = ["127.0.0.1:1143"]
pop3 = ["127.0.0.1:1143"]
[limits]
max_conections = 5
max_recipients = 0
[auth]
max_failures = "ten"
[delivery]
smarthost = "bad host:99999"
"#,
            data = dir.path().join("data").display(),
            garbage = dir.path().join("garbage.pem").display(),
            certs = certs.display(),
        ),
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    for key in [
        "listen_imap: unknown key",
        "limits.max_conections: unknown key",
        "limits.max_recipients: must be greater than 0",
        "auth.max_failures: invalid type",
        "tls.certificate:",
        "listen.pop3[0]: 127.0.0.1:1143 uses the port of listen.imap[0]",
        "delivery.smarthost: 'bad host:99999' is not host[:port]",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert!(text.contains("7 problem(s)"), "{text}");

    // A key that is not the certificate's.
    let other_key = dir.path().join("other.key");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
        ])
        .arg(&other_key)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.com\"\ndata_dir = \"{}\"\n[tls]\ncertificate = \"{}/server.crt\"\nprivate_key = \"{}\"\n",
            dir.path().join("data").display(),
            certs.display(),
            other_key.display()
        ),
    )
    .unwrap();
    let (ok, text) = check(&config);
    assert!(!ok);
    assert!(
        text.contains("tls.private_key:") && text.contains("does not belong to the certificate"),
        "{text}"
    );
}

#[test]
fn relay_hosts_that_do_not_resolve_are_warnings() {
    let server = TestServer::setup("\n[delivery]\nsmarthost = \"smarthost.invalid:587\"\n", |s| {
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            "primary.invalid:25",
        ]);
    });
    let (ok, text) = check(&server.config);
    assert!(ok, "{text}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(
        text.contains("warning: delivery.smarthost: smarthost.invalid:587 does not resolve"),
        "{text}"
    );
    assert!(
        text.contains("warning: domain example.com relay host: primary.invalid:25 does not resolve"),
        "{text}"
    );
}

#[test]
fn errors_read_as_sentences_and_say_what_to_do() {
    // A second server on the same data directory: refused once, naming the first's pid.
    let server = TestServer::start();
    let second = Command::new(BIN)
        .args(["--config", server.config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(second, std::time::Duration::from_secs(30));
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let refusal = format!("in use by another process (pid {})", server.pid());
    assert_eq!(text.matches(&refusal).count(), 1, "{text}");

    // No --config outside a checkout: say so and name UNDERSTUDY_CONFIG.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .current_dir(elsewhere.path())
        .env_remove("UNDERSTUDY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no configuration given") && err.contains("UNDERSTUDY_CONFIG"),
        "{err}"
    );

    // The dev configuration by its path, from the checkout and from elsewhere.
    for cwd in [repo(), elsewhere.path().to_path_buf()] {
        let out = Command::new(BIN)
            .args(["--config"])
            .arg(repo().join("config/dev.toml"))
            .arg("check-config")
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "from {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(BIN)
        .current_dir(repo())
        .args(["--config", "config/dev.toml", "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A missing file is said once, without Rust's "(os error 2)".
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/understudy.toml", "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the configuration /nonexistent/understudy.toml: no such file"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}
