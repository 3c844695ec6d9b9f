//! CONTEXT=SEARCH (RFC 5267 §4): `RETURN (PARTIAL low:high)` pages of a result,
//! `RETURN (UPDATE)` contexts that report how a UID SEARCH result changes (`* ESEARCH
//! (TAG "t") UID REMOVEFROM (0 uids) ADDTO (0 uids)`) while the mailbox stays
//! selected, and CANCELUPDATE. A context keeps its search program and the UIDs it last
//! reported; whenever the view has moved past the modseq it was last evaluated at, the
//! program runs again over the view and only the difference goes out. UPDATE of a
//! SEARCH by sequence number, or past `MAX_CONTEXTS`, is refused with `* NO
//! [NOUPDATE "tag"]` (§4.3.1) and the search answered as without it.

use std::collections::BTreeSet;

use imap_codec::imap_types::command::{Command, CommandBody};

use super::text::compress_ordered;
use super::*;

/// Update contexts one session may hold (the RFC asks for at least one).
pub(super) const MAX_CONTEXTS: usize = 4;

pub(super) struct UpdateContext {
    tag: String,
    /// The search as a plain `tag UID SEARCH ...` command, parsed again at each update.
    command: Vec<u8>,
    /// UIDs the client has been given, ascending.
    uids: Vec<u32>,
    /// The view's HIGHESTMODSEQ when `uids` was computed.
    at_modseq: u64,
}

/// The indices of `hits` that positions `low:high` of PARTIAL name (1-based; negative
/// from the end; either order).
pub(super) fn partial_window(len: usize, low: i32, high: i32) -> std::ops::Range<usize> {
    let (a, b) = (low.min(high), low.max(high));
    let (first, last) = if a > 0 {
        (a as usize - 1, b as usize)
    } else {
        // -1 is the last: -b..-a from the end.
        let from_end = |n: i32| len.saturating_sub(n.unsigned_abs() as usize);
        (from_end(a), from_end(b) + 1)
    };
    let last = last.min(len);
    first.min(last)..last
}

impl ImapSession {
    /// Before a UID SEARCH with UPDATE runs: `Err` with the BAD text when the tag is
    /// already a context's (§4.3), `Ok(false)` when the update is refused (NOUPDATE
    /// written), `Ok(true)` when a context will be made.
    pub(super) fn admit_context(
        &mut self,
        tag: &str,
        uid: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, &'static str> {
        if self.contexts.iter().any(|c| c.tag == tag) {
            return Err("Tag reuse");
        }
        let refusal = if !uid {
            Some("UPDATE is offered for UID SEARCH only")
        } else if self.contexts.len() >= MAX_CONTEXTS {
            Some("Too many contexts")
        } else {
            None
        };
        if let Some(text) = refusal {
            out.extend_from_slice(b"* NO [NOUPDATE ");
            text::push_string(out, tag.as_bytes());
            out.extend_from_slice(format!("] {text}\r\n").as_bytes());
            return Ok(false);
        }
        Ok(true)
    }

    /// Keeps the context of the UID SEARCH just answered (`search` left its result).
    pub(super) fn register_context(&mut self, tag: &str, command: Vec<u8>) {
        if let Some((uids, at_modseq)) = self.new_context.take() {
            self.contexts.push(UpdateContext {
                tag: tag.to_string(),
                command,
                uids,
                at_modseq,
            });
        }
    }

    /// CANCELUPDATE: the named contexts end; BAD if one is not an UPDATE context.
    pub(super) fn cancel_update(&mut self, tag: &str, tags: &[String], out: &mut Vec<u8>) -> Flow {
        let before = self.contexts.len();
        self.contexts.retain(|c| !tags.contains(&c.tag));
        if before - self.contexts.len() < tags.len() {
            return self.bad(out, tag, "No such UPDATE context");
        }
        ok(out, tag, "CANCELUPDATE completed")
    }

    /// Reports how each context's result changed since it was last evaluated.
    pub(super) fn update_contexts(&mut self, out: &mut Vec<u8>) {
        let State::Selected { view, .. } = &self.state else {
            return;
        };
        let now = view.highest_modseq;
        if self.contexts.iter().all(|c| c.at_modseq == now) {
            return;
        }
        let mut contexts = std::mem::take(&mut self.contexts);
        for context in contexts.iter_mut().filter(|c| c.at_modseq != now) {
            let Some(uids) = self.context_result(&context.command) else {
                continue;
            };
            let old: BTreeSet<u32> = context.uids.iter().copied().collect();
            let new: BTreeSet<u32> = uids.iter().copied().collect();
            let removed: Vec<u32> = old.difference(&new).copied().collect();
            let added: Vec<u32> = new.difference(&old).copied().collect();
            if !removed.is_empty() || !added.is_empty() {
                out.extend_from_slice(b"* ESEARCH (TAG ");
                text::push_string(out, context.tag.as_bytes());
                out.extend_from_slice(b") UID");
                if !removed.is_empty() {
                    out.extend_from_slice(
                        format!(" REMOVEFROM (0 {})", compress_ordered(&removed)).as_bytes(),
                    );
                }
                if !added.is_empty() {
                    out.extend_from_slice(format!(" ADDTO (0 {})", compress_ordered(&added)).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            context.uids = uids;
            context.at_modseq = now;
        }
        self.contexts = contexts;
    }

    /// The UIDs a context's search matches now, leaving out messages already expunged.
    fn context_result(&self, command: &[u8]) -> Option<Vec<u32>> {
        let State::Selected { view, .. } = &self.state else {
            return None;
        };
        let Ok((
            _,
            Command {
                body: CommandBody::Search { criteria, .. },
                ..
            },
        )) = CommandCodec::default().decode(command)
        else {
            return None;
        };
        Some(
            self.matching(criteria.as_ref())
                .into_iter()
                .filter_map(|i| view.messages.get(i))
                .filter(|m| !m.gone)
                .map(|m| m.meta.uid)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::partial_window;

    #[test]
    fn partial_positions() {
        assert_eq!(partial_window(10, 1, 3), 0..3);
        assert_eq!(partial_window(10, 3, 1), 0..3);
        assert_eq!(partial_window(10, 9, 20), 8..10);
        assert_eq!(partial_window(10, 11, 20), 10..10);
        assert_eq!(partial_window(10, -1, -3), 7..10);
        assert_eq!(partial_window(10, -8, -20), 0..3);
        assert_eq!(partial_window(0, -1, -5), 0..0);
    }
}
