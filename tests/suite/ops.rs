//! Operations: Prometheus metrics and the health endpoint on the local metrics port.

use crate::harness::*;
use crate::pop3::deliver_samples;

#[test]
fn metrics_count_connections_logins_and_messages_and_health_is_200() {
    let server = TestServer::setup("[metrics]\nlisten = \"127.0.0.1:0\"\n", |s| {
        // Nothing listens at the relay host; monitoring off so that the failed deliveries
        // (which count as failed probes) do not engage an outage the figures assume away.
        s.admin_ok(&[
            "domain",
            "add",
            "example.com",
            "--relay-host",
            "127.0.0.1:9",
            "--monitoring",
            "false",
        ]);
        s.add_user("anna@example.com", PASSWORD);
    });
    deliver_samples(&server, 2);
    let script = r#"
import imaplib, ssl, sys, urllib.request
ca, imaps, metrics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
m.login("anna@example.com", "Correct1horse"); m.logout()
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
try:
    m.login("anna@example.com", "Wrong1horse")
except imaplib.IMAP4.error:
    pass
health = urllib.request.urlopen("http://127.0.0.1:%d/health" % metrics, timeout=10)
print("health", health.status, health.read().decode().strip())
text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=10).read().decode()
print(text)
# A real Prometheus parser must accept the whole exposition.
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(text)}
print("parsed families", len(families), "queue samples", len(families["understudy_queue_depth"].samples))
try:
    urllib.request.urlopen("http://127.0.0.1:%d/nothing" % metrics, timeout=10)
except urllib.error.HTTPError as e:
    print("unknown path", e.code)
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("imaps").port().to_string(),
            server.addr("metrics").port().to_string(),
        ],
    );
    for expected in [
        "health 200 ok",
        "understudy_connections_total{service=\"imaps\"} 2",
        "understudy_connections_total{service=\"smtp\"} 1",
        "understudy_logins_total{result=\"ok\"} 1",
        "understudy_logins_total{result=\"failed\"} 1",
        "understudy_messages_received_total 2",
        "understudy_messages_stored_total 2",
        "understudy_queue_depth{domain=\"example.com\"} 2",
        "understudy_outage{domain=\"example.com\"} 0",
        "unknown path 404",
        "queue samples 1",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

/// The DER certificate the server presents on its implicit-TLS IMAP port and on the web
/// console's HTTPS port both contain `needle`.
fn presents_certificate(server: &TestServer, needle: &str) -> bool {
    ["imaps", "web"]
        .iter()
        .all(|service| presents_certificate_on(server, service, needle))
}

/// The DER certificate the server presents on `service`'s TLS port contains `needle`.
fn presents_certificate_on(server: &TestServer, service: &str, needle: &str) -> bool {
    let script = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
    with ctx.wrap_socket(raw) as tls:
        print(sys.argv[2].encode() in tls.getpeercert(binary_form=True))
"#;
    python_ok(
        script,
        &[server.addr(service).port().to_string(), needle.to_string()],
    )
    .trim()
        == "True"
}

/// Mail ports and the web console (issue 16: "TLS with the server's certificate,
/// reloaded on SIGHUP") both take the new certificate.
#[test]
fn sighup_reloads_the_certificate_and_refuses_a_bad_config() {
    let mut server = TestServer::setup(crate::console::WEB_CONFIG, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    assert!(presents_certificate(&server, "localhost"));
    let dir = server.dir.path().to_path_buf();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=reloaded.test"])
        .arg("-keyout")
        .arg(dir.join("new.key"))
        .arg("-out")
        .arg(dir.join("new.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // An IMAP session opened before the reload must go on working after it.
    let mut session = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ssl.create_default_context(cafile=sys.argv[1]), timeout=60)
m.login("anna@example.com", "Correct1horse")
print("logged in", flush=True)
sys.stdin.readline()
print("noop", m.noop()[0], flush=True)
"#,
        )
        .arg(ca_cert())
        .arg(server.addr("imaps").port().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut session_out = std::io::BufReader::new(session.stdout.take().unwrap());
    let mut session_in = session.stdin.take().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut session_out, &mut first).unwrap();
    assert_eq!(first.trim(), "logged in");
    let original = std::fs::read_to_string(&server.config).unwrap();
    let certs = repo().join("certs-dev");
    let updated = original
        .replace(
            &format!("{}/server.crt", certs.display()),
            &dir.join("new.crt").display().to_string(),
        )
        .replace(
            &format!("{}/server.key", certs.display()),
            &dir.join("new.key").display().to_string(),
        );
    assert_ne!(original, updated);
    std::fs::write(&server.config, &updated).unwrap();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
    };
    hup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !presents_certificate(&server, "reloaded.test") {
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate not served after SIGHUP"
        );
    }
    // A broken configuration is refused and the server keeps serving as before.
    std::fs::write(
        &server.config,
        updated
            .replace("[limits]", "")
            .replace("hostname = ", "hostname_typo = "),
    )
    .unwrap();
    hup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.log().contains("configuration refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(presents_certificate(&server, "reloaded.test"));
    // The session opened before both reloads is still there.
    std::io::Write::write_all(&mut session_in, b"go\n").unwrap();
    let mut noop = String::new();
    std::io::BufRead::read_line(&mut session_out, &mut noop).unwrap();
    assert_eq!(noop.trim(), "noop OK");
    drop(session_in);
    session.wait().unwrap();
    std::fs::write(&server.config, &original).unwrap();
    assert!(server.stop().is_some_and(|s| s.success()));
}

#[test]
fn autoconfig_serves_thunderbird_outlook_and_apple_settings_over_https() {
    let server = TestServer::setup("[autoconfig]\nlisten = \"127.0.0.1:0\"\n", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let script = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
base = "https://localhost:%s" % sys.argv[2]
def get(path, data=None):
    try:
        r = urllib.request.urlopen(urllib.request.Request(base + path, data=data), context=ctx, timeout=10)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
print("tb", *get("/mail/config-v1.1.xml?emailaddress=anna%40example.com"))
print("ol", *get("/autodiscover/autodiscover.xml", b"<Autodiscover><Request><EMailAddress>anna@example.com</EMailAddress></Request></Autodiscover>"))
print("apple", *get("/apple.mobileconfig?email=anna@example.com"))
print("foreign", get("/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.org")[0])
import plistlib, xml.etree.ElementTree as ET
tb = ET.fromstring(get("/mail/config-v1.1.xml?emailaddress=anna%40example.com")[1])
provider = tb.find("emailProvider")
for server in provider.findall("incomingServer") + provider.findall("outgoingServer"):
    fields = {c.tag: c.text for c in server}
    assert set(fields) == {"hostname", "port", "socketType", "authentication", "username"}, fields
    assert fields["socketType"] == "SSL" and fields["username"] == "%EMAILADDRESS%", fields
print("tb servers", [s.get("type") for s in provider if s.tag.endswith("Server")])
ns = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
ol = ET.fromstring(get("/autodiscover/autodiscover.xml", b"<Autodiscover><Request><EMailAddress>anna@example.com</EMailAddress></Request></Autodiscover>")[1])
print("ol protocols", [p.find(ns + "Type").text for p in ol.iter(ns + "Protocol")])
profile = plistlib.loads(get("/apple.mobileconfig?email=anna@example.com")[1].encode())
account = profile["PayloadContent"][0]
print("plist", profile["PayloadType"], account["PayloadType"], account["IncomingMailServerUseSSL"], account["EmailAddress"])
"#;
    let out = python_ok(
        script,
        &[
            ca_cert().display().to_string(),
            server.addr("autoconfig").port().to_string(),
        ],
    );
    let imaps = server.addr("imaps").port();
    assert!(
        out.contains("tb 200") && out.contains(&format!("<port>{imaps}</port>")),
        "{out}"
    );
    assert!(
        out.contains("ol 200") && out.contains("<LoginName>anna@example.com</LoginName>"),
        "{out}"
    );
    assert!(
        out.contains("apple 200") && out.contains("com.apple.mail.managed"),
        "{out}"
    );
    assert!(out.contains("foreign 404"), "{out}");
    assert!(out.contains("tb servers ['imap', 'pop3', 'smtp']"), "{out}");
    assert!(out.contains("ol protocols ['IMAP', 'POP3', 'SMTP']"), "{out}");
    assert!(
        out.contains("plist Configuration com.apple.mail.managed True anna@example.com"),
        "{out}"
    );
    let text = server.admin_ok(&["client-setup", "anna@example.com"]);
    // The CLI reports the configured ports (0 here: "any").
    assert!(
        text.contains("Incoming (IMAP): localhost  port") && text.contains("authentication required"),
        "{text}"
    );
}

#[test]
fn systemd_accepts_the_unit_and_the_server_signals_ready_and_watchdog() {
    // systemd-analyze checks the unit's syntax and that ExecStart is executable.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("config/understudy.service"))
        .unwrap()
        .replace("/usr/bin/understudy", BIN);
    let unit_path = dir.path().join("understudy.service");
    std::fs::write(&unit_path, unit).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The test plays systemd: a datagram socket in NOTIFY_SOCKET.
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let notify = socket_path.display().to_string();
    let server = TestServer::setup_with_env(
        "",
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
        |s| {
            s.admin_ok(&["domain", "add", "example.com"]);
        },
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = socket
            .recv(&mut buf)
            .expect("no READY=1 and WATCHDOG=1 within 30 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // READY comes after every listener is bound: the harness saw them all already.
    assert_eq!(server.addrs.len(), 7, "{:?}", server.addrs);
}

#[test]
fn dkim_keygen_sets_the_domain_key_and_prints_the_dns_records() {
    let mut server = TestServer::start();
    server.stop();
    let out = server.admin_ok(&["domain", "dkim-keygen", "example.com", "--selector", "s2026"]);
    assert!(
        out.contains("s2026._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p=MII"),
        "{out}"
    );
    assert!(out.contains("v=spf1"), "{out}");
    let shown = server.admin_ok(&["domain", "show", "example.com"]);
    assert!(shown.contains("selector s2026"), "{shown}");
    let key = server.dir.path().join("data/dkim/example.com.s2026.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second key with the same selector would silently replace the published one.
    assert!(!server
        .admin(
            &["domain", "dkim-keygen", "example.com", "--selector", "s2026"],
            None
        )
        .status
        .success());
}
