//! Many IMAP sessions on one mailbox at once (issue 14): 20 sessions doing random APPEND,
//! FETCH, STORE with keywords, EXPUNGE, COPY and MOVE, bodies repeated on purpose, each
//! keeping its own model of the mailbox from untagged responses only and checked at
//! checkpoints against the others and a fresh SELECT (`imap_stress.py`); every other
//! session has QRESYNC on and is told of expunges by VANISHED. No body may go missing and
//! no view may diverge: 0 errors. `benches/imap-stress.sh` runs it bigger.

use crate::harness::*;

pub const STRESS_PY: &str = include_str!("imap_stress.py");

#[test]
fn twenty_sessions_on_one_mailbox_keep_true_views_and_every_body() {
    let mut server = TestServer::setup("[auth]\nplaintext_networks = [\"127.0.0.0/8\"]\n", |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });
    let args: Vec<String> = [
        "127.0.0.1".to_string(),
        server.addr("imap").port().to_string(),
        "anna@example.com".to_string(),
        PASSWORD.to_string(),
        "20".to_string(),
        "60".to_string(),
        "3".to_string(),
        "14".to_string(),
    ]
    .to_vec();
    let out = python(STRESS_PY, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = server.log();
    assert!(
        out.status.success(),
        "stress client failed:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("errors 0"), "{stdout}");
    // Half the sessions run QRESYNC: they must have been told of expunges as VANISHED.
    let vanished: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("vanished "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        vanished > 0,
        "no VANISHED reached the QRESYNC sessions:\n{stdout}"
    );
    assert!(
        !log.contains("missing"),
        "the server logged a missing body:\n{}",
        log.lines()
            .filter(|l| l.contains("missing"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{stdout}");
}
