//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4) byte-exact: PARTIAL pages, UPDATE
//! contexts reporting REMOVEFROM and ADDTO (with positions for SORT) as other sessions
//! change the mailbox, NOUPDATE, tag reuse and CANCELUPDATE.

use super::tests::{inbox_of, selected, send, MSG};
use crate::testing::imap::MockStore;

#[test]
fn partial_pages_of_a_uid_search() {
    let (_store, mut s) = inbox_of(4);
    send(&mut s, "0 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    assert_eq!(
        send(&mut s, "a UID SEARCH RETURN (PARTIAL 1:2) UNSEEN\r\n"),
        "* ESEARCH (TAG \"a\") UID PARTIAL (1:2 1,3)\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b UID SEARCH RETURN (PARTIAL -1:-1) UNSEEN\r\n"),
        "* ESEARCH (TAG \"b\") UID PARTIAL (-1:-1 4)\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SEARCH RETURN (COUNT PARTIAL 5:9) UNSEEN\r\n"),
        "* ESEARCH (TAG \"c\") COUNT 3 PARTIAL (5:9 NIL)\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d UID SEARCH RETURN (PARTIAL 0:2) ALL\r\n"),
        "d BAD Invalid PARTIAL range\r\n"
    );
}

#[test]
fn update_contexts_report_how_the_result_changes_until_cancelled() {
    let (store, mut s) = inbox_of(4);
    let mut other = selected(&store);
    send(&mut s, "0 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    assert_eq!(
        send(&mut s, "d UID SEARCH RETURN (UPDATE CONTEXT) UNSEEN\r\n"),
        "* ESEARCH (TAG \"d\") UID ALL 1,3:4\r\nd OK SEARCH completed\r\n"
    );
    send(&mut other, "1 STORE 1 +FLAGS.SILENT (\\Seen)\r\n");
    store.deliver("INBOX", MSG, 0);
    assert_eq!(
        send(&mut s, "e NOOP\r\n"),
        "* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n\
         * 5 EXISTS\r\n\
         * 5 RECENT\r\n\
         * ESEARCH (TAG \"d\") UID REMOVEFROM (0 1) ADDTO (0 5)\r\n\
         e OK NOOP completed\r\n"
    );
    // Nothing changed: nothing to report.
    assert_eq!(send(&mut s, "e2 NOOP\r\n"), "e2 OK NOOP completed\r\n");
    assert_eq!(
        send(&mut s, "d UID SEARCH RETURN (UPDATE) ALL\r\n"),
        "d BAD Tag reuse\r\n"
    );
    assert_eq!(
        send(&mut s, "f SEARCH RETURN (UPDATE) ALL\r\n"),
        "* NO [NOUPDATE \"f\"] UPDATE is offered for UID SEARCH and UID SORT only\r\n\
         * ESEARCH (TAG \"f\") ALL 1:5\r\n\
         f OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f2 UID SEARCH RETURN (UPDATE COUNT) BODY there\r\n"),
        "* NO [NOUPDATE \"f2\"] UPDATE is not offered for searches of message content\r\n\
         * ESEARCH (TAG \"f2\") UID COUNT 5\r\n\
         f2 OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "g UID SEARCH RETURN (UPDATE COUNT) ALL\r\n"),
        "* ESEARCH (TAG \"g\") UID COUNT 5\r\ng OK SEARCH completed\r\n"
    );
    // An expunge by another session leaves the ALL context; UNSEEN loses nothing.
    send(&mut other, "2 UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n");
    send(&mut other, "3 UID EXPUNGE 3\r\n");
    assert_eq!(
        send(&mut s, "h CANCELUPDATE \"d\"\r\n"),
        "* 3 EXPUNGE\r\n\
         * ESEARCH (TAG \"g\") UID REMOVEFROM (0 3)\r\n\
         h OK CANCELUPDATE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "i CANCELUPDATE \"d\"\r\n"),
        "i BAD No such UPDATE context\r\n"
    );
    // Deselecting ends every context.
    send(&mut s, "j UNSELECT\r\n");
    send(&mut s, "k SELECT INBOX\r\n");
    assert_eq!(
        send(&mut s, "l CANCELUPDATE \"g\"\r\n"),
        "l BAD No such UPDATE context\r\n"
    );
}

#[test]
fn sort_contexts_report_positions_in_the_sort_order() {
    let store = MockStore::new();
    let body = |n: usize| format!("Subject: s\r\n\r\n{}\r\n", "x".repeat(n));
    for n in [30, 50, 40] {
        store.deliver("INBOX", &body(n), 0);
    }
    let mut s = selected(&store);
    let mut other = selected(&store);
    assert_eq!(
        send(&mut s, "a UID SORT RETURN (UPDATE ALL) (SIZE) UTF-8 ALL\r\n"),
        "* ESEARCH (TAG \"a\") UID ALL 1,3,2\r\na OK UID SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b UID SORT RETURN (PARTIAL 2:3) (SIZE) UTF-8 ALL\r\n"),
        "* ESEARCH (TAG \"b\") UID PARTIAL (2:3 3,2)\r\nb OK UID SORT completed\r\n"
    );
    // UID 3 (second by size) goes; UID 4 comes in second by size (\Recent went to
    // the other session, which saw it first).
    store.deliver("INBOX", &body(45), 0);
    send(&mut other, "1 UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n");
    send(&mut other, "2 UID EXPUNGE 3\r\n");
    assert_eq!(
        send(&mut s, "c NOOP\r\n"),
        "* 3 EXPUNGE\r\n\
         * 3 EXISTS\r\n\
         * 2 RECENT\r\n\
         * ESEARCH (TAG \"a\") UID REMOVEFROM (2 3) ADDTO (2 4)\r\n\
         c OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SORT RETURN (UPDATE) (SIZE) UTF-8 ALL\r\n"),
        "* NO [NOUPDATE \"d\"] UPDATE is offered for UID SEARCH and UID SORT only\r\n\
         * ESEARCH (TAG \"d\") ALL 1,3,2\r\n\
         d OK SORT completed\r\n"
    );
}
