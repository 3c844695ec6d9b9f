//! SORT and UID SORT (RFC 5256 §3), the DISPLAYFROM and DISPLAYTO keys (SORT=DISPLAY,
//! RFC 5957) and SORT RETURN (ESORT, RFC 5267 §3).
//!
//! The messages are chosen by the same search as SEARCH (`matching`); their keys come
//! from the view (ARRIVAL, SIZE) and from the per-message summaries the store keeps
//! (`ImapBackend::summaries`: dates, addresses, base subject), so no body is read unless
//! a search key needs it. Ties are broken by sequence number, ascending, whatever the
//! REVERSE flags (RFC 5256 §3: "in the order they appear in the mailbox").

use std::cmp::Ordering;
use std::sync::Arc;

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::search::SearchKey;

use super::backend::MessageSummary;
use super::extended::EsearchOptions;
use super::text::compress_ordered;
use super::*;

/// One matching message with what its keys are read from.
pub(super) struct Sortable {
    /// Index into the view; the sequence number is one more.
    pub index: usize,
    pub uid: u32,
    pub internal_date: i64,
    pub size: u32,
    pub summary: Arc<MessageSummary>,
}

impl Sortable {
    /// RFC 5256 §2.2: the Date: header, or INTERNALDATE when it has none that parses.
    pub fn sent_date(&self) -> i64 {
        self.summary.date.unwrap_or(self.internal_date)
    }
}

impl ImapSession {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sort(
        &mut self,
        tag: &str,
        criteria: &[SortCriterion],
        charset: &str,
        search: &[SearchKey<'_>],
        uid: bool,
        esort: Option<EsearchOptions>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if let Err(flow) = self.charset_ok(Some(charset), true, tag, out) {
            return flow;
        }
        if let Err(flow) = self.keys_ok(search, tag, out) {
            return flow;
        }
        let items = match self.sorted(criteria, search) {
            Ok(items) => items,
            Err(err) => return backend_no(out, tag, &err),
        };
        let numbers: Vec<u32> = items
            .iter()
            .map(|s| if uid { s.uid } else { s.index as u32 + 1 })
            .collect();
        match esort {
            None => {
                out.extend_from_slice(b"* SORT");
                for n in &numbers {
                    out.extend_from_slice(format!(" {n}").as_bytes());
                }
            }
            Some(o) => {
                // RFC 5267 §3.2: MIN and MAX are the first and last in sort order, ALL
                // the whole list in that order (ranges only where it ascends by one).
                out.extend_from_slice(b"* ESEARCH (TAG ");
                super::text::push_string(out, tag.as_bytes());
                out.push(b')');
                if uid {
                    out.extend_from_slice(b" UID");
                }
                if let (true, Some(min)) = (o.min, numbers.first()) {
                    out.extend_from_slice(format!(" MIN {min}").as_bytes());
                }
                if let (true, Some(max)) = (o.max, numbers.last()) {
                    out.extend_from_slice(format!(" MAX {max}").as_bytes());
                }
                if o.count {
                    out.extend_from_slice(format!(" COUNT {}", numbers.len()).as_bytes());
                }
                if o.all && !numbers.is_empty() {
                    out.extend_from_slice(format!(" ALL {}", compress_ordered(&numbers)).as_bytes());
                }
                if let Some((low, high)) = o.partial {
                    // CONTEXT=SORT (RFC 5267 §4.4): positions in the sort order.
                    let part = &numbers[super::context::partial_window(numbers.len(), low, high)];
                    let set = if part.is_empty() {
                        "NIL".to_string()
                    } else {
                        compress_ordered(part)
                    };
                    out.extend_from_slice(format!(" PARTIAL ({low}:{high} {set})").as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        if esort.is_some_and(|o| o.update) {
            if let State::Selected { view, .. } = &self.state {
                self.new_context = Some((numbers.clone(), view.highest_modseq));
            }
        }
        self.catch_up(uid, out);
        ok(
            out,
            tag,
            if uid {
                "UID SORT completed"
            } else {
                "SORT completed"
            },
        )
    }

    /// The messages matching `search` in the order of `criteria`, ties by sequence
    /// number (RFC 5256 §3).
    pub(super) fn sorted(
        &self,
        criteria: &[SortCriterion],
        search: &[SearchKey<'_>],
    ) -> Result<Vec<Sortable>, BackendError> {
        let needs_summary = criteria
            .iter()
            .any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size));
        let mut items = self.sortables(search, needs_summary)?;
        items.sort_by(|a, b| compare(criteria, a, b).then(a.index.cmp(&b.index)));
        Ok(items)
    }

    /// The messages matching `search`, with their summaries when `with_summary` (else
    /// empty ones): what SORT and THREAD order.
    pub(super) fn sortables(
        &self,
        search: &[SearchKey<'_>],
        with_summary: bool,
    ) -> Result<Vec<Sortable>, BackendError> {
        let indices = self.matching(search);
        let State::Selected { account, view } = &self.state else {
            return Ok(Vec::new());
        };
        let mut summaries = Vec::new();
        if with_summary {
            let uids: Vec<u32> = indices
                .iter()
                .filter_map(|&i| view.messages.get(i).map(|m| m.meta.uid))
                .collect();
            summaries = self.store.summaries(account, view.id, &uids)?;
        }
        // Summaries come back in the order asked, minus messages expunged meanwhile,
        // which keep their place with empty keys until the client learns of it.
        let empty = Arc::new(MessageSummary::default());
        let mut found = summaries.into_iter().peekable();
        let mut items = Vec::with_capacity(indices.len());
        for i in indices {
            let Some(m) = view.messages.get(i) else { continue };
            let summary = match found.peek() {
                Some((u, _)) if *u == m.meta.uid => found.next().map_or_else(|| empty.clone(), |(_, s)| s),
                _ => empty.clone(),
            };
            items.push(Sortable {
                index: i,
                uid: m.meta.uid,
                internal_date: m.meta.internal_date,
                size: m.meta.size,
                summary,
            });
        }
        Ok(items)
    }
}

fn compare(criteria: &[SortCriterion], a: &Sortable, b: &Sortable) -> Ordering {
    for c in criteria {
        let (x, y) = (&*a.summary, &*b.summary);
        let order = match c.key {
            SortKey::Arrival => a.internal_date.cmp(&b.internal_date),
            SortKey::Date => a.sent_date().cmp(&b.sent_date()),
            SortKey::Size => a.size.cmp(&b.size),
            SortKey::From => x.from.cmp(&y.from),
            SortKey::To => x.to.cmp(&y.to),
            SortKey::Cc => x.cc.cmp(&y.cc),
            SortKey::Subject => x.subject.cmp(&y.subject),
            SortKey::DisplayFrom => x.display_from.cmp(&y.display_from),
            SortKey::DisplayTo => x.display_to.cmp(&y.display_to),
        };
        let order = if c.reverse { order.reverse() } else { order };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}
