//! QRESYNC (RFC 7162 §3.2) byte-exact: ENABLE, SELECT (QRESYNC ...), UID FETCH
//! (CHANGEDSINCE .. VANISHED), VANISHED instead of EXPUNGE, and the HIGHESTMODSEQ a
//! client is told while an expunge is held back.

use super::tests::{logged_in, selected, send, MSG};
use crate::imap::ImapBackend;
use crate::testing::imap::{account, MockStore};

const SELECT_HEAD: &str = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
     * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n";

/// Four messages (UIDs 1-4, modseqs 2-5); then another session sets \Seen on UID 2
/// (modseq 6), \Deleted on 3 (7) and expunges it (8).
fn mailbox_changed_since_modseq_5() -> std::sync::Arc<MockStore> {
    let store = MockStore::new();
    for _ in 0..4 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut other = selected(&store);
    send(&mut other, "1 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    send(&mut other, "2 STORE 3 +FLAGS.SILENT (\\Deleted)\r\n");
    assert_eq!(
        send(&mut other, "3 EXPUNGE\r\n"),
        "* 3 EXPUNGE\r\n3 OK EXPUNGE completed\r\n"
    );
    store
}

#[test]
fn select_with_qresync_reports_what_vanished_and_changed_since_the_clients_modseq() {
    let store = mailbox_changed_since_modseq_5();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "e ENABLE QRESYNC\r\n"),
        "* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "s SELECT INBOX (QRESYNC (1001 5 1:4))\r\n"),
        format!(
            "{SELECT_HEAD}\
             * 3 EXISTS\r\n\
             * 0 RECENT\r\n\
             * OK [UNSEEN 1] First unseen\r\n\
             * OK [UIDVALIDITY 1001] UIDs valid\r\n\
             * OK [UIDNEXT 5] Predicted next UID\r\n\
             * OK [HIGHESTMODSEQ 8] Highest\r\n\
             * VANISHED (EARLIER) 3\r\n\
             * 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (6))\r\n\
             s OK [READ-WRITE] SELECT completed\r\n"
        )
    );
    // The same from UID FETCH; with QRESYNC every FETCH carries UID.
    assert_eq!(
        send(&mut s, "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"),
        "* VANISHED (EARLIER) 3\r\n\
         * 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (6))\r\n\
         f OK UID FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "g UID FETCH 4 (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"),
        "g OK UID FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "h FETCH 1 (FLAGS)\r\n"),
        "* 1 FETCH (UID 1 FLAGS ())\r\nh OK FETCH completed\r\n"
    );
    // UIDs the client does not list as known are not reported; a reselect is CLOSED.
    assert_eq!(
        send(&mut s, "t EXAMINE INBOX (QRESYNC (1001 5 1:2,4))\r\n"),
        format!(
            "* OK [CLOSED] Previous mailbox closed\r\n\
             * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS ()] Read-only mailbox\r\n\
             * 3 EXISTS\r\n\
             * 0 RECENT\r\n\
             * OK [UNSEEN 1] First unseen\r\n\
             * OK [UIDVALIDITY 1001] UIDs valid\r\n\
             * OK [UIDNEXT 5] Predicted next UID\r\n\
             * OK [HIGHESTMODSEQ 8] Highest\r\n\
             * 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (6))\r\n\
             t OK [READ-ONLY] EXAMINE completed\r\n"
        )
    );
    // Another UIDVALIDITY: the cache is worthless and the parameter ignored.
    let r = send(&mut s, "u SELECT INBOX (QRESYNC (999 5))\r\n");
    assert!(
        r.ends_with("* OK [HIGHESTMODSEQ 8] Highest\r\nu OK [READ-WRITE] SELECT completed\r\n"),
        "{r}"
    );
}

#[test]
fn qresync_is_refused_until_enabled_and_vanished_only_with_uid_fetch_changedsince() {
    let store = mailbox_changed_since_modseq_5();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a SELECT INBOX (QRESYNC (1001 5))\r\n"),
        "a BAD QRESYNC must be enabled first\r\n"
    );
    send(&mut s, "b SELECT INBOX (CONDSTORE)\r\n");
    assert_eq!(
        send(&mut s, "c UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"),
        "c BAD VANISHED needs ENABLE QRESYNC\r\n"
    );
    // CONDSTORE on already: ENABLED names only what this command turned on.
    assert_eq!(
        send(&mut s, "d ENABLE CONDSTORE QRESYNC\r\n"),
        "* ENABLED QRESYNC\r\nd OK ENABLE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"),
        "e BAD VANISHED needs UID FETCH and CHANGEDSINCE\r\n"
    );
    assert_eq!(
        send(&mut s, "f UID FETCH 1:* (FLAGS) (VANISHED)\r\n"),
        "f BAD VANISHED needs UID FETCH and CHANGEDSINCE\r\n"
    );
    assert_eq!(
        send(&mut s, "g ENABLE QRESYNC\r\n"),
        "* ENABLED\r\ng OK ENABLE completed\r\n"
    );
}

#[test]
fn with_qresync_expunges_are_vanished_and_a_held_back_one_lowers_highestmodseq() {
    let store = MockStore::new();
    for _ in 0..4 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut a = logged_in(&store);
    send(&mut a, "a0 ENABLE QRESYNC\r\n");
    let r = send(&mut a, "a1 SELECT INBOX\r\n");
    assert!(r.contains("* OK [HIGHESTMODSEQ 5] Highest\r\n"), "{r}");
    let mut b = selected(&store);

    send(&mut a, "a2 STORE 2,3 +FLAGS.SILENT (\\Deleted)\r\n");
    // Its own expunge: one VANISHED of the UIDs, not EXPUNGE per sequence number.
    assert_eq!(
        send(&mut a, "a3 EXPUNGE\r\n"),
        "* VANISHED 2:3\r\na3 OK EXPUNGE completed\r\n"
    );
    // A session without QRESYNC still gets EXPUNGE.
    assert_eq!(
        send(&mut b, "b1 NOOP\r\n"),
        "* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nb1 OK NOOP completed\r\n"
    );
    send(&mut b, "b2 UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
    send(&mut b, "b3 UID EXPUNGE 1\r\n");
    send(&mut b, "b4 UID STORE 4 +FLAGS.SILENT (\\Flagged)\r\n");
    assert_eq!(store.mailbox(&account(), "INBOX").unwrap().highest_modseq, 12);
    // FETCH by sequence number holds the expunge of UID 1 (modseq 11) back; the flag
    // change of UID 4 (modseq 12) goes out, so the client is told HIGHESTMODSEQ 10: a
    // client cut off now resynchronises from before the expunge it has not seen.
    assert_eq!(
        send(&mut a, "a4 FETCH 2 (FLAGS)\r\n"),
        "* 2 FETCH (UID 4 FLAGS (\\Recent))\r\n\
         * 2 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (12))\r\n\
         * OK [HIGHESTMODSEQ 10] Highest\r\n\
         a4 OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut a, "a5 NOOP\r\n"),
        "* VANISHED 1\r\na5 OK NOOP completed\r\n"
    );
    // A MOVE's expunge is VANISHED too.
    assert_eq!(
        send(&mut a, "a6 MOVE 1 Trash\r\n"),
        "* OK [COPYUID 1004 4 1] Moved\r\n* VANISHED 4\r\na6 OK MOVE completed\r\n"
    );
}
