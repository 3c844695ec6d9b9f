//! EXPUNGE and UID EXPUNGE (RFC 3501 §6.4.3, UIDPLUS RFC 4315).

use imap_codec::imap_types::sequence::SequenceSet;

use super::backend::Flags;
use super::view::set_contains;
use super::*;

impl ImapSession {
    pub(super) fn expunge(&mut self, tag: &str, set: Option<&SequenceSet>, out: &mut Vec<u8>) -> Flow {
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        if view.read_only {
            no(out, tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        let star = view.messages.last().map_or(0, |m| m.meta.uid);
        let uids: Vec<u32> = view
            .messages
            .iter()
            .filter(|m| !m.gone && m.meta.flags.has(Flags::DELETED))
            .filter(|m| set.is_none_or(|s| set_contains(s, m.meta.uid, star)))
            .map(|m| m.meta.uid)
            .collect();
        if !uids.is_empty() {
            match self.store.expunge(account, view.id, &uids) {
                Ok(removed) => view.remove_uids(&removed, out),
                Err(err) => return backend_no(out, tag, &err),
            }
        }
        self.catch_up(true, out);
        ok(out, tag, "EXPUNGE completed");
        Flow::Continue
    }
}
