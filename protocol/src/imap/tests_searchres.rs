//! SEARCHRES (RFC 5182) byte-exact: `SEARCH RETURN (SAVE)` and `$` in FETCH, STORE,
//! COPY, MOVE, SEARCH and their UID forms, across expunges and reselection.

use std::sync::Arc;

use super::tests::{inbox_of, info, send, MSG};
use super::{ImapLimits, ImapSession};
use crate::testing::imap::{MockAuth, MockStore, PASSWORD, USER};

#[test]
fn saved_result_feeds_fetch_store_search_and_copy() {
    let (_store, mut s) = inbox_of(4);
    send(&mut s, "0 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    // SAVE alone answers nothing but the OK.
    assert_eq!(
        send(&mut s, "a UID SEARCH RETURN (SAVE) UNSEEN\r\n"),
        "a OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b FETCH $ (UID)\r\n"),
        "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)\r\nb OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c UID STORE $ +FLAGS.SILENT (\\Flagged)\r\n"),
        "c OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SEARCH FLAGGED NOT $\r\n"),
        "* SEARCH\r\nd OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e UID SEARCH UID $\r\n"),
        "* SEARCH 1 3 4\r\ne OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f SEARCH OR UID $ SEEN\r\n"),
        "* SEARCH 1 2 3 4\r\nf OK SEARCH completed\r\n"
    );
    // MIN and MAX with SAVE keep only those; other returns still come.
    assert_eq!(
        send(&mut s, "g SEARCH RETURN (SAVE MIN MAX) UNSEEN\r\n"),
        "* ESEARCH (TAG \"g\") MIN 1 MAX 4\r\ng OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "h UID COPY $ INBOX\r\n"),
        "* 6 EXISTS\r\n* 6 RECENT\r\nh OK [COPYUID 1001 1,4 5:6] COPY completed\r\n"
    );
}

#[test]
fn saved_result_follows_expunges_and_ends_with_the_selection() {
    let (_store, mut s) = inbox_of(3);
    send(&mut s, "a SEARCH RETURN (SAVE) 2:3\r\n");
    send(&mut s, "b STORE 2 +FLAGS.SILENT (\\Deleted)\r\n");
    send(&mut s, "c EXPUNGE\r\n");
    // UID 3 is now message 2.
    assert_eq!(
        send(&mut s, "d FETCH $ (UID)\r\n"),
        "* 2 FETCH (UID 3)\r\nd OK FETCH completed\r\n"
    );
    // Nothing matched: `$` names no message, and commands on it succeed quietly.
    send(&mut s, "e SEARCH RETURN (SAVE) DELETED\r\n");
    assert_eq!(send(&mut s, "f FETCH $ (UID)\r\n"), "f OK FETCH completed\r\n");
    assert_eq!(send(&mut s, "g UID MOVE $ INBOX\r\n"), "g OK MOVE completed\r\n");
    assert_eq!(
        send(&mut s, "h SEARCH $\r\n"),
        "* SEARCH\r\nh OK SEARCH completed\r\n"
    );
    // A failed SAVE empties it; so does a new selection.
    send(&mut s, "i SEARCH RETURN (SAVE) ALL\r\n");
    assert_eq!(
        send(&mut s, "j SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n"),
        "j NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    );
    assert_eq!(
        send(&mut s, "k SEARCH $\r\n"),
        "* SEARCH\r\nk OK SEARCH completed\r\n"
    );
    send(&mut s, "l SEARCH RETURN (SAVE) ALL\r\n");
    send(&mut s, "m SELECT INBOX\r\n");
    assert_eq!(send(&mut s, "n FETCH $ (UID)\r\n"), "n OK FETCH completed\r\n");
    // `$` inside a quoted string is left alone; SAVE with PARTIAL is refused.
    assert_eq!(
        send(&mut s, "o SEARCH SUBJECT \"$\"\r\n"),
        "* SEARCH\r\no OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "p SEARCH RETURN (SAVE PARTIAL 1:2) ALL\r\n"),
        "p BAD SAVE with PARTIAL is not supported\r\n"
    );
}

/// RFC 5182 §2.1: a SEARCH with SAVE that fails, BAD included, leaves `$` empty, however
/// it fails: a refused RETURN option, a bad range, bad criteria, a bad charset.
#[test]
fn a_refused_save_search_empties_the_saved_result() {
    let (_store, mut s) = inbox_of(3);
    for (command, reply) in [
        (
            "b SEARCH RETURN (SAVE PARTIAL 1:2) ALL\r\n",
            "b BAD SAVE with PARTIAL is not supported\r\n",
        ),
        (
            "b SEARCH RETURN (SAVE FROB) ALL\r\n",
            "b BAD Unsupported SEARCH RETURN option\r\n",
        ),
        (
            "b SEARCH RETURN (PARTIAL 0:1 SAVE) ALL\r\n",
            "b BAD Invalid PARTIAL range\r\n",
        ),
        (
            "b UID SEARCH RETURN (SAVE) FROBNICATE 7\r\n",
            "b BAD Invalid SEARCH criteria\r\n",
        ),
        (
            "b SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n",
            "b NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n",
        ),
    ] {
        send(&mut s, "a SEARCH RETURN (SAVE) 2:3\r\n");
        assert_eq!(
            send(&mut s, "c FETCH $ (UID)\r\n"),
            "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nc OK FETCH completed\r\n"
        );
        assert_eq!(send(&mut s, command), reply, "{command}");
        assert_eq!(
            send(&mut s, "d FETCH $ (UID)\r\n"),
            "d OK FETCH completed\r\n",
            "after {command}"
        );
    }
    // A refused SEARCH without SAVE leaves it alone.
    send(&mut s, "a SEARCH RETURN (SAVE) 2:3\r\n");
    assert_eq!(
        send(&mut s, "e SEARCH RETURN (FROB) ALL\r\n"),
        "e BAD Unsupported SEARCH RETURN option\r\n"
    );
    assert_eq!(
        send(&mut s, "f UID FETCH $ (UID)\r\n"),
        "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nf OK UID FETCH completed\r\n"
    );
}

/// A `$` that would come to a set longer than `max_saved_set` is refused with
/// `NO [LIMIT]` before the command is parsed: nothing is fetched or changed, a SEARCH
/// that would have saved leaves `$` empty, and the session goes on.
#[test]
fn a_saved_set_longer_than_the_limit_answers_no_limit() {
    let store = MockStore::new();
    for _ in 0..8 {
        store.deliver("INBOX", MSG, 0);
    }
    // "1,3,5,7" is 7 octets: allowed; "1,3,5,7:8" is 9: not.
    let limits = ImapLimits {
        max_saved_set: 7,
        ..ImapLimits::default()
    };
    let mut s = ImapSession::new(info(true, false), Arc::new(MockAuth), store.clone(), limits);
    s.greeting();
    send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    send(&mut s, "b SELECT INBOX\r\n");
    send(&mut s, "c SEARCH RETURN (SAVE) 1,3,5,7\r\n");
    assert_eq!(
        send(&mut s, "d FETCH $ (UID)\r\n"),
        "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\n* 5 FETCH (UID 5)\r\n* 7 FETCH (UID 7)\r\n\
         d OK FETCH completed\r\n"
    );
    send(&mut s, "e SEARCH RETURN (SAVE) 1,3,5,7:8\r\n");
    for (command, tag) in [
        ("f FETCH $ (UID)\r\n", "f"),
        ("g UID STORE $ +FLAGS (\\Seen)\r\n", "g"),
        ("h UID COPY $ INBOX\r\n", "h"),
        ("i SEARCH UID $\r\n", "i"),
    ] {
        assert_eq!(
            send(&mut s, command),
            format!("{tag} NO [LIMIT] Saved search result too large\r\n"),
            "{command}"
        );
    }
    // The refused STORE and COPY changed nothing.
    assert_eq!(
        send(&mut s, "j FETCH 8 (FLAGS)\r\n"),
        "* 8 FETCH (FLAGS (\\Recent))\r\nj OK FETCH completed\r\n"
    );
    assert_eq!(send(&mut s, "k NOOP\r\n"), "k OK NOOP completed\r\n");
    // A refused SEARCH with SAVE empties `$` (RFC 5182 §2.1).
    assert_eq!(
        send(&mut s, "l SEARCH RETURN (SAVE) UID $\r\n"),
        "l NO [LIMIT] Saved search result too large\r\n"
    );
    assert_eq!(send(&mut s, "m FETCH $ (UID)\r\n"), "m OK FETCH completed\r\n");

    // The default limit takes the same set.
    let (_store, mut wide) = inbox_of(8);
    send(&mut wide, "e SEARCH RETURN (SAVE) 1,3,5,7:8\r\n");
    assert_eq!(
        send(&mut wide, "f UID FETCH $ (UID)\r\n"),
        "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\n* 5 FETCH (UID 5)\r\n* 7 FETCH (UID 7)\r\n\
         * 8 FETCH (UID 8)\r\nf OK UID FETCH completed\r\n"
    );
}
