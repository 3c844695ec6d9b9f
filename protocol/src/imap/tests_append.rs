//! MULTIAPPEND (RFC 3502) byte-exact: several messages in one APPEND, stored together
//! or not at all.

use std::sync::Arc;

use super::tests::{info, logged_in, send};
use super::*;
use crate::testing::imap::{MockAuth, MockStore, PASSWORD, USER};

#[test]
fn multiappend_stores_every_message_with_its_own_flags_and_date() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "a APPEND INBOX (\\Seen) {5}\r\n"), "+ OK\r\n");
    // imap-codec rejects the command so far (it parses one message): still accepted.
    assert_eq!(
        send(
            &mut s,
            "hello (\\Flagged $Work) \" 1-Feb-2024 10:00:00 +0100\" {5}\r\n"
        ),
        "+ OK\r\n"
    );
    assert_eq!(
        send(&mut s, "world\r\n"),
        "a OK [APPENDUID 1001 1:2] APPEND completed\r\n"
    );
    // LITERAL+ and a third message without flags or date.
    assert_eq!(
        send(
            &mut s,
            "b APPEND INBOX {3+}\r\none {3+}\r\ntwo ~{5+}\r\nthree\r\n"
        ),
        "b OK [APPENDUID 1001 3:5] APPEND completed\r\n"
    );
    send(&mut s, "c SELECT INBOX\r\n");
    assert_eq!(
        send(&mut s, "d FETCH 1:5 (FLAGS INTERNALDATE BODY.PEEK[])\r\n"),
        "* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" BODY[] {5}\r\nhello)\r\n\
         * 2 FETCH (FLAGS (\\Flagged \\Recent $Work) INTERNALDATE \"01-Feb-2024 10:00:00 +0100\" BODY[] {5}\r\nworld)\r\n\
         * 3 FETCH (FLAGS (\\Recent) INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" BODY[] {3}\r\none)\r\n\
         * 4 FETCH (FLAGS (\\Recent) INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" BODY[] {3}\r\ntwo)\r\n\
         * 5 FETCH (FLAGS (\\Recent) INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" BODY[] {5}\r\nthree)\r\n\
         d OK FETCH completed\r\n"
    );
}

#[test]
fn multiappend_stores_nothing_when_one_message_fails() {
    let store = MockStore::new();
    let limits = ImapLimits {
        max_literal: 10,
        ..ImapLimits::default()
    };
    let mut s = ImapSession::new(info(true, false), Arc::new(MockAuth), store.clone(), limits);
    s.greeting();
    send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    // The second message is too big: refused before it is read, the first one dropped.
    assert_eq!(send(&mut s, "b APPEND INBOX {5}\r\n"), "+ OK\r\n");
    assert_eq!(
        send(&mut s, "hello {20}\r\n"),
        "b NO [TOOBIG] Literal too big\r\n"
    );
    // A malformed second message, or a mailbox that does not exist: nothing stored.
    assert_eq!(
        send(&mut s, "c APPEND INBOX {5+}\r\nhello (\\Seen {5+}\r\nworld\r\n"),
        "c BAD Invalid APPEND arguments\r\n"
    );
    assert_eq!(
        send(&mut s, "d APPEND Nowhere {5+}\r\nhello {5+}\r\nworld\r\n"),
        "d NO [TRYCREATE] Mailbox does not exist\r\n"
    );
    assert_eq!(
        send(
            &mut s,
            "e APPEND INBOX {5+}\r\nhello \"31-Feb-2024 10:00:00 +0100\" {5+}\r\nworld\r\n"
        ),
        "e BAD Invalid APPEND arguments\r\n"
    );
    assert_eq!(store.uids("INBOX"), Vec::<u32>::new());
    // Before login, no APPEND of any form.
    let mut anon = ImapSession::new(
        info(true, false),
        Arc::new(MockAuth),
        store.clone(),
        ImapLimits::default(),
    );
    assert_eq!(
        send(&mut anon, "f APPEND INBOX {1+}\r\na {1+}\r\nb\r\n"),
        "f BAD Command not valid before login\r\n"
    );
}

#[test]
fn append_parser_is_bounded() {
    let mut command = b"t APPEND INBOX".to_vec();
    for _ in 0..=append::MAX_APPEND_MESSAGES {
        command.extend_from_slice(b" {1}\r\nx");
    }
    command.extend_from_slice(b"\r\n");
    assert_eq!(append::parse_append(&command), Some(Err("t".to_string())));
    // A literal longer than the octets there is malformed, not read past the end.
    assert_eq!(
        append::parse_append(b"t APPEND INBOX {1}\r\nx {99}\r\nxy\r\n"),
        Some(Err("t".to_string()))
    );
    assert_eq!(append::parse_append(b"t NOOP\r\n"), None);
}

#[test]
fn a_spooled_first_message_and_the_rest_in_the_command_are_stored_together() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let big = "b".repeat(300_000);
    // The first literal is big enough to be spooled; the second stays in the command.
    assert_eq!(
        send(&mut s, &format!("a APPEND INBOX {{{}}}\r\n", big.len())),
        "+ OK\r\n"
    );
    assert_eq!(send(&mut s, &format!("{big} {{5}}\r\n")), "+ OK\r\n");
    assert_eq!(
        send(&mut s, "small\r\n"),
        "a OK [APPENDUID 1001 1:2] APPEND completed\r\n"
    );
    send(&mut s, "b SELECT INBOX\r\n");
    assert_eq!(
        send(&mut s, "c FETCH 1:2 RFC822.SIZE\r\n"),
        "* 1 FETCH (RFC822.SIZE 300000)\r\n* 2 FETCH (RFC822.SIZE 5)\r\nc OK FETCH completed\r\n"
    );
}
