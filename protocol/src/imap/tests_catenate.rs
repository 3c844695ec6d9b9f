//! CATENATE (RFC 4469) byte-exact: messages put together from TEXT literals and URLs
//! of this user's messages and sections; BADURL and TOOBIG store nothing.

use std::sync::Arc;

use super::tests::{info, selected, send, MSG};
use super::*;
use crate::testing::imap::{MockAuth, MockStore, PASSWORD, USER};

#[test]
fn catenate_joins_text_and_sections_of_this_users_messages() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    // A forward: the original's header, new text, the original's body (relative URL).
    assert_eq!(
        send(
            &mut s,
            "a APPEND Drafts (\\Draft) CATENATE (URL \"/INBOX;UIDVALIDITY=1001/;UID=1/;SECTION=HEADER\" \
             TEXT {5+}\r\nnew\r\n URL \";UID=1/;SECTION=1/;PARTIAL=3.5\")\r\n"
        ),
        "a OK [APPENDUID 1003 1] APPEND completed\r\n"
    );
    // With MULTIAPPEND, and an imap:// URL naming this user.
    assert_eq!(
        send(
            &mut s,
            &format!(
                "b APPEND Drafts {{3+}}\r\none CATENATE (URL \"imap://{}@mx.example.com/INBOX/;UID=1\")\r\n",
                USER.replace('@', "%40")
            )
        ),
        "b OK [APPENDUID 1003 2:3] APPEND completed\r\n"
    );
    send(&mut s, "c EXAMINE Drafts\r\n");
    assert_eq!(
        send(&mut s, "d FETCH 1:3 (FLAGS BODY.PEEK[])\r\n"),
        format!(
            "* 1 FETCH (FLAGS (\\Draft \\Recent) BODY[] {{57}}\r\n\
             From: Ann <ann@example.org>\r\nSubject: hello\r\n\r\nnew\r\nthere)\r\n\
             * 2 FETCH (FLAGS (\\Recent) BODY[] {{3}}\r\none)\r\n\
             * 3 FETCH (FLAGS (\\Recent) BODY[] {{{}}}\r\n{MSG})\r\n\
             d OK FETCH completed\r\n",
            MSG.len()
        )
    );
}

#[test]
fn a_url_that_cannot_be_used_or_a_message_too_big_stores_nothing() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let limits = ImapLimits {
        max_literal: 40,
        ..ImapLimits::default()
    };
    let mut s = ImapSession::new(info(true, false), Arc::new(MockAuth), store.clone(), limits);
    s.greeting();
    send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    for (url, why) in [
        ("/INBOX;UIDVALIDITY=9/;UID=1", "another UIDVALIDITY"),
        ("/INBOX/;UID=2", "no such message"),
        ("/Nowhere/;UID=1", "no such mailbox"),
        ("imap://bob@mx.example.com/INBOX/;UID=1", "another user"),
        (";UID=1", "relative, but nothing selected"),
        ("/INBOX/;UID=1/;SECTION=1]", "a section that is none"),
    ] {
        assert_eq!(
            send(
                &mut s,
                &format!("b APPEND Drafts CATENATE (TEXT {{1+}}\r\nx URL \"{url}\")\r\n")
            ),
            format!("b NO [BADURL {}] Cannot use this URL\r\n", url.replace(']', "")),
            "{why}"
        );
    }
    // The whole message (57 octets) is over the 40 allowed.
    assert_eq!(
        send(&mut s, "c APPEND Drafts CATENATE (URL \"/INBOX/;UID=1\")\r\n"),
        "c NO [TOOBIG] Message too big\r\n"
    );
    assert_eq!(
        send(&mut s, "d APPEND Drafts CATENATE ()\r\n"),
        "d BAD Invalid APPEND arguments\r\n"
    );
    assert_eq!(store.uids("Drafts"), Vec::<u32>::new());
}
