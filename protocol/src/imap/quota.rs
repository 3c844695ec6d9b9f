//! QUOTA (RFC 9208) with the STORAGE resource: one quota root, `""`, covering all of the
//! user's mailboxes, its limit the account's quota as the administrator set it. Without
//! a limit there is no quota root. SETQUOTA is refused (QUOTASET is not advertised).

use super::text::push_string;
use super::*;

impl ImapSession {
    pub(super) fn get_quota(&mut self, tag: &str, root: &[u8], out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        match self.store.quota(&account) {
            Ok(Some(quota)) if root.is_empty() => {
                push_quota(out, &quota);
                ok(out, tag, "GETQUOTA completed")
            }
            Ok(_) => no(out, tag, "[NONEXISTENT] No such quota root"),
            Err(err) => backend_no(out, tag, &err),
        }
    }

    pub(super) fn get_quota_root(&mut self, tag: &str, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            return no(out, tag, "[NONEXISTENT] Mailbox does not exist");
        };
        if let Err(err) = self.store.mailbox(&account, &name) {
            return backend_no(out, tag, &err);
        }
        let quota = match self.store.quota(&account) {
            Ok(q) => q,
            Err(err) => return backend_no(out, tag, &err),
        };
        out.extend_from_slice(b"* QUOTAROOT ");
        push_mailbox(out, &name, self.utf8);
        if let Some(quota) = quota {
            out.extend_from_slice(b" \"\"\r\n");
            push_quota(out, &quota);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        ok(out, tag, "GETQUOTAROOT completed")
    }
}

/// `* QUOTA "" (STORAGE used limit)` in units of 1,024 octets, use rounded up so that a
/// full account never shows room left.
fn push_quota(out: &mut Vec<u8>, quota: &Quota) {
    out.extend_from_slice(b"* QUOTA ");
    push_string(out, b"");
    out.extend_from_slice(
        format!(
            " (STORAGE {} {})\r\n",
            quota.used_bytes.div_ceil(1024),
            quota.limit_bytes / 1024
        )
        .as_bytes(),
    );
}
