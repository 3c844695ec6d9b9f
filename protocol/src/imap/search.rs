//! SEARCH and UID SEARCH (RFC 3501 §6.4.4), ESEARCH results (RFC 4731) and MODSEQ
//! criteria (RFC 7162 §3.1.5); content keys through `message`.

use imap_codec::imap_types::search::SearchKey;

use super::backend::{BackendError, Flags, MessageMeta};
use super::extended::EsearchOptions;
use super::message::{self, ParsedMessage};
use super::text::compress_ordered;
use super::view::set_contains;
use super::*;

impl ImapSession {
    pub(super) fn search(
        &mut self,
        tag: &str,
        charset: Option<&str>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        esearch: Option<EsearchOptions>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if let Err(flow) = self.charset_ok(charset, false, tag, out) {
            // A failed SEARCH ... RETURN (SAVE) empties the saved result (RFC 5182 §2.1).
            if esearch.is_some_and(|o| o.save) {
                self.saved.clear();
            }
            return flow;
        }
        if let Err(flow) = self.keys_ok(criteria, tag, out) {
            if esearch.is_some_and(|o| o.save) {
                self.saved.clear();
            }
            return flow;
        }
        // IMAP4rev2 answers every SEARCH with ESEARCH, ALL by default (RFC 9051 §6.4.4).
        let esearch = match esearch {
            None if self.rev2 => Some(EsearchOptions {
                all: true,
                ..EsearchOptions::default()
            }),
            other => other,
        };
        let uses_modseq = criteria.iter().any(has_modseq_key);
        if uses_modseq {
            self.enable_condstore(out);
        }
        let State::Selected { view, .. } = &self.state else {
            return Flow::Continue;
        };
        let mut hits: Vec<u32> = Vec::new();
        let mut max_modseq = 0;
        // The modseq of each hit, for ESEARCH MIN/MAX (RFC 7162 §3.1.5).
        let mut hit_modseqs: Vec<u64> = Vec::new();
        let mut hit_uids: Vec<u32> = Vec::new();
        for i in self.matching(criteria) {
            let Some(m) = view.messages.get(i) else { continue };
            hits.push(if uid { m.meta.uid } else { i as u32 + 1 });
            hit_uids.push(m.meta.uid);
            max_modseq = max_modseq.max(m.meta.modseq);
            hit_modseqs.push(m.meta.modseq);
        }
        let silent = esearch.is_some_and(|o| o.save && !(o.min || o.max || o.count || o.all));
        if let Some(o) = esearch.filter(|o| o.save) {
            // RFC 5182 §2.4: with only MIN and/or MAX, those are saved; else every match.
            self.saved = if (o.min || o.max) && !(o.all || o.count) {
                let mut kept: Vec<u32> = Vec::new();
                kept.extend(hit_uids.first().filter(|_| o.min));
                kept.extend(
                    hit_uids
                        .last()
                        .filter(|_| o.max && (!o.min || hit_uids.len() > 1)),
                );
                kept
            } else {
                hit_uids
            };
        }
        match esearch {
            // SAVE alone: no ESEARCH response (RFC 5182 §2.1).
            Some(_) if silent => {}
            None => {
                out.extend_from_slice(b"* SEARCH");
                for h in &hits {
                    out.extend_from_slice(format!(" {h}").as_bytes());
                }
                if uses_modseq && !hits.is_empty() {
                    out.extend_from_slice(format!(" (MODSEQ {max_modseq})").as_bytes());
                }
            }
            Some(o) => {
                // RFC 4731 §3.1; MIN, MAX and ALL are left out when nothing matched.
                out.extend_from_slice(b"* ESEARCH (TAG ");
                super::text::push_string(out, tag.as_bytes());
                out.push(b')');
                if uid {
                    out.extend_from_slice(b" UID");
                }
                if let (true, Some(min)) = (o.min, hits.first()) {
                    out.extend_from_slice(format!(" MIN {min}").as_bytes());
                }
                if let (true, Some(max)) = (o.max, hits.last()) {
                    out.extend_from_slice(format!(" MAX {max}").as_bytes());
                }
                if o.count {
                    out.extend_from_slice(format!(" COUNT {}", hits.len()).as_bytes());
                }
                if o.all && !hits.is_empty() {
                    out.extend_from_slice(format!(" ALL {}", compress_ordered(&hits)).as_bytes());
                }
                if let Some((low, high)) = o.partial {
                    // RFC 5267 §4.4: the range as asked, then the results at those
                    // positions of the whole result, or NIL.
                    let window = super::context::partial_window(hits.len(), low, high);
                    let part = &hits[window];
                    let set = if part.is_empty() {
                        "NIL".to_string()
                    } else {
                        compress_ordered(part)
                    };
                    out.extend_from_slice(format!(" PARTIAL ({low}:{high} {set})").as_bytes());
                }
                if uses_modseq && !hits.is_empty() {
                    // RFC 7162 §3.1.5: with only MIN and/or MAX, the highest modseq of
                    // the messages returned; with ALL or COUNT, of every match.
                    let modseq = if o.all || o.count || !(o.min || o.max) {
                        max_modseq
                    } else {
                        let first = hit_modseqs.first().copied().filter(|_| o.min).unwrap_or(0);
                        let last = hit_modseqs.last().copied().filter(|_| o.max).unwrap_or(0);
                        first.max(last)
                    };
                    out.extend_from_slice(format!(" MODSEQ {modseq}").as_bytes());
                }
            }
        }
        if !silent {
            out.extend_from_slice(b"\r\n");
        }
        if esearch.is_some_and(|o| o.update) {
            // The result as the client has it, before this command's catch-up: its
            // changes are the context's first update (`context.rs`).
            if let State::Selected { view, .. } = &self.state {
                self.new_context = Some((hits.clone(), view.highest_modseq));
            }
        }
        self.catch_up(uid, out);
        ok(out, tag, "SEARCH completed");
        Flow::Continue
    }
}

impl ImapSession {
    /// Indices (into the selected view) of the messages that match every key, in
    /// mailbox order; bodies are read only when a content key needs them. SEARCH, SORT
    /// and THREAD select their messages with it.
    pub(super) fn matching(&self, criteria: &[SearchKey<'_>]) -> Vec<usize> {
        let State::Selected { account, view } = &self.state else {
            return Vec::new();
        };
        let needs_content = criteria.iter().any(has_content_key);
        let star_uid = view.messages.last().map_or(0, |m| m.meta.uid);
        let exists = view.exists();
        let mut found = Vec::new();
        for (i, m) in view.messages.iter().enumerate() {
            let body = if needs_content {
                match self.store.body(account, view.id, m.meta.uid) {
                    Ok(b) => Some(b),
                    Err(err) => {
                        if err != BackendError::NotFound {
                            tracing::warn!(%err, uid = m.meta.uid, "imap SEARCH: reading body failed");
                        }
                        None
                    }
                }
            } else {
                None
            };
            let parsed = body.as_deref().map(ParsedMessage::parse);
            let ctx = SearchContext {
                seq: i as u32 + 1,
                exists,
                star_uid,
                meta: &m.meta,
                recent: m.recent,
                parsed: parsed.as_ref(),
            };
            if criteria.iter().all(|k| ctx.matches(k)) {
                found.push(i);
            }
        }
        found
    }

    /// Refuses a charset other than UTF-8 and US-ASCII (`NO [BADCHARSET]`); true if fine.
    /// The CHARSET of SEARCH (`mandatory`: of SORT or THREAD) is one we search in; `Err`
    /// with how the command ended if not. After ENABLE UTF8=ACCEPT every string is UTF-8,
    /// so a SEARCH naming a charset, or a SORT/THREAD naming another than UTF-8, is BAD
    /// (RFC 6855 §3 and its erratum 4029).
    pub(super) fn charset_ok(
        &mut self,
        charset: Option<&str>,
        mandatory: bool,
        tag: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), Flow> {
        match charset {
            Some(_) if self.utf8_accept && !mandatory => {
                Err(self.bad(out, tag, "No CHARSET in SEARCH after ENABLE UTF8=ACCEPT"))
            }
            Some(cs) if self.utf8_accept && !cs.eq_ignore_ascii_case("UTF-8") => {
                Err(self.bad(out, tag, "Only UTF-8 after ENABLE UTF8=ACCEPT"))
            }
            Some(cs) if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") => {
                no(out, tag, "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
                Err(Flow::Continue)
            }
            _ => Ok(()),
        }
    }
}

pub(super) struct SearchContext<'a, 'm> {
    seq: u32,
    exists: u32,
    star_uid: u32,
    meta: &'a MessageMeta,
    recent: bool,
    parsed: Option<&'a ParsedMessage<'m>>,
}

impl SearchContext<'_, '_> {
    fn matches(&self, key: &SearchKey<'_>) -> bool {
        let f = &self.meta.flags;
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.matches(k)),
            SearchKey::Or(a, b) => self.matches(a) || self.matches(b),
            SearchKey::Not(k) => !self.matches(k),
            SearchKey::All => true,
            SearchKey::SequenceSet(set) => set_contains(set, self.seq, self.exists),
            SearchKey::Uid(set) => set_contains(set, self.meta.uid, self.star_uid),
            SearchKey::Answered => f.has(Flags::ANSWERED),
            SearchKey::Unanswered => !f.has(Flags::ANSWERED),
            SearchKey::Deleted => f.has(Flags::DELETED),
            SearchKey::Undeleted => !f.has(Flags::DELETED),
            SearchKey::Draft => f.has(Flags::DRAFT),
            SearchKey::Undraft => !f.has(Flags::DRAFT),
            SearchKey::Flagged => f.has(Flags::FLAGGED),
            SearchKey::Unflagged => !f.has(Flags::FLAGGED),
            SearchKey::Seen => f.has(Flags::SEEN),
            SearchKey::Unseen => !f.has(Flags::SEEN),
            SearchKey::Recent => self.recent,
            SearchKey::New => self.recent && !f.has(Flags::SEEN),
            SearchKey::Old => !self.recent,
            SearchKey::Keyword(k) => f.has_keyword(k.as_ref()),
            SearchKey::Unkeyword(k) => !f.has_keyword(k.as_ref()),
            SearchKey::Larger(n) => self.meta.size > *n,
            SearchKey::Smaller(n) => self.meta.size < *n,
            SearchKey::Before(d) => self.internal_day().is_some_and(|x| x < *d.as_ref()),
            SearchKey::On(d) => self.internal_day().is_some_and(|x| x == *d.as_ref()),
            SearchKey::Since(d) => self.internal_day().is_some_and(|x| x >= *d.as_ref()),
            SearchKey::ModSequence { modseq, .. } => self.meta.modseq >= *modseq,
            other => match self.parsed {
                Some(p) => message::matches_content(p, other),
                None => false,
            },
        }
    }

    /// The internal date's calendar day in its own zone, as RFC 3501 §6.4.4 intends
    /// ("disregarding time and timezone").
    fn internal_day(&self) -> Option<chrono::NaiveDate> {
        let offset = chrono::FixedOffset::east_opt(i32::from(self.meta.internal_date_offset_minutes) * 60)?;
        let utc = chrono::DateTime::from_timestamp(self.meta.internal_date, 0)?;
        Some(utc.with_timezone(&offset).date_naive())
    }
}

pub(super) fn has_content_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(has_content_key),
        SearchKey::Or(a, b) => has_content_key(a) || has_content_key(b),
        SearchKey::Not(k) => has_content_key(k),
        other => message::is_content_key(other),
    }
}

impl ImapSession {
    /// IMAP4rev2 has no `\Recent`, and no NEW, OLD or RECENT search keys (RFC 9051
    /// Appendix E): a session that enabled it is told so (`BAD`) rather than matched
    /// against a flag it never sees.
    pub(super) fn keys_ok(
        &mut self,
        criteria: &[SearchKey<'_>],
        tag: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), Flow> {
        if self.rev2 && criteria.iter().any(has_recent_key) {
            return Err(self.bad(out, tag, "NEW, OLD and RECENT are not IMAP4rev2 search keys"));
        }
        Ok(())
    }
}

fn has_recent_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(has_recent_key),
        SearchKey::Or(a, b) => has_recent_key(a) || has_recent_key(b),
        SearchKey::Not(k) => has_recent_key(k),
        SearchKey::New | SearchKey::Old | SearchKey::Recent => true,
        _ => false,
    }
}

pub(super) fn has_modseq_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(has_modseq_key),
        SearchKey::Or(a, b) => has_modseq_key(a) || has_modseq_key(b),
        SearchKey::Not(k) => has_modseq_key(k),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}
