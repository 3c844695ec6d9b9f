//! The console in headless Chromium (Debian's `chromium`, driven by npm `playwright-core`
//! from `tests/browser/`, installed by `npm ci` there): TOTP login, an outage started,
//! MX mail on the dashboard, hold and release, tracking with the primary's reply after
//! recovery, bulk purge and bounce after their confirmation, the failover drill (with
//! its IMAP login as a user), a
//! 500-row CSV with three bad rows, a domain administrator kept to their
//! domain, the iPhone profile downloaded and the QR code scanned (`zbarimg`), and a
//! self-service password change that IMAP accepts. Screenshots of the
//! dashboard, queue and readiness pages go to `<target>/tmp/browser/`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::sink::DumpSink;

/// Runs `node tests/browser/SCRIPT` with one JSON argument; panics with its output if
/// it fails. A checkout without `npm ci` run in tests/browser fails here, saying so.
pub fn run_browser_script(script: &str, config: &serde_json::Value) -> String {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} first (.ci/run does)",
        dir.display()
    );
    let child = Command::new("node")
        .arg(dir.join(script))
        .arg(config.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let out = wait_output(child, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "browser script {script} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_console_in_chromium_from_totp_login_to_self_service() {
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = DumpSink::start(sink_dir.path());
    let relay = sink.addr();
    // The alert recipients' server, for the failover drill's four notices.
    let alerts_dir = tempfile::tempdir().unwrap();
    let alerts = DumpSink::start(alerts_dir.path());
    let config = format!(
        "{}[autoconfig]\nlisten = \"127.0.0.1:0\"\n[delivery.routes]\n\"alerts.example\" = \"{}\"\n",
        crate::console::WEB_CONFIG,
        alerts.addr()
    );
    let mut secret = String::new();
    let server = TestServer::setup(&config, |s| {
        crate::console::add_relayed_domains(s, &relay, &["--alert", "ops@alerts.example"]);
        s.add_user("anna@example.com", PASSWORD);
        // The failover drill's user (it logs in over IMAP as them).
        s.add_user("dora@example.com", PASSWORD);
        let text = crate::console::add_admin(s, "root", &["--totp"]);
        secret = text
            .split("secret=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .expect("the otpauth URI is printed once")
            .to_string();
        crate::console::add_admin(s, "msp", &["--role", "domain", "--domain", "example.com"]);
    });
    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let config = serde_json::json!({
        "base": format!("https://localhost:{}", server.addr("web").port()),
        "password": PASSWORD,
        "totp": secret,
        "smtp": server.addr("smtp").port(),
        "imaps": server.addr("imaps").port(),
        "submissions": server.addr("submissions").port(),
        "autoconfig": server.addr("autoconfig").port(),
        "ca": ca_cert().display().to_string(),
        "screenshots": screenshots.display().to_string(),
    });
    let out = run_browser_script("console.js", &config);
    print!("{out}");
    assert!(out.contains("browser tests passed"), "{out}");
    for name in ["dashboard", "queue", "readiness"] {
        let file = screenshots.join(format!("{name}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing or empty", file.display());
    }
    // The alert recipients' server got the notices of both outages, the drill's
    // included: its start and its all-released.
    let notices = alerts.messages();
    for subject in ["outage started by an admin", "all spooled mail released"] {
        let n = notices.iter().filter(|(_, m)| m.contains(subject)).count();
        assert!(n >= 2, "{n} notices '{subject}' at the alert recipients");
    }
    // The primary got the message spooled during the outage.
    assert!(
        sink.messages()
            .iter()
            .any(|(_, m)| m.contains("Subject: during the outage")),
        "the primary did not get the spooled message"
    );
}
