//! COPY, UID COPY, MOVE and UID MOVE (RFC 3501 §6.4.7, UIDPLUS COPYUID RFC 4315,
//! MOVE RFC 6851).

use imap_codec::imap_types::{mailbox::Mailbox, sequence::SequenceSet};

use super::backend::BackendError;
use super::text::compress_ordered;
use super::*;

impl ImapSession {
    pub(super) fn copy_or_move(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        if is_move && view.read_only {
            no(out, tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        let Some(indices) = view.resolve(set, uid) else {
            return self.bad(out, tag, "Invalid message sequence number");
        };
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            no(out, tag, "[TRYCREATE] Mailbox does not exist");
            return Flow::Continue;
        };
        let dest = match self.store.mailbox(account, &name) {
            Ok(d) => d,
            Err(BackendError::NotFound) => {
                no(out, tag, "[TRYCREATE] Mailbox does not exist");
                return Flow::Continue;
            }
            Err(err) => return backend_no(out, tag, &err),
        };
        let uids: Vec<u32> = indices
            .iter()
            .filter_map(|&i| view.messages.get(i))
            .filter(|m| !m.gone)
            .map(|m| m.meta.uid)
            .collect();
        let verb = if is_move { "MOVE" } else { "COPY" };
        if uids.is_empty() {
            // Already-gone UIDs succeed quietly (clients retry moves after expunges).
            ok(out, tag, &format!("{verb} completed"));
            return Flow::Continue;
        }
        let result = if is_move {
            self.store.move_messages(account, view.id, &uids, dest.id)
        } else {
            self.store.copy(account, view.id, &uids, dest.id)
        };
        let (validity, pairs) = match result {
            Ok(r) => r,
            Err(err) => return backend_no(out, tag, &err),
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            format!(
                "[COPYUID {validity} {} {}] ",
                compress_ordered(&src),
                compress_ordered(&dst)
            )
        };
        if is_move {
            // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
            if !code.is_empty() {
                out.extend_from_slice(format!("* OK {code}Moved\r\n").as_bytes());
            }
            let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            view.remove_uids(&moved, out);
            self.catch_up(true, out);
            ok(out, tag, "MOVE completed");
        } else {
            self.catch_up(uid, out);
            ok(out, tag, &format!("{code}COPY completed"));
        }
        Flow::Continue
    }
}
