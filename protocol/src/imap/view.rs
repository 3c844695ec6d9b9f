//! The selected mailbox as one session sees it: the sequence-number → UID map, flags,
//! modseqs and `\Recent`, caught up with the store's change log (RFC 7162 modseqs) at
//! the points RFC 3501 §5.2 and §7.4.1 allow. EXISTS, RECENT and FETCH FLAGS may go out
//! after any command; EXPUNGE is held back (the message stays, marked `gone`) during
//! FETCH, STORE, SEARCH and COPY by sequence number, and sent highest number first at
//! the next command that may carry it.
//!
//! What keeps every session's view true under concurrent writers:
//! - The store answers each catch-up from one snapshot: the mailbox's UIDNEXT and
//!   HIGHESTMODSEQ describe exactly the changes returned, so the view jumps to that
//!   HIGHESTMODSEQ without skipping or repeating a change.
//! - The change log is in modseq order, not UID order (a message's entry moves up each
//!   time its flags change), so new messages are collected, sorted by UID and appended;
//!   a message is new exactly when its UID is at or above the UIDNEXT the view last saw.
//! - A keyword not yet in the FLAGS the client was given is announced (`* FLAGS`,
//!   `* OK [PERMANENTFLAGS]`) before the first response that shows it.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::backend::{ChangeKind, Flags, MailboxId, MailboxInfo, MessageMeta, ViewHold};
use super::text::push_flags;

#[derive(Debug, Clone)]
pub struct ViewMessage {
    pub meta: MessageMeta,
    pub recent: bool,
    /// Expunged in the store, not yet announced to this client.
    pub gone: bool,
}

#[derive(Debug)]
pub struct MailboxView {
    pub id: MailboxId,
    pub name: String,
    pub read_only: bool,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// Everything up to this modseq is reflected in `messages`.
    pub highest_modseq: u64,
    /// In UID order; index + 1 is the sequence number.
    pub messages: Vec<ViewMessage>,
    /// EXISTS last told to the client.
    announced_exists: u32,
    announced_recent: u32,
    /// Keywords in the FLAGS last told to the client (never shrinks while selected).
    keywords: Vec<String>,
    /// QRESYNC is on: expunges go out as `* VANISHED uid-set` (RFC 7162 §3.2.10).
    pub qresync: bool,
    /// IMAP4rev2 session (RFC 9051): no message is `\Recent`, no RECENT response, and
    /// every unsolicited FETCH carries UID (§7.5.2).
    pub rev2: bool,
    /// Lowest modseq of an expunge seen but held back (messages still `gone`): while
    /// one is held, a CONDSTORE client is told a HIGHESTMODSEQ below it, so a client
    /// that drops the connection resynchronises from before it (RFC 7162 §3.2).
    held_expunge_modseq: Option<u64>,
    /// The store's hold on what this view shows (`ImapBackend::hold_view`), told each
    /// time the horizon moves.
    pub hold: HoldSlot,
}

/// The view's `ViewHold`, if the store keeps expunged messages for views.
#[derive(Default)]
pub struct HoldSlot(pub Option<Box<dyn ViewHold>>);

impl std::fmt::Debug for HoldSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HoldSlot(held)"
        } else {
            "HoldSlot(none)"
        })
    }
}

/// Most UID ranges in one VANISHED response; more go out in further responses, so no
/// line grows with the mailbox (RFC 7162 §4 suggests 8192 octets a line).
const MAX_VANISHED_RANGES: usize = 500;

/// `* VANISHED [(EARLIER) ]uid-set` responses for `uids` (ascending, no duplicates).
pub fn push_vanished(out: &mut Vec<u8>, uids: &[u32], earlier: bool) {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &uid in uids {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => ranges.push((uid, uid)),
        }
    }
    for chunk in ranges.chunks(MAX_VANISHED_RANGES) {
        out.extend_from_slice(if earlier {
            b"* VANISHED (EARLIER) "
        } else {
            b"* VANISHED "
        });
        for (n, (start, end)) in chunk.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            if start == end {
                out.extend_from_slice(start.to_string().as_bytes());
            } else {
                out.extend_from_slice(format!("{start}:{end}").as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `\Answered \Flagged ...`: the system flags every mailbox offers.
pub const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

impl MailboxView {
    /// `first_recent`: the lowest UID recent for this session (what SELECT claimed; for
    /// EXAMINE, the mailbox's unclaimed mark, shown but not taken).
    pub fn new(info: &MailboxInfo, metas: Vec<MessageMeta>, first_recent: u32, read_only: bool) -> Self {
        let messages: Vec<ViewMessage> = metas
            .into_iter()
            .map(|meta| ViewMessage {
                recent: meta.uid >= first_recent,
                meta,
                gone: false,
            })
            .collect();
        let mut keywords: Vec<String> = Vec::new();
        for m in &messages {
            for k in &m.meta.flags.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.clone());
                }
            }
        }
        let exists = messages.len() as u32;
        let mut view = MailboxView {
            id: info.id,
            name: info.name.clone(),
            read_only,
            uid_validity: info.uid_validity,
            uid_next: info.uid_next,
            highest_modseq: info.highest_modseq,
            messages,
            announced_exists: exists,
            announced_recent: 0,
            keywords,
            qresync: false,
            rev2: false,
            held_expunge_modseq: None,
            hold: HoldSlot::default(),
        };
        view.announced_recent = view.recent_count();
        view
    }

    /// Takes the store's hold (taken before the messages were read) and tells it the
    /// view's horizon.
    pub fn set_hold(&mut self, hold: Option<Box<dyn ViewHold>>) {
        self.hold = HoldSlot(hold);
        self.advance_hold();
    }

    /// The highest modseq at or below which no expunged message is still shown: the
    /// view has every change up to its HIGHESTMODSEQ, and shows the messages whose
    /// expunges it holds back.
    pub fn horizon(&self) -> u64 {
        match self.held_expunge_modseq {
            Some(held) => held.saturating_sub(1).min(self.highest_modseq),
            None => self.highest_modseq,
        }
    }

    fn advance_hold(&mut self) {
        let horizon = self.horizon();
        if let Some(hold) = self.hold.0.as_mut() {
            hold.advance(horizon);
        }
    }

    /// `* FLAGS (...)` and `* OK [PERMANENTFLAGS (...)]` with the keywords in use.
    pub fn push_flags_responses(&self, out: &mut Vec<u8>) {
        let mut kw = String::new();
        for k in &self.keywords {
            kw.push(' ');
            kw.push_str(k);
        }
        out.extend_from_slice(format!("* FLAGS ({SYSTEM_FLAGS}{kw})\r\n").as_bytes());
        if self.read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            out.extend_from_slice(
                format!("* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{kw} \\*)] Flags permitted\r\n").as_bytes(),
            );
        }
    }

    /// Announces keywords of `flags` the client has not been given in FLAGS yet; call
    /// before writing any response that shows them (RFC 3501 §7.2.6).
    pub fn announce_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a Flags>, out: &mut Vec<u8>) {
        let mut any = false;
        for f in flags {
            for k in &f.keywords {
                if !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    self.keywords.push(k.clone());
                    any = true;
                }
            }
        }
        if any {
            self.push_flags_responses(out);
        }
    }

    pub fn exists(&self) -> u32 {
        self.messages.len() as u32
    }

    pub fn recent_count(&self) -> u32 {
        self.messages.iter().filter(|m| m.recent).count() as u32
    }

    pub fn unseen_first(&self) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| !m.meta.flags.has(Flags::SEEN))
            .map(|i| i + 1)
    }

    pub fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.meta.uid).ok()
    }

    /// Indices of the messages a sequence set (or UID set) names. Non-existent UIDs are
    /// ignored; a sequence number beyond EXISTS is an error (`None`).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Option<Vec<usize>> {
        if uid {
            let star = self.messages.last().map_or(0, |m| m.meta.uid);
            Some(
                self.messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| set_contains(set, m.meta.uid, star))
                    .map(|(i, _)| i)
                    .collect(),
            )
        } else {
            let star = self.exists();
            // A sequence number that does not exist is a client error (RFC 3501 §9
            // seq-number); "*" names the last message, and nothing in an empty mailbox,
            // which clients that FETCH 1:* blindly should not see as an error.
            for seq in set.0.as_ref() {
                let bad = |v: &SeqOrUid| match v {
                    SeqOrUid::Value(n) => n.get() > star,
                    SeqOrUid::Asterisk => false,
                };
                let invalid = match seq {
                    Sequence::Single(v) => bad(v),
                    Sequence::Range(a, b) => bad(a) && bad(b),
                };
                if invalid {
                    return None;
                }
            }
            Some(
                (0..self.messages.len())
                    .filter(|i| set_contains(set, *i as u32 + 1, star))
                    .collect(),
            )
        }
    }

    /// Brings the view up to date with the store and writes the untagged responses the
    /// client must see. With `allow_expunge` false, expunges are remembered and the
    /// messages stay visible (as `gone`) until a later call allows them. `claimed_recent`
    /// is what this session claimed of \Recent for the new messages (None: nothing;
    /// a read-only view shows the mailbox's unclaimed ones instead, without taking them).
    pub fn catch_up(
        &mut self,
        changes: (MailboxInfo, Vec<(super::backend::Change, Option<MessageMeta>)>),
        allow_expunge: bool,
        condstore: bool,
        claimed_recent: Option<u32>,
        out: &mut Vec<u8>,
    ) {
        let (info, changes) = changes;
        let recent_from = if self.rev2 {
            None
        } else if self.read_only {
            Some(info.recent_uid)
        } else {
            claimed_recent
        };
        let mut flag_updates: Vec<u32> = Vec::new();
        let mut added: Vec<MessageMeta> = Vec::new();
        for (change, meta) in changes {
            match change.kind {
                ChangeKind::Expunged => {
                    if let Some(i) = self.index_of_uid(change.uid) {
                        self.messages[i].gone = true;
                        let held = self.held_expunge_modseq.get_or_insert(change.modseq);
                        *held = (*held).min(change.modseq);
                    }
                }
                ChangeKind::Added | ChangeKind::FlagsChanged => {
                    let Some(meta) = meta else { continue };
                    match self.index_of_uid(meta.uid) {
                        Some(i) => {
                            let m = &mut self.messages[i];
                            if meta.modseq > m.meta.modseq {
                                let changed = !m.meta.flags.same_as(&meta.flags);
                                m.meta = meta;
                                if changed || condstore {
                                    flag_updates.push(m.meta.uid);
                                }
                            }
                        }
                        // New since the view's last look; anything below that UIDNEXT
                        // that the view lacks was expunged before it could be seen.
                        None if meta.uid >= self.uid_next => added.push(meta),
                        None => {}
                    }
                }
            }
        }
        // The log is in modseq order: a message added before another but flagged after
        // it comes later. The view keeps UID order.
        added.sort_by_key(|m| m.uid);
        added.dedup_by_key(|m| m.uid);
        for meta in added {
            if self.messages.last().is_none_or(|l| l.meta.uid < meta.uid) {
                let recent = recent_from.is_some_and(|r| meta.uid >= r);
                self.messages.push(ViewMessage {
                    meta,
                    recent,
                    gone: false,
                });
            }
        }
        // One snapshot: every change up to its HIGHESTMODSEQ was in `changes`.
        self.highest_modseq = self.highest_modseq.max(info.highest_modseq);
        self.uid_next = self.uid_next.max(info.uid_next);
        if allow_expunge {
            self.announce_expunges(out);
        } else {
            self.advance_hold();
        }
        let shown: Vec<Flags> = flag_updates
            .iter()
            .filter_map(|uid| self.index_of_uid(*uid))
            .map(|i| self.messages[i].meta.flags.clone())
            .chain(
                self.messages[(self.announced_exists as usize).min(self.messages.len())..]
                    .iter()
                    .map(|m| m.meta.flags.clone()),
            )
            .collect();
        self.announce_keywords(&shown, out);
        for uid in flag_updates {
            if let Some(i) = self.index_of_uid(uid) {
                let m = &self.messages[i];
                if m.gone || i as u32 >= self.announced_exists {
                    continue;
                }
                out.extend_from_slice(format!("* {} FETCH (", i + 1).as_bytes());
                if condstore || self.rev2 {
                    // Unsolicited FETCH carries UID for clients that track by UID only
                    // (and always in IMAP4rev2, RFC 9051 §7.5.2).
                    out.extend_from_slice(format!("UID {} ", m.meta.uid).as_bytes());
                }
                out.extend_from_slice(b"FLAGS ");
                push_flags(out, &m.meta.flags, m.recent);
                if condstore {
                    out.extend_from_slice(format!(" MODSEQ ({})", m.meta.modseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
        }
        self.announce_counts(out);
        if condstore && !allow_expunge {
            if let Some(held) = self.held_expunge_modseq {
                let safe = held.saturating_sub(1).min(self.highest_modseq);
                out.extend_from_slice(format!("* OK [HIGHESTMODSEQ {safe}] Highest\r\n").as_bytes());
            }
        }
    }

    /// Tells the client of every message gone from the store: `* n EXPUNGE` highest
    /// sequence number first, so the numbers stay right for the client as it applies
    /// them, or with QRESYNC one `* VANISHED` of their UIDs.
    pub fn announce_expunges(&mut self, out: &mut Vec<u8>) {
        // Going down, each number is still right when the client applies it; one
        // `retain` afterwards keeps a mass expunge linear.
        let mut any = false;
        let mut vanished = Vec::new();
        for i in (0..self.messages.len()).rev() {
            if self.messages[i].gone {
                any = true;
                if (i as u32) < self.announced_exists {
                    if self.qresync {
                        vanished.push(self.messages[i].meta.uid);
                    } else {
                        out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                    }
                    self.announced_exists -= 1;
                }
            }
        }
        if !vanished.is_empty() {
            vanished.reverse();
            push_vanished(out, &vanished, false);
        }
        if any {
            self.messages.retain(|m| !m.gone);
        }
        self.held_expunge_modseq = None;
        self.advance_hold();
    }

    fn announce_counts(&mut self, out: &mut Vec<u8>) {
        let exists = self.exists();
        if exists != self.announced_exists {
            // RFC 3501 §7.3.1: EXISTS never decreases except through EXPUNGE; with
            // expunges pending, the count includes the `gone` messages, which is right.
            out.extend_from_slice(format!("* {exists} EXISTS\r\n").as_bytes());
            self.announced_exists = exists;
            if !self.rev2 {
                let recent = self.recent_count();
                out.extend_from_slice(format!("* {recent} RECENT\r\n").as_bytes());
                self.announced_recent = recent;
            }
        }
    }

    /// Removes messages that this session itself expunged (EXPUNGE, MOVE) and announces
    /// them at once: the command itself is the announcement point.
    pub fn remove_uids(&mut self, uids: &[u32], out: &mut Vec<u8>) {
        for uid in uids {
            if let Some(i) = self.index_of_uid(*uid) {
                self.messages[i].gone = true;
            }
        }
        self.announce_expunges(out);
    }

    /// Applies metas returned by a STORE of this session (current records, which may
    /// carry other sessions' changes too); returns the UIDs whose meta changed.
    pub fn update_metas(&mut self, metas: &[MessageMeta]) -> Vec<u32> {
        let mut changed = Vec::new();
        for meta in metas {
            if let Some(i) = self.index_of_uid(meta.uid) {
                if meta.modseq > self.messages[i].meta.modseq {
                    self.messages[i].meta = meta.clone();
                    changed.push(meta.uid);
                }
            }
        }
        changed
    }
}

pub fn set_contains(set: &SequenceSet, n: u32, star: u32) -> bool {
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(x) => x.get(),
        SeqOrUid::Asterisk => star,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(v) => value(v) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}
