//! QUOTA (RFC 9208), STATUS=SIZE (RFC 8438) and STATUS DELETED-STORAGE, byte-exact.

use super::tests::{logged_in, selected, send, MSG};
use crate::imap::Flags;
use crate::testing::imap::MockStore;

#[test]
fn quota_root_and_usage_in_kibibytes() {
    let store = MockStore::new();
    let mut s = logged_in(&store);
    // No limit set: no quota root.
    assert_eq!(
        send(&mut s, "a GETQUOTAROOT INBOX\r\n"),
        "* QUOTAROOT \"INBOX\"\r\na OK GETQUOTAROOT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "b GETQUOTA \"\"\r\n"),
        "b NO [NONEXISTENT] No such quota root\r\n"
    );
    store.state.lock().unwrap().quota_limit = Some(10 * 1024 * 1024);
    for _ in 0..30 {
        store.deliver("Archive", &format!("{MSG}{}\r\n", "x".repeat(100)), 0);
    }
    // 30 messages of 164 octets: 4,920 octets, shown as 5 KiB (rounded up).
    assert_eq!(
        send(&mut s, "c GETQUOTAROOT Archive\r\n"),
        "* QUOTAROOT \"Archive\" \"\"\r\n* QUOTA \"\" (STORAGE 5 10240)\r\nc OK GETQUOTAROOT completed\r\n"
    );
    assert_eq!(
        send(&mut s, "d GETQUOTA \"\"\r\n"),
        "* QUOTA \"\" (STORAGE 5 10240)\r\nd OK GETQUOTA completed\r\n"
    );
    assert_eq!(
        send(&mut s, "e GETQUOTA \"other\"\r\n"),
        "e NO [NONEXISTENT] No such quota root\r\n"
    );
    assert_eq!(
        send(&mut s, "f GETQUOTAROOT Nowhere\r\n"),
        "f NO [NONEXISTENT] Mailbox does not exist\r\n"
    );
    assert_eq!(
        send(&mut s, "g SETQUOTA \"\" (STORAGE 1)\r\n"),
        "g NO [NOPERM] Quotas are set by the administrator\r\n"
    );
}

#[test]
fn status_size_and_deleted_storage() {
    let store = MockStore::new();
    store.deliver("INBOX", MSG, 0);
    store.deliver("INBOX", MSG, Flags::DELETED);
    store.deliver("INBOX", "Subject: x\r\n\r\n.\r\n", Flags::DELETED);
    let mut s = selected(&store);
    let size = 2 * MSG.len() + 17;
    assert_eq!(
        send(&mut s, "a STATUS INBOX (MESSAGES SIZE DELETED DELETED-STORAGE)\r\n"),
        format!(
            "* STATUS \"INBOX\" (MESSAGES 3 SIZE {size} DELETED 2 DELETED-STORAGE {})\r\na OK STATUS completed\r\n",
            MSG.len() + 17
        )
    );
    assert_eq!(
        send(
            &mut s,
            "b LIST \"\" Archive RETURN (STATUS (SIZE DELETED-STORAGE))\r\n"
        ),
        "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"\r\n\
         * STATUS \"Archive\" (SIZE 0 DELETED-STORAGE 0)\r\nb OK LIST completed\r\n"
    );
}
