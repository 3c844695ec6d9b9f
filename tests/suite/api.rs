//! The console's JSON API: token auth scoped like the roles, read-only tokens, JSON
//! errors, and `schemathesis` (PyPI) run against the OpenAPI document the server
//! generates: no 5xx and no response that breaks the schema.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::console::{console_server, API_PY, CLIENT_PY};
use crate::harness::*;

/// Makes a token for `admin` and returns its secret (printed once).
pub fn token(server: &TestServer, admin: &str, read_only: bool) -> String {
    let mut args = vec!["admin", "token", "add", admin, "--label", "test"];
    if read_only {
        args.push("--read-only");
    }
    let out = server.admin_ok(&args);
    out.split_whitespace()
        .find(|w| w.starts_with("us_"))
        .unwrap_or_else(|| panic!("no token in {out}"))
        .to_string()
}

#[test]
fn tokens_are_scoped_and_errors_are_json() {
    let server = console_server("");
    let (root, msp, reader) = (
        token(&server, "root", false),
        token(&server, "msp", false),
        token(&server, "root", true),
    );
    let script = format!(
        "{CLIENT_PY}{API_PY}{}",
        r#"
root, msp, reader = sys.argv[3:6]
print("no token", api("GET", "/api/v1/domains")[0])
print("bad token", api("GET", "/api/v1/domains", "us_nope")[0])
s, d = api("GET", "/api/v1/domains", root)
print("root sees", sorted(x["domain"] for x in d))
s, d = api("GET", "/api/v1/domains", msp)
print("msp sees", sorted(x["domain"] for x in d))
print("msp other", api("POST", "/api/v1/domains/other.org/outage", msp, {"action": "start"})[0])
print("reader writes", api("POST", "/api/v1/domains/example.com/outage", reader, {"action": "start"})[0])
s, d = api("POST", "/api/v1/domains/example.com/outage", msp, {"action": "start", "reason": "api"})
print("msp starts", s, d["phase"])
s, d = api("POST", "/api/v1/domains/example.com/outage", root, {"action": "sideways"})
print("bad body", s, "error" in d)
s, d = api("POST", "/api/v1/users", root, {"address": "new@other.org", "password": "Correct1horse"})
print("user add", s, d)
print("msp user add elsewhere", api("POST", "/api/v1/users", msp, {"address": "x@other.org"})[0])
s, d = api("GET", "/api/v1/openapi.json")
print("openapi", s, sorted(d["paths"])[:2])
"#
    );
    let out = python_ok(
        &script,
        &[
            ca_cert().display().to_string(),
            server.addr("web").port().to_string(),
            root,
            msp,
            reader,
        ],
    );
    for expected in [
        "no token 401",
        "bad token 401",
        "root sees ['example.com', 'other.org']",
        "msp sees ['example.com']",
        "msp other 404",
        "reader writes 403",
        "msp starts 200 outage",
        "bad body 400 True",
        "user add 201 {'address': 'new@other.org'}",
        "msp user add elsewhere 404",
        "openapi 200 ['/api/v1/domains', '/api/v1/domains/{domain}/outage']",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
    let audit = server.admin_ok(&["outage", "status"]);
    assert!(audit.contains("manual: api"), "{audit}");
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let mut server = console_server("");
    let root = token(&server, "root", false);
    let base = format!("https://localhost:{}", server.addr("web").port());
    let cassette = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis.yaml");
    let child = Command::new("schemathesis")
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {root}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        ])
        .args(["--tls-verify", &ca_cert().display().to_string()])
        .args(["--max-examples", "40", "--seed", "16"])
        // Every request and response, for a failure's post-mortem; no example database
        // left in the checkout.
        .args(["--report", "vcr", "--report-vcr-path"])
        .arg(&cassette)
        .args(["--generation-database", "none"])
        // Its made-up Authorization values may hold control characters, which no HTTP
        // parser takes: the connection closes with the body unread, the client sees a
        // reset, not our 400. Token handling has its own test above.
        .args(["--generation-with-security-parameters", "false"])
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("schemathesis (pip install schemathesis; .ci/run does)");
    let out = wait_output(child, Duration::from_secs(600));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    if !out.status.success() {
        let log: Vec<String> = server
            .log()
            .lines()
            .filter(|l| !l.contains("admin command"))
            .map(str::to_string)
            .collect();
        panic!(
            "schemathesis found problems:\n{text}\nserver log (http):\n{}",
            log.join("\n")
        );
    }
}
