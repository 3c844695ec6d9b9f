//! SORT, SORT=DISPLAY, ESORT and THREAD against the in-memory store, byte-exact.

use std::sync::Arc;

use super::tests::{logged_in, selected, send};
use super::ImapSession;
use crate::testing::imap::MockStore;

/// APPENDs `text` to INBOX with the internal date `date`.
fn append_at(s: &mut ImapSession, date: &str, text: &str) {
    let r = send(
        s,
        &format!("p APPEND INBOX \"{date}\" {{{}+}}\r\n{text}\r\n", text.len()),
    );
    assert!(r.starts_with("p OK [APPENDUID "), "{r}");
}

/// Two conversations, a lone message with a reply whose parent is not in the mailbox,
/// and two replies to a message that is not there either.
fn conversation(store: &MockStore) {
    let messages = [
        ("Lunch", "<1@x>", "", "10:00", "Zed <zed@x>"),
        ("Re: Lunch", "<2@x>", "<1@x>", "11:00", "amy@x"),
        ("Budget", "<3@x>", "", "09:00", "\"Carol\" <carol@x>"),
        (
            "Re: Lunch",
            "<4@x>",
            "<1@x>",
            "12:00",
            "=?utf-8?q?=C3=81da?= <ada@x>",
        ),
        ("Re: Re: Lunch", "<5@x>", "<1@x> <2@x>", "13:00", "bob@x"),
        ("Re: Budget", "<6@x>", "<missing@x>", "14:00", "Carol <carol@x>"),
        ("Re: Holiday", "<7@x>", "<gone@x>", "08:00", "yan@x"),
        (
            "RE: [team] Holiday (fwd)",
            "<8@x>",
            "<gone@x>",
            "15:00",
            "Xavier <x@x>",
        ),
    ];
    for (subject, id, refs, time, from) in messages {
        let refs = if refs.is_empty() {
            String::new()
        } else {
            format!("References: {refs}\r\n")
        };
        store.deliver(
            "INBOX",
            &format!(
                "From: {from}\r\nSubject: {subject}\r\nMessage-ID: {id}\r\n{refs}\
                 Date: Mon, 1 Jan 2024 {time}:00 +0000\r\n\r\nbody\r\n"
            ),
            0,
        );
    }
}

#[test]
fn sort_by_date_subject_and_from_with_ties_in_mailbox_order() {
    let store = MockStore::new();
    conversation(&store);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a SORT (DATE) UTF-8 ALL\r\n"),
        "* SORT 7 3 1 2 4 5 6 8\r\na OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b SORT (SUBJECT) US-ASCII ALL\r\n"),
        "* SORT 3 6 7 8 1 2 4 5\r\nb OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SORT (REVERSE SUBJECT REVERSE DATE) UTF-8 ALL\r\n"),
        "* SORT 5 4 2 1 8 7 6 3\r\nc OK SORT completed\r\n"
    );
    // FROM sorts by the local part; DISPLAYFROM by the decoded name, else the address,
    // as i;unicode-casemap compares them (Á is A and a combining accent, after AMY).
    assert_eq!(
        send(&mut s, "d SORT (FROM) UTF-8 ALL\r\n"),
        "* SORT 4 2 5 3 6 8 7 1\r\nd OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e SORT (DISPLAYFROM) UTF-8 ALL\r\n"),
        "* SORT 2 4 5 3 6 8 7 1\r\ne OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f UID SORT (DATE) UTF-8 SUBJECT lunch NOT 5\r\n"),
        "* SORT 1 2 4\r\nf OK UID SORT completed\r\n"
    );
    // Everything has the same INTERNALDATE: mailbox order.
    assert_eq!(
        send(&mut s, "g SORT (ARRIVAL) UTF-8 ALL\r\n"),
        "* SORT 1 2 3 4 5 6 7 8\r\ng OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "h SORT (DATE) KOI8-R ALL\r\n"),
        "h NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    );
    assert_eq!(
        send(&mut s, "i SORT (DATE) UTF-8 SUBJECT nothing\r\n"),
        "* SORT\r\ni OK SORT completed\r\n"
    );
}

#[test]
fn sort_falls_back_to_internaldate_and_sorts_display_names() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    for (date, text) in [
        (
            "02-Jan-2024 10:00:00 +0000",
            "From: b@x\r\nTo: \"Quinn\" <zz@x>\r\nSubject: two\r\n\r\n..\r\n",
        ),
        (
            "01-Jan-2024 10:00:00 +0000",
            "From: a@x\r\nTo: pat@x\r\nCc: m@x\r\nSubject: one\r\n\r\n.\r\n",
        ),
        (
            "03-Jan-2024 10:00:00 +0000",
            "From: c@x\r\nTo: ann@x\r\nDate: Sun, 31 Dec 2023 10:00:00 +0000\r\n\r\n...\r\n",
        ),
    ] {
        append_at(&mut s, date, text);
    }
    send(&mut s, "s SELECT INBOX\r\n");
    assert_eq!(
        send(&mut s, "a SORT (DATE) UTF-8 ALL\r\n"),
        "* SORT 3 2 1\r\na OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b SORT (ARRIVAL) UTF-8 ALL\r\n"),
        "* SORT 2 1 3\r\nb OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SORT (REVERSE SIZE) UTF-8 ALL\r\n"),
        "* SORT 3 1 2\r\nc OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SORT (TO) UTF-8 ALL\r\n"),
        "* SORT 3 2 1\r\nd OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e SORT (DISPLAYTO) UTF-8 ALL\r\n"),
        "* SORT 3 2 1\r\ne OK SORT completed\r\n"
    );
    // Messages without the field sort first (the empty string).
    assert_eq!(
        send(&mut s, "f SORT (CC) UTF-8 ALL\r\n"),
        "* SORT 1 3 2\r\nf OK SORT completed\r\n"
    );
}

#[test]
fn esort_returns_min_max_count_and_all_in_sort_order() {
    let store = MockStore::new();
    conversation(&store);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "e SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL\r\n"),
        "* ESEARCH (TAG \"e\") MIN 7 MAX 8 COUNT 8 ALL 7,3,1:2,4:6,8\r\ne OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f UID SORT RETURN () (REVERSE DATE) UTF-8 1:3\r\n"),
        "* ESEARCH (TAG \"f\") UID ALL 2,1,3\r\nf OK UID SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "g SORT RETURN (COUNT) (DATE) UTF-8 SUBJECT nothing\r\n"),
        "* ESEARCH (TAG \"g\") COUNT 0\r\ng OK SORT completed\r\n"
    );
}

#[test]
fn thread_by_references_and_by_ordered_subject() {
    let store = MockStore::new();
    conversation(&store);
    let mut s = selected(&store);
    // 7 and 8 answer a message that is not there: a dummy holds them. 6 answers a
    // message that is not there either, but its subject joins it to 3.
    assert_eq!(
        send(&mut s, "a THREAD REFERENCES UTF-8 ALL\r\n"),
        "* THREAD ((7)(8))(3 6)(1 (2 5)(4))\r\na OK THREAD completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b THREAD ORDEREDSUBJECT UTF-8 ALL\r\n"),
        "* THREAD (7 8)(3 6)(1 (2)(4)(5))\r\nb OK THREAD completed\r\n"
    );
    // Only the messages the search selects are threaded; 5's parent 2 is left out.
    assert_eq!(
        send(&mut s, "c UID THREAD REFERENCES UTF-8 NOT 2\r\n"),
        "* THREAD ((7)(8))(3 6)(1 (4)(5))\r\nc OK UID THREAD completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d THREAD REFERENCES UTF-8 SUBJECT nothing\r\n"),
        "* THREAD\r\nd OK THREAD completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e THREAD FANCY UTF-8 ALL\r\n"),
        "e BAD Unsupported threading algorithm\r\n"
    );
}

#[test]
fn references_that_loop_or_repeat_ids_do_not_hang_or_lose_messages() {
    let store = MockStore::new();
    // 1 says 2 is its parent, 2 says 1 is: the second link would close a loop, so 2
    // stays the root.
    store.deliver(
        "INBOX",
        "Message-ID: <a@x>\r\nReferences: <b@x>\r\nSubject: x\r\n\r\n.\r\n",
        0,
    );
    store.deliver(
        "INBOX",
        "Message-ID: <b@x>\r\nReferences: <a@x>\r\nSubject: y\r\n\r\n.\r\n",
        0,
    );
    // The same Message-ID twice, and a message that names itself.
    store.deliver("INBOX", "Message-ID: <c@x>\r\nSubject: z\r\n\r\n.\r\n", 0);
    store.deliver("INBOX", "Message-ID: <c@x>\r\nSubject: w\r\n\r\n.\r\n", 0);
    store.deliver(
        "INBOX",
        "Message-ID: <d@x>\r\nReferences: <d@x> <d@x>\r\nSubject: v\r\n\r\n.\r\n",
        0,
    );
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a THREAD REFERENCES UTF-8 ALL\r\n"),
        "* THREAD (2 1)(3)(4)(5)\r\na OK THREAD completed\r\n"
    );
}

#[test]
fn sort_and_thread_need_a_selected_mailbox_and_are_advertised() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a SORT (DATE) UTF-8 ALL\r\n"),
        "a BAD No mailbox selected\r\n"
    );
    assert_eq!(
        send(&mut s, "b THREAD REFERENCES UTF-8 ALL\r\n"),
        "b BAD No mailbox selected\r\n"
    );
    let caps = send(&mut s, "c CAPABILITY\r\n");
    for cap in [
        " SORT ",
        " SORT=DISPLAY ",
        " ESORT ",
        " THREAD=ORDEREDSUBJECT ",
        " THREAD=REFERENCES",
    ] {
        assert!(caps.contains(cap), "{cap} missing: {caps}");
    }
}

/// Five APPENDs whose sent dates (RFC 5256 §2.2) are, by sequence number: 5 Jan (Date
/// header), 1 Jan 10:00 (no Date header: the internal date), 31 Dec (Date header),
/// 4 Jan (a Date header that does not parse: the internal date), 1 Jan 10:00 (Date
/// header, the same instant as 2, and larger than 2).
fn dated(store: &Arc<MockStore>) {
    let mut s = logged_in(store);
    for (date, text) in [
        (
            "02-Jan-2024 10:00:00 +0000",
            "Subject: one\r\nDate: Fri, 5 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n",
        ),
        ("01-Jan-2024 10:00:00 +0000", "Subject: two\r\n\r\nx\r\n"),
        (
            "03-Jan-2024 10:00:00 +0000",
            "Subject: three\r\nDate: Sun, 31 Dec 2023 10:00:00 +0000\r\n\r\nx\r\n",
        ),
        (
            "04-Jan-2024 10:00:00 +0000",
            "Subject: four\r\nDate: sometime\r\n\r\nx\r\n",
        ),
        (
            "01-Jan-2024 10:00:00 +0000",
            "Subject: five\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n",
        ),
    ] {
        append_at(&mut s, date, text);
    }
}

const SENT_DATES: [i64; 5] = [
    1_704_448_800,
    1_704_103_200,
    1_704_016_800,
    1_704_362_400,
    1_704_103_200,
];

fn body_reads(store: &MockStore) -> usize {
    store.calls().iter().filter(|c| c.starts_with("body ")).count()
}

#[test]
fn sort_by_date_arrival_and_size_reads_only_the_view() {
    let store = MockStore::new();
    dated(&store);
    assert_eq!(store.sent_dates("INBOX"), SENT_DATES.map(Some).to_vec());
    let mut s = selected(&store);
    let reads = body_reads(&store);
    assert_eq!(
        send(&mut s, "a SORT (DATE) UTF-8 ALL\r\n"),
        "* SORT 3 2 5 4 1\r\na OK SORT completed\r\n"
    );
    // Ties (2 and 5) in mailbox order whatever REVERSE says.
    assert_eq!(
        send(&mut s, "b SORT (REVERSE DATE) UTF-8 ALL\r\n"),
        "* SORT 1 4 2 5 3\r\nb OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SORT (DATE REVERSE SIZE) UTF-8 ALL\r\n"),
        "* SORT 3 5 2 4 1\r\nc OK SORT completed\r\n"
    );
    // A key given twice: only the first counts.
    assert_eq!(
        send(&mut s, "d UID SORT (ARRIVAL REVERSE ARRIVAL DATE) UTF-8 ALL\r\n"),
        "* SORT 2 5 1 3 4\r\nd OK UID SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e SORT (REVERSE ARRIVAL REVERSE DATE) UTF-8 NOT 4\r\n"),
        "* SORT 3 1 2 5\r\ne OK SORT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f SORT RETURN (MIN MAX) (SIZE DATE) UTF-8 ALL\r\n"),
        "* ESEARCH (TAG \"f\") MIN 2 MAX 3\r\nf OK SORT completed\r\n"
    );
    assert_eq!(body_reads(&store), reads, "no body or summary read");
    assert!(!store.calls().iter().any(|c| c.starts_with("remember_sent_dates")));
}

#[test]
fn messages_stored_without_a_sent_date_are_sorted_from_their_summaries_once() {
    let store = MockStore::new();
    dated(&store);
    store.forget_sent_dates("INBOX");
    let mut s = selected(&store);
    let reads = body_reads(&store);
    assert_eq!(
        send(&mut s, "a SORT (ARRIVAL) UTF-8 ALL\r\n"),
        "* SORT 2 5 1 3 4\r\na OK SORT completed\r\n"
    );
    assert_eq!(body_reads(&store), reads, "ARRIVAL needs no sent date");
    assert_eq!(
        send(&mut s, "b SORT (DATE) UTF-8 ALL\r\n"),
        "* SORT 3 2 5 4 1\r\nb OK SORT completed\r\n"
    );
    assert_eq!(body_reads(&store), reads + 5, "each summary read once");
    assert!(store.calls().contains(&"remember_sent_dates 5".to_string()));
    assert_eq!(store.sent_dates("INBOX"), SENT_DATES.map(Some).to_vec());
    assert_eq!(
        send(&mut s, "c SORT (REVERSE DATE) UTF-8 ALL\r\n"),
        "* SORT 1 4 2 5 3\r\nc OK SORT completed\r\n"
    );
    // A new session (as after a restart) finds them in the store.
    let mut fresh = selected(&store);
    assert_eq!(
        send(&mut fresh, "d SORT (DATE) UTF-8 ALL\r\n"),
        "* SORT 3 2 5 4 1\r\nd OK SORT completed\r\n"
    );
    assert_eq!(body_reads(&store), reads + 5, "nothing read again");
    // SUBJECT DATE goes through the summaries and agrees.
    assert_eq!(
        send(&mut fresh, "e SORT (SUBJECT DATE) UTF-8 ALL\r\n"),
        "* SORT 5 4 1 3 2\r\ne OK SORT completed\r\n"
    );
}
