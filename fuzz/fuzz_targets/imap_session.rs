//! Feeds arbitrary bytes to an IMAP session over the in-memory store, in chunks whose
//! size the first input byte picks, so framing across reads is exercised too. The
//! second byte picks the starting point: before login (plain or TLS), or logged in with
//! INBOX selected and three messages in it.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use understudy_protocol::imap::{ImapLimits, ImapSession};
use understudy_protocol::testing::{self, imap};
use understudy_protocol::Action;

const MESSAGES: [&str; 3] = [
    "From: Ann <ann@example.org>\r\nTo: tim@example.com\r\nSubject: hello\r\n\r\nHi there\r\n",
    "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--b--\r\n",
    "Subject: bare\n\nlf only\rcr\r\n",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = usize::from(data[0]).max(1);
    let start = data[1] % 3;
    let store = imap::MockStore::new();
    for m in MESSAGES {
        store.deliver("INBOX", m, 0);
    }
    let mut session = ImapSession::new(
        testing::connection(start != 0),
        Arc::new(imap::MockAuth),
        store,
        ImapLimits {
            max_literal: 64 * 1024,
            ..ImapLimits::default()
        },
    );
    session.greeting();
    if start == 2 {
        let login = format!("l LOGIN {} {}\r\ns SELECT INBOX\r\n", imap::USER, imap::PASSWORD);
        session.receive(login.as_bytes());
    }
    for piece in data[2..].chunks(chunk) {
        let mut out = session.receive(piece);
        while out.action != Action::Close && session.has_pending() {
            out = session.receive(&[]);
        }
        match out.action {
            Action::Close => return,
            Action::StartTls => session.tls_started(),
            Action::Idle { .. } => {
                session.mailbox_changed();
            }
            // After COMPRESS the driver inflates what arrives; the session still sees
            // plain commands, which is what the fuzzer goes on feeding it.
            Action::Continue | Action::Compress => {}
        }
    }
});
