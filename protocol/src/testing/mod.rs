//! In-memory backends for driving sessions without a store: the IMAP session's unit
//! tests and the fuzz targets under `fuzz/` use them. Compiled only for tests and with
//! the `testing` feature (which the server never enables).
// Test aid, never on a server path: a poisoned mock lock may abort a test or fuzz run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod imap;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::auth::{AccessLevel, Account, AuthBackend, AuthError, Credentials};
use crate::pop3::{MaildropEntry, Pop3Backend, Pop3BackendError, Pop3Limits, Pop3Session};
use crate::session::{ConnectionInfo, Output};
use crate::smtp::{
    DeliveryError, DeliveryReceipt, Envelope, RcptVerdict, SmtpBackend, SmtpLimits, SmtpMode, SmtpSession,
};

/// A client address in the documentation range.
pub fn connection(tls: bool) -> ConnectionInfo {
    ConnectionInfo {
        peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        tls,
        tls_available: true,
        allow_plaintext_auth: false,
        webmail_host: false,
        hostname: "mx.example.com".into(),
    }
}

/// Accepts `imap::USER` with `imap::PASSWORD` for any protocol; anything else is invalid.
pub struct FixedAuth;

thread_local! {
    /// Set while `receive_inline_checked` runs: a blocking backend call then panics.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// The promise `SmtpSession::receive_inline` makes (it may run on an async worker): no
/// blocking backend call. Panics, failing the test or fuzz run, if one happens.
fn not_inline(call: &str) {
    if INLINE.with(Cell::get) {
        panic!("{call} called from receive_inline");
    }
}

/// `session.receive_inline(input)`, with the mock backends checking that none of their
/// blocking methods is called meanwhile.
pub fn receive_inline_checked(session: &mut SmtpSession, input: &[u8]) -> Output {
    INLINE.with(|f| f.set(true));
    let out = session.receive_inline(input);
    INLINE.with(|f| f.set(false));
    out
}

impl AuthBackend for FixedAuth {
    fn authenticate(&self, c: &Credentials) -> Result<Account, AuthError> {
        not_inline("authenticate");
        if c.username == imap::USER && c.password.expose() == imap::PASSWORD {
            Ok(imap::account())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// A read-only maildrop of fixed messages; deletions are accepted and forgotten.
pub struct FixedMaildrop(pub Vec<Vec<u8>>);

impl Pop3Backend for FixedMaildrop {
    fn open_maildrop(&self, _: &Account) -> Result<Vec<MaildropEntry>, Pop3BackendError> {
        Ok(self
            .0
            .iter()
            .enumerate()
            .map(|(i, m)| MaildropEntry {
                key: i as u64,
                size: m.len() as u64,
                uidl: format!("u{i}"),
            })
            .collect())
    }
    fn retrieve(&self, _: &Account, key: u64) -> Result<Vec<u8>, Pop3BackendError> {
        self.0.get(key as usize).cloned().ok_or(Pop3BackendError::Gone)
    }
    fn delete(&self, _: &Account, _: &[u64]) -> Result<(), Pop3BackendError> {
        Ok(())
    }
    fn release(&self, _: &Account) {}
}

/// A POP3 session over a maildrop holding `messages`.
pub fn pop3_session(tls: bool, messages: Vec<Vec<u8>>) -> Pop3Session {
    Pop3Session::new(
        connection(tls),
        Arc::new(FixedAuth),
        Arc::new(FixedMaildrop(messages)),
        Pop3Limits::default(),
    )
}

/// Accepts recipients at example.com (and anyone in submission) and discards messages.
pub struct DiscardingSmtp;

impl SmtpBackend for DiscardingSmtp {
    fn check_recipient(&self, mode: SmtpMode, account: Option<&Account>, rcpt: &str) -> RcptVerdict {
        not_inline("check_recipient");
        if mode == SmtpMode::Submission && account.is_some_and(|a| a.access == AccessLevel::Full) {
            return RcptVerdict::Accept;
        }
        if rcpt.to_ascii_lowercase().ends_with("@example.com") {
            RcptVerdict::Accept
        } else {
            RcptVerdict::RelayDenied
        }
    }
    /// Knows one recipient in memory, as the store's cache would.
    fn check_recipient_now(&self, mode: SmtpMode, _: Option<&Account>, rcpt: &str) -> Option<RcptVerdict> {
        (mode == SmtpMode::Mx && rcpt.eq_ignore_ascii_case("known@example.com"))
            .then_some(RcptVerdict::Accept)
    }
    fn sender_allowed(&self, account: &Account, address: &str) -> bool {
        not_inline("sender_allowed");
        address.eq_ignore_ascii_case(&account.address)
    }
    fn deliver(&self, _: &Envelope, _: &[u8]) -> Result<DeliveryReceipt, DeliveryError> {
        not_inline("deliver");
        Ok(DeliveryReceipt { id: "Q1".into() })
    }
}

/// An SMTP session in `mode`, with a 1 MB message limit so fuzz runs stay small.
pub fn smtp_session(mode: SmtpMode, tls: bool) -> SmtpSession {
    let limits = SmtpLimits {
        max_message_size: 1024 * 1024,
        ..SmtpLimits::default()
    };
    SmtpSession::new(
        connection(tls),
        mode,
        Arc::new(FixedAuth),
        Arc::new(DiscardingSmtp),
        limits,
    )
}

/// Entry points for the fuzz targets that feed one parser at a time (the recursive ones
/// issue 19 found: a 30,000-deep `(` and a 60,000-`*` LIST pattern overflowed the stack).
pub mod parsers {
    /// The LIST-EXTENDED / ESEARCH lexer and parser on one framed command.
    pub fn imap_extended(command: &[u8]) {
        let _ = crate::imap::extended::is_extended_form(command);
        let _ = crate::imap::extended::parse(command);
        // MULTIAPPEND and CATENATE: the APPEND parser, the URLs and sections it yields.
        let _ = crate::imap::append::is_append(command);
        if let Some(Ok(append)) = crate::imap::append::parse_append(command) {
            for message in &append.messages {
                if let crate::imap::append::AppendData::Catenate(parts) = &message.data {
                    for part in parts {
                        if let crate::imap::append::CatenatePart::Url(url) = part {
                            let _ = crate::imap::catenate::parse_url(url);
                        }
                    }
                }
            }
        }
        if let Ok(text) = std::str::from_utf8(command) {
            let _ = crate::imap::catenate::parse_url(text);
            let _ = crate::imap::catenate::parse_section(text);
        }
    }

    /// The LIST wildcard matcher.
    pub fn list_matches(pattern: &str, name: &str) -> bool {
        crate::imap::text::list_matches(pattern, name)
    }
}
