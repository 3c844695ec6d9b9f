//! FETCH and UID FETCH (RFC 3501 §6.4.5, CONDSTORE CHANGEDSINCE RFC 7162 §3.1.4): items
//! from the view and the body, output capped per step and resumed.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::encode::Encoder;
use imap_codec::imap_types::{
    command::FetchModifier,
    core::{IString, Literal, NString, Vec1},
    datetime::DateTime,
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag, FlagFetch},
    response::{Data, Response},
    sequence::SequenceSet,
};
use imap_codec::ResponseCodec;

use super::backend::{BackendError, Flags, MessageMeta, StoreOp};
use super::message::{self, ParsedMessage};
use super::*;

impl ImapSession {
    pub(super) fn resume_fetch(&mut self, pending: PendingFetch, out: &mut Vec<u8>) {
        let command = pending.command.clone();
        match CommandCodec::default().decode(&command) {
            Ok((
                _,
                Command {
                    tag,
                    body:
                        CommandBody::Fetch {
                            sequence_set,
                            macro_or_item_names,
                            uid,
                            modifiers,
                        },
                },
            )) => {
                let tag = tag.as_ref().to_string();
                self.fetch(
                    &tag,
                    &sequence_set,
                    macro_or_item_names,
                    uid,
                    &modifiers,
                    Some(pending),
                    out,
                );
                if let Some(p) = &mut self.pending_fetch {
                    p.command = command;
                }
            }
            // It parsed the first time; nothing to resume if it does not now.
            _ => tracing::error!("imap: a paused FETCH no longer parses"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fetch(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
        resume: Option<PendingFetch>,
        out: &mut Vec<u8>,
    ) -> Flow {
        let macro_names;
        let mut names: Vec<MessageDataItemName<'_>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => {
                macro_names = m;
                macro_names.expand()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        };
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(v) => changed_since = Some(v.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        // RFC 7162 §3.2.6: VANISHED only in UID FETCH, with CHANGEDSINCE, once enabled.
        if vanished && !self.qresync {
            return self.bad(out, tag, "VANISHED needs ENABLE QRESYNC");
        }
        if vanished && !(uid && changed_since.is_some()) {
            return self.bad(out, tag, "VANISHED needs UID FETCH and CHANGEDSINCE");
        }
        // CHANGEDSINCE and the MODSEQ item enable CONDSTORE (RFC 7162 §3.1).
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.enable_condstore(out);
        }
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        // With QRESYNC every FETCH carries UID, so a client can key each by UID.
        if (uid || self.qresync) && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        if (self.condstore && changed_since.is_some()) && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        let Some(indices) = view.resolve(set, uid) else {
            return self.bad(out, tag, "Invalid message sequence number");
        };
        if let (true, Some(since), None) = (vanished, changed_since, &resume) {
            // Expunged since the client's modseq, within the UIDs it named, before any
            // FETCH. UIDs still in the view are announced by the view itself (VANISHED
            // without EARLIER) when it learns of them, so they are not told twice.
            let star = view.uid_next.saturating_sub(1);
            let mut uids: Vec<u32> = match self.store.expunged_since(account, view.id, since) {
                Ok(list) => list
                    .into_iter()
                    .map(|(_, uid)| uid)
                    .filter(|&uid| {
                        super::view::set_contains(set, uid, star) && view.index_of_uid(uid).is_none()
                    })
                    .collect(),
                Err(err) => return backend_no(out, tag, &err),
            };
            uids.sort_unstable();
            uids.dedup();
            if !uids.is_empty() {
                super::view::push_vanished(out, &uids, true);
            }
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Body
                    | MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Binary { .. }
                    | MessageDataItemName::BinarySize { .. }
            )
        });
        let sets_seen = !view.read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Binary { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let codec = ResponseCodec::default();
        let mut unknown_cte = false;
        let (start, mut expunged, mut failed) = match resume {
            Some(p) => (p.next, p.expunged, p.failed),
            None => (0, false, false),
        };
        let cap = self.limits.max_output_per_step;
        for (position, &i) in indices.iter().enumerate().skip(start) {
            if out.len() >= cap {
                // The rest goes out in later steps (`has_pending`); the command bytes
                // are filled in by `command_line`, which owns them.
                self.pending_fetch = Some(PendingFetch {
                    command: Vec::new(),
                    next: position,
                    expunged,
                    failed,
                });
                return Flow::Continue;
            }
            let Some(m) = view.messages.get(i) else {
                continue;
            };
            // A message another session expunged (`gone`, or not yet known to the view)
            // is served as the view shows it: flags as last known, the body the store
            // holds for the view (docs/architecture.md). Only a store that keeps no body
            // for views makes it NO [EXPUNGEISSUED].
            let gone = m.gone;
            if changed_since.is_some_and(|c| m.meta.modseq <= c) {
                continue;
            }
            let uid_value = m.meta.uid;
            let body = if needs_body {
                match self.store.body(account, view.id, uid_value) {
                    Ok(b) => Some(b),
                    Err(BackendError::NotFound) => {
                        // Expunged by another session, and the store kept no body.
                        expunged = true;
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(%err, uid = uid_value, "imap FETCH: reading body failed");
                        failed = true;
                        continue;
                    }
                }
            } else {
                None
            };
            // RFC 6855 §7: no raw UTF-8 header data unless the client enabled it.
            let parsed = body
                .as_deref()
                .map(|b| ParsedMessage::parse(b).downgraded(!self.utf8));
            // BINARY items decoded first: a part we cannot decode fails the message
            // before \Seen is set (RFC 3516 §4.3).
            let binaries = match binary_items(&names, parsed.as_ref()) {
                Ok(b) => b,
                Err(message::UnknownCte) => {
                    unknown_cte = true;
                    continue;
                }
            };
            let mut seen_now = false;
            if sets_seen && !gone && !view.messages[i].meta.flags.has(Flags::SEEN) {
                let seen = Flags {
                    system: Flags::SEEN,
                    keywords: Vec::new(),
                };
                match self
                    .store
                    .store_flags(account, view.id, &[uid_value], StoreOp::Add, &seen, None)
                {
                    Ok((metas, _)) => {
                        seen_now = !view.update_metas(&metas).is_empty();
                    }
                    Err(err) => {
                        tracing::warn!(%err, uid = uid_value, "imap FETCH: setting \\Seen failed");
                    }
                }
            }
            if seen_now || names.contains(&MessageDataItemName::Flags) {
                let flags = view.messages[i].meta.flags.clone();
                view.announce_keywords([&flags], out);
            }
            let m = &view.messages[i];
            let mut items: Vec<MessageDataItem<'static>> = Vec::with_capacity(names.len() + 1);
            // Where each BINARY[..] value goes among the items (imap-codec's item has
            // no <origin>, so those are written here, `push_fetch_with_binary`).
            let mut raw_items: Vec<(usize, Vec<u8>)> = Vec::new();
            for (n, name) in names.iter().enumerate() {
                if let Some(piece) = binaries.get(&n) {
                    match piece {
                        BinaryPiece::Raw(bytes) => raw_items.push((items.len(), bytes.clone())),
                        BinaryPiece::Size(section, size) => items.push(MessageDataItem::BinarySize {
                            section: section.clone(),
                            size: *size,
                        }),
                    }
                } else if let Some(item) =
                    fetch_item(name, &m.meta, m.recent, parsed.as_ref(), body.as_deref())
                {
                    items.push(item);
                }
            }
            if seen_now && !names.contains(&MessageDataItemName::Flags) {
                items.push(flags_item(&m.meta.flags, m.recent));
            }
            if seen_now && self.condstore {
                if !names.contains(&MessageDataItemName::Uid) {
                    if let Some(u) = NonZeroU32::new(m.meta.uid) {
                        items.push(MessageDataItem::Uid(u));
                    }
                }
                if !names.contains(&MessageDataItemName::ModSeq) {
                    if let Some(v) = NonZeroU64::new(m.meta.modseq) {
                        items.push(MessageDataItem::ModSeq(v));
                    }
                }
            }
            let Some(seq) = NonZeroU32::new(i as u32 + 1) else {
                continue;
            };
            if !raw_items.is_empty() {
                push_fetch_with_binary(out, &codec, seq, items, raw_items);
                continue;
            }
            let Ok(items) = Vec1::try_from(items) else {
                continue;
            };
            let response = Response::Data(Data::Fetch { seq, items });
            out.extend_from_slice(&codec.encode(&response).dump());
        }
        self.catch_up(uid, out);
        if unknown_cte {
            no(out, tag, "[UNKNOWN-CTE] Cannot decode a part's transfer encoding");
        } else if failed {
            no(
                out,
                tag,
                "[UNAVAILABLE] Some messages could not be read; try again later",
            );
        } else if expunged {
            // RFC 5530: the client learns of the expunge at its next NOOP.
            no(out, tag, "[EXPUNGEISSUED] Some messages were expunged meanwhile");
        } else {
            ok(
                out,
                tag,
                if uid {
                    "UID FETCH completed"
                } else {
                    "FETCH completed"
                },
            );
        }
        Flow::Continue
    }
}

pub(super) fn flags_item(flags: &Flags, recent: bool) -> MessageDataItem<'static> {
    let mut list: Vec<FlagFetch<'static>> = Vec::with_capacity(5 + flags.keywords.len());
    for (bit, flag) in [
        (Flags::SEEN, Flag::Seen),
        (Flags::ANSWERED, Flag::Answered),
        (Flags::FLAGGED, Flag::Flagged),
        (Flags::DELETED, Flag::Deleted),
        (Flags::DRAFT, Flag::Draft),
    ] {
        if flags.has(bit) {
            list.push(FlagFetch::Flag(flag));
        }
    }
    if recent {
        list.push(FlagFetch::Recent);
    }
    for k in &flags.keywords {
        if let Ok(atom) = k.clone().try_into() {
            list.push(FlagFetch::Flag(Flag::Keyword(atom)));
        }
    }
    MessageDataItem::Flags(list)
}

pub(super) fn internal_date(meta: &MessageMeta) -> Option<DateTime> {
    let offset = chrono::FixedOffset::east_opt(i32::from(meta.internal_date_offset_minutes) * 60)?;
    let utc = chrono::DateTime::from_timestamp(meta.internal_date, 0)?;
    DateTime::try_from(utc.with_timezone(&offset)).ok()
}

/// Octets as an IMAP string: a literal (binary-safe up to NUL, which IMAP4rev1 cannot
/// carry and is replaced, as Dovecot does without BINARY).
pub(super) fn nstring(data: Vec<u8>) -> NString<'static> {
    let data = if data.contains(&0) {
        data.into_iter().map(|b| if b == 0 { 0x80 } else { b }).collect()
    } else {
        data
    };
    match Literal::try_from(data) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => NString(None),
    }
}

pub(super) fn fetch_item(
    name: &MessageDataItemName<'_>,
    meta: &MessageMeta,
    recent: bool,
    parsed: Option<&ParsedMessage<'_>>,
    raw: Option<&[u8]>,
) -> Option<MessageDataItem<'static>> {
    use bounded_static_free::to_static_section;
    Some(match name {
        MessageDataItemName::Uid => MessageDataItem::Uid(NonZeroU32::new(meta.uid)?),
        MessageDataItemName::Flags => flags_item(&meta.flags, recent),
        MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(meta)?),
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(meta.size),
        MessageDataItemName::ModSeq => MessageDataItem::ModSeq(NonZeroU64::new(meta.modseq.max(1))?),
        MessageDataItemName::Envelope => MessageDataItem::Envelope(message::envelope(parsed?)),
        MessageDataItemName::Body => MessageDataItem::Body(message::body_structure(parsed?, false)),
        MessageDataItemName::BodyStructure => {
            MessageDataItem::BodyStructure(message::body_structure(parsed?, true))
        }
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(raw?.to_vec())),
        MessageDataItemName::Rfc822Header => {
            let section = imap_codec::imap_types::fetch::Section::Header(None);
            MessageDataItem::Rfc822Header(nstring(message::section(parsed?, Some(&section))))
        }
        MessageDataItemName::Rfc822Text => {
            let section = imap_codec::imap_types::fetch::Section::Text(None);
            MessageDataItem::Rfc822Text(nstring(message::section(parsed?, Some(&section))))
        }
        MessageDataItemName::BodyExt { section, partial, .. } => {
            let mut data = message::section(parsed?, section.as_ref());
            let origin = match partial {
                Some((origin, len)) => {
                    let start = (*origin as usize).min(data.len());
                    let end = start.saturating_add(len.get() as usize).min(data.len());
                    data = data[start..end].to_vec();
                    // The origin asked for, even past the end (RFC 3501 §7.4.2); the
                    // clamped one was echoed before (issue 19 item 10).
                    Some(*origin)
                }
                None => None,
            };
            // Dovecot answers BODY[]<0.10> as BODY[]<0>: the origin only.
            MessageDataItem::BodyExt {
                section: section.as_ref().map(to_static_section),
                origin,
                data: nstring(data),
            }
        }
        // Decoded beforehand (`binary_items`).
        MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => return None,
    })
}

/// A BINARY item decoded: the value as written (`BINARY[1]<0> ~{n}` + octets), or a
/// BINARY.SIZE item.
enum BinaryPiece {
    Raw(Vec<u8>),
    Size(Vec<NonZeroU32>, u32),
}

/// Decodes every BINARY[..] and BINARY.SIZE[..] item asked for, by its index in `names`.
fn binary_items(
    names: &[MessageDataItemName<'_>],
    parsed: Option<&ParsedMessage<'_>>,
) -> Result<std::collections::HashMap<usize, BinaryPiece>, message::UnknownCte> {
    let mut out = std::collections::HashMap::new();
    let Some(parsed) = parsed else {
        return Ok(out);
    };
    for (n, name) in names.iter().enumerate() {
        match name {
            MessageDataItemName::Binary { section, partial, .. } => {
                let mut data = message::binary_section(parsed, section)?;
                let mut raw = format!("BINARY[{}]", dotted(section)).into_bytes();
                if let Some((origin, len)) = partial {
                    let start = (*origin as usize).min(data.len());
                    let end = start.saturating_add(len.get() as usize).min(data.len());
                    data = data[start..end].to_vec();
                    raw.extend_from_slice(format!("<{origin}>").as_bytes());
                }
                // literal8 only where a literal cannot carry the octets (NUL).
                let marker = if data.contains(&0) { "~" } else { "" };
                raw.extend_from_slice(format!(" {marker}{{{}}}\r\n", data.len()).as_bytes());
                raw.extend_from_slice(&data);
                out.insert(n, BinaryPiece::Raw(raw));
            }
            MessageDataItemName::BinarySize { section } => {
                let size = message::binary_section(parsed, section)?.len();
                let size = u32::try_from(size).unwrap_or(u32::MAX);
                out.insert(n, BinaryPiece::Size(section.clone(), size));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn dotted(section: &[NonZeroU32]) -> String {
    section
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// `* seq FETCH (...)` with BINARY values written by hand at their places among the
/// other items, each of which imap-codec encodes on its own.
fn push_fetch_with_binary(
    out: &mut Vec<u8>,
    codec: &ResponseCodec,
    seq: NonZeroU32,
    items: Vec<MessageDataItem<'static>>,
    raw_items: Vec<(usize, Vec<u8>)>,
) {
    let prefix = format!("* {seq} FETCH (");
    let mut pieces: Vec<Vec<u8>> = Vec::with_capacity(items.len() + raw_items.len());
    let mut raw = raw_items.into_iter().peekable();
    for (n, item) in items.into_iter().enumerate() {
        while let Some((_, bytes)) = raw.next_if(|(at, _)| *at == n) {
            pieces.push(bytes);
        }
        let response = Response::Data(Data::Fetch {
            seq,
            items: Vec1::from(item),
        });
        let encoded = codec.encode(&response).dump();
        // Exactly `* seq FETCH (` item `)` CRLF.
        if let Some(item) = encoded
            .strip_prefix(prefix.as_bytes())
            .and_then(|rest| rest.strip_suffix(b")\r\n"))
        {
            pieces.push(item.to_vec());
        }
    }
    pieces.extend(raw.map(|(_, bytes)| bytes));
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(&pieces.join(&b' '));
    out.extend_from_slice(b")\r\n");
}

pub(super) mod bounded_static_free {
    use imap_codec::imap_types::fetch::Section;

    /// An owned copy of a section name for the response.
    pub fn to_static_section(section: &Section<'_>) -> Section<'static> {
        use imap_codec::imap_types::core::AString;
        let own = |v: &imap_codec::imap_types::core::Vec1<AString<'_>>| {
            let items: Vec<AString<'static>> = v
                .as_ref()
                .iter()
                .filter_map(|a| AString::try_from(a.as_ref().to_vec()).ok())
                .collect();
            imap_codec::imap_types::core::Vec1::try_from(items)
        };
        match section {
            Section::Part(p) => Section::Part(p.clone()),
            Section::Header(p) => Section::Header(p.clone()),
            Section::HeaderFields(p, f) => match own(f) {
                Ok(f) => Section::HeaderFields(p.clone(), f),
                Err(_) => Section::Header(p.clone()),
            },
            Section::HeaderFieldsNot(p, f) => match own(f) {
                Ok(f) => Section::HeaderFieldsNot(p.clone(), f),
                Err(_) => Section::Header(p.clone()),
            },
            Section::Text(p) => Section::Text(p.clone()),
            Section::Mime(p) => Section::Mime(p.clone()),
        }
    }
}
