//! Selected-state commands: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE and UID EXPUNGE
//! (RFC 3501 §6.4, RFC 4315, RFC 6851, RFC 7162 §3.1).

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::encode::Encoder;
use imap_codec::imap_types::{
    command::{FetchModifier, StoreModifier},
    core::{IString, Literal, NString, Vec1},
    datetime::DateTime,
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag, FlagFetch, StoreResponse, StoreType},
    mailbox::Mailbox,
    response::{Data, Response},
    search::SearchKey,
    sequence::SequenceSet,
};
use imap_codec::ResponseCodec;

use super::backend::{BackendError, Flags, MessageMeta, StoreOp};
use super::extended::EsearchOptions;
use super::message::{self, ParsedMessage};
use super::text::push_flags;
use super::view::set_contains;
use super::{backend_no, convert_flags, mailbox_name, no, ok, Flow, ImapSession, PendingFetch, State};

impl ImapSession {
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
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(v) => changed_since = Some(v.get()),
                FetchModifier::Vanished => {
                    return self.bad(out, tag, "VANISHED needs QRESYNC");
                }
            }
        }
        // CHANGEDSINCE and the MODSEQ item enable CONDSTORE (RFC 7162 §3.1).
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.enable_condstore(out);
        }
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        if names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
            )
        }) {
            return self.bad(out, tag, "BINARY not supported");
        }
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        if (self.condstore && changed_since.is_some()) && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        let Some(indices) = view.resolve(set, uid) else {
            return self.bad(out, tag, "Invalid message sequence number");
        };
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
            )
        });
        let sets_seen = !view.read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let codec = ResponseCodec::default();
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
            if m.gone {
                // Expunged by another session, not yet announced: no data for it, and
                // the tagged NO [EXPUNGEISSUED] says why (docs/architecture.md).
                expunged = true;
                continue;
            }
            if changed_since.is_some_and(|c| m.meta.modseq <= c) {
                continue;
            }
            let uid_value = m.meta.uid;
            let body = if needs_body {
                match self.store.body(account, view.id, uid_value) {
                    Ok(b) => Some(b),
                    Err(BackendError::NotFound) => {
                        // Expunged by another session and not yet announced.
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
            let mut seen_now = false;
            if sets_seen && !view.messages[i].meta.flags.has(Flags::SEEN) {
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
            let parsed = body.as_deref().map(ParsedMessage::parse);
            let mut items: Vec<MessageDataItem<'static>> = Vec::with_capacity(names.len() + 1);
            for name in &names {
                if let Some(item) = fetch_item(name, &m.meta, m.recent, parsed.as_ref(), body.as_deref()) {
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
            let (Some(seq), Ok(items)) = (NonZeroU32::new(i as u32 + 1), Vec1::try_from(items)) else {
                continue;
            };
            let response = Response::Data(Data::Fetch { seq, items });
            out.extend_from_slice(&codec.encode(&response).dump());
        }
        self.catch_up(uid, out);
        if failed {
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

    pub(super) fn search(
        &mut self,
        tag: &str,
        charset: Option<&str>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        esearch: Option<EsearchOptions>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if let Some(cs) = charset {
            if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                no(out, tag, "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
                return Flow::Continue;
            }
        }
        let uses_modseq = criteria.iter().any(has_modseq_key);
        if uses_modseq {
            self.enable_condstore(out);
        }
        let State::Selected { account, view } = &mut self.state else {
            return Flow::Continue;
        };
        let needs_content = criteria.iter().any(has_content_key);
        let mut hits: Vec<u32> = Vec::new();
        let mut max_modseq = 0;
        let star_uid = view.messages.last().map_or(0, |m| m.meta.uid);
        let exists = view.exists();
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
                hits.push(if uid { m.meta.uid } else { i as u32 + 1 });
                max_modseq = max_modseq.max(m.meta.modseq);
            }
        }
        match esearch {
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
                if uses_modseq && !hits.is_empty() {
                    out.extend_from_slice(format!(" MODSEQ {max_modseq}").as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        self.catch_up(uid, out);
        ok(out, tag, "SEARCH completed");
        Flow::Continue
    }

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
        let Some(name) = mailbox_name(mailbox) else {
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

fn flags_item(flags: &Flags, recent: bool) -> MessageDataItem<'static> {
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

fn internal_date(meta: &MessageMeta) -> Option<DateTime> {
    let offset = chrono::FixedOffset::east_opt(i32::from(meta.internal_date_offset_minutes) * 60)?;
    let utc = chrono::DateTime::from_timestamp(meta.internal_date, 0)?;
    DateTime::try_from(utc.with_timezone(&offset)).ok()
}

/// Octets as an IMAP string: a literal (binary-safe up to NUL, which IMAP4rev1 cannot
/// carry and is replaced, as Dovecot does without BINARY).
fn nstring(data: Vec<u8>) -> NString<'static> {
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

fn fetch_item(
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
        MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => return None,
    })
}

mod bounded_static_free {
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

struct SearchContext<'a, 'm> {
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

fn has_content_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(has_content_key),
        SearchKey::Or(a, b) => has_content_key(a) || has_content_key(b),
        SearchKey::Not(k) => has_content_key(k),
        other => message::is_content_key(other),
    }
}

fn has_modseq_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(has_modseq_key),
        SearchKey::Or(a, b) => has_modseq_key(a) || has_modseq_key(b),
        SearchKey::Not(k) => has_modseq_key(k),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// Sorted numbers as a sequence set: `1:3,7`.
pub(super) fn compress(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    compress_ordered(&sorted)
}

/// Numbers in the given order as a set, merging runs of consecutive values; the order
/// matters for COPYUID, whose two sets correspond element by element.
pub(super) fn compress_ordered(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}
