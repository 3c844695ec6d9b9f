//! Session tests against in-memory auth and store mocks (no real peer exists below the
//! network driver; the driver's integration tests use Python's imaplib).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;
use crate::testing::imap::{account, MockAuth, MockStore, PASSWORD, USER};

pub(super) fn info(tls: bool, allow_plaintext_auth: bool) -> ConnectionInfo {
    ConnectionInfo {
        peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        tls,
        tls_available: true,
        allow_plaintext_auth,
        webmail_host: false,
        hostname: "mx.example.com".into(),
    }
}

pub(super) fn session_with(store: &Arc<MockStore>, conn: ConnectionInfo) -> ImapSession {
    ImapSession::new(conn, Arc::new(MockAuth), store.clone(), ImapLimits::default())
}

pub(super) fn send(s: &mut ImapSession, input: &str) -> String {
    let out = s.receive(input.as_bytes());
    String::from_utf8(out.bytes).unwrap()
}

/// A TLS session, logged in.
pub(super) fn logged_in(store: &Arc<MockStore>) -> ImapSession {
    let mut s = session_with(store, info(true, false));
    s.greeting();
    let r = send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    assert!(r.starts_with("a OK [CAPABILITY "), "{r}");
    s
}

pub(super) fn selected(store: &Arc<MockStore>) -> ImapSession {
    let mut s = logged_in(store);
    let r = send(&mut s, "s SELECT INBOX\r\n");
    assert!(r.ends_with("s OK [READ-WRITE] SELECT completed\r\n"), "{r}");
    s
}

pub(super) const MSG: &str = "From: Ann <ann@example.org>\r\nSubject: hello\r\n\r\nHi there\r\n";

/// A store whose INBOX holds `count` copies of `MSG`, and a session with it selected:
/// the setup the CONTEXT and SEARCHRES tests share.
pub(super) fn inbox_of(count: usize) -> (Arc<MockStore>, ImapSession) {
    let store = MockStore::new();
    for _ in 0..count {
        store.deliver("INBOX", MSG, 0);
    }
    let s = selected(&store);
    (store, s)
}

#[test]
fn greeting_and_capabilities_depend_on_tls() {
    let store = MockStore::new();
    let mut plain = session_with(&store, info(false, false));
    let g = String::from_utf8(plain.greeting().bytes).unwrap();
    assert_eq!(
        g,
        "* OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR STARTTLS LOGINDISABLED ID ENABLE IDLE \
         NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE QRESYNC SORT SORT=DISPLAY ESORT \
         THREAD=ORDEREDSUBJECT THREAD=REFERENCES STATUS=SIZE QUOTA QUOTA=RES-STORAGE MULTIAPPEND BINARY CATENATE CONTEXT=SEARCH CONTEXT=SORT SEARCHRES UTF8=ACCEPT APPENDLIMIT=52428800] \
         mx.example.com Understudy IMAP4rev1 ready\r\n"
    );
    assert_eq!(
        send(&mut plain, &format!("a LOGIN {USER} {PASSWORD}\r\n")),
        "a NO [PRIVACYREQUIRED] Plaintext login disallowed; use STARTTLS\r\n"
    );
    assert_eq!(
        send(&mut plain, "b AUTHENTICATE PLAIN\r\n"),
        "b NO [PRIVACYREQUIRED] Plaintext authentication disallowed; use STARTTLS\r\n"
    );

    let mut tls = session_with(&store, info(true, false));
    let r = send(&mut tls, "c CAPABILITY\r\n");
    assert_eq!(
        r,
        "* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN ID ENABLE IDLE \
         NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE QRESYNC SORT SORT=DISPLAY ESORT \
         THREAD=ORDEREDSUBJECT THREAD=REFERENCES STATUS=SIZE QUOTA QUOTA=RES-STORAGE MULTIAPPEND BINARY CATENATE CONTEXT=SEARCH CONTEXT=SORT SEARCHRES UTF8=ACCEPT APPENDLIMIT=52428800\r\n\
         c OK CAPABILITY completed\r\n"
    );
    // Trusted network: plaintext login allowed without TLS.
    let mut trusted = session_with(&store, info(false, true));
    let r = send(&mut trusted, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    assert!(r.starts_with("a OK [CAPABILITY IMAP4rev1"), "{r}");
}

#[test]
fn login_and_authenticate() {
    let store = MockStore::new();
    let mut s = session_with(&store, info(true, false));
    assert_eq!(
        send(&mut s, &format!("a LOGIN {USER} wrong\r\n")),
        "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    assert_eq!(
        send(&mut s, "b SELECT INBOX\r\n"),
        "b BAD Command not valid before login\r\n"
    );
    // Quoted password via a literal.
    assert_eq!(send(&mut s, &format!("c LOGIN \"{USER}\" {{8}}\r\n")), "+ OK\r\n");
    let r = send(&mut s, "tanstaaf\r\n");
    assert_eq!(
        r,
        "c OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT \
         CHILDREN UIDPLUS MOVE SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE QRESYNC SORT SORT=DISPLAY ESORT \
         THREAD=ORDEREDSUBJECT THREAD=REFERENCES STATUS=SIZE QUOTA QUOTA=RES-STORAGE MULTIAPPEND BINARY CATENATE CONTEXT=SEARCH CONTEXT=SORT SEARCHRES UTF8=ACCEPT COMPRESS=DEFLATE APPENDLIMIT=52428800] Logged in\r\n"
    );
    assert_eq!(send(&mut s, "d LOGIN x y\r\n"), "d BAD Already authenticated\r\n");

    // AUTHENTICATE PLAIN with SASL-IR.
    let mut s = session_with(&store, info(true, false));
    let ir = sasl_b64(&format!("\0{USER}\0{PASSWORD}"));
    let r = send(&mut s, &format!("a AUTHENTICATE PLAIN {ir}\r\n"));
    assert!(r.starts_with("a OK [CAPABILITY "), "{r}");

    // AUTHENTICATE LOGIN with challenges.
    let mut s = session_with(&store, info(true, false));
    assert_eq!(send(&mut s, "a AUTHENTICATE LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
    assert_eq!(
        send(&mut s, &format!("{}\r\n", sasl_b64(USER))),
        "+ UGFzc3dvcmQ6\r\n"
    );
    let r = send(&mut s, &format!("{}\r\n", sasl_b64(PASSWORD)));
    assert!(r.starts_with("a OK [CAPABILITY "), "{r}");

    // Cancelled exchange.
    let mut s = session_with(&store, info(true, false));
    assert_eq!(send(&mut s, "a AUTHENTICATE PLAIN\r\n"), "+ \r\n");
    assert_eq!(send(&mut s, "*\r\n"), "a BAD Authentication cancelled\r\n");
}

/// Records the client address each login was counted against.
struct PeerRecorder(std::sync::Mutex<Vec<IpAddr>>);

impl AuthBackend for PeerRecorder {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        self.0.lock().unwrap().push(credentials.peer);
        MockAuth.authenticate(credentials)
    }
}

#[test]
fn a_webmail_host_names_the_client_address_through_id_and_nobody_else_can() {
    let store = MockStore::new();
    let login = |webmail_host: bool, id: &str| {
        let auth = Arc::new(PeerRecorder(Default::default()));
        let mut s = ImapSession::new(
            ConnectionInfo {
                webmail_host,
                ..info(true, false)
            },
            auth.clone(),
            store.clone(),
            ImapLimits::default(),
        );
        s.greeting();
        let r = send(&mut s, id);
        assert_eq!(r.lines().last(), Some("i OK ID completed"), "{r}");
        assert!(r.starts_with("* ID (\"name\" \"Understudy\")\r\n"), "{r}");
        let r = send(&mut s, &format!("a LOGIN {USER} wrong\r\n"));
        assert!(r.starts_with("a NO [AUTHENTICATIONFAILED]"), "{r}");
        // Once logged in, ID names nobody any more.
        let r = send(&mut s, &format!("b LOGIN {USER} {PASSWORD}\r\n"));
        assert!(r.starts_with("b OK"), "{r}");
        send(&mut s, "c ID (\"x-originating-ip\" \"203.0.113.99\")\r\n");
        drop(s);
        let peers = auth.0.lock().unwrap().clone();
        peers
    };
    let client: IpAddr = "198.51.100.7".parse().unwrap();
    let host = info(true, false).peer;
    let id = "i ID (\"name\" \"Roundcube\" \"X-Originating-IP\" \"198.51.100.7\")\r\n";
    assert_eq!(login(true, id), vec![client, client]);
    // Anyone else's claim is ignored, and so is a value that is no address.
    assert_eq!(login(false, id), vec![host, host]);
    let garbage = "i ID (\"x-originating-ip\" \"198.51.100.7; drop\")\r\n";
    assert_eq!(login(true, garbage), vec![host, host]);
    assert_eq!(login(true, "i ID NIL\r\n"), vec![host, host]);
}

fn sasl_b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn too_many_failed_logins_close() {
    let store = MockStore::new();
    let mut s = session_with(&store, info(true, false));
    send(&mut s, "a LOGIN x y\r\n");
    send(&mut s, "a LOGIN x y\r\n");
    let out = s.receive(b"a LOGIN x y\r\n");
    assert_eq!(out.action, Action::Close);
    assert!(String::from_utf8(out.bytes)
        .unwrap()
        .ends_with("* BYE Too many failed logins\r\n"));
}

#[test]
fn status_counts_recent_without_claiming_it() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, Flags::SEEN);
    let mut s = logged_in(&store);
    // STATUS only counts: asking twice gives the same answer.
    for tag in ["a", "b"] {
        assert_eq!(
            send(
                &mut s,
                &format!("{tag} STATUS INBOX (MESSAGES RECENT UNSEEN)\r\n")
            ),
            format!("* STATUS \"INBOX\" (MESSAGES 2 RECENT 2 UNSEEN 1)\r\n{tag} OK STATUS completed\r\n")
        );
    }
    let r = send(&mut s, "c SELECT INBOX\r\n");
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    // SELECT claimed them: another session's STATUS sees none.
    let mut other = logged_in(&store);
    assert_eq!(
        send(&mut other, "d STATUS INBOX (RECENT)\r\n"),
        "* STATUS \"INBOX\" (RECENT 0)\r\nd OK STATUS completed\r\n"
    );
    store.deliver("INBOX", MSG, 0);
    assert_eq!(
        send(&mut other, "e STATUS INBOX (RECENT)\r\n"),
        "* STATUS \"INBOX\" (RECENT 1)\r\ne OK STATUS completed\r\n"
    );
}

#[test]
fn select_output() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, Flags::SEEN);
    store.deliver("INBOX", MSG, 0);
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "s SELECT inbox\r\n"),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 2 EXISTS\r\n\
         * 2 RECENT\r\n\
         * OK [UNSEEN 2] First unseen\r\n\
         * OK [UIDVALIDITY 1001] UIDs valid\r\n\
         * OK [UIDNEXT 3] Predicted next UID\r\n\
         s OK [READ-WRITE] SELECT completed\r\n"
    );
    // \Recent went to the first session only.
    let mut other = logged_in(&store);
    let r = send(&mut other, "t EXAMINE INBOX\r\n");
    assert!(r.contains("* 0 RECENT\r\n"), "{r}");
    assert!(
        r.contains("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"),
        "{r}"
    );
    assert!(r.ends_with("t OK [READ-ONLY] EXAMINE completed\r\n"), "{r}");

    // With CONDSTORE: HIGHESTMODSEQ, and [CLOSED] when switching mailboxes.
    let r = send(&mut s, "c SELECT Sent (CONDSTORE)\r\n");
    assert_eq!(
        r,
        "* OK [CLOSED] Previous mailbox closed\r\n\
         * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 0 EXISTS\r\n\
         * 0 RECENT\r\n\
         * OK [UIDVALIDITY 1002] UIDs valid\r\n\
         * OK [UIDNEXT 1] Predicted next UID\r\n\
         * OK [HIGHESTMODSEQ 1] Highest\r\n\
         c OK [READ-WRITE] SELECT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SELECT Nowhere\r\n"),
        "* OK [CLOSED] Previous mailbox closed\r\nd NO [NONEXISTENT] Mailbox does not exist\r\n"
    );
    assert_eq!(
        send(&mut s, "e FETCH 1 FLAGS\r\n"),
        "e BAD No mailbox selected\r\n"
    );
}

#[test]
fn enable_condstore_shows_highestmodseq() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "e ENABLE CONDSTORE\r\n"),
        "* ENABLED CONDSTORE\r\ne OK ENABLE completed\r\n"
    );
    let r = send(&mut s, "s SELECT INBOX\r\n");
    assert!(r.contains("* OK [HIGHESTMODSEQ 2] Highest\r\n"), "{r}");
    let r = send(&mut s, "f FETCH 1 (FLAGS) (CHANGEDSINCE 1)\r\n");
    assert_eq!(
        r,
        "* 1 FETCH (FLAGS (\\Recent) MODSEQ (2))\r\nf OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "g FETCH 1 (FLAGS) (CHANGEDSINCE 2)\r\n"),
        "g OK FETCH completed\r\n"
    );
    // UNCHANGEDSINCE below the message's modseq fails that message.
    assert_eq!(
        send(&mut s, "h STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)\r\n"),
        "h OK [MODIFIED 1] Conditional STORE failed\r\n"
    );
    assert_eq!(
        send(
            &mut s,
            "i UID STORE 1 (UNCHANGEDSINCE 2) +FLAGS.SILENT (\\Seen)\r\n"
        ),
        "* 1 FETCH (UID 1 MODSEQ (3))\r\ni OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "j SEARCH MODSEQ 3\r\n"),
        "* SEARCH 1 (MODSEQ 3)\r\nj OK SEARCH completed\r\n"
    );
}

#[test]
fn list_with_special_use_and_children() {
    let store = MockStore::new();
    store
        .create_mailbox(&account(), "Projects/2026/Q1", None)
        .unwrap();
    store.create_mailbox(&account(), "Entwürfe", None).unwrap();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "l LIST \"\" *\r\n"),
        "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
         * LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"\r\n\
         * LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"\r\n\
         * LIST (\\HasNoChildren) \"/\" \"Entw&APw-rfe\"\r\n\
         * LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"\r\n\
         * LIST (\\Noselect \\HasChildren) \"/\" \"Projects\"\r\n\
         * LIST (\\Noselect \\HasChildren) \"/\" \"Projects/2026\"\r\n\
         * LIST (\\HasNoChildren) \"/\" \"Projects/2026/Q1\"\r\n\
         * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
         * LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"\r\n\
         l OK LIST completed\r\n"
    );
    assert_eq!(send(&mut s, "m LIST \"\" %\r\n").matches("* LIST").count(), 8);
    assert_eq!(
        send(&mut s, "n LIST \"\" \"\"\r\n"),
        "* LIST (\\Noselect) \"/\" \"\"\r\nn OK LIST completed\r\n"
    );
    assert_eq!(
        send(&mut s, "o LIST Projects/ %\r\n"),
        "* LIST (\\Noselect \\HasChildren) \"/\" \"Projects/2026\"\r\no OK LIST completed\r\n"
    );
    assert_eq!(
        send(&mut s, "p STATUS Entw&APw-rfe (MESSAGES UIDNEXT UNSEEN)\r\n"),
        "* STATUS \"Entw&APw-rfe\" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)\r\np OK STATUS completed\r\n"
    );
    send(&mut s, "q UNSUBSCRIBE Junk\r\n");
    let r = send(&mut s, "r LSUB \"\" J*\r\n");
    assert_eq!(r, "r OK LSUB completed\r\n");
    assert_eq!(
        send(&mut s, "t NAMESPACE\r\n"),
        "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nt OK NAMESPACE completed\r\n"
    );
}

#[test]
fn create_delete_rename() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "a CREATE Work/\r\n"), "a OK CREATE completed\r\n");
    assert_eq!(
        send(&mut s, "b CREATE work\r\n"),
        "b OK CREATE completed\r\n",
        "names other than INBOX are case-sensitive"
    );
    assert_eq!(
        send(&mut s, "c CREATE Work\r\n"),
        "c NO [ALREADYEXISTS] Mailbox already exists\r\n"
    );
    assert_eq!(
        send(&mut s, "d CREATE inbox\r\n"),
        "d NO [ALREADYEXISTS] Mailbox already exists\r\n"
    );
    assert_eq!(
        send(&mut s, "e RENAME Work Play\r\n"),
        "e OK RENAME completed\r\n"
    );
    assert_eq!(send(&mut s, "f DELETE Play\r\n"), "f OK DELETE completed\r\n");
    assert_eq!(
        send(&mut s, "g DELETE Play\r\n"),
        "g NO [NONEXISTENT] Mailbox does not exist\r\n"
    );
    assert_eq!(
        send(&mut s, "h DELETE INBOX\r\n"),
        "h NO [CANNOT] INBOX cannot be deleted\r\n"
    );
}

#[test]
fn rename_inbox_moves_messages_and_leaves_it_empty() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, Flags::SEEN);
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a RENAME inbox Old\r\n"),
        "a OK RENAME completed\r\n"
    );
    assert_eq!(store.uids("INBOX"), Vec::<u32>::new());
    assert_eq!(store.uids("Old"), vec![1, 2]);
    assert_eq!(
        send(&mut s, "b STATUS INBOX (MESSAGES)\r\n"),
        "* STATUS \"INBOX\" (MESSAGES 0)\r\nb OK STATUS completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c RENAME Old INBOX\r\n"),
        "c NO [ALREADYEXISTS] INBOX already exists\r\n"
    );
}

#[test]
fn append_with_synchronizing_literal_split_across_chunks() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let len = MSG.len();
    assert_eq!(
        send(
            &mut s,
            &format!("a APPEND INBOX (\\Seen $Work) \"14-Nov-2023 23:13:20 +0100\" {{{len}}}\r\n")
        ),
        "+ OK\r\n"
    );
    assert_eq!(send(&mut s, &MSG[..10]), "");
    assert_eq!(send(&mut s, &MSG[10..]), "");
    assert_eq!(
        send(&mut s, "\r\n"),
        "a OK [APPENDUID 1001 1] APPEND completed\r\n"
    );
    let st = store.state.lock().unwrap();
    let (meta, body) = &st.mailboxes[0].messages[0];
    assert_eq!(body, MSG.as_bytes());
    assert_eq!(meta.flags.system, Flags::SEEN);
    assert_eq!(meta.flags.keywords, vec!["$Work".to_string()]);
    assert_eq!(
        (meta.internal_date, meta.internal_date_offset_minutes),
        (1_700_000_000, 60)
    );
}

#[test]
fn append_with_literal_plus_and_pipelining() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let len = MSG.len();
    // No continuation request for LITERAL+, and the next command in the same chunk.
    let r = send(
        &mut s,
        &format!("a APPEND Sent {{{len}+}}\r\n{MSG}\r\nb NOOP\r\n"),
    );
    assert_eq!(
        r,
        "a OK [APPENDUID 1002 1] APPEND completed\r\nb OK NOOP completed\r\n"
    );
    // Byte by byte.
    let cmd = format!("c APPEND Sent {{{len}+}}\r\n{MSG}\r\n");
    let mut all = String::new();
    for b in cmd.as_bytes() {
        all.push_str(&String::from_utf8(s.receive(&[*b]).bytes).unwrap());
    }
    assert_eq!(all, "c OK [APPENDUID 1002 2] APPEND completed\r\n");
    assert_eq!(
        send(&mut s, &format!("d APPEND Nowhere {{{len}+}}\r\n{MSG}\r\n")),
        "d NO [TRYCREATE] Mailbox does not exist\r\n"
    );
}

#[test]
fn too_big_literals_are_refused_before_reading() {
    let store = MockStore::new();
    let mut s = ImapSession::new(
        info(true, false),
        Arc::new(MockAuth),
        store.clone(),
        ImapLimits {
            max_literal: 100,
            ..ImapLimits::default()
        },
    );
    send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    assert_eq!(
        send(&mut s, "b APPEND INBOX {101}\r\n"),
        "b NO [TOOBIG] Literal too big\r\n"
    );
    assert_eq!(send(&mut s, "c NOOP\r\n"), "c OK NOOP completed\r\n");
    let out = s.receive(b"d APPEND INBOX {101+}\r\n");
    assert_eq!(out.action, Action::Close);
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "d BAD [TOOBIG] Literal too big\r\n* BYE Closing\r\n"
    );
}

#[test]
fn overlong_line_closes() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let out = s.receive(&vec![b'a'; 70 * 1024]);
    assert_eq!(out.action, Action::Close);
    assert_eq!(out.bytes, b"* BAD Line too long\r\n* BYE Closing\r\n");
}

#[test]
fn synchronizing_literal_on_bad_command_is_refused() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "a FROB {5}\r\n"), "a BAD Invalid command\r\n");
    assert_eq!(send(&mut s, "b NOOP\r\n"), "b OK NOOP completed\r\n");
}

#[test]
fn store_and_fetch_flags() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, Flags::SEEN);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a FETCH 1:* (FLAGS UID)\r\n"),
        "* 1 FETCH (FLAGS (\\Recent) UID 1)\r\n\
         * 2 FETCH (FLAGS (\\Seen \\Recent) UID 2)\r\n\
         a OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b STORE 1 +FLAGS (\\FLAGGED $Label1)\r\n"),
        // A keyword new to the mailbox is announced before the FETCH that shows it.
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted\r\n\
         * 1 FETCH (FLAGS (\\Flagged \\Recent $Label1))\r\nb OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c STORE 1:2 -FLAGS.SILENT (\\Seen $label1)\r\n"),
        "c OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d UID STORE 2 FLAGS (\\Deleted)\r\n"),
        "* 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent))\r\nd OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e UID FETCH 1:* (FLAGS)\r\n"),
        "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n\
         * 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent))\r\n\
         e OK UID FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f FETCH 3 FLAGS\r\n"),
        "f BAD Invalid message sequence number\r\n"
    );
    assert_eq!(
        send(&mut s, "g UID FETCH 7 FLAGS\r\n"),
        "g OK UID FETCH completed\r\n"
    );
    // Gone UIDs are ignored quietly.
    assert_eq!(
        send(&mut s, "h UID STORE 9 +FLAGS (\\Seen)\r\n"),
        "h OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "i FETCH 1 (UID RFC822.SIZE INTERNALDATE)\r\n"),
        format!(
            "* 1 FETCH (UID 1 RFC822.SIZE {} INTERNALDATE \"14-Nov-2023 23:13:20 +0100\")\r\n\
             i OK FETCH completed\r\n",
            MSG.len()
        )
    );
    // No body was read for any of that.
    assert!(store.calls().is_empty(), "{:?}", store.calls());
}

#[test]
fn fetch_body_sets_seen_unless_peek() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"),
        "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: hello\r\n\r\n)\r\n\
         a OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b FETCH 1 (BODY[TEXT]<0.2>)\r\n"),
        "* 1 FETCH (BODY[TEXT]<0> {2}\r\nHi FLAGS (\\Seen \\Recent))\r\nb OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c FETCH 1 (RFC822.HEADER)\r\n"),
        "* 1 FETCH (RFC822.HEADER {47}\r\nFrom: Ann <ann@example.org>\r\nSubject: hello\r\n\r\n)\r\n\
         c OK FETCH completed\r\n"
    );
    let r = send(&mut s, "d FETCH 1 (ENVELOPE BODYSTRUCTURE)\r\n");
    assert!(
        r.starts_with("* 1 FETCH (ENVELOPE (NIL \"hello\" ((\"Ann\" NIL \"ann\" \"example.org\"))"),
        "{r}"
    );
    assert!(
        r.contains(" BODYSTRUCTURE (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\")"),
        "{r}"
    );
    assert!(r.ends_with("d OK FETCH completed\r\n"), "{r}");
}

#[test]
fn search_keys() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, Flags::SEEN);
    store.deliver("INBOX", "Subject: other\r\n\r\nbody text\r\n", 0);
    store.deliver("INBOX", MSG, Flags::FLAGGED);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a SEARCH UNSEEN\r\n"),
        "* SEARCH 2 3\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b UID SEARCH OR FLAGGED SEEN\r\n"),
        "* SEARCH 1 3\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SEARCH CHARSET UTF-8 SUBJECT hello NOT 1\r\n"),
        "* SEARCH 3\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SEARCH CHARSET KOI8-R ALL\r\n"),
        "d NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    );
    assert_eq!(
        send(
            &mut s,
            "e SEARCH SINCE 14-Nov-2023 BEFORE 15-Nov-2023 LARGER 10 2:*\r\n"
        ),
        "* SEARCH 2 3\r\ne OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "f SEARCH BODY nothing\r\n"),
        "* SEARCH\r\nf OK SEARCH completed\r\n"
    );
}

#[test]
fn uid_copy_and_move_report_copyuid() {
    let store = MockStore::new();
    for _ in 0..4 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a UID COPY 1:2,4 Archive\r\n"),
        "a OK [COPYUID 1006 1:2,4 1:3] COPY completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b UID MOVE 2:3 Trash\r\n"),
        "* OK [COPYUID 1004 2:3 1:2] Moved\r\n\
         * 3 EXPUNGE\r\n\
         * 2 EXPUNGE\r\n\
         b OK MOVE completed\r\n"
    );
    assert_eq!(store.uids("INBOX"), vec![1, 4]);
    assert_eq!(
        send(&mut s, "c MOVE 2 Nowhere\r\n"),
        "c NO [TRYCREATE] Mailbox does not exist\r\n"
    );
    // Already-gone UIDs: quiet success.
    assert_eq!(send(&mut s, "d UID MOVE 3 Trash\r\n"), "d OK MOVE completed\r\n");
    assert_eq!(
        send(&mut s, "e FETCH 2 UID\r\n"),
        "* 2 FETCH (UID 4)\r\ne OK FETCH completed\r\n"
    );
}

#[test]
fn expunge_renumbers_from_the_top() {
    let store = MockStore::new();
    for _ in 0..5 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut s = selected(&store);
    send(&mut s, "a STORE 2,3,5 +FLAGS.SILENT (\\Deleted)\r\n");
    assert_eq!(
        send(&mut s, "b EXPUNGE\r\n"),
        "* 5 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nb OK EXPUNGE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c FETCH 1:* UID\r\n"),
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 4)\r\nc OK FETCH completed\r\n"
    );
    send(&mut s, "d STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n");
    assert_eq!(
        send(&mut s, "e UID EXPUNGE 4\r\n"),
        "* 2 EXPUNGE\r\ne OK EXPUNGE completed\r\n"
    );
    // CLOSE expunges silently.
    assert_eq!(send(&mut s, "f CLOSE\r\n"), "f OK CLOSE completed\r\n");
    assert_eq!(store.uids("INBOX"), Vec::<u32>::new());
}

#[test]
fn two_sessions_see_each_others_changes_at_the_right_points() {
    let store = MockStore::new();
    for _ in 0..3 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut a = selected(&store);
    let mut b = logged_in(&store);
    let r = send(&mut b, "s SELECT INBOX\r\n");
    assert!(r.contains("* 0 RECENT\r\n"), "{r}");

    send(&mut a, "1 STORE 2 +FLAGS.SILENT (\\Deleted)\r\n");
    assert_eq!(
        send(&mut a, "2 EXPUNGE\r\n"),
        "* 2 EXPUNGE\r\n2 OK EXPUNGE completed\r\n"
    );
    let uid = store.deliver("INBOX", MSG, 0);
    assert_eq!(uid, 4);

    // FETCH by sequence number must not see the EXPUNGE; the new message is fine.
    assert_eq!(
        send(&mut b, "3 FETCH 3 UID\r\n"),
        "* 3 FETCH (UID 3)\r\n* 4 EXISTS\r\n* 1 RECENT\r\n3 OK FETCH completed\r\n"
    );
    // The expunged message is still visible by number; this store keeps no body for
    // views (no `hold_view`), so it cannot be read (the server's store keeps it:
    // tests/suite/concurrency.rs).
    assert_eq!(
        send(&mut b, "3b FETCH 2 (UID BODY.PEEK[])\r\n"),
        "3b NO [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n"
    );
    // NOOP delivers the expunge, renumbering 3 -> 2 and the new message 4 -> 3.
    assert_eq!(
        send(&mut b, "4 NOOP\r\n"),
        "* 2 EXPUNGE\r\n4 OK NOOP completed\r\n"
    );
    assert_eq!(
        send(&mut b, "5 FETCH 1:* (UID FLAGS)\r\n"),
        "* 1 FETCH (UID 1 FLAGS ())\r\n\
         * 2 FETCH (UID 3 FLAGS ())\r\n\
         * 3 FETCH (UID 4 FLAGS (\\Recent))\r\n\
         5 OK FETCH completed\r\n"
    );
    // Flag changes of A reach B as FETCH FLAGS; A sees the new message (claimed as
    // \Recent by B) during its STORE, which may report EXISTS.
    assert_eq!(
        send(&mut a, "6 STORE 1 +FLAGS.SILENT (\\Answered)\r\n"),
        "* 3 EXISTS\r\n* 2 RECENT\r\n6 OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut b, "7 NOOP\r\n"),
        "* 1 FETCH (FLAGS (\\Answered))\r\n7 OK NOOP completed\r\n"
    );
    assert_eq!(send(&mut a, "8 NOOP\r\n"), "8 OK NOOP completed\r\n");
}

#[test]
fn idle_pushes_changes_until_done() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    let out = s.receive(b"i IDLE\r\n");
    assert_eq!(out.bytes, b"+ idling\r\n");
    let id = store.mailbox(&account(), "INBOX").unwrap().id;
    assert_eq!(out.action, Action::Idle { mailbox_id: id });

    store.deliver("INBOX", MSG, 0);
    let out = s.mailbox_changed();
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "* 3 EXISTS\r\n* 3 RECENT\r\n"
    );
    assert_eq!(out.action, Action::Idle { mailbox_id: id });

    store.expunge(&account(), id, &[1]).unwrap();
    let out = s.mailbox_changed();
    assert_eq!(String::from_utf8(out.bytes).unwrap(), "* 1 EXPUNGE\r\n");

    // DONE split across chunks.
    let out = s.receive(b"DO");
    assert_eq!(out.bytes, b"");
    assert_eq!(out.action, Action::Idle { mailbox_id: id });
    let out = s.receive(b"NE\r\n");
    assert_eq!(String::from_utf8(out.bytes).unwrap(), "i OK IDLE terminated\r\n");
    assert_eq!(out.action, Action::Continue);
    assert_eq!(s.mailbox_changed().bytes, b"");
}

#[test]
fn idle_without_selection_waits_for_done() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let out = s.receive(b"i IDLE\r\n");
    assert_eq!(out.bytes, b"+ idling\r\n");
    assert_eq!(out.action, Action::Continue);
    assert_eq!(send(&mut s, "done\r\n"), "i OK IDLE terminated\r\n");
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let store = MockStore::new();
    let mut s = session_with(&store, info(false, false));
    s.greeting();
    let out = s.receive(format!("a STARTTLS\r\nb LOGIN {USER} {PASSWORD}\r\n").as_bytes());
    assert_eq!(out.bytes, b"a OK Begin TLS negotiation now\r\n");
    assert_eq!(out.action, Action::StartTls);
    s.tls_started();
    // The injected LOGIN was not run: still not authenticated, and CAPABILITY changed.
    assert_eq!(
        send(&mut s, "c CAPABILITY\r\n"),
        "* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN ID ENABLE IDLE \
         NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE QRESYNC SORT SORT=DISPLAY ESORT \
         THREAD=ORDEREDSUBJECT THREAD=REFERENCES STATUS=SIZE QUOTA QUOTA=RES-STORAGE MULTIAPPEND BINARY CATENATE CONTEXT=SEARCH CONTEXT=SORT SEARCHRES UTF8=ACCEPT APPENDLIMIT=52428800\r\n\
         c OK CAPABILITY completed\r\n"
    );
    assert_eq!(send(&mut s, "d STARTTLS\r\n"), "d BAD TLS not available\r\n");
}

#[test]
fn logout_goodbye_and_bad_commands() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    assert_eq!(send(&mut s, "a FROB\r\n"), "a BAD Invalid or unknown command\r\n");
    assert_eq!(send(&mut s, "\r\n"), "* BAD Invalid or unknown command\r\n");
    assert_eq!(
        send(&mut s, "b ID NIL\r\n"),
        "* ID (\"name\" \"Understudy\")\r\nb OK ID completed\r\n"
    );
    let out = s.receive(b"c LOGOUT\r\nd NOOP\r\n");
    assert_eq!(out.bytes, b"* BYE Logging out\r\nc OK LOGOUT completed\r\n");
    assert_eq!(out.action, Action::Close);

    let mut s = logged_in(&store);
    assert_eq!(s.goodbye(Goodbye::Shutdown), b"* BYE Server shutting down\r\n");
    assert_eq!(s.receive(b"a NOOP\r\n").action, Action::Close);
}

#[test]
fn pipelined_commands_answer_in_order() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = logged_in(&store);
    let r = send(
        &mut s,
        "a SELECT INBOX\r\nb FETCH 1 UID\r\nc UNSELECT\r\nd NOOP\r\n",
    );
    assert!(
        r.ends_with(
            "a OK [READ-WRITE] SELECT completed\r\n* 1 FETCH (UID 1)\r\nb OK FETCH completed\r\n\
             c OK UNSELECT completed\r\nd OK NOOP completed\r\n"
        ),
        "{r}"
    );
}

#[test]
fn list_extended_special_use_subscribed_and_status() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.create_mailbox(&account(), "Lists/rust", None).unwrap();
    store.set_subscribed(&account(), "Junk", false).unwrap();
    store.set_subscribed(&account(), "Lists/rust", true).unwrap();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a LIST (SPECIAL-USE) \"\" *\r\n"),
        "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"\r\n\
         * LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"\r\n\
         * LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"\r\n\
         * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
         * LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"\r\n\
         a OK LIST completed\r\n"
    );
    assert_eq!(
        send(
            &mut s,
            "b LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX Lists J*)\r\n"
        ),
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
         * LIST (\\NonExistent \\HasChildren) \"/\" \"Lists\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
         b OK LIST completed\r\n"
    );
    assert_eq!(
        send(
            &mut s,
            "c LIST \"\" \"IN%\" RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))\r\n"
        ),
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
         * STATUS \"INBOX\" (MESSAGES 1 UNSEEN 1)\r\n\
         c OK LIST completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d LIST (BOGUS) \"\" *\r\n"),
        "d BAD Invalid LIST arguments\r\n"
    );
}

#[test]
fn esearch_return_options() {
    let store = MockStore::new();
    for flags in [Flags::SEEN, 0, 0, Flags::SEEN, 0] {
        store.deliver("INBOX", MSG, flags);
    }
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a SEARCH RETURN (MIN MAX COUNT) UNSEEN\r\n"),
        "* ESEARCH (TAG \"a\") MIN 2 MAX 5 COUNT 3\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b UID SEARCH RETURN () UNSEEN\r\n"),
        "* ESEARCH (TAG \"b\") UID ALL 2:3,5\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c SEARCH RETURN (MIN COUNT) DELETED\r\n"),
        "* ESEARCH (TAG \"c\") COUNT 0\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e SEARCH RETURN (COUNT) SUBJECT {5}\r\n"),
        "+ OK\r\n"
    );
    assert_eq!(
        send(&mut s, "hello\r\n"),
        "* ESEARCH (TAG \"e\") COUNT 5\r\ne OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SEARCH RETURN (FOO) ALL\r\n"),
        "d BAD Unsupported SEARCH RETURN option\r\n"
    );
}

#[test]
fn condstore_enabled_by_a_command_in_selected_state() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a FETCH 1 (MODSEQ)\r\n"),
        "* OK [HIGHESTMODSEQ 2] Highest\r\n* 1 FETCH (MODSEQ (2))\r\na OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b STORE 1 +FLAGS (\\Seen)\r\n"),
        "* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (3))\r\nb OK STORE completed\r\n"
    );
    assert_eq!(
        send(&mut s, "c ENABLE CONDSTORE\r\n"),
        "* ENABLED\r\nc OK ENABLE completed\r\n"
    );
}

#[test]
fn star_in_an_empty_mailbox_is_not_an_error() {
    let store = MockStore::new();
    let mut s = selected(&store);
    assert_eq!(send(&mut s, "a FETCH 1:* FLAGS\r\n"), "a OK FETCH completed\r\n");
    assert_eq!(
        send(&mut s, "b FETCH 1 FLAGS\r\n"),
        "b BAD Invalid message sequence number\r\n"
    );
    assert_eq!(
        send(&mut s, "c STORE * +FLAGS (\\Seen)\r\n"),
        "c OK STORE completed\r\n"
    );
}

#[test]
fn fetch_macros_and_rfc822_items() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, Flags::SEEN);
    let mut s = selected(&store);
    assert_eq!(
        send(&mut s, "a FETCH 1 FAST\r\n"),
        format!(
            "* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"14-Nov-2023 23:13:20 +0100\" \
             RFC822.SIZE {})\r\na OK FETCH completed\r\n",
            MSG.len()
        )
    );
    let r = send(&mut s, "b FETCH 1 ALL\r\n");
    assert!(r.contains(" ENVELOPE (NIL \"hello\" "), "{r}");
    assert_eq!(
        send(&mut s, "c UID FETCH 1 (RFC822.TEXT)\r\n"),
        "* 1 FETCH (UID 1 RFC822.TEXT {10}\r\nHi there\r\n)\r\nc OK UID FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d FETCH 1 BODY[1]\r\n"),
        "* 1 FETCH (BODY[1] {10}\r\nHi there\r\n)\r\nd OK FETCH completed\r\n"
    );
    let r = send(&mut s, "e FETCH 1 RFC822\r\n");
    assert_eq!(
        r,
        format!(
            "* 1 FETCH (RFC822 {{{}}}\r\n{MSG})\r\ne OK FETCH completed\r\n",
            MSG.len()
        )
    );
}

#[test]
fn examine_is_read_only() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = logged_in(&store);
    send(&mut s, "a EXAMINE INBOX\r\n");
    assert_eq!(
        send(&mut s, "b STORE 1 +FLAGS (\\Seen)\r\n"),
        "b NO [READ-ONLY] Mailbox is read-only\r\n"
    );
    // BODY[] does not set \Seen in a read-only mailbox.
    assert_eq!(
        send(&mut s, "c FETCH 1 (BODY[TEXT] FLAGS)\r\n"),
        // Unclaimed \Recent is shown by EXAMINE, not taken.
        "* 1 FETCH (BODY[TEXT] {10}\r\nHi there\r\n FLAGS (\\Recent))\r\nc OK FETCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d EXPUNGE\r\n"),
        "d NO [READ-ONLY] Mailbox is read-only\r\n"
    );
}

#[test]
fn big_fetch_output_is_spread_over_steps() {
    let store = MockStore::new();
    for _ in 0..5 {
        store.deliver("INBOX", MSG, 0);
    }
    let mut s = ImapSession::new(
        info(true, false),
        Arc::new(MockAuth),
        store.clone(),
        ImapLimits {
            max_output_per_step: 80,
            ..ImapLimits::default()
        },
    );
    send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n"));
    send(&mut s, "s SELECT INBOX\r\n");
    let mut steps = vec![send(&mut s, "f FETCH 1:* (BODY.PEEK[TEXT])\r\ng NOOP\r\n")];
    while s.has_pending() {
        steps.push(String::from_utf8(s.receive(&[]).bytes).unwrap());
    }
    // Two messages (41 octets each) per step, then the rest and the pipelined NOOP.
    assert_eq!(steps.len(), 3, "{steps:?}");
    let one = |n: u32| format!("* {n} FETCH (BODY[TEXT] {{10}}\r\nHi there\r\n)\r\n");
    assert_eq!(steps[0], format!("{}{}", one(1), one(2)));
    assert_eq!(steps[1], format!("{}{}", one(3), one(4)));
    assert_eq!(
        steps[2],
        format!("{}f OK FETCH completed\r\ng OK NOOP completed\r\n", one(5))
    );
}

/// Refuses every login with the error it was built with.
struct Refusing(AuthError);

impl AuthBackend for Refusing {
    fn authenticate(&self, _: &Credentials) -> Result<Account, AuthError> {
        Err(self.0.clone())
    }
}

#[test]
fn policy_refusals_give_a_code_and_a_reason_a_person_can_act_on() {
    let store = MockStore::new();
    for (error, reply) in [
        (AuthError::Invalid, "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"),
        (
            AuthError::AccessDenied,
            "a NO [UNAVAILABLE] Mail access through this server is not available for your account now\r\n",
        ),
        (
            AuthError::OutsideOutage,
            "a NO [UNAVAILABLE] Your own mail server is working; this server opens your mailbox only during an outage of it\r\n",
        ),
        (
            AuthError::TooManySessions,
            "a NO [LIMIT] Too many open connections for this account; close another mail app and try again\r\n",
        ),
        (AuthError::RateLimited, "a NO [UNAVAILABLE] Too many failed logins; try again later\r\n"),
    ] {
        let mut s = ImapSession::new(
            info(true, false),
            Arc::new(Refusing(error)),
            store.clone(),
            ImapLimits::default(),
        );
        s.greeting();
        assert_eq!(send(&mut s, "a LOGIN someone secret\r\n"), reply);
    }
}

/// Issue 19 item 1: a line of 30,000 `(` before login overflowed the stack in the
/// extended-form lexer and aborted the whole process; SEARCH `((((` after login too.
/// Deeper than any real command: refused with BAD, the session goes on.
#[test]
fn deeply_nested_parentheses_are_refused_not_recursed() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let deep = "(".repeat(60_000);
    let mut s = session_with(&store, info(true, false));
    s.greeting();
    let r = send(&mut s, &format!("{deep}\r\na NOOP\r\n"));
    assert!(r.starts_with("( BAD ") || r.starts_with("* BAD "), "{r}");
    assert!(r.ends_with("a OK NOOP completed\r\n"), "{r}");
    let r = send(&mut s, &format!("b LIST {deep}\r\nc NOOP\r\n"));
    assert!(r.starts_with("b BAD "), "{r}");
    let mut s = selected(&store);
    for command in [
        format!("d SEARCH {deep}"),
        format!("d UID SEARCH RETURN {deep}"),
        format!("d SEARCH RETURN (MIN) {deep}"),
        format!("d LIST \"\" {deep}"),
        format!("d LIST {deep}"),
        format!("d SEARCH {}", "NOT ".repeat(15_000)),
        format!("d SEARCH {}ALL", "OR ALL ".repeat(9_000)),
    ] {
        let r = send(&mut s, &format!("{command}\r\ne NOOP\r\n"));
        assert!(r.contains("d BAD ") || r.contains("d NO "), "{r}");
        assert!(r.ends_with("e OK NOOP completed\r\n"), "{r}");
    }
    // Real nesting still works.
    let r = send(&mut s, "f LIST \"\" * RETURN (STATUS (MESSAGES))\r\n");
    assert!(r.contains("* STATUS \"INBOX\" (MESSAGES 1)"), "{r}");
    let r = send(&mut s, "g SEARCH RETURN (COUNT) (OR (SEEN) (NOT (DELETED)))\r\n");
    assert!(r.contains("COUNT 1"), "{r}");
}

/// Issue 19 item 2: `LIST "" "<1000 × *>Q"` never returned; 60,000 `*` overflowed the
/// stack. Patterns up to the bound match in pattern × name steps; longer are refused.
#[test]
fn long_wildcard_patterns_are_matched_in_linear_time_or_refused() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    for name in ["a", "a/b", "a/b/c"] {
        assert!(send(&mut s, &format!("c CREATE {name}\r\n")).starts_with("c OK"));
    }
    let stars = "*".repeat(1000);
    let r = send(&mut s, &format!("l LIST \"\" \"{stars}Q\"\r\n"));
    assert_eq!(r, "l OK LIST completed\r\n");
    let r = send(&mut s, &format!("l LIST \"\" \"{}c\"\r\n", "%*".repeat(500)));
    assert!(
        r.contains("\"a/b/c\"") && r.ends_with("l OK LIST completed\r\n"),
        "{r}"
    );
    let r = send(&mut s, &format!("l LIST \"\" \"{}Q\"\r\n", "*".repeat(60_000)));
    assert_eq!(r, "l BAD Pattern too long\r\n");
    let r = send(&mut s, &format!("l LIST \"{}\" \"*\"\r\n", "x".repeat(2_000)));
    assert_eq!(r, "l BAD Pattern too long\r\n");
    let many = vec!["*"; 40].join(" ");
    let r = send(&mut s, &format!("l LIST \"\" ({many})\r\n"));
    assert_eq!(r, "l BAD Pattern too long\r\n");
    let r = send(&mut s, &format!("l LSUB \"\" \"{}Q\"\r\n", "*".repeat(60_000)));
    assert_eq!(r, "l BAD Pattern too long\r\n");
}

/// Issue 19 item 4: before login, literals up to APPENDLIMIT (50 MiB) were accepted and
/// held. Now a few KiB, and the whole command within a line's length.
#[test]
fn literals_before_login_are_small() {
    let store = MockStore::new();
    let mut s = session_with(&store, info(true, false));
    s.greeting();
    assert_eq!(
        send(&mut s, "a LOGIN {8193}\r\n"),
        "a NO [TOOBIG] Literal too big\r\n"
    );
    let out = s.receive(b"b LOGIN {1000000+}\r\n");
    assert_eq!(out.action, Action::Close);
    let mut s = session_with(&store, info(true, false));
    s.greeting();
    // Literals within the bound still log in (user names with spaces or quotes).
    let r = send(&mut s, &format!("a LOGIN {{{}}}\r\n", USER.len()));
    assert_eq!(r, "+ OK\r\n");
    let r = send(
        &mut s,
        &format!("{USER} {{{}+}}\r\n{PASSWORD}\r\n", PASSWORD.len()),
    );
    assert!(r.starts_with("a OK "), "{r}");
    // After login APPENDLIMIT applies.
    let body = "x".repeat(100_000);
    let r = send(
        &mut s,
        &format!("b APPEND INBOX {{{}+}}\r\n{body}\r\n", body.len()),
    );
    assert!(r.starts_with("b OK [APPENDUID"), "{r}");
    // Many small literals in one command before login: the command is bounded too, and
    // the literal that would pass the bound is refused before it is read.
    let mut s = session_with(&store, info(true, false));
    s.greeting();
    let chunk = format!("{{8000+}}\r\n{}", "y".repeat(8000));
    let out = s.receive(format!("c LOGIN {}\r\n", chunk.repeat(20)).as_bytes());
    assert_eq!(out.action, Action::Close);
    assert!(String::from_utf8_lossy(&out.bytes).contains("c BAD [TOOBIG] Literal too big"));
}

/// `MockAuth` with the account's access `read-only`.
struct ReadOnlyAuth;

impl AuthBackend for ReadOnlyAuth {
    fn authenticate(&self, credentials: &Credentials) -> Result<Account, AuthError> {
        MockAuth.authenticate(credentials).map(|a| Account {
            access: crate::auth::AccessLevel::ReadOnly,
            ..a
        })
    }
}

/// Issue 19 item 8: a `read-only` user got `[READ-WRITE]` at SELECT and could APPEND,
/// set `\Deleted`, EXPUNGE, CREATE and DELETE. Now SELECT is EXAMINE and every change
/// is refused with `[NOPERM]` or `[READ-ONLY]`; reading works.
#[test]
fn read_only_users_read_and_change_nothing() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = ImapSession::new(
        info(true, false),
        Arc::new(ReadOnlyAuth),
        store.clone(),
        ImapLimits::default(),
    );
    s.greeting();
    assert!(send(&mut s, &format!("a LOGIN {USER} {PASSWORD}\r\n")).starts_with("a OK"));
    let r = send(&mut s, "b SELECT INBOX\r\n");
    assert!(r.ends_with("b OK [READ-ONLY] SELECT completed\r\n"), "{r}");
    let r = send(&mut s, "c FETCH 1 (BODY[])\r\n");
    assert!(
        r.contains("Hi there") && r.ends_with("c OK FETCH completed\r\n"),
        "{r}"
    );
    for (command, refused) in [
        ("d STORE 1 +FLAGS (\\Deleted)", "d NO [READ-ONLY]"),
        ("e EXPUNGE", "e NO [READ-ONLY]"),
        ("f CREATE Evil", "f NO [NOPERM]"),
        ("g DELETE INBOX", "g NO [NOPERM]"),
        ("h RENAME INBOX Other", "h NO [NOPERM]"),
        ("i APPEND INBOX {3+}\r\nabc", "i NO [NOPERM]"),
        ("j COPY 1 INBOX", "j NO [NOPERM]"),
        ("k MOVE 1 INBOX", "k NO [NOPERM]"),
        ("l SUBSCRIBE INBOX", "l NO [NOPERM]"),
        ("m UID EXPUNGE 1", "m NO [READ-ONLY]"),
    ] {
        let r = send(&mut s, &format!("{command}\r\n"));
        assert!(r.starts_with(refused), "{command}: {r}");
    }
    assert!(send(&mut s, "n CLOSE\r\n").starts_with("n OK"));
    let r = send(&mut s, "o EXAMINE INBOX\r\n");
    assert!(r.contains("* 1 EXISTS"), "nothing was expunged: {r}");
    let r = send(&mut s, "p FETCH 1 (FLAGS)\r\n");
    assert!(!r.contains("\\Seen") && !r.contains("\\Deleted"), "{r}");
}

#[test]
fn a_keyword_set_by_another_session_is_announced_in_flags_before_it_is_shown() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut a = selected(&store);
    let mut b = selected(&store);
    send(&mut b, "b1 STORE 1 +FLAGS.SILENT (Work)\r\n");
    assert_eq!(
        send(&mut a, "a1 NOOP\r\n"),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Work)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Work \\*)] Flags permitted\r\n\
         * 1 FETCH (FLAGS (\\Recent Work))\r\n\
         a1 OK NOOP completed\r\n"
    );
    // Announced once; SELECT lists the keywords in use.
    send(&mut b, "b2 STORE 1 -FLAGS.SILENT (Work)\r\n");
    assert_eq!(
        send(&mut a, "a2 NOOP\r\n"),
        "* 1 FETCH (FLAGS (\\Recent))\r\na2 OK NOOP completed\r\n"
    );
    send(&mut b, "b3 STORE 1 +FLAGS.SILENT (Later)\r\n");
    let select = send(&mut b, "b4 SELECT INBOX\r\n");
    assert!(
        select.contains("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Later)\r\n"),
        "{select}"
    );
}

#[test]
fn examine_reports_the_recent_count_status_and_select_report() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, 0);
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a STATUS INBOX (RECENT)\r\n"),
        "* STATUS \"INBOX\" (RECENT 2)\r\na OK STATUS completed\r\n"
    );
    let examine = send(&mut s, "b EXAMINE INBOX\r\n");
    assert!(examine.contains("* 2 RECENT\r\n"), "{examine}");
    // EXAMINE did not take them: SELECT still gets both.
    let select = send(&mut s, "c SELECT INBOX\r\n");
    assert!(select.contains("* 2 RECENT\r\n"), "{select}");
}

#[test]
fn a_silent_store_reports_flags_another_session_changed_meanwhile() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut a = selected(&store);
    let mut b = selected(&store);
    send(&mut b, "b1 STORE 1 +FLAGS.SILENT (\\Flagged)\r\n");
    // a has not heard of \Flagged: its .SILENT STORE must tell it, not swallow it.
    assert_eq!(
        send(&mut a, "a1 STORE 1 +FLAGS.SILENT (\\Seen)\r\n"),
        "* 1 FETCH (FLAGS (\\Seen \\Flagged \\Recent))\r\na1 OK STORE completed\r\n"
    );
    assert_eq!(send(&mut a, "a2 NOOP\r\n"), "a2 OK NOOP completed\r\n");
}

#[test]
fn messages_flagged_after_a_later_arrival_keep_their_place_in_other_views() {
    // The change log is in modseq order: uid 2 arrives, uid 3 arrives, then uid 2's flags
    // change and its entry moves after uid 3's. A view catching up must still see both.
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut a = selected(&store);
    let mut b = selected(&store);
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, 0);
    send(&mut b, "b1 NOOP\r\n");
    send(&mut b, "b2 STORE 2 +FLAGS.SILENT (\\Seen)\r\n");
    let out = send(&mut a, "a1 NOOP\r\n");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    assert_eq!(
        send(&mut a, "a2 FETCH 1:* (UID FLAGS)\r\n"),
        "* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n\
         * 2 FETCH (UID 2 FLAGS (\\Seen))\r\n\
         * 3 FETCH (UID 3 FLAGS ())\r\n\
         a2 OK FETCH completed\r\n"
    );
}

/// Issue 19 item 10: `BODY[]<4294967295.10>` echoed the clamped origin (the message
/// length) instead of the one asked for.
#[test]
fn partial_fetch_echoes_the_requested_origin() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    let r = send(&mut s, "f FETCH 1 (BODY.PEEK[]<4294967295.10>)\r\n");
    assert!(r.contains("BODY[]<4294967295> "), "{r}");
    let r = send(&mut s, "g FETCH 1 (BODY.PEEK[]<6.4>)\r\n");
    assert!(r.contains("BODY[]<6> {4}\r\nAnn )"), "{r}");
}

/// Issue 19 item 4, after login: an APPEND's message literal no longer sits in the
/// session while it arrives; it goes to the backend's spool (a file in the server) and
/// is read back once for the store's write.
#[test]
fn big_append_literals_are_spooled_not_held() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    let body = format!("Subject: big\r\n\r\n{}", "x".repeat(600_000));
    assert_eq!(
        send(&mut s, &format!("a APPEND INBOX (\\Seen) {{{}}}\r\n", body.len())),
        "+ OK\r\n"
    );
    let (first, rest) = body.as_bytes().split_at(300_000);
    assert_eq!(s.receive(first).bytes, b"");
    assert!(
        s.framer.command().len() < 1024,
        "the session holds {} octets",
        s.framer.command().len()
    );
    assert!(s.framer.spool_len() == Some(300_000));
    let out = s.receive(rest);
    assert_eq!(out.bytes, b"");
    let r = send(&mut s, "\r\n");
    assert!(r.starts_with("a OK [APPENDUID"), "{r}");
    let r = send(&mut s, "s SELECT INBOX\r\nf FETCH 1 (RFC822.SIZE FLAGS)\r\n");
    assert!(
        r.contains(&format!("RFC822.SIZE {}", body.len())) && r.contains("\\Seen"),
        "{r}"
    );
    // A mailbox name given as a big literal is not a message: not spooled.
    let name = "n".repeat(300_000);
    assert_eq!(
        send(&mut s, &format!("b CREATE {{{}}}\r\n", name.len())),
        "+ OK\r\n"
    );
    s.receive(name.as_bytes());
    assert!(s.framer.spool_len().is_none() && s.framer.command().len() > 300_000);
    send(&mut s, "\r\n");
    // Non-synchronizing, pipelined with the next command.
    let r = send(
        &mut s,
        &format!("c APPEND INBOX {{{}+}}\r\n{body}\r\nd NOOP\r\n", body.len()),
    );
    assert!(
        r.contains("c OK [APPENDUID") && r.ends_with("d OK NOOP completed\r\n"),
        "{r}"
    );
}

#[test]
fn esearch_min_reports_the_modseq_of_the_message_returned() {
    // Issue 14 defect 7 (RFC 4731, RFC 7162 §3.1.5).
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    send(&mut s, "a STORE 2 +FLAGS.SILENT (\\Flagged)\r\n");
    send(&mut s, "b STORE 1 +FLAGS.SILENT (\\Flagged)\r\n");
    // Message 1 now has modseq 5, message 2 modseq 4.
    assert_eq!(
        send(&mut s, "c SEARCH RETURN (MIN) MODSEQ 2\r\n"),
        // The first MODSEQ criterion turns CONDSTORE on (RFC 7162 §3.1).
        "* OK [HIGHESTMODSEQ 5] Highest\r\n\
         * ESEARCH (TAG \"c\") MIN 1 MODSEQ 5\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d SEARCH RETURN (MAX) MODSEQ 2\r\n"),
        "* ESEARCH (TAG \"d\") MAX 2 MODSEQ 4\r\nd OK SEARCH completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e SEARCH RETURN (MAX COUNT) MODSEQ 2\r\n"),
        "* ESEARCH (TAG \"e\") MAX 2 COUNT 2 MODSEQ 5\r\ne OK SEARCH completed\r\n"
    );
}

#[test]
fn move_into_the_selected_mailbox_itself_answers_copyuid() {
    // Issue 14 defect 9 (RFC 6851 allows it).
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    let mut s = selected(&store);
    let validity = store.state.lock().unwrap().mailboxes[0].info.uid_validity;
    assert_eq!(
        send(&mut s, "a UID MOVE 1 INBOX\r\n"),
        format!(
            "* OK [COPYUID {validity} 1 2] Moved\r\n* 1 EXPUNGE\r\n* 1 EXISTS\r\n* 1 RECENT\r\na OK MOVE completed\r\n"
        )
    );
    assert_eq!(
        send(&mut s, "b FETCH 1 (UID)\r\n"),
        "* 1 FETCH (UID 2)\r\nb OK FETCH completed\r\n"
    );
}

#[test]
fn lsub_shows_the_unsubscribed_parent_of_a_subscribed_child_as_noselect() {
    // Issue 14 defect 8, the LSUB part (RFC 3501 §6.3.9).
    let store = MockStore::new();
    store.create_mailbox(&account(), "x", None).unwrap();
    store.create_mailbox(&account(), "x/y", None).unwrap();
    store.create_mailbox(&account(), "x/y/z", None).unwrap();
    store.set_subscribed(&account(), "x", false).unwrap();
    store.set_subscribed(&account(), "x/y", false).unwrap();
    store.set_subscribed(&account(), "x/y/z", true).unwrap();
    let mut s = logged_in(&store);
    assert_eq!(
        send(&mut s, "a LSUB \"\" x/%\r\n"),
        "* LSUB (\\Noselect) \"/\" \"x/y\"\r\na OK LSUB completed\r\n"
    );
    // Where the pattern reaches the subscribed mailbox itself, no parent is added.
    assert_eq!(
        send(&mut s, "b LSUB \"\" x/*\r\n"),
        "* LSUB () \"/\" \"x/y/z\"\r\nb OK LSUB completed\r\n"
    );
}

#[test]
fn subscriptions_outlive_their_mailboxes_in_list_subscribed_recursivematch_and_lsub() {
    // Issue 14 defect 8 (RFC 5258 §3 and its examples 8-9, RFC 3501 §6.3.9).
    let store = MockStore::new();
    for name in ["Drafts", "Trash", "Junk", "Archive"] {
        store.set_subscribed(&account(), name, false).unwrap();
    }
    let mut s = logged_in(&store);
    let r = send(
        &mut s,
        "1 CREATE Fruit\r\n2 CREATE Fruit/banana\r\n3 CREATE Fruit/peach\r\n\
         4 CREATE Vegetable\r\n5 CREATE Vegetable/broccoli\r\n6 CREATE Tofu/firm\r\n\
         7 SUBSCRIBE Fruit/banana\r\n8 SUBSCRIBE Fruit/peach\r\n9 SUBSCRIBE Vegetable\r\n\
         10 SUBSCRIBE Vegetable/broccoli\r\n11 SUBSCRIBE Tofu/firm\r\n\
         12 DELETE Fruit/peach\r\n13 DELETE Tofu/firm\r\n",
    );
    assert!(r.ends_with("13 OK DELETE completed\r\n"), "{r}");
    assert!(!r.contains(" NO ") && !r.contains(" BAD "), "{r}");
    // CREATE does not subscribe.
    assert_eq!(
        send(&mut s, "a LIST \"\" Fruit RETURN (SUBSCRIBED)\r\n"),
        "* LIST (\\HasChildren) \"/\" \"Fruit\"\r\na OK LIST completed\r\n"
    );
    // A subscribed name whose mailbox is gone is listed \NonExistent.
    assert_eq!(
        send(&mut s, "b LIST (SUBSCRIBED) \"\" *\r\n"),
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
         * LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/banana\"\r\n\
         * LIST (\\NonExistent \\Subscribed) \"/\" \"Fruit/peach\"\r\n\
         * LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"\r\n\
         * LIST (\\NonExistent \\Subscribed) \"/\" \"Tofu/firm\"\r\n\
         * LIST (\\HasChildren \\Subscribed) \"/\" \"Vegetable\"\r\n\
         * LIST (\\HasNoChildren \\Subscribed) \"/\" \"Vegetable/broccoli\"\r\n\
         b OK LIST completed\r\n"
    );
    // RECURSIVEMATCH: CHILDINFO on every listed parent of a subscribed name `%` does not
    // reach, subscribed itself (Vegetable), existing but not (Fruit) or gone (Tofu).
    assert_eq!(
        send(
            &mut s,
            "c LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (CHILDREN)\r\n"
        ),
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
         * LIST (\\HasChildren) \"/\" \"Fruit\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
         * LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"\r\n\
         * LIST (\\NonExistent) \"/\" \"Tofu\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
         * LIST (\\HasChildren \\Subscribed) \"/\" \"Vegetable\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
         c OK LIST completed\r\n"
    );
    // Where the pattern reaches every subscribed name, there is no CHILDINFO.
    assert_eq!(
        send(
            &mut s,
            "d LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"Veg*\" RETURN (CHILDREN)\r\n"
        ),
        "* LIST (\\HasChildren \\Subscribed) \"/\" \"Vegetable\"\r\n\
         * LIST (\\HasNoChildren \\Subscribed) \"/\" \"Vegetable/broccoli\"\r\n\
         d OK LIST completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e LIST (SUBSCRIBED) \"\" Fruit/% RETURN (CHILDREN)\r\n"),
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/banana\"\r\n\
         * LIST (\\NonExistent \\Subscribed) \"/\" \"Fruit/peach\"\r\n\
         e OK LIST completed\r\n"
    );
    // The plain LIST shows neither the gone names nor their parents.
    assert_eq!(
        send(&mut s, "f LIST \"\" (To* Fruit/*)\r\n"),
        "* LIST (\\HasNoChildren) \"/\" \"Fruit/banana\"\r\nf OK LIST completed\r\n"
    );
    // LSUB agrees: the gone names as \Noselect, and their unsubscribed parents that `%`
    // stops at.
    assert_eq!(
        send(&mut s, "g LSUB \"\" *\r\n"),
        "* LSUB () \"/\" \"INBOX\"\r\n\
         * LSUB () \"/\" \"Fruit/banana\"\r\n\
         * LSUB (\\Noselect) \"/\" \"Fruit/peach\"\r\n\
         * LSUB () \"/\" \"Sent\"\r\n\
         * LSUB (\\Noselect) \"/\" \"Tofu/firm\"\r\n\
         * LSUB () \"/\" \"Vegetable\"\r\n\
         * LSUB () \"/\" \"Vegetable/broccoli\"\r\n\
         g OK LSUB completed\r\n"
    );
    assert_eq!(
        send(&mut s, "h LSUB \"\" %\r\n"),
        "* LSUB () \"/\" \"INBOX\"\r\n\
         * LSUB (\\Noselect) \"/\" \"Fruit\"\r\n\
         * LSUB () \"/\" \"Sent\"\r\n\
         * LSUB (\\Noselect) \"/\" \"Tofu\"\r\n\
         * LSUB () \"/\" \"Vegetable\"\r\n\
         h OK LSUB completed\r\n"
    );
    // A gone name can be unsubscribed, once; a name that never was cannot be subscribed.
    assert_eq!(
        send(
            &mut s,
            "i UNSUBSCRIBE Fruit/peach\r\nj UNSUBSCRIBE Fruit/peach\r\nk SUBSCRIBE Nothing\r\n"
        ),
        "i OK UNSUBSCRIBE completed\r\n\
         j NO [NONEXISTENT] Mailbox does not exist\r\n\
         k NO [NONEXISTENT] Mailbox does not exist\r\n"
    );
    // RENAME takes the subscriptions of the mailbox and its children along.
    assert_eq!(
        send(&mut s, "l RENAME Vegetable Veg\r\nm LSUB \"\" V*\r\n"),
        "l OK RENAME completed\r\n\
         * LSUB () \"/\" \"Veg\"\r\n\
         * LSUB () \"/\" \"Veg/broccoli\"\r\n\
         m OK LSUB completed\r\n"
    );
}
