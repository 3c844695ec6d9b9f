//! SORT and UID SORT (RFC 5256 §3), the DISPLAYFROM and DISPLAYTO keys (SORT=DISPLAY,
//! RFC 5957) and SORT RETURN (ESORT, RFC 5267 §3).
//!
//! The messages are chosen by the same search as SEARCH (`matching`); their keys come
//! from the view (ARRIVAL, SIZE, and DATE: `MessageMeta::sent_date`) and, for the
//! others, from the per-message summaries the store keeps (`ImapBackend::summaries`:
//! addresses, base subject), so no body is read unless a search key needs it. A SORT
//! by ARRIVAL, DATE and SIZE only sorts integers the view already holds; a message
//! whose meta has no sent date (stored before there was one) has it worked out from its
//! summary once and given back to the store (`ImapBackend::remember_sent_dates`). Ties
//! are broken by sequence number, ascending, whatever the REVERSE flags (RFC 5256 §3:
//! "in the order they appear in the mailbox").

use std::cmp::Ordering;
use std::io::Write as _;
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
    /// The meta's sent date, when it has one.
    pub sent: Option<i64>,
    pub summary: Arc<MessageSummary>,
}

impl Sortable {
    /// RFC 5256 §2.2: the Date: header, or INTERNALDATE when it has none that parses.
    pub fn sent_date(&self) -> i64 {
        self.sent
            .unwrap_or_else(|| sent_date_of(&self.summary, self.internal_date))
    }
}

/// The most distinct keys among ARRIVAL, DATE and SIZE.
const NUMERIC_KEYS: usize = 3;

/// RFC 5256 §2.2: the Date header, or the internal date without one.
fn sent_date_of(summary: &MessageSummary, internal_date: i64) -> i64 {
    summary.date.unwrap_or(internal_date)
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
        if criteria.iter().any(|c| c.key == SortKey::Date) {
            self.learn_sent_dates();
        }
        let indices = match self.sorted(criteria, search) {
            Ok(indices) => indices,
            Err(err) => return backend_no(out, tag, &err),
        };
        let numbers: Vec<u32> = match &self.state {
            State::Selected { view, .. } => indices
                .iter()
                .filter_map(|&i| {
                    let m = view.messages.get(i)?;
                    Some(if uid { m.meta.uid } else { i as u32 + 1 })
                })
                .collect(),
            _ => Vec::new(),
        };
        match esort {
            None => {
                out.extend_from_slice(b"* SORT");
                for n in &numbers {
                    // Writing into a Vec cannot fail.
                    let _ = write!(out, " {n}");
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

    /// Works out the sent dates the view lacks (messages stored before the store kept
    /// them) from their summaries, puts them in the view and gives them to the store, so
    /// that this and every later SORT by date sorts the view's integers alone. A failure
    /// leaves them unknown: `sorted` then reads the summaries itself.
    fn learn_sent_dates(&mut self) {
        let State::Selected { account, view } = &mut self.state else {
            return;
        };
        let missing: Vec<u32> = view
            .messages
            .iter()
            .filter(|m| m.meta.sent_date.is_none())
            .map(|m| m.meta.uid)
            .collect();
        if missing.is_empty() {
            return;
        }
        let summaries = match self.store.summaries(account, view.id, &missing) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "imap SORT: reading summaries for sent dates failed");
                return;
            }
        };
        // In the order asked (UID order, the view's), minus messages gone meanwhile.
        let mut found = summaries.into_iter().peekable();
        let mut learned = Vec::with_capacity(missing.len());
        for m in view.messages.iter_mut().filter(|m| m.meta.sent_date.is_none()) {
            if let Some((_, summary)) = found.next_if(|(u, _)| *u == m.meta.uid) {
                let date = sent_date_of(&summary, m.meta.internal_date);
                m.meta.sent_date = Some(date);
                learned.push((m.meta.uid, date));
            }
        }
        if let Err(err) = self.store.remember_sent_dates(account, view.id, &learned) {
            tracing::warn!(%err, "imap SORT: keeping sent dates failed");
        }
    }

    /// The view indices of the messages matching `search`, in the order of `criteria`,
    /// ties by sequence number (RFC 5256 §3).
    pub(super) fn sorted(
        &self,
        criteria: &[SortCriterion],
        search: &[SearchKey<'_>],
    ) -> Result<Vec<usize>, BackendError> {
        let numeric = criteria
            .iter()
            .all(|c| matches!(c.key, SortKey::Arrival | SortKey::Date | SortKey::Size));
        if numeric {
            return self.sorted_by_numbers(criteria, search);
        }
        let mut items = self.sortables(search, true)?;
        items.sort_by(|a, b| compare(criteria, a, b).then(a.index.cmp(&b.index)));
        Ok(items.into_iter().map(|s| s.index).collect())
    }

    /// `sorted` when every key is ARRIVAL, DATE or SIZE: one row of integers per
    /// message (REVERSE as the bitwise complement, which reverses the order of i64),
    /// no summary unless a message's sent date is unknown.
    fn sorted_by_numbers(
        &self,
        criteria: &[SortCriterion],
        search: &[SearchKey<'_>],
    ) -> Result<Vec<usize>, BackendError> {
        // A key already compared cannot break a tie again: only the first of each counts.
        let mut keys: Vec<&SortCriterion> = Vec::with_capacity(NUMERIC_KEYS);
        for c in criteria {
            if !keys.iter().any(|k| k.key == c.key) {
                keys.push(c);
            }
        }
        let indices = self.matching(search);
        let State::Selected { account, view } = &self.state else {
            return Ok(Vec::new());
        };
        let unknown: Vec<u32> = if keys.iter().any(|k| k.key == SortKey::Date) {
            indices
                .iter()
                .filter_map(|&i| view.messages.get(i))
                .filter(|m| m.meta.sent_date.is_none())
                .map(|m| m.meta.uid)
                .collect()
        } else {
            Vec::new()
        };
        let mut summaries = if unknown.is_empty() {
            Vec::new()
        } else {
            self.store.summaries(account, view.id, &unknown)?
        }
        .into_iter()
        .peekable();
        let mut rows: Vec<([i64; NUMERIC_KEYS], usize)> = Vec::with_capacity(indices.len());
        for i in indices {
            let Some(m) = view.messages.get(i) else { continue };
            let meta = &m.meta;
            let sent = match meta.sent_date {
                Some(date) => date,
                // A message expunged meanwhile keeps its place with its internal date.
                None => summaries
                    .next_if(|(u, _)| *u == meta.uid)
                    .map_or(meta.internal_date, |(_, s)| sent_date_of(&s, meta.internal_date)),
            };
            let mut row = [0i64; NUMERIC_KEYS];
            for (slot, c) in row.iter_mut().zip(&keys) {
                let value = match c.key {
                    SortKey::Arrival => meta.internal_date,
                    SortKey::Size => i64::from(meta.size),
                    _ => sent,
                };
                *slot = if c.reverse { !value } else { value };
            }
            rows.push((row, i));
        }
        rows.sort_unstable();
        Ok(rows.into_iter().map(|(_, i)| i).collect())
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
                sent: m.meta.sent_date,
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
