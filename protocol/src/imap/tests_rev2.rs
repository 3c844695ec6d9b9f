//! IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) byte-exact: each difference a rev2
//! session makes shown beside a rev1 session doing the same.

use super::tests::{logged_in, send, MSG};
use crate::testing::imap::MockStore;

/// A logged-in session with IMAP4rev2 enabled.
fn rev2(store: &std::sync::Arc<MockStore>) -> super::ImapSession {
    let mut s = logged_in(store);
    assert_eq!(
        send(&mut s, "e ENABLE IMAP4rev2\r\n"),
        "* ENABLED IMAP4rev2\r\ne OK ENABLE completed\r\n"
    );
    s
}

/// `count` copies of `MSG` in INBOX, selected by a rev1 session and by a rev2 one.
fn rev1_and_rev2(count: usize) -> (std::sync::Arc<MockStore>, super::ImapSession, super::ImapSession) {
    let store = MockStore::new();
    for _ in 0..count {
        store.deliver("INBOX", MSG, 0);
    }
    let mut one = logged_in(&store);
    send(&mut one, "s SELECT INBOX\r\n");
    let mut two = rev2(&store);
    send(&mut two, "s SELECT INBOX\r\n");
    (store, one, two)
}

#[test]
fn capability_and_enable() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let caps = send(&mut s, "c CAPABILITY\r\n");
    assert!(caps.starts_with("* CAPABILITY IMAP4rev1 IMAP4rev2 "), "{caps}");
    assert!(caps.contains(" UTF8=ACCEPT "), "{caps}");
    // ENABLED names only what this command turned on; UTF8=ONLY is not offered.
    assert_eq!(
        send(&mut s, "a ENABLE UTF8=ACCEPT UTF8=ONLY\r\n"),
        "* ENABLED UTF8=ACCEPT\r\na OK ENABLE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b ENABLE IMAP4rev2 UTF8=ACCEPT\r\n"),
        "* ENABLED IMAP4rev2\r\nb OK ENABLE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c ENABLE IMAP4rev2\r\n"),
        "* ENABLED\r\nc OK ENABLE completed\r\n"
    );
    // While selected they are not enabled: the selected mailbox keeps its rules.
    let mut t = logged_in(&store);
    send(&mut t, "s SELECT INBOX\r\n");
    assert_eq!(
        send(&mut t, "d ENABLE IMAP4rev2 UTF8=ACCEPT\r\n"),
        "* ENABLED\r\nd OK ENABLE completed\r\n"
    );
    assert_eq!(
        send(&mut t, "f SEARCH ALL\r\n"),
        "* SEARCH\r\nf OK SEARCH completed\r\n"
    );
}

#[test]
fn select_shows_list_instead_of_recent_and_unseen() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, super::Flags::SEEN);
    store.deliver("INBOX", MSG, 0);
    let mut one = logged_in(&store);
    let mut two = rev2(&store);
    assert_eq!(
        send(&mut two, "s SELECT INBOX\r\n"),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 2 EXISTS\r\n\
         * LIST () \"/\" \"INBOX\"\r\n\
         * OK [UIDVALIDITY 1001] UIDs valid\r\n\
         * OK [UIDNEXT 3] Predicted next UID\r\n\
         s OK [READ-WRITE] SELECT completed\r\n"
    );
    // The rev2 session took no \Recent: the rev1 session still gets both.
    assert_eq!(
        send(&mut one, "s SELECT INBOX\r\n"),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 2 EXISTS\r\n\
         * 2 RECENT\r\n\
         * OK [UNSEEN 2] First unseen\r\n\
         * OK [UIDVALIDITY 1001] UIDs valid\r\n\
         * OK [UIDNEXT 3] Predicted next UID\r\n\
         s OK [READ-WRITE] SELECT completed\r\n"
    );
    let r = send(&mut two, "x EXAMINE INBOX\r\n");
    assert!(
        r.contains("* 2 EXISTS\r\n* LIST () \"/\" \"INBOX\"\r\n* OK [UIDVALIDITY"),
        "{r}"
    );
    assert!(!r.contains("RECENT") && !r.contains("UNSEEN"), "{r}");
}

#[test]
fn no_recent_flag_or_response_in_rev2() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut two = rev2(&store);
    send(&mut two, "s SELECT INBOX\r\n");
    let mut one = logged_in(&store);
    send(&mut one, "s SELECT INBOX\r\n");
    store.deliver("INBOX", MSG, 0);
    assert_eq!(
        send(&mut one, "n NOOP\r\n"),
        "* 2 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut two, "n NOOP\r\n"),
        "* 2 EXISTS\r\nn OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut one, "f FETCH 1:2 FLAGS\r\n"),
        "* 1 FETCH (FLAGS (\\Recent))\r\n* 2 FETCH (FLAGS (\\Recent))\r\nf OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut two, "f FETCH 1:2 FLAGS\r\n"),
        "* 1 FETCH (FLAGS ())\r\n* 2 FETCH (FLAGS ())\r\nf OK FETCH completed\r\n"
    );
    // STATUS RECENT is not IMAP4rev2 (RFC 9051 §6.3.11); the other items are.
    assert_eq!(
        send(&mut two, "t STATUS INBOX (RECENT)\r\n"),
        "t BAD RECENT is not an IMAP4rev2 status item\r\n"
    );
    assert_eq!(
        send(&mut two, "t STATUS INBOX (MESSAGES DELETED SIZE)\r\n"),
        "* STATUS \"INBOX\" (MESSAGES 2 DELETED 0 SIZE 114)\r\nt OK STATUS completed\r\n"
    );
}

#[test]
fn search_answers_esearch_in_rev2() {
    let (_store, mut one, mut two) = rev1_and_rev2(3);
    assert_eq!(
        send(&mut one, "a SEARCH 1:2\r\n"),
        "* SEARCH 1 2\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut two, "a SEARCH 1:2\r\n"),
        "* ESEARCH (TAG \"a\") ALL 1:2\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut two, "b UID SEARCH ALL\r\n"),
        "* ESEARCH (TAG \"b\") UID ALL 1:3\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut one, "c SEARCH DELETED\r\n"),
        "* SEARCH\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut two, "c SEARCH DELETED\r\n"),
        "* ESEARCH (TAG \"c\")\r\nc OK SEARCH completed\r\n"
    );
    // RETURN options are as in rev1 sessions.
    assert_eq!(
        send(&mut two, "d SEARCH RETURN (COUNT) ALL\r\n"),
        "* ESEARCH (TAG \"d\") COUNT 3\r\nd OK SEARCH completed\r\n"
    );
}

#[test]
fn unsolicited_fetch_carries_uid_in_rev2() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut one = logged_in(&store);
    send(&mut one, "s SELECT INBOX\r\n");
    let mut two = rev2(&store);
    send(&mut two, "s SELECT INBOX\r\n");
    let mut other = logged_in(&store);
    send(&mut other, "s SELECT INBOX\r\n");
    send(&mut other, "f STORE 1 +FLAGS.SILENT (\\Flagged)\r\n");
    assert_eq!(
        send(&mut one, "n NOOP\r\n"),
        "* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\nn OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut two, "n NOOP\r\n"),
        "* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\nn OK NOOP completed\r\n"
    );
}

#[test]
fn mailbox_names_are_utf8_in_rev2_and_utf8_accept_sessions() {
    let store = MockStore::new();
    let mut one = logged_in(&store);
    let mut two = rev2(&store);
    let mut accept = logged_in(&store);
    send(&mut accept, "e ENABLE UTF8=ACCEPT\r\n");
    // imap-codec (feature ext_utf8) parses UTF-8 in quoted strings, which rev1
    // sessions keep taking from lax clients as before.
    assert_eq!(
        send(&mut two, "a CREATE \"Entwürfe\"\r\n"),
        "a OK CREATE completed\r\n"
    );
    // `&` is an ordinary character in UTF-8 names; rev1 writes it `&-`.
    assert_eq!(
        send(&mut accept, "b CREATE \"R&D/Ärger\"\r\n"),
        "b OK CREATE completed\r\n"
    );
    let list = |entw: &str, rd: &str, arger: &str| {
        format!(
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
             * LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"\r\n\
             * LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"\r\n\
             * LIST (\\HasNoChildren) \"/\" \"{entw}\"\r\n\
             * LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"\r\n\
             * LIST (\\Noselect \\HasChildren) \"/\" \"{rd}\"\r\n\
             * LIST (\\HasNoChildren) \"/\" \"{arger}\"\r\n\
             * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
             * LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"\r\n\
             l OK LIST completed\r\n"
        )
    };
    assert_eq!(
        send(&mut one, "l LIST \"\" \"*\"\r\n"),
        list("Entw&APw-rfe", "R&-D", "R&-D/&AMQ-rger")
    );
    let utf8_list = list("Entwürfe", "R&D", "R&D/Ärger");
    assert_eq!(send(&mut two, "l LIST \"\" \"*\"\r\n"), utf8_list);
    assert_eq!(send(&mut accept, "l LIST \"\" \"*\"\r\n"), utf8_list);
    // The same mailbox by either spelling, each in its own session.
    assert_eq!(
        send(&mut one, "t STATUS \"R&-D/&AMQ-rger\" (MESSAGES)\r\n"),
        "* STATUS \"R&-D/&AMQ-rger\" (MESSAGES 0)\r\nt OK STATUS completed\r\n"
    );
    assert_eq!(
        send(&mut two, "t STATUS \"R&D/Ärger\" (MESSAGES)\r\n"),
        "* STATUS \"R&D/Ärger\" (MESSAGES 0)\r\nt OK STATUS completed\r\n"
    );
    // A literal holding UTF-8 works too, and SELECT's LIST names it.
    let r = send(&mut two, "s SELECT {9+}\r\nEntwürfe\r\n");
    assert!(r.contains("* LIST () \"/\" \"Entwürfe\"\r\n"), "{r}");
    assert!(r.ends_with("s OK [READ-WRITE] SELECT completed\r\n"), "{r}");
    // UTF-8 in other quoted strings: a SEARCH for a UTF-8 subject.
    store.deliver("Entwürfe", "Subject: Grüße\r\n\r\nx\r\n", 0);
    assert_eq!(
        send(&mut two, "n NOOP\r\n"),
        "* 1 EXISTS\r\nn OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut two, "f SEARCH SUBJECT \"grüße\"\r\n"),
        "* ESEARCH (TAG \"f\") ALL 1\r\nf OK SEARCH completed\r\n"
    );
    // Invalid UTF-8 is refused, not stored.
    let out = two.receive(b"g CREATE \"bad\xff\"\r\n");
    assert_eq!(out.bytes, b"g BAD Invalid or unknown command\r\n");
    let out = two.receive(b"h CREATE {4+}\r\nbad\xff\r\n");
    assert_eq!(out.bytes, b"h BAD Invalid mailbox name\r\n");
}

#[test]
fn append_utf8_literal_needs_utf8_accept() {
    let store = MockStore::new();
    let message = "Subject: Grüße\r\n\r\nHallo\r\n";
    let cmd = format!("a APPEND INBOX UTF8 (~{{{}+}}\r\n{message})\r\n", message.len());
    let mut one = logged_in(&store);
    assert_eq!(
        send(&mut one, &cmd),
        "a BAD APPEND UTF8 needs ENABLE UTF8=ACCEPT\r\n"
    );
    let mut accept = logged_in(&store);
    send(&mut accept, "e ENABLE UTF8=ACCEPT\r\n");
    assert_eq!(
        send(&mut accept, &cmd),
        "a OK [APPENDUID 1001 1] APPEND completed\r\n"
    );
    // With flags and a date, into a UTF-8 name; the octets are stored as sent.
    send(&mut accept, "c CREATE \"Gesendet/Grüße\"\r\n");
    let cmd = format!(
        "b APPEND \"Gesendet/Grüße\" (\\Seen) \"02-Dec-2026 10:00:00 +0000\" UTF8 (~{{{}+}}\r\n{message})\r\n",
        message.len()
    );
    assert_eq!(
        send(&mut accept, &cmd),
        "b OK [APPENDUID 1007 1] APPEND completed\r\n"
    );
    send(&mut accept, "s SELECT \"Gesendet/Grüße\"\r\n");
    assert_eq!(
        send(&mut accept, "f FETCH 1 (FLAGS BODY.PEEK[])\r\n"),
        format!(
            "* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {{{}}}\r\n{message})\r\nf OK FETCH completed\r\n",
            message.len()
        )
    );
    // Malformed: no parenthesis.
    let bad = format!("d APPEND INBOX UTF8 ~{{{}+}}\r\n{message}\r\n", message.len());
    assert_eq!(send(&mut accept, &bad), "d BAD Invalid APPEND arguments\r\n");
}

#[test]
fn deleting_a_parent_that_is_only_a_name_says_haschildren() {
    let store = MockStore::new();
    let mut s = rev2(&store);
    send(&mut s, "a CREATE Projekte/2026\r\n");
    assert_eq!(
        send(&mut s, "b DELETE Projekte\r\n"),
        "b NO [HASCHILDREN] Only the mailboxes below this name exist; delete those\r\n"
    );
    assert_eq!(
        send(&mut s, "c DELETE Nirgends\r\n"),
        "c NO [NONEXISTENT] Mailbox does not exist\r\n"
    );
    assert_eq!(
        send(&mut s, "d DELETE Projekte/2026\r\n"),
        "d OK DELETE completed\r\n"
    );
}

#[test]
fn charsets_after_enable_utf8_accept() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut one = logged_in(&store);
    send(&mut one, "s SELECT INBOX\r\n");
    let mut accept = logged_in(&store);
    send(&mut accept, "e ENABLE UTF8=ACCEPT\r\n");
    send(&mut accept, "s SELECT INBOX\r\n");
    assert_eq!(
        send(&mut one, "a SEARCH CHARSET UTF-8 SUBJECT hello\r\n"),
        "* SEARCH 1\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut accept, "a SEARCH CHARSET UTF-8 SUBJECT hello\r\n"),
        "a BAD No CHARSET in SEARCH after ENABLE UTF8=ACCEPT\r\n"
    );
    assert_eq!(
        send(&mut accept, "b SEARCH SUBJECT hello\r\n"),
        "* SEARCH 1\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut one, "c SORT (SUBJECT) US-ASCII ALL\r\n"),
        "* SORT 1\r\nc OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut accept, "c SORT (SUBJECT) US-ASCII ALL\r\n"),
        "c BAD Only UTF-8 after ENABLE UTF8=ACCEPT\r\n"
    );
    assert_eq!(
        send(&mut accept, "d THREAD REFERENCES UTF-8 ALL\r\n"),
        "* THREAD (1)\r\nd OK THREAD completed\r\n"
    );
}

#[test]
fn new_old_and_recent_are_not_search_keys_in_rev2() {
    let (_store, mut one, mut two) = rev1_and_rev2(2);
    // rev1: the session claimed both as \Recent.
    assert_eq!(
        send(&mut one, "a SEARCH NEW\r\n"),
        "* SEARCH 1 2\r\na OK SEARCH completed\r\n"
    );
    for (command, reply) in [
        (
            "a SEARCH NEW\r\n",
            "a BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n",
        ),
        (
            "b UID SEARCH OR SEEN NOT (OLD)\r\n",
            "b BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n",
        ),
        (
            "c SORT (DATE) UTF-8 RECENT\r\n",
            "c BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n",
        ),
        (
            "d THREAD REFERENCES UTF-8 NEW\r\n",
            "d BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n",
        ),
    ] {
        assert_eq!(send(&mut two, command), reply, "{command}");
    }
    // A refused SAVE search empties `$` as any failed one does.
    send(&mut two, "e SEARCH RETURN (SAVE) ALL\r\n");
    assert_eq!(
        send(&mut two, "f SEARCH RETURN (SAVE) RECENT\r\n"),
        "f BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n"
    );
    assert_eq!(send(&mut two, "g FETCH $ UID\r\n"), "g OK FETCH completed\r\n");
    assert_eq!(
        send(&mut two, "h SEARCH UNSEEN\r\n"),
        "* ESEARCH (TAG \"h\") ALL 1:2\r\nh OK SEARCH completed\r\n"
    );
}

/// SMTPUTF8 mail: raw UTF-8 in addresses, display names, Subject, a group, Message-ID,
/// and an attachment's name, filename and description.
const INTERNATIONAL: &str = "From: Jörg Müller <jörg@bücher.example>\r\n\
To: Ann <ann@example.org>, \"Bob\" <bob@example.org>\r\n\
Cc: Team: Zoë <zoë@example.org>, carl@example.org;\r\n\
Subject: Grüße aus Köln\r\n\
Message-ID: <ü1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hallo\r\n\
--b\r\n\
Content-Type: application/pdf; name=\"Rechnung März.pdf\"\r\n\
Content-Disposition: attachment; filename=\"Rechnung März.pdf\"\r\n\
Content-Description: Rechnung für März\r\n\
\r\n\
%PDF\r\n\
--b--\r\n";

/// RFC 6855 §7: a session that has not enabled UTF8=ACCEPT (or IMAP4rev2) is sent no
/// raw UTF-8 header data; ENVELOPE, BODYSTRUCTURE and header sections are downgraded as
/// RFC 6857 describes (`message/downgrade.rs`). A session that enabled it gets them as
/// stored.
#[test]
fn utf8_header_data_is_downgraded_for_sessions_without_utf8() {
    let store = MockStore::new();
    store.deliver("INBOX", INTERNATIONAL, 0);
    let mut one = logged_in(&store);
    send(&mut one, "s SELECT INBOX\r\n");
    let mut accept = logged_in(&store);
    send(&mut accept, "e ENABLE UTF8=ACCEPT\r\n");
    send(&mut accept, "s SELECT INBOX\r\n");

    let fetch = "f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (FROM CC SUBJECT MESSAGE-ID)] BODY.PEEK[2.MIME])\r\n";
    let ascii = send(&mut one, fetch);
    assert!(ascii.is_ascii(), "{ascii}");
    assert_eq!(
        ascii,
        "* 1 FETCH (ENVELOPE (NIL \"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\" \
         ((NIL NIL \"=?UTF-8?B?SsO2cmcgTcO8bGxlciA8asO2cmdAYsO8Y2hlci5leGFtcGxlPg==?=\" NIL)(NIL NIL NIL NIL)) \
         ((NIL NIL \"=?UTF-8?B?SsO2cmcgTcO8bGxlciA8asO2cmdAYsO8Y2hlci5leGFtcGxlPg==?=\" NIL)(NIL NIL NIL NIL)) \
         ((NIL NIL \"=?UTF-8?B?SsO2cmcgTcO8bGxlciA8asO2cmdAYsO8Y2hlci5leGFtcGxlPg==?=\" NIL)(NIL NIL NIL NIL)) \
         ((\"Ann\" NIL \"ann\" \"example.org\")(\"Bob\" NIL \"bob\" \"example.org\")) \
         ((NIL NIL \"Team\" NIL)(NIL NIL \"carl\" \"example.org\")(NIL NIL NIL NIL)) NIL NIL NIL) \
         BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)\
         (\"application\" \"pdf\" (\"name*\" \"utf-8''Rechnung%20M%C3%A4rz.pdf\") NIL \
         \"=?UTF-8?B?UmVjaG51bmcgZsO8ciBNw6Ryeg==?=\" \"7bit\" 4 NIL \
         (\"attachment\" (\"filename*\" \"utf-8''Rechnung%20M%C3%A4rz.pdf\")) NIL NIL) \
         \"mixed\" (\"boundary\" \"b\") NIL NIL NIL) \
         BODY[HEADER.FIELDS (FROM CC SUBJECT MESSAGE-ID)] {153}\r\n\
         From: =?UTF-8?B?SsO2cmcgTcO8bGxlciA8asO2cmdAYsO8Y2hlci5leGFtcGxlPg==?= :;\r\n\
         Cc: Team: carl@example.org;\r\n\
         Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n\r\n \
         BODY[2.MIME] {215}\r\n\
         Content-Type: application/pdf;\r\n name*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n\
         Content-Disposition: attachment;\r\n filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n\
         Content-Description: =?UTF-8?B?UmVjaG51bmcgZsO8ciBNw6Ryeg==?=\r\n\r\n)\r\n\
         f OK FETCH completed\r\n"
    );
    let raw = send(&mut accept, fetch);
    assert_eq!(
        raw,
        "* 1 FETCH (ENVELOPE (NIL {17}\r\nGrüße aus Köln \
         (({13}\r\nJörg Müller NIL {5}\r\njörg {15}\r\nbücher.example)) \
         (({13}\r\nJörg Müller NIL {5}\r\njörg {15}\r\nbücher.example)) \
         (({13}\r\nJörg Müller NIL {5}\r\njörg {15}\r\nbücher.example)) \
         ((\"Ann\" NIL \"ann\" \"example.org\")(\"Bob\" NIL \"bob\" \"example.org\")) \
         ((NIL NIL \"Team\" NIL)({4}\r\nZoë NIL {4}\r\nzoë \"example.org\")(NIL NIL \"carl\" \"example.org\")\
         (NIL NIL NIL NIL)) NIL NIL {17}\r\n<ü1@example.org>) \
         BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)\
         (\"application\" \"pdf\" (\"name\" {18}\r\nRechnung März.pdf) NIL {19}\r\nRechnung für März \
         \"7bit\" 4 NIL (\"attachment\" (\"filename\" {18}\r\nRechnung März.pdf)) NIL NIL) \
         \"mixed\" (\"boundary\" \"b\") NIL NIL NIL) \
         BODY[HEADER.FIELDS (FROM CC SUBJECT MESSAGE-ID)] {160}\r\n\
         From: Jörg Müller <jörg@bücher.example>\r\n\
         Cc: Team: Zoë <zoë@example.org>, carl@example.org;\r\n\
         Subject: Grüße aus Köln\r\nMessage-ID: <ü1@example.org>\r\n\r\n \
         BODY[2.MIME] {166}\r\n\
         Content-Type: application/pdf; name=\"Rechnung März.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"Rechnung März.pdf\"\r\n\
         Content-Description: Rechnung für März\r\n\r\n)\r\n\
         f OK FETCH completed\r\n"
    );
    // The message itself is the stored octets for both (its size is RFC822.SIZE).
    assert_eq!(
        send(&mut one, "g FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n"),
        format!(
            "* 1 FETCH (RFC822.SIZE {0} BODY[] {{{0}}}\r\n{INTERNATIONAL})\r\ng OK FETCH completed\r\n",
            INTERNATIONAL.len()
        )
    );
    // ASCII headers are never rewritten.
    store.deliver("INBOX", MSG, 0);
    send(&mut one, "n NOOP\r\n");
    assert_eq!(
        send(&mut one, "h FETCH 2 (BODY.PEEK[HEADER])\r\n"),
        "* 2 FETCH (BODY[HEADER] {47}\r\nFrom: Ann <ann@example.org>\r\nSubject: hello\r\n\r\n)\r\n\
         h OK FETCH completed\r\n"
    );
}
