//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): `RETURN (PARTIAL low:high)` pages
//! of a result (negative ranges count from the end, as RFC 9394 later allows),
//! `RETURN (UPDATE)` contexts that report how a UID SEARCH or UID SORT result changes
//! while the mailbox stays selected, and CANCELUPDATE. A context keeps its program and
//! the UIDs it last reported; whenever the view has moved past the modseq it was last
//! evaluated at, the program runs again over the view and only the difference goes
//! out: for SEARCH `REMOVEFROM (0 uids) ADDTO (0 uids)` (position 0: mailbox order),
//! for SORT one pair per message with its position, removals from the last position
//! down, then additions from the first position up, so each position is right when
//! the client applies it (sort keys never change, so the messages that stay keep their
//! relative order). UPDATE of a search by sequence number or of message content (every
//! change would read every body again), or past `MAX_CONTEXTS`, is refused with `* NO
//! [NOUPDATE "tag"]` (§4.3.1) and answered as without it; what a context costs per
//! change is then one walk over the view's metadata (and SORT keys from the cache).

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
    /// UIDs the client has been given: ascending for SEARCH, in sort order for SORT.
    uids: Vec<u32>,
    /// A UID SORT context: positions matter.
    sorted: bool,
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
        criteria: &[imap_codec::imap_types::search::SearchKey<'_>],
        out: &mut Vec<u8>,
    ) -> Result<bool, &'static str> {
        if self.contexts.iter().any(|c| c.tag == tag) {
            return Err("Tag reuse");
        }
        let refusal = if !uid {
            Some("UPDATE is offered for UID SEARCH and UID SORT only")
        } else if criteria.iter().any(super::search::has_content_key) {
            // Every change would read every body again, for as long as the client
            // stays: another session's deliveries must not cost that much here.
            Some("UPDATE is not offered for searches of message content")
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
            let sorted = matches!(
                CommandCodec::default().decode(&command),
                Ok((
                    _,
                    Command {
                        body: CommandBody::Sort { .. },
                        ..
                    }
                ))
            );
            self.contexts.push(UpdateContext {
                tag: tag.to_string(),
                command,
                uids,
                sorted,
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
            let (removals, additions) = differences(&context.uids, &uids, context.sorted);
            if !removals.is_empty() || !additions.is_empty() {
                out.extend_from_slice(b"* ESEARCH (TAG ");
                text::push_string(out, context.tag.as_bytes());
                out.extend_from_slice(b") UID");
                if !removals.is_empty() {
                    out.extend_from_slice(format!(" REMOVEFROM ({})", removals.join(" ")).as_bytes());
                }
                if !additions.is_empty() {
                    out.extend_from_slice(format!(" ADDTO ({})", additions.join(" ")).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            context.uids = uids;
            context.at_modseq = now;
        }
        self.contexts = contexts;
    }

    /// The UIDs a context's program gives now (in its order), leaving out messages
    /// already expunged.
    fn context_result(&self, command: &[u8]) -> Option<Vec<u32>> {
        let State::Selected { view, .. } = &self.state else {
            return None;
        };
        let indices: Vec<usize> = match CommandCodec::default().decode(command) {
            Ok((
                _,
                Command {
                    body: CommandBody::Search { criteria, .. },
                    ..
                },
            )) => self.matching(criteria.as_ref()),
            Ok((
                _,
                Command {
                    body:
                        CommandBody::Sort {
                            sort_criteria,
                            search_criteria,
                            ..
                        },
                    ..
                },
            )) => match self.sorted(sort_criteria.as_ref(), search_criteria.as_ref()) {
                Ok(indices) => indices,
                Err(err) => {
                    tracing::warn!(%err, "imap: re-sorting an UPDATE context failed");
                    return None;
                }
            },
            _ => return None,
        };
        Some(
            indices
                .into_iter()
                .filter_map(|i| view.messages.get(i))
                .filter(|m| !m.gone)
                .map(|m| m.meta.uid)
                .collect(),
        )
    }
}

/// REMOVEFROM and ADDTO pairs (`position set`) turning `old` into `new`. Unordered
/// (SEARCH): one pair each at position 0. Ordered (SORT): one pair per message,
/// removals from the last position down, then additions from the first position up
/// (RFC 5267 §4.3.3, §4.3.4), so each position is right when the client applies it.
fn differences(old: &[u32], new: &[u32], ordered: bool) -> (Vec<String>, Vec<String>) {
    let old_set: BTreeSet<u32> = old.iter().copied().collect();
    let new_set: BTreeSet<u32> = new.iter().copied().collect();
    if ordered {
        let removals = old
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, u)| !new_set.contains(u))
            .map(|(i, u)| format!("{} {u}", i + 1))
            .collect();
        let additions = new
            .iter()
            .enumerate()
            .filter(|(_, u)| !old_set.contains(u))
            .map(|(i, u)| format!("{} {u}", i + 1))
            .collect();
        return (removals, additions);
    }
    let pair = |set: Vec<u32>| {
        if set.is_empty() {
            Vec::new()
        } else {
            vec![format!("0 {}", compress_ordered(&set))]
        }
    };
    (
        pair(old_set.difference(&new_set).copied().collect()),
        pair(new_set.difference(&old_set).copied().collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::{differences, partial_window};

    #[test]
    fn sorted_differences_apply_in_order() {
        // 5 3 9 1 -> 5 7 9 1 2: 3 leaves at 2; 7 comes in at 2, 2 at 5.
        let (r, a) = differences(&[5, 3, 9, 1], &[5, 7, 9, 1, 2], true);
        assert_eq!(
            (r, a),
            (
                vec!["2 3".to_string()],
                vec!["2 7".to_string(), "5 2".to_string()]
            )
        );
        let (r, a) = differences(&[1, 2, 3], &[3, 4], false);
        assert_eq!((r, a), (vec!["0 1:2".to_string()], vec!["0 4".to_string()]));
    }

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
