//! Session tests against in-memory auth and store mocks (no real peer exists below the
//! network driver; the driver's integration tests use Python's poplib).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use super::*;
use crate::auth::AccessLevel;

const USER: &str = "tim@example.com";
const PASSWORD: &str = "tanstaaf";

/// Accepts USER/PASSWORD; any other pair is `Invalid`, unless `forced` says otherwise.
#[derive(Default)]
struct MockAuth {
    calls: Mutex<Vec<String>>,
    forced: Mutex<Option<AuthError>>,
    read_only: std::sync::atomic::AtomicBool,
}

impl MockAuth {
    fn force(&self, error: AuthError) {
        *self.forced.lock().unwrap() = Some(error);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl AuthBackend for MockAuth {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        assert_eq!(credentials.protocol, "pop3");
        self.calls.lock().unwrap().push(credentials.username.clone());
        if let Some(error) = self.forced.lock().unwrap().clone() {
            return Err(error);
        }
        if credentials.username == USER && credentials.password.expose() == PASSWORD {
            Ok(Account {
                id: 7,
                address: USER.to_string(),
                access: if self.read_only.load(std::sync::atomic::Ordering::Relaxed) {
                    AccessLevel::ReadOnly
                } else {
                    AccessLevel::Full
                },
            })
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// A maildrop of (key, text) with a call log: "open", "retrieve K", "delete [..]",
/// "release".
#[derive(Default)]
struct MockStore {
    messages: Vec<(u64, Vec<u8>)>,
    in_use: bool,
    fail_delete: bool,
    fail_retrieve: bool,
    gone: Vec<u64>,
    log: Mutex<Vec<String>>,
}

impl MockStore {
    fn with(messages: &[(u64, &[u8])]) -> Self {
        MockStore {
            messages: messages.iter().map(|(k, m)| (*k, m.to_vec())).collect(),
            ..MockStore::default()
        }
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn record(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

impl Pop3Backend for MockStore {
    fn open_maildrop(&self, account: &Account) -> Result<Vec<MaildropEntry>, Pop3BackendError> {
        assert_eq!(account.address, USER);
        self.record("open".into());
        if self.in_use {
            return Err(Pop3BackendError::InUse);
        }
        Ok(self
            .messages
            .iter()
            .map(|(key, m)| MaildropEntry {
                key: *key,
                size: m.len() as u64,
                uidl: format!("u{key}"),
            })
            .collect())
    }

    fn retrieve(&self, _account: &Account, key: u64) -> Result<Vec<u8>, Pop3BackendError> {
        self.record(format!("retrieve {key}"));
        if self.gone.contains(&key) {
            return Err(Pop3BackendError::Gone);
        }
        if self.fail_retrieve {
            return Err(Pop3BackendError::Temporary("checksum mismatch".into()));
        }
        self.messages
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, m)| m.clone())
            .ok_or(Pop3BackendError::Temporary("no such key".into()))
    }

    fn delete(&self, _account: &Account, keys: &[u64]) -> Result<(), Pop3BackendError> {
        self.record(format!("delete {keys:?}"));
        if self.fail_delete {
            return Err(Pop3BackendError::Temporary("disk on fire".into()));
        }
        Ok(())
    }

    fn release(&self, _account: &Account) {
        self.record("release".into());
    }
}

const DOTS: &[u8] =
    b"From: a@example.com\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\nmid.dle\r\n.\r\nend\r\n";
const EIGHT_BIT: &[u8] = b"Subject: caf\xc3\xa9\r\n\r\nna\xefve \xe9t\xe9\r\n\xff\xfe\r\n";

fn info(tls: bool) -> ConnectionInfo {
    ConnectionInfo {
        peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        tls,
        tls_available: true,
        allow_plaintext_auth: false,
        webmail_host: false,
        hostname: "mx.example.com".into(),
    }
}

fn session_with(info: ConnectionInfo, store: &Arc<MockStore>) -> (Pop3Session, Arc<MockAuth>) {
    let auth = Arc::new(MockAuth::default());
    let session = Pop3Session::new(info, auth.clone(), store.clone(), Pop3Limits::default());
    (session, auth)
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.bytes).into_owned()
}

fn send(session: &mut Pop3Session, input: &str) -> String {
    text(&session.receive(input.as_bytes()))
}

/// A TLS session logged in with USER/PASS.
fn logged_in(store: &Arc<MockStore>) -> Pop3Session {
    let (mut s, _) = session_with(info(true), store);
    assert_eq!(
        send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\n")),
        "+OK send PASS\r\n+OK maildrop locked and ready\r\n"
    );
    s
}

fn two_messages() -> Arc<MockStore> {
    Arc::new(MockStore::with(&[(10, DOTS), (11, EIGHT_BIT)]))
}

/// Undoes RETR framing: strips the status line and terminator and the dot-stuffing.
fn unstuff(response: &[u8]) -> Vec<u8> {
    let first_end = response.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let body = response[first_end..].strip_suffix(b".\r\n").unwrap();
    let mut out = Vec::new();
    let mut line_start = true;
    for &b in body {
        // With the terminator gone, every line-leading dot is a stuffed one.
        if !(line_start && b == b'.') {
            out.push(b);
        }
        line_start = b == b'\n';
    }
    out
}

#[test]
fn greeting_names_the_host() {
    let store = two_messages();
    let (mut s, _) = session_with(info(false), &store);
    let greeting = s.greeting();
    assert_eq!(
        greeting,
        Output::reply("+OK mx.example.com Understudy POP3 ready\r\n")
    );
}

#[test]
fn capa_hides_logins_before_tls_and_stls_after() {
    let store = two_messages();
    let (mut s, _) = session_with(info(false), &store);
    assert_eq!(
        send(&mut s, "CAPA\r\n"),
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nSTLS\r\nIMPLEMENTATION Understudy\r\n.\r\n"
    );
    let out = s.receive(b"STLS\r\n");
    assert_eq!(
        out,
        Output::new(b"+OK begin TLS negotiation\r\n".to_vec(), Action::StartTls)
    );
    s.tls_started();
    assert_eq!(
        send(&mut s, "CAPA\r\n"),
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION Understudy\r\n.\r\n"
    );
    assert_eq!(send(&mut s, "STLS\r\n"), "-ERR TLS already active\r\n");
    send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\n"));
    assert_eq!(
        send(&mut s, "CAPA\r\n"),
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nIMPLEMENTATION Understudy\r\n.\r\n"
    );
}

#[test]
fn plaintext_logins_refused_before_tls() {
    let store = two_messages();
    let (mut s, auth) = session_with(info(false), &store);
    let refused = "-ERR [AUTH] plaintext authentication disallowed on non-secure connections; \
                   use STLS\r\n";
    assert_eq!(send(&mut s, &format!("USER {USER}\r\n")), refused);
    assert_eq!(send(&mut s, &format!("PASS {PASSWORD}\r\n")), refused);
    assert_eq!(
        send(&mut s, "AUTH PLAIN AHRpbUBleGFtcGxlLmNvbQB0YW5zdGFhZg==\r\n"),
        refused
    );
    assert_eq!(send(&mut s, "AUTH\r\n"), refused);
    assert_eq!(
        send(&mut s, "STAT\r\n"),
        "-ERR command not valid in this state\r\n"
    );
    assert!(auth.calls().is_empty());
    assert!(store.log().is_empty());

    // Trusted network: allowed in plaintext.
    let mut trusted = info(false);
    trusted.allow_plaintext_auth = true;
    let (mut s, _) = session_with(trusted, &store);
    assert!(send(&mut s, "CAPA\r\n").contains("USER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n"));
    assert_eq!(
        send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\n")),
        "+OK send PASS\r\n+OK maildrop locked and ready\r\n"
    );
}

#[test]
fn stls_unavailable_or_after_login() {
    let store = two_messages();
    let mut no_cert = info(false);
    no_cert.tls_available = false;
    let (mut s, _) = session_with(no_cert, &store);
    assert!(!send(&mut s, "CAPA\r\n").contains("STLS"));
    assert_eq!(
        s.receive(b"STLS\r\n"),
        Output::reply("-ERR TLS not available\r\n")
    );
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "STLS\r\n"),
        "-ERR command not valid in this state\r\n"
    );
}

#[test]
fn stls_discards_the_rest_of_the_chunk() {
    let store = two_messages();
    let (mut s, auth) = session_with(info(false), &store);
    let out = s.receive(format!("STLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes());
    assert_eq!(
        out,
        Output::new(b"+OK begin TLS negotiation\r\n".to_vec(), Action::StartTls)
    );
    // Plaintext arriving before the handshake finished is dropped too.
    assert_eq!(s.receive(b"CAPA\r\n"), Output::reply(Vec::new()));
    s.tls_started();
    assert!(!s.has_pending_commands());
    // Nothing of the injected USER survived: PASS alone has no user.
    assert_eq!(
        send(&mut s, &format!("PASS {PASSWORD}\r\n")),
        "-ERR send USER first\r\n"
    );
    assert!(auth.calls().is_empty());
}

#[test]
fn user_pass_login_and_stat() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let total = DOTS.len() + EIGHT_BIT.len();
    assert_eq!(send(&mut s, "STAT\r\n"), format!("+OK 2 {total}\r\n"));
    assert_eq!(
        send(&mut s, "USER x\r\n"),
        "-ERR command not valid in this state\r\n"
    );
    assert_eq!(store.log(), ["open"]);
}

#[test]
fn pass_keeps_spaces_in_password() {
    let store = two_messages();
    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(send(&mut s, "PASS x\r\n"), "-ERR send USER first\r\n");
    send(&mut s, &format!("USER {USER}\r\n"));
    assert_eq!(send(&mut s, &format!("PASS {PASSWORD} \r\n")), AUTH_FAILED);
    // The failure consumed the USER.
    assert_eq!(
        send(&mut s, &format!("PASS {PASSWORD}\r\n")),
        "-ERR send USER first\r\n"
    );
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let store = two_messages();
    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(send(&mut s, "AUTH\r\n"), "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
    assert_eq!(
        send(&mut s, "AUTH PLAIN AHRpbUBleGFtcGxlLmNvbQB0YW5zdGFhZg==\r\n"),
        "+OK maildrop locked and ready\r\n"
    );

    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(send(&mut s, "auth plain\r\n"), "+ \r\n");
    assert_eq!(
        send(&mut s, "AHRpbUBleGFtcGxlLmNvbQB0YW5zdGFhZg==\r\n"),
        "+OK maildrop locked and ready\r\n"
    );
    assert_eq!(send(&mut s, "STAT\r\n").get(..6), Some("+OK 2 "));
}

#[test]
fn auth_login_with_and_without_initial_response() {
    let store = two_messages();
    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(send(&mut s, "AUTH LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
    assert_eq!(send(&mut s, "dGltQGV4YW1wbGUuY29t\r\n"), "+ UGFzc3dvcmQ6\r\n");
    assert_eq!(
        send(&mut s, "dGFuc3RhYWY=\r\n"),
        "+OK maildrop locked and ready\r\n"
    );

    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(
        send(&mut s, "AUTH LOGIN dGltQGV4YW1wbGUuY29t\r\n"),
        "+ UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        send(&mut s, "dGFuc3RhYWY=\r\n"),
        "+OK maildrop locked and ready\r\n"
    );
}

#[test]
fn sasl_cancel_garbage_and_unknown_mechanism() {
    let store = two_messages();
    let (mut s, auth) = session_with(info(true), &store);
    assert_eq!(
        send(&mut s, "AUTH CRAM-MD5\r\n"),
        "-ERR unsupported authentication mechanism\r\n"
    );
    assert_eq!(send(&mut s, "AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(send(&mut s, "*\r\n"), "-ERR authentication cancelled\r\n");
    assert_eq!(send(&mut s, "AUTH LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
    assert_eq!(send(&mut s, "!!notbase64\r\n"), AUTH_FAILED);
    assert_eq!(send(&mut s, "NOOP\r\n"), "+OK\r\n");
    assert!(auth.calls().is_empty());
}

#[test]
fn auth_failures_look_alike_and_close_at_limit() {
    let store = two_messages();
    let (mut s, auth) = session_with(info(true), &store);
    let unknown_user = send(&mut s, &format!("USER nobody@example.com\r\nPASS {PASSWORD}\r\n"));
    let bad_password = send(&mut s, &format!("USER {USER}\r\nPASS wrong\r\n"));
    assert_eq!(unknown_user, format!("+OK send PASS\r\n{AUTH_FAILED}"));
    assert_eq!(unknown_user, bad_password);
    let out = s.receive(b"AUTH PLAIN AHRpbUBleGFtcGxlLmNvbQB3cm9uZw==\r\nNOOP\r\n");
    assert_eq!(out, Output::close(AUTH_FAILED));
    assert_eq!(auth.calls().len(), 3);
    assert!(store.log().is_empty());
}

#[test]
fn auth_backend_errors_map_to_response_codes() {
    let store = two_messages();
    let cases = [
        (AuthError::AccessDenied, "-ERR [AUTH] access denied\r\n"),
        (
            AuthError::PasswordChangeRequired,
            "-ERR [AUTH] your password must be changed; ask your administrator for a new one\r\n",
        ),
        (
            AuthError::RateLimited,
            "-ERR [SYS/TEMP] too many failed logins, try again later\r\n",
        ),
        (
            AuthError::Temporary("db down".into()),
            "-ERR [SYS/TEMP] authentication unavailable, try again later\r\n",
        ),
    ];
    for (error, reply) in cases {
        let (mut s, auth) = session_with(info(true), &store);
        auth.force(error);
        assert_eq!(
            send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\n")),
            format!("+OK send PASS\r\n{reply}")
        );
        assert_eq!(
            send(&mut s, "STAT\r\n"),
            "-ERR command not valid in this state\r\n"
        );
    }
}

#[test]
fn in_use_maildrop() {
    let store = Arc::new(MockStore {
        in_use: true,
        ..MockStore::with(&[(1, DOTS)])
    });
    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(
        send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\n")),
        "+OK send PASS\r\n-ERR [IN-USE] maildrop is locked by another POP3 session\r\n\
         -ERR command not valid in this state\r\n"
    );
    drop(s);
    // The lock was never taken, so it is not released.
    assert_eq!(store.log(), ["open"]);
}

#[test]
fn pipelined_commands_in_one_chunk() {
    let store = two_messages();
    let (mut s, _) = session_with(info(true), &store);
    let out = s.receive(
        format!(
            "CAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL\r\nLIST 2\r\nDELE 1\r\nQUIT\r\nNOOP\r\n"
        )
        .as_bytes(),
    );
    let total = DOTS.len() + EIGHT_BIT.len();
    let expected = format!(
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION Understudy\r\n.\r\n\
         +OK send PASS\r\n+OK maildrop locked and ready\r\n+OK 2 {total}\r\n\
         +OK\r\n1 u10\r\n2 u11\r\n.\r\n+OK 2 {}\r\n+OK message 1 deleted\r\n\
         +OK Understudy POP3 server signing off (1 messages deleted)\r\n",
        EIGHT_BIT.len()
    );
    assert_eq!(out, Output::close(expected));
    assert_eq!(store.log(), ["open", "delete [10]", "release"]);
    assert_eq!(s.receive(b"NOOP\r\n"), Output::close(Vec::new()));
}

#[test]
fn command_split_over_chunks() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let mut out = Vec::new();
    for b in b"LI" {
        out.extend(s.receive(&[*b]).bytes);
    }
    assert!(out.is_empty());
    out.extend(s.receive(b"ST 1\r").bytes);
    assert!(out.is_empty());
    out.extend(s.receive(b"\nNO").bytes);
    assert_eq!(out, format!("+OK 1 {}\r\n", DOTS.len()).into_bytes());
    assert_eq!(send(&mut s, "OP\r\n"), "+OK\r\n");
    // Bare LF ends a line too.
    assert_eq!(send(&mut s, "NOOP\n"), "+OK\r\n");
}

#[test]
fn listings_agree_with_retr_octets() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let list = send(&mut s, "LIST\r\n");
    let stat = send(&mut s, "STAT\r\n");
    let total = DOTS.len() + EIGHT_BIT.len();
    assert!(list.starts_with(&format!(
        "+OK 2 messages ({total} octets)\r\n1 {}\r\n",
        DOTS.len()
    )));
    let mut sizes = Vec::new();
    for line in list.lines().skip(1).take_while(|l| *l != ".") {
        let (n, size) = line.split_once(' ').unwrap();
        sizes.push((n.parse::<u64>().unwrap(), size.parse::<usize>().unwrap()));
    }
    assert_eq!(sizes.len(), 2);
    let total: usize = sizes.iter().map(|(_, size)| size).sum();
    assert_eq!(stat, format!("+OK 2 {total}\r\n"));
    for ((n, size), original) in sizes.into_iter().zip([DOTS, EIGHT_BIT]) {
        let response = s.receive(format!("RETR {n}\r\n").as_bytes()).bytes;
        assert!(response.starts_with(format!("+OK {size} octets\r\n").as_bytes()));
        let body = unstuff(&response);
        assert_eq!(body.len(), size);
        assert_eq!(body, original);
    }
}

#[test]
fn retr_is_byte_exact() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let out = s.receive(b"RETR 1\r\n").bytes;
    let expected = format!(
        "+OK {} octets\r\nFrom: a@example.com\r\nSubject: dots\r\n\r\n..leading dot\r\n...two\r\n\
         mid.dle\r\n..\r\nend\r\n.\r\n",
        DOTS.len()
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    let out = s.receive(b"RETR 2\r\n").bytes;
    let mut expected = format!("+OK {} octets\r\n", EIGHT_BIT.len()).into_bytes();
    expected.extend_from_slice(EIGHT_BIT);
    expected.extend_from_slice(b".\r\n");
    assert_eq!(out, expected);
    assert_eq!(send(&mut s, "RETR 3\r\n"), NO_SUCH_MESSAGE);
    assert_eq!(send(&mut s, "RETR 0\r\n"), NO_SUCH_MESSAGE);
    assert_eq!(send(&mut s, "RETR 99999999999999999999999\r\n"), NO_SUCH_MESSAGE);
}

#[test]
fn retr_replaces_nul_and_ends_last_line() {
    let store = Arc::new(MockStore::with(&[(1, b"A: b\r\n\r\nx\0y\r\nno end")]));
    let mut s = logged_in(&store);
    assert_eq!(
        s.receive(b"RETR 1\r\n").bytes,
        b"+OK 19 octets\r\nA: b\r\n\r\nx\x80y\r\nno end\r\n.\r\n".to_vec()
    );
}

#[test]
fn retr_of_message_gone_or_failing() {
    let store = Arc::new(MockStore {
        gone: vec![10],
        ..MockStore::with(&[(10, DOTS)])
    });
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "RETR 1\r\n"),
        "-ERR message was removed by another session\r\n"
    );
    let store = Arc::new(MockStore {
        fail_retrieve: true,
        ..MockStore::with(&[(10, DOTS)])
    });
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "TOP 1 0\r\n"), READ_FAILED);
    assert_eq!(send(&mut s, "NOOP\r\n"), "+OK\r\n");
}

#[test]
fn top_sends_header_and_n_body_lines() {
    let store = two_messages();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "TOP 1 0\r\n"),
        "+OK top of message follows\r\nFrom: a@example.com\r\nSubject: dots\r\n\r\n.\r\n"
    );
    assert_eq!(
        send(&mut s, "TOP 1 2\r\n"),
        "+OK top of message follows\r\nFrom: a@example.com\r\nSubject: dots\r\n\r\n\
         ..leading dot\r\n...two\r\n.\r\n"
    );
    let all = send(&mut s, "TOP 1 100\r\n");
    assert!(all.ends_with("..\r\nend\r\n.\r\n"));
    assert_eq!(send(&mut s, "TOP 1\r\n"), "-ERR invalid arguments\r\n");
    assert_eq!(send(&mut s, "TOP 5 1\r\n"), NO_SUCH_MESSAGE);
}

#[test]
fn dele_then_quit_deletes_once() {
    let store = Arc::new(MockStore::with(&[(10, DOTS), (11, EIGHT_BIT), (12, b"c\r\n")]));
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "DELE 1\r\n"), "+OK message 1 deleted\r\n");
    assert_eq!(send(&mut s, "DELE 1\r\n"), "-ERR message 1 already deleted\r\n");
    assert_eq!(send(&mut s, "DELE 3\r\n"), "+OK message 3 deleted\r\n");
    assert_eq!(send(&mut s, "RETR 1\r\n"), "-ERR message 1 already deleted\r\n");
    assert_eq!(send(&mut s, "LIST 3\r\n"), "-ERR message 3 already deleted\r\n");
    assert_eq!(send(&mut s, "UIDL\r\n"), "+OK\r\n2 u11\r\n.\r\n");
    assert_eq!(send(&mut s, "STAT\r\n"), format!("+OK 1 {}\r\n", EIGHT_BIT.len()));
    assert_eq!(store.log(), ["open"]);
    let out = s.receive(b"QUIT\r\n");
    assert_eq!(
        out,
        Output::close("+OK Understudy POP3 server signing off (2 messages deleted)\r\n")
    );
    drop(s);
    assert_eq!(store.log(), ["open", "delete [10, 12]", "release"]);
}

#[test]
fn quit_without_marks_does_not_call_delete() {
    let store = two_messages();
    let mut s = logged_in(&store);
    assert_eq!(s.receive(b"QUIT\r\n"), Output::close(SIGN_OFF));
    drop(s);
    assert_eq!(store.log(), ["open", "release"]);

    let (mut s, _) = session_with(info(false), &store);
    assert_eq!(s.receive(b"QUIT\r\n"), Output::close(SIGN_OFF));
}

#[test]
fn dele_then_drop_releases_without_deleting() {
    let store = two_messages();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "DELE 1\r\nDELE 2\r\n"),
        "+OK message 1 deleted\r\n+OK message 2 deleted\r\n"
    );
    drop(s);
    assert_eq!(store.log(), ["open", "release"]);
}

#[test]
fn goodbye_and_close_release_once() {
    let store = two_messages();
    let mut s = logged_in(&store);
    send(&mut s, "DELE 1\r\n");
    assert_eq!(
        s.goodbye(Goodbye::Timeout),
        b"-ERR disconnected for inactivity\r\n".to_vec()
    );
    s.close();
    drop(s);
    assert_eq!(store.log(), ["open", "release"]);
    let (mut s, _) = session_with(info(true), &store);
    assert_eq!(
        s.goodbye(Goodbye::Shutdown),
        b"-ERR [SYS/TEMP] server shutting down, try again later\r\n".to_vec()
    );
}

#[test]
fn failed_update_answers_sys_temp() {
    let store = Arc::new(MockStore {
        fail_delete: true,
        ..MockStore::with(&[(10, DOTS)])
    });
    let mut s = logged_in(&store);
    send(&mut s, "DELE 1\r\n");
    assert_eq!(
        s.receive(b"QUIT\r\n"),
        Output::close("-ERR [SYS/TEMP] deleted messages not removed, try again later\r\n")
    );
    assert_eq!(store.log(), ["open", "delete [10]", "release"]);
}

#[test]
fn rset_unmarks() {
    let store = two_messages();
    let mut s = logged_in(&store);
    send(&mut s, "DELE 2\r\n");
    let total = DOTS.len() + EIGHT_BIT.len();
    assert_eq!(
        send(&mut s, "RSET\r\n"),
        format!("+OK maildrop has 2 messages ({total} octets)\r\n")
    );
    assert_eq!(send(&mut s, "UIDL 2\r\n"), "+OK 2 u11\r\n");
    assert_eq!(s.receive(b"QUIT\r\n"), Output::close(SIGN_OFF));
    assert_eq!(store.log(), ["open", "release"]);
}

#[test]
fn long_line_is_refused_and_skipped() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let long = "X".repeat(600);
    assert_eq!(send(&mut s, &long), "-ERR line too long\r\n");
    assert_eq!(send(&mut s, &long), "");
    assert_eq!(send(&mut s, "still junk\r\nNOOP\r\n"), "+OK\r\n");
    // A complete over-long line in one chunk.
    assert_eq!(
        send(&mut s, &format!("NOOP {long}\r\nNOOP\r\n")),
        "-ERR line too long\r\n+OK\r\n"
    );
    // Exactly the limit (CRLF included) is fine.
    let fits = format!("LIST {}\r\n", "1".repeat(512 - 7));
    assert_eq!(send(&mut s, &fits), NO_SUCH_MESSAGE);
}

#[test]
fn too_many_bad_commands_close_and_release() {
    let store = two_messages();
    let mut s = logged_in(&store);
    let out = s.receive("BOGUS\r\n".repeat(10).as_bytes());
    let mut expected = "-ERR unknown command\r\n".repeat(9);
    expected.push_str("-ERR too many bad commands, closing connection\r\n");
    assert_eq!(out, Output::close(expected));
    assert_eq!(store.log(), ["open", "release"]);
}

#[test]
fn output_is_throttled_per_step() {
    let store = two_messages();
    let auth = Arc::new(MockAuth::default());
    let limits = Pop3Limits {
        max_output_per_step: 1,
        ..Pop3Limits::default()
    };
    let mut s = Pop3Session::new(info(true), auth, store.clone(), limits);
    assert_eq!(
        send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\nNOOP\r\n")),
        "+OK send PASS\r\n"
    );
    assert!(s.has_pending_commands());
    assert_eq!(send(&mut s, ""), "+OK maildrop locked and ready\r\n");
    assert_eq!(send(&mut s, ""), "+OK\r\n");
    assert!(!s.has_pending_commands());
    assert_eq!(send(&mut s, ""), "");
}

#[test]
fn unread_pipelined_input_is_bounded() {
    let store = two_messages();
    let auth = Arc::new(MockAuth::default());
    let limits = Pop3Limits {
        max_output_per_step: 1,
        ..Pop3Limits::default()
    };
    let mut s = Pop3Session::new(info(true), auth, store.clone(), limits);
    send(&mut s, &format!("USER {USER}\r\n"));
    send(&mut s, &format!("PASS {PASSWORD}\r\n"));
    let flood = "NOOP\r\n".repeat(MAX_BUFFERED_INPUT / 6 + 10);
    assert_eq!(
        s.receive(flood.as_bytes()),
        Output::close("+OK\r\n-ERR too much pipelined input\r\n")
    );
    assert_eq!(store.log(), ["open", "release"]);
}

#[test]
fn greeting_hostname_cannot_inject_lines_and_revoked_goodbye() {
    let store = two_messages();
    let mut odd = info(true);
    odd.hostname = "mx\r\n+OK evil".into();
    let (mut s, _) = session_with(odd, &store);
    assert_eq!(
        s.greeting(),
        Output::reply("+OK mx+OKevil Understudy POP3 ready\r\n")
    );
    assert_eq!(
        s.goodbye(Goodbye::Revoked),
        b"-ERR session ended by the administrator\r\n".to_vec()
    );
    assert_eq!(s.receive(b"NOOP\r\n"), Output::close(Vec::new()));
}

#[test]
fn list_after_dele_skips_marked_messages() {
    let store = two_messages();
    let mut s = logged_in(&store);
    send(&mut s, "DELE 1\r\n");
    assert_eq!(
        send(&mut s, "LIST\r\n"),
        format!("+OK 1 messages ({0} octets)\r\n2 {0}\r\n.\r\n", EIGHT_BIT.len())
    );
}

/// Issue 19 item 8: a `read-only` user could DELE (and so delete at QUIT).
#[test]
fn read_only_users_cannot_delete() {
    let store = two_messages();
    let (mut s, auth) = session_with(info(true), &store);
    auth.read_only.store(true, std::sync::atomic::Ordering::Relaxed);
    send(&mut s, &format!("USER {USER}\r\nPASS {PASSWORD}\r\n"));
    assert!(send(&mut s, "RETR 1\r\n").starts_with("+OK"));
    assert_eq!(
        send(&mut s, "DELE 1\r\n"),
        "-ERR Your access to this server is read-only; nothing is deleted\r\n"
    );
    assert!(send(&mut s, "QUIT\r\n").starts_with("+OK"));
    assert!(
        !store.log().iter().any(|l| l.starts_with("delete")),
        "{:?}",
        store.log()
    );
}
