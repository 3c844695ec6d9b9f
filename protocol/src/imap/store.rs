//! STORE and UID STORE (RFC 3501 §6.4.6, CONDSTORE UNCHANGEDSINCE RFC 7162 §3.1.3):
//! answers from the records as they are now, other sessions' changes included.

use imap_codec::imap_types::{
    command::StoreModifier,
    flag::{Flag, StoreResponse, StoreType},
    sequence::SequenceSet,
};

use super::backend::{Flags, StoreOp};
use super::text::{compress, push_flags};
use super::*;

impl ImapSession {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_cmd(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
        out: &mut Vec<u8>,
    ) -> Flow {
        let condstore_cmd = !modifiers.is_empty();
        if condstore_cmd {
            self.enable_condstore(out);
        }
        let condstore = self.condstore;
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        if view.read_only {
            no(out, tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        let Some(indices) = view.resolve(set, uid) else {
            return self.bad(out, tag, "Invalid message sequence number");
        };
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                StoreModifier::UnchangedSince(v) => *v,
            })
            .next();
        let op = match kind {
            StoreType::Add => StoreOp::Add,
            StoreType::Remove => StoreOp::Remove,
            StoreType::Replace => StoreOp::Replace,
        };
        let flags = convert_flags(flags);
        let uids: Vec<u32> = indices
            .iter()
            .filter_map(|&i| view.messages.get(i))
            .filter(|m| !m.gone)
            .map(|m| m.meta.uid)
            .collect();
        // What the client believes each message's flags will be after this STORE.
        let expected: std::collections::HashMap<u32, Flags> = indices
            .iter()
            .filter_map(|&i| view.messages.get(i))
            .filter(|m| !m.gone)
            .map(|m| {
                let mut f = m.meta.flags.clone();
                f.apply(op, &flags);
                (m.meta.uid, f)
            })
            .collect();
        let (metas, failed) = if uids.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            match self
                .store
                .store_flags(account, view.id, &uids, op, &flags, unchanged_since)
            {
                Ok(r) => r,
                Err(err) => return backend_no(out, tag, &err),
            }
        };
        // The store returns every message as it is now, other sessions' changes
        // included; keywords new to the client are announced before they are shown.
        let changed_uids: std::collections::HashSet<u32> = view.update_metas(&metas).into_iter().collect();
        view.announce_keywords(metas.iter().map(|m| &m.flags), out);
        let silent = matches!(response, StoreResponse::Silent);
        let failed_uids: std::collections::HashSet<u32> = failed.iter().copied().collect();
        for &i in &indices {
            let Some(m) = view.messages.get(i) else {
                continue;
            };
            if m.gone || failed_uids.contains(&m.meta.uid) {
                continue;
            }
            let changed = changed_uids.contains(&m.meta.uid);
            // Flags other than the client expects (another session changed them too)
            // are reported even for .SILENT: nothing else would tell the client, as the
            // view has taken them in already.
            let surprising = expected
                .get(&m.meta.uid)
                .is_some_and(|f| !f.same_as(&m.meta.flags));
            // .SILENT still reports a change when the client asked for a conditional
            // STORE (RFC 7162 §3.2), so it learns the new MODSEQ.
            if silent && !(condstore_cmd && changed) && !surprising {
                continue;
            }
            let silent = silent && !surprising;
            out.extend_from_slice(format!("* {} FETCH (", i + 1).as_bytes());
            // With CONDSTORE on, every FETCH caused by a flag change carries UID and
            // MODSEQ (RFC 7162 §3.1).
            if uid || condstore {
                out.extend_from_slice(format!("UID {} ", m.meta.uid).as_bytes());
            }
            if !silent {
                out.extend_from_slice(b"FLAGS ");
                push_flags(out, &m.meta.flags, m.recent);
            }
            if condstore {
                if !silent {
                    out.push(b' ');
                }
                out.extend_from_slice(format!("MODSEQ ({})", m.meta.modseq).as_bytes());
            }
            if out.ends_with(b" ") {
                out.pop();
            }
            out.extend_from_slice(b")\r\n");
        }
        let modified: Vec<u32> = if uid {
            failed.clone()
        } else {
            failed
                .iter()
                .filter_map(|u| view.index_of_uid(*u).map(|i| i as u32 + 1))
                .collect()
        };
        self.catch_up(uid, out);
        if modified.is_empty() {
            ok(out, tag, "STORE completed");
        } else {
            ok(
                out,
                tag,
                &format!("[MODIFIED {}] Conditional STORE failed", compress(&modified)),
            );
        }
        Flow::Continue
    }
}
