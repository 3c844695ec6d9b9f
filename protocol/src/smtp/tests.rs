//! Session tests against an in-memory backend (no real peer exists at this layer; the
//! root crate's integration tests use swaks and smtplib).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use time::macros::datetime;
use time::OffsetDateTime;

use super::*;
use crate::auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials};
use crate::session::{Action, ConnectionInfo, Goodbye, Output};

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        datetime!(2025-07-01 10:00:00 UTC)
    }
}

#[derive(Default)]
struct MockBackend {
    delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
    failure: Mutex<Option<DeliveryError>>,
    /// Calls of any method, and of the credential check (`MockAuth`).
    calls: Arc<AtomicUsize>,
}

impl SmtpBackend for MockBackend {
    fn check_recipient(&self, mode: SmtpMode, account: Option<&Account>, rcpt: &str) -> RcptVerdict {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if mode == SmtpMode::Submission && account.is_some_and(|a| a.access == AccessLevel::Full) {
            return RcptVerdict::Accept;
        }
        let (local, domain) = rcpt.rsplit_once('@').unwrap_or((rcpt, ""));
        if domain != "example.com" {
            return RcptVerdict::RelayDenied;
        }
        match local {
            "unknown" => RcptVerdict::Unknown,
            "inactive" => RcptVerdict::Inactive,
            "busy" => RcptVerdict::Temporary,
            _ => RcptVerdict::Accept,
        }
    }

    /// Knows bob without a look-up (not counted: it may run inline).
    fn check_recipient_now(
        &self,
        mode: SmtpMode,
        _account: Option<&Account>,
        rcpt: &str,
    ) -> Option<RcptVerdict> {
        (mode == SmtpMode::Mx && rcpt == "bob@example.com").then_some(RcptVerdict::Accept)
    }

    fn sender_allowed(&self, account: &Account, address: &str) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst);
        address.eq_ignore_ascii_case(&account.address) || address.eq_ignore_ascii_case("alias@example.com")
    }

    /// The id the store would use; the session must write it into `Received`.
    fn reserve_id(&self) -> Option<String> {
        Some("Q1".into())
    }

    fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReceipt, DeliveryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = self.failure.lock().unwrap().clone() {
            return Err(error);
        }
        let mut delivered = self.delivered.lock().unwrap();
        delivered.push((envelope.clone(), message.to_vec()));
        Ok(DeliveryReceipt {
            id: format!("Q{}", delivered.len()),
        })
    }
}

struct MockAuth {
    calls: Arc<AtomicUsize>,
}

impl AuthBackend for MockAuth {
    fn authenticate(&self, c: &Credentials) -> Result<Account, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let access = match (c.username.as_str(), c.password.expose()) {
            ("user@example.com", "secret") => AccessLevel::Full,
            ("ro@example.com", "secret") => AccessLevel::ReadOnly,
            ("denied@example.com", "secret") => return Err(AuthError::AccessDenied),
            ("limited@example.com", _) => return Err(AuthError::RateLimited),
            _ => return Err(AuthError::Invalid),
        };
        Ok(Account {
            id: 7,
            address: c.username.clone(),
            access,
        })
    }
}

struct Harness {
    session: SmtpSession,
    backend: Arc<MockBackend>,
}

impl Harness {
    fn new(mode: SmtpMode, tls: bool) -> Self {
        Self::with_limits(mode, tls, 10_000, 3)
    }

    fn with_limits(mode: SmtpMode, tls: bool, max_message_size: usize, max_recipients: usize) -> Self {
        let info = ConnectionInfo {
            peer: "192.0.2.1".parse::<IpAddr>().unwrap(),
            tls,
            tls_available: true,
            allow_plaintext_auth: false,
            webmail_host: false,
            hostname: "mx.example.com".to_string(),
        };
        let backend = Arc::new(MockBackend::default());
        let limits = SmtpLimits {
            max_message_size,
            max_recipients,
            max_errors: 10,
            clock: Arc::new(FixedClock),
        };
        let auth = Arc::new(MockAuth {
            calls: backend.calls.clone(),
        });
        let session = SmtpSession::new(info, mode, auth, backend.clone(), limits);
        Harness { session, backend }
    }

    fn send(&mut self, input: &str) -> String {
        self.send_output(input.as_bytes()).0
    }

    fn send_output(&mut self, input: &[u8]) -> (String, Action) {
        let Output { bytes, action } = self.session.receive(input);
        (String::from_utf8(bytes).unwrap(), action)
    }

    fn delivered(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.backend.delivered.lock().unwrap().clone()
    }

    fn fail_with(&self, error: DeliveryError) {
        *self.backend.failure.lock().unwrap() = Some(error);
    }

    /// Logs in over (simulated) TLS as user@example.com.
    fn submission() -> Self {
        let mut h = Harness::new(SmtpMode::Submission, true);
        h.send("EHLO client\r\n");
        // "\0user@example.com\0secret"
        assert_eq!(
            h.send("AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0\r\n"),
            "235 2.7.0 Authentication successful\r\n"
        );
        h
    }
}

const EHLO_MX: &str = "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 STARTTLS\r\n";

/// The trace header the fixed clock produces, with the variable id cut out.
fn strip_received(message: &[u8]) -> (String, String) {
    let text = String::from_utf8(message.to_vec()).unwrap();
    let end = text.find("+0000\r\n").unwrap() + 7;
    let (header, body) = text.split_at(end);
    let id_start = header.find(" id ").unwrap() + 4;
    let id_len = header[id_start..].find(['\r', ';']).unwrap();
    let header = format!("{}ID{}", &header[..id_start], &header[id_start + id_len..]);
    (header, body.to_string())
}

const TRANSACTION: &str = "EHLO client.example.org\r\nMAIL FROM:<alice@remote.org> SIZE=40\r\n\
    RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";

fn transaction_replies() -> String {
    format!(
        "{EHLO_MX}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n"
    )
}

#[test]
fn greeting_and_goodbyes() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    assert_eq!(
        h.session.greeting().bytes,
        b"220 mx.example.com ESMTP Understudy\r\n"
    );
    assert_eq!(
        h.session.goodbye(Goodbye::Timeout),
        b"421 4.4.2 mx.example.com Error: timeout exceeded\r\n"
    );
    assert_eq!(
        h.session.goodbye(Goodbye::Shutdown),
        b"421 4.3.2 mx.example.com Service shutting down, closing connection\r\n"
    );
    assert_eq!(h.session.receive(b"NOOP\r\n").action, Action::Close);
}

#[test]
fn pipelined_transaction_in_one_chunk() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let (replies, action) = h.send_output(TRANSACTION.as_bytes());
    assert_eq!(replies, transaction_replies());
    assert_eq!(action, Action::Close);
    let delivered = h.delivered();
    assert_eq!(delivered.len(), 1);
    let (envelope, message) = &delivered[0];
    assert_eq!(
        envelope,
        &Envelope {
            id: "Q1".into(),
            mode: SmtpMode::Mx,
            mail_from: "alice@remote.org".into(),
            rcpts: vec!["bob@example.com".into()],
            helo: "client.example.org".into(),
            peer: "192.0.2.1".parse().unwrap(),
            tls: false,
            account: None,
            smtputf8: false,
            body_8bit: false,
        }
    );
    // One id everywhere: the backend's, in the Received header and the 250 reply.
    assert!(
        String::from_utf8_lossy(message).contains(" id Q1\r\n"),
        "{}",
        String::from_utf8_lossy(message)
    );
    let (header, body) = strip_received(message);
    assert_eq!(
        header,
        "Received: from client.example.org ([192.0.2.1])\r\n\tby mx.example.com with ESMTP id ID\
         \r\n\tfor <bob@example.com>;\r\n\tTue, 1 Jul 2025 10:00:00 +0000\r\n"
    );
    assert_eq!(body, "Subject: hi\r\n\r\nbody\r\n");
}

#[test]
fn split_chunks_give_the_same_replies() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let mut replies = String::new();
    let mut action = Action::Continue;
    for byte in TRANSACTION.as_bytes().chunks(1) {
        let (r, a) = h.send_output(byte);
        replies.push_str(&r);
        action = a;
    }
    assert_eq!(replies, transaction_replies());
    assert_eq!(action, Action::Close);
    let (_, body) = strip_received(&h.delivered()[0].1);
    assert_eq!(body, "Subject: hi\r\n\r\nbody\r\n");
}

#[test]
fn not_in_transaction_until_mail_and_after_delivery() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.send("EHLO c\r\n");
    assert!(!h.session.in_transaction());
    h.send("MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx");
    assert!(h.session.in_transaction());
    assert_eq!(h.send("\r\n.\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    assert!(!h.session.in_transaction());
    assert_eq!(h.delivered()[0].0.mail_from, "");
}

#[test]
fn dot_unstuffing_and_bare_line_ends() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.send("EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    let reply = h.send("..dot\r\nbare\nlf\r\n.\nnot end\r\n.\r\n");
    assert_eq!(reply, "250 2.0.0 Ok: queued as Q1\r\n");
    let (_, body) = strip_received(&h.delivered()[0].1);
    assert_eq!(body, ".dot\r\nbare\r\nlf\r\n.\r\nnot end\r\n");
}

#[test]
fn over_long_data_line_is_refused_after_the_data() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.send("EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    let long = "x".repeat(999);
    assert_eq!(h.send(&format!("{long}\r\n")), "");
    assert_eq!(
        h.send("end\r\n.\r\nNOOP\r\n"),
        "554 5.6.0 Message has lines longer than 998 octets\r\n250 2.0.0 Ok\r\n"
    );
    assert!(h.delivered().is_empty());
    assert!(!h.session.in_transaction());
}

#[test]
fn over_long_command_line_is_discarded() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let long = format!("NOOP {}", "x".repeat(600));
    // Arrives in pieces: never buffered beyond the limit, answered once at its end.
    assert_eq!(h.send(&long[..300]), "");
    assert_eq!(h.send(&long[300..]), "");
    assert_eq!(
        h.send("\r\nNOOP\r\n"),
        "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n"
    );
    // 510 octets plus CRLF is within the limit.
    let fits = format!("NOOP {}\r\n", "x".repeat(505));
    assert_eq!(fits.len(), 512);
    assert_eq!(h.send(&fits), "250 2.0.0 Ok\r\n");
}

#[test]
fn oversized_message_is_rejected_and_nothing_delivered() {
    let mut h = Harness::with_limits(SmtpMode::Mx, false, 100, 3);
    h.send("EHLO c\r\n");
    assert_eq!(
        h.send("MAIL FROM:<a@remote.org> SIZE=101\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    h.send("MAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    for _ in 0..10 {
        assert_eq!(h.send(&format!("{}\r\n", "y".repeat(50))), "");
    }
    assert_eq!(
        h.send(".\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert!(h.delivered().is_empty());
    // The session goes on: a message within the limit is taken.
    h.send("MAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    assert_eq!(h.send("small\r\n.\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
}

#[test]
fn starttls_discards_pipelined_plaintext_and_requires_ehlo_again() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let (replies, action) =
        h.send_output(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@remote.org>\r\nRCPT TO:<bob@example.com>\r\n");
    assert_eq!(replies, format!("{EHLO_MX}220 2.0.0 Ready to start TLS\r\n"));
    assert_eq!(action, Action::StartTls);
    h.session.tls_started();
    assert_eq!(
        h.send("MAIL FROM:<a@remote.org>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    let ehlo = h.send("EHLO c\r\n");
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.ends_with("250 CHUNKING\r\n"));
    assert_eq!(h.send("STARTTLS\r\n"), "503 5.5.1 Error: TLS already active\r\n");
    h.send("MAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n");
    let (envelope, message) = &h.delivered()[0];
    assert!(envelope.tls);
    assert!(strip_received(message).0.contains(" with ESMTPS id "));
}

#[test]
fn submission_refuses_auth_before_tls() {
    let mut h = Harness::new(SmtpMode::Submission, false);
    let ehlo = h.send("EHLO c\r\n");
    assert!(!ehlo.contains("AUTH"));
    assert!(ehlo.contains("STARTTLS"));
    assert_eq!(
        h.send("AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0\r\n"),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<user@example.com>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    h.send("STARTTLS\r\n");
    h.session.tls_started();
    let ehlo = h.send("EHLO c\r\n");
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"));
}

#[test]
fn mx_offers_no_auth() {
    let mut h = Harness::new(SmtpMode::Mx, true);
    assert!(!h.send("EHLO c\r\n").contains("AUTH"));
    assert_eq!(
        h.send("AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0\r\n"),
        "502 5.5.1 AUTH not available\r\n"
    );
}

#[test]
fn auth_login_dialogue_and_failures() {
    let mut h = Harness::new(SmtpMode::Submission, true);
    h.send("EHLO c\r\n");
    // Same reply for a wrong password and for a policy refusal.
    assert_eq!(h.send("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.send("dXNlckBleGFtcGxlLmNvbQ==\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        h.send("d3Jvbmc=\r\n"),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    // "\0denied@example.com\0secret"
    assert_eq!(
        h.send("AUTH PLAIN AGRlbmllZEBleGFtcGxlLmNvbQBzZWNyZXQ=\r\n"),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    // "\0limited@example.com\0x"
    assert_eq!(h.send("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        h.send("AGxpbWl0ZWRAZXhhbXBsZS5jb20AeA==\r\n"),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    assert_eq!(
        h.send("AUTH LOGIN\r\n*\r\n"),
        "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n"
    );
    assert_eq!(
        h.send("AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    // LOGIN with the user name as initial response, then the password.
    assert_eq!(
        h.send("AUTH LOGIN dXNlckBleGFtcGxlLmNvbQ==\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(h.send("c2VjcmV0\r\n"), "235 2.7.0 Authentication successful\r\n");
    assert_eq!(h.session.account().map(|a| a.id), Some(7));
    assert_eq!(
        h.send("AUTH LOGIN\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
}

#[test]
fn read_only_account_cannot_send() {
    let mut h = Harness::new(SmtpMode::Submission, true);
    h.send("EHLO c\r\n");
    // "\0ro@example.com\0secret"
    assert_eq!(
        h.send("AUTH PLAIN AHJvQGV4YW1wbGUuY29tAHNlY3JldA==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<ro@example.com>\r\n"),
        "554 5.7.1 Sending is not permitted for this account\r\n"
    );
}

#[test]
fn submission_restricts_envelope_sender_and_from_header() {
    let mut h = Harness::submission();
    assert_eq!(
        h.send("MAIL FROM:<boss@example.com>\r\n"),
        "553 5.7.1 Sender address is not owned by the user\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<>\r\n"),
        "553 5.7.1 Sender address is not owned by the user\r\n"
    );
    let envelope = "MAIL FROM:<user@example.com>\r\nRCPT TO:<friend@remote.org>\r\nDATA\r\n";
    let replies = h.send(&format!(
        "{envelope}From: Boss <boss@example.com>\r\n\r\nhi\r\n.\r\n"
    ));
    assert!(replies.ends_with(
        "354 End data with <CR><LF>.<CR><LF>\r\n553 5.7.1 From header address is not owned by the user\r\n"
    ));
    let replies = h.send(&format!("{envelope}Subject: no from\r\n\r\nhi\r\n.\r\n"));
    assert!(replies.ends_with("553 5.7.1 From header address is not owned by the user\r\n"));
    let replies = h.send(&format!(
        "{envelope}From: me <user@example.com>, boss@example.com\r\n\r\nhi\r\n.\r\n"
    ));
    assert!(replies.ends_with("553 5.7.1 From header address is not owned by the user\r\n"));
    // Issue 19 item 10: a colleague's address as the display name, and Sender or
    // Resent-From of another user.
    for headers in [
        "From: \"boss@example.com\" <user@example.com>",
        "From: boss@example.com (the boss) <user@example.com>",
        "From: user@example.com\r\nSender: boss@example.com",
        "From: user@example.com\r\nResent-From: Boss <boss@example.com>",
        "From: user@example.com\r\nResent-Sender: boss@example.com",
    ] {
        let replies = h.send(&format!("{envelope}{headers}\r\n\r\nhi\r\n.\r\n"));
        assert!(
            replies.ends_with("553 5.7.1 From header address is not owned by the user\r\n"),
            "{headers}: {replies}"
        );
    }
    assert!(h.delivered().is_empty());

    let replies = h.send(&format!(
        "{envelope}From: Me <ALIAS@example.com>\r\n\r\nhi\r\n.\r\n"
    ));
    assert!(replies.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{replies}");
    let (envelope, message) = &h.delivered()[0];
    assert_eq!(
        envelope.account.as_ref().map(|a| a.address.as_str()),
        Some("user@example.com")
    );
    assert_eq!(envelope.rcpts, ["friend@remote.org"]);
    assert!(strip_received(message).0.contains(" with ESMTPSA id "));
}

#[test]
fn mx_recipient_verdicts() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let replies = h.send(
        "EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<x@elsewhere.org>\r\nRCPT TO:<unknown@example.com>\r\n\
         RCPT TO:<inactive@example.com>\r\nRCPT TO:<busy@example.com>\r\nDATA\r\n",
    );
    assert_eq!(
        replies,
        format!(
            "{EHLO_MX}250 2.1.0 Ok\r\n550 5.7.1 Relaying denied\r\n\
             550 5.1.1 Recipient address rejected: user unknown\r\n\
             550 5.2.1 Recipient address rejected: mailbox disabled\r\n\
             451 4.3.0 Temporary failure, please try again later\r\n\
             554 5.5.1 Error: no valid recipients\r\n"
        )
    );
}

#[test]
fn recipient_limit_and_duplicates() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let replies = h.send(
        "EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<A@example.com>\r\n\
         RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(replies.contains("250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n354"));
    let (envelope, message) = &h.delivered()[0];
    assert_eq!(
        envelope.rcpts,
        ["a@example.com", "b@example.com", "c@example.com"]
    );
    assert!(!strip_received(message).0.contains("for <"));
}

#[test]
fn delivery_failures_map_to_replies() {
    let cases = [
        (
            DeliveryError::Temporary("disk".into()),
            "451 4.3.0 Temporary failure, please try again later\r\n",
        ),
        (
            DeliveryError::StorageFull,
            "452 4.3.1 Insufficient system storage\r\n",
        ),
        (
            DeliveryError::Rejected(SmtpReply::refusal(550, "5.7.1", "DMARC policy\r\nreject").unwrap()),
            "550 5.7.1 DMARC policy  reject\r\n",
        ),
    ];
    for (error, expected) in cases {
        let mut h = Harness::new(SmtpMode::Mx, false);
        h.fail_with(error);
        h.send("EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
        assert_eq!(h.send("x\r\n.\r\n"), expected);
        assert!(!h.session.in_transaction());
    }
}

#[test]
fn bdat_chunks_with_last() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.send("EHLO c\r\nMAIL FROM:<a@remote.org> BODY=8BITMIME\r\nRCPT TO:<bob@example.com>\r\n");
    // A chunk may hold CRLF.CRLF and bytes that look like commands: they are content.
    assert_eq!(
        h.send("BDAT 13\r\nA: b\r\n\r\n.\r\nQU"),
        "250 2.0.0 13 octets received\r\n"
    );
    assert_eq!(h.send("BDAT 6 LAST\r\nIT\r\n"), "");
    assert_eq!(h.send("\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    let (envelope, message) = &h.delivered()[0];
    assert!(envelope.body_8bit);
    assert_eq!(strip_received(message).1, "A: b\r\n\r\n.\r\nQUIT\r\n\r\n");
    // BDAT without a transaction still reads its chunk.
    assert_eq!(
        h.send("BDAT 4 LAST\r\nNOOPNOOP\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(h.delivered().len(), 1);
}

#[test]
fn bdat_oversize_fails_the_transaction() {
    let mut h = Harness::with_limits(SmtpMode::Mx, false, 10, 3);
    h.send("EHLO c\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\n");
    assert_eq!(
        h.send("BDAT 12\r\n0123456789\r\nBDAT 0 LAST\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n\
         503 5.5.1 Error: need MAIL command\r\n"
    );
    assert!(h.delivered().is_empty());
}

#[test]
fn too_many_errors_close_the_connection() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    let (replies, action) = h.send_output("BOGUS\r\n".repeat(12).as_bytes());
    assert_eq!(
        replies,
        format!(
            "{}421 4.7.0 mx.example.com Too many errors, closing connection\r\n",
            "500 5.5.1 Command unrecognized\r\n".repeat(10)
        )
    );
    assert_eq!(action, Action::Close);
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.send("EHLO c\r\n");
    assert_eq!(
        h.send("MAIL FROM:<jos\u{e9}@remote.org>\r\n"),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<jos\u{e9}@remote.org> SMTPUTF8\r\n"),
        "250 2.1.0 Ok\r\n"
    );
    h.send("RCPT TO:<b\u{f6}b@example.com>\r\nDATA\r\nx\r\n.\r\n");
    let (envelope, message) = &h.delivered()[0];
    assert!(envelope.smtputf8);
    assert!(strip_received(message)
        .0
        .contains(" with UTF8SMTP id ID\r\n\tfor <b\u{f6}b@example.com>;"));
}

#[test]
fn sequence_errors_and_misc_commands() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    assert_eq!(
        h.send("HELO c\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nVRFY bob\r\nHELP\r\nRSET\r\n"),
        "250 mx.example.com\r\n503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n\
         252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n\
         214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH\r\n\
         250 2.0.0 Ok\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<a@remote.org>\r\nMAIL FROM:<a@remote.org>\r\nMAIL FROM:<<>\r\n"),
        "250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n501 5.1.7 Bad sender address syntax\r\n"
    );
    h.send("RCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n");
    assert!(strip_received(&h.delivered()[0].1).0.contains(" with SMTP id "));
}

#[test]
fn auth_line_may_exceed_the_command_limit_but_not_the_sasl_limit() {
    let mut h = Harness::new(SmtpMode::Submission, true);
    h.send("EHLO c\r\n");
    let response = "QUFB".repeat(200);
    assert_eq!(
        h.send(&format!("AUTH PLAIN {response}\r\n")),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    let huge = "QUFB".repeat(2000);
    assert_eq!(
        h.send(&format!("AUTH PLAIN {huge}\r\nNOOP\r\n")),
        "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(h.send("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        h.send(&format!("{huge}\r\nNOOP\r\n")),
        "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn revoked_goodbye_closes() {
    let mut h = Harness::new(SmtpMode::Submission, true);
    assert_eq!(
        h.session.goodbye(Goodbye::Revoked),
        b"421 4.7.0 mx.example.com Session ended by administrator\r\n"
    );
    assert_eq!(h.send_output(b"QUIT\r\n"), (String::new(), Action::Close));
}

#[test]
fn control_characters_in_commands_are_refused() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    h.session.greeting();
    assert_eq!(
        h.send("EHLO a\0b\r\nHELO c\x01\r\nHELO ok\tname\r\n"),
        "500 5.5.2 Syntax error: control character in command\r\n\
         500 5.5.2 Syntax error: control character in command\r\n\
         250 mx.example.com\r\n"
    );
}

/// Feeds `input` in `chunks` through `receive_inline`, as the driver does on its async
/// worker: no chunk may reach a backend there; deferred work goes through `receive(&[])`.
fn feed_inline(h: &mut Harness, chunks: &[&[u8]]) -> String {
    let mut replies = Vec::new();
    for chunk in chunks {
        let before = h.backend.calls.load(Ordering::SeqCst);
        let out = h.session.receive_inline(chunk);
        assert_eq!(
            h.backend.calls.load(Ordering::SeqCst),
            before,
            "receive_inline called a backend for {:?}",
            String::from_utf8_lossy(chunk)
        );
        replies.extend(out.bytes);
        let mut closed = out.action == Action::Close;
        while !closed && h.session.has_deferred() {
            let out = h.session.receive(&[]);
            replies.extend(out.bytes);
            closed = out.action == Action::Close;
        }
        if closed {
            break;
        }
    }
    String::from_utf8(replies).unwrap()
}

/// Transcripts covering every phase: MX DATA and BDAT with a refused recipient, and a
/// submission with AUTH PLAIN, AUTH LOGIN, a sender check and a From header check.
fn inline_transcripts() -> Vec<(SmtpMode, String)> {
    let body = "Subject: hi\r\n\r\n..dot\r\nline two\r\n";
    vec![
        (
            SmtpMode::Mx,
            format!(
                "EHLO a.example\r\nNOOP\r\nMAIL FROM:<x@remote.org>\r\nRCPT TO:<unknown@example.com>\r\n\
                 RCPT TO:<bob@example.com>\r\nDATA\r\n{body}.\r\nRSET\r\nMAIL FROM:<x@remote.org>\r\n\
                 RCPT TO:<carol@example.com>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\n\
                 MAIL FROM:<y@remote.org>\r\nRCPT TO:<bob@example.com>\r\nBDAT 3 LAST\r\nabcQUIT\r\n"
            ),
        ),
        (
            SmtpMode::Submission,
            format!(
                "EHLO c\r\nAUTH LOGIN\r\ndXNlckBleGFtcGxlLmNvbQ==\r\nd3Jvbmc=\r\n\
                 AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0\r\nMAIL FROM:<user@example.com>\r\n\
                 RCPT TO:<r@remote.org>\r\nDATA\r\nFrom: user@example.com\r\n{body}.\r\nQUIT\r\n"
            ),
        ),
    ]
}

/// Deliveries with the Received header's per-message id cut out.
fn without_trace_ids(h: &Harness) -> Vec<(Envelope, (String, String))> {
    h.delivered()
        .into_iter()
        .map(|(envelope, message)| (envelope, strip_received(&message)))
        .collect()
}

#[test]
fn inline_receive_calls_no_backend_and_answers_as_receive_does() {
    for (mode, transcript) in inline_transcripts() {
        let bytes = transcript.as_bytes();
        let mut reference = Harness::new(mode, true);
        let expected = reference.send(&transcript);
        let refusal = match mode {
            SmtpMode::Mx => "550 5.1.1",
            SmtpMode::Submission => "535 5.7.8",
        };
        assert!(
            expected.contains("queued as Q1") && expected.contains(refusal),
            "{expected}"
        );
        // Every split into two chunks, then small fixed-size chunks.
        for cut in 0..=bytes.len() {
            let mut h = Harness::new(mode, true);
            let (a, b) = bytes.split_at(cut);
            assert_eq!(feed_inline(&mut h, &[a, b]), expected, "cut at {cut}");
            assert_eq!(
                without_trace_ids(&h),
                without_trace_ids(&reference),
                "cut at {cut}"
            );
        }
        for size in [1, 3, 7, 64] {
            let mut h = Harness::new(mode, true);
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(feed_inline(&mut h, &chunks), expected, "chunks of {size}");
        }
    }
}

#[test]
fn inline_receive_streams_a_body_without_deferring() {
    let mut h = Harness::new(SmtpMode::Mx, false);
    feed_inline(&mut h, &[b"EHLO a\r\nMAIL FROM:<x@remote.org>\r\n"]);
    // A recipient the backend knows in memory is answered inline; another waits.
    let out = h.session.receive_inline(b"RCPT TO:<bob@example.com>\r\n");
    assert_eq!(out.bytes, b"250 2.1.5 Ok\r\n");
    assert!(!h.session.has_deferred());
    assert!(h
        .session
        .receive_inline(b"RCPT TO:<carol@example.com>\r\n")
        .bytes
        .is_empty());
    assert!(h.session.has_deferred());
    assert_eq!(h.session.receive(&[]).bytes, b"250 2.1.5 Ok\r\n");
    assert!(!h.session.has_deferred());
    let out = h.session.receive_inline(b"DATA\r\n");
    assert_eq!(out.bytes, b"354 End data with <CR><LF>.<CR><LF>\r\n");
    for _ in 0..3 {
        let out = h.session.receive_inline(b"a line of the body\r\n");
        assert!(out.bytes.is_empty() && !h.session.has_deferred());
    }
    // The end of the data is the delivery: deferred, then done by `receive`.
    assert!(h.session.receive_inline(b".\r\n").bytes.is_empty());
    assert!(h.session.has_deferred() && h.delivered().is_empty());
    assert_eq!(h.session.receive(&[]).bytes, b"250 2.0.0 Ok: queued as Q1\r\n");
    assert!(!h.session.has_deferred());
    assert_eq!(h.delivered().len(), 1);
}
