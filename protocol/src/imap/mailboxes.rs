//! Mailbox commands: SELECT, EXAMINE, CLOSE/UNSELECT, CREATE, DELETE, RENAME,
//! SUBSCRIBE/UNSUBSCRIBE, LIST, LSUB, LIST-EXTENDED and LIST-STATUS, STATUS (RFC 3501
//! §6.3, RFC 5258, RFC 5819, RFC 6154).

use std::collections::BTreeMap;

use super::*;
use understudy_types::NewMailboxName;

impl ImapSession {
    pub(super) fn select(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        parameters: &[imap_codec::imap_types::command::SelectParameter],
        examine: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let read_only = examine || self.read_only_user();
        use imap_codec::imap_types::command::SelectParameter;
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let was_selected = matches!(self.state, State::Selected { .. });
        // Update contexts end with the selection (RFC 5267 §4.3).
        self.contexts.clear();
        self.saved.clear();
        // Selecting deselects first, even when the new SELECT fails (RFC 3501 §6.3.1).
        self.state = State::Authenticated {
            account: account.clone(),
        };
        if was_selected {
            out.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        let mut resync = None;
        for p in parameters {
            match p {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } if !self.qresync => {
                    // RFC 7162 §3.2.5: only after ENABLE QRESYNC.
                    return self.bad(out, tag, "QRESYNC must be enabled first");
                }
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    resync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()));
                }
            }
        }
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(err) => return backend_no(out, tag, &err),
        };
        // Before the messages are read: whatever the view shows stays readable after
        // another session expunges it, until the view tells the client (view_holds.rs).
        let hold = self.store.hold_view(&account, info.id);
        let (info, metas) = match self.store.messages(&account, info.id) {
            Ok(r) => r,
            Err(err) => return backend_no(out, tag, &err),
        };
        // EXAMINE shows \Recent without taking it (RFC 3501 §6.3.2); IMAP4rev2 has no
        // \Recent, so a rev2 session neither shows nor takes it (RFC 9051 App. E).
        let first_recent = if self.rev2 {
            u32::MAX
        } else if read_only {
            info.recent_uid
        } else {
            match self.store.claim_recent(&account, info.id, info.uid_next) {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(%err, mailbox = info.id, "imap: claiming \\Recent failed");
                    u32::MAX
                }
            }
        };
        let mut view = MailboxView::new(&info, metas, first_recent, read_only);
        view.set_hold(hold);
        view.qresync = self.qresync;
        view.rev2 = self.rev2;
        view.push_flags_responses(out);
        out.extend_from_slice(format!("* {} EXISTS\r\n", view.exists()).as_bytes());
        if self.rev2 {
            // RFC 9051 §6.3.2: a LIST with the mailbox's name instead of RECENT and
            // the UNSEEN code, which IMAP4rev2 dropped. Names are stored as the
            // client gave them (no normalisation), so OLDNAME never applies.
            out.extend_from_slice(b"* LIST () \"/\" ");
            push_mailbox(out, &view.name, true);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(format!("* {} RECENT\r\n", view.recent_count()).as_bytes());
            if let Some(unseen) = view.unseen_first() {
                out.extend_from_slice(format!("* OK [UNSEEN {unseen}] First unseen\r\n").as_bytes());
            }
        }
        out.extend_from_slice(format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", view.uid_validity).as_bytes());
        out.extend_from_slice(format!("* OK [UIDNEXT {}] Predicted next UID\r\n", view.uid_next).as_bytes());
        if self.condstore {
            out.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", view.highest_modseq).as_bytes(),
            );
        }
        // A cache from another UIDVALIDITY is no cache: the parameter is ignored.
        if let Some((_, since, known)) = resync.filter(|r| r.0 == view.uid_validity) {
            if let Err(err) = self.resynchronise(&account, &view, since, known.as_ref(), out) {
                return backend_no(out, tag, &err);
            }
        }
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        let verb = if examine { "EXAMINE" } else { "SELECT" };
        out.extend_from_slice(format!("{tag} OK [{code}] {verb} completed\r\n").as_bytes());
        self.state = State::Selected {
            account,
            view: Box::new(view),
        };
        Flow::Continue
    }

    /// SELECT (QRESYNC ...) with the client's UIDVALIDITY (RFC 7162 §3.2.5): the UIDs
    /// expunged since its modseq (of those it says it knows) as `VANISHED (EARLIER)`,
    /// then FETCH of every message changed since. The store keeps every expunge, so
    /// `seq-match-data` (for servers that do not) is not needed and not read.
    fn resynchronise(
        &self,
        account: &Account,
        view: &MailboxView,
        since: u64,
        known: Option<&imap_codec::imap_types::sequence::SequenceSet>,
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let star = view.uid_next.saturating_sub(1);
        let mut vanished: Vec<u32> = self
            .store
            .expunged_since(account, view.id, since)?
            .into_iter()
            // Later expunges are the view's to report, as VANISHED without EARLIER.
            .filter(|&(modseq, _)| modseq <= view.highest_modseq)
            .map(|(_, uid)| uid)
            .filter(|&uid| known.is_none_or(|k| super::view::set_contains(k, uid, star)))
            .collect();
        vanished.sort_unstable();
        vanished.dedup();
        if !vanished.is_empty() {
            super::view::push_vanished(out, &vanished, true);
        }
        for (i, m) in view.messages.iter().enumerate() {
            if m.meta.modseq > since {
                out.extend_from_slice(format!("* {} FETCH (UID {} FLAGS ", i + 1, m.meta.uid).as_bytes());
                text::push_flags(out, &m.meta.flags, m.recent);
                out.extend_from_slice(format!(" MODSEQ ({}))\r\n", m.meta.modseq).as_bytes());
            }
        }
        Ok(())
    }

    pub(super) fn close_mailbox(&mut self, expunge: bool) {
        self.contexts.clear();
        self.saved.clear();
        let state = std::mem::replace(&mut self.state, State::Logout);
        self.state = match state {
            State::Selected { account, view } => {
                if expunge && !view.read_only {
                    let uids: Vec<u32> = view
                        .messages
                        .iter()
                        .filter(|m| m.meta.flags.has(Flags::DELETED))
                        .map(|m| m.meta.uid)
                        .collect();
                    if !uids.is_empty() {
                        if let Err(err) = self.store.expunge(&account, view.id, &uids) {
                            tracing::warn!(%err, mailbox = view.id, "imap CLOSE: expunge failed");
                        }
                    }
                }
                State::Authenticated { account }
            }
            other => other,
        };
    }

    pub(super) fn create(&mut self, tag: &str, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            return self.bad(out, tag, "Invalid mailbox name");
        };
        let name = match self.new_name(tag, &name, out) {
            Ok(name) => name.into_string(),
            Err(flow) => return flow,
        };
        if name == "INBOX" {
            no(out, tag, "[ALREADYEXISTS] Mailbox already exists");
            return Flow::Continue;
        }
        match self.store.create_mailbox(&account, &name, None) {
            Ok(_) => ok(out, tag, "CREATE completed"),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    pub(super) fn delete(&mut self, tag: &str, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        if name == "INBOX" {
            no(out, tag, "[CANNOT] INBOX cannot be deleted");
            return Flow::Continue;
        }
        if let State::Selected { view, .. } = &self.state {
            if view.name == name {
                no(out, tag, "[INUSE] Mailbox is selected; close it first");
                return Flow::Continue;
            }
        }
        match self.store.delete_mailbox(&account, &name) {
            Ok(()) => ok(out, tag, "DELETE completed"),
            // A name that is only the parent of others (`\Noselect`) cannot be deleted
            // (RFC 3501 §6.3.4); RFC 9051 §7.1 gives the code for it.
            Err(BackendError::NotFound) if self.has_children(&account, &name) => no(
                out,
                tag,
                "[HASCHILDREN] Only the mailboxes below this name exist; delete those",
            ),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    /// Whether some mailbox of the account lies below `name` in the hierarchy.
    fn has_children(&self, account: &Account, name: &str) -> bool {
        let prefix = format!("{name}/");
        self.store
            .mailboxes_and_subscriptions(account)
            .is_ok_and(|(boxes, _)| boxes.iter().any(|b| b.name.starts_with(&prefix)))
    }

    pub(super) fn rename(
        &mut self,
        tag: &str,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let (Some(from), Some(to)) = (mailbox_name(from, self.utf8), mailbox_name(to, self.utf8)) else {
            return self.bad(out, tag, "Invalid mailbox name");
        };
        let to = match self.new_name(tag, &to, out) {
            Ok(name) => name.into_string(),
            Err(flow) => return flow,
        };
        if to == "INBOX" {
            no(out, tag, "[ALREADYEXISTS] INBOX already exists");
            return Flow::Continue;
        }
        match self.store.rename_mailbox(&account, &from, &to) {
            Ok(()) => ok(out, tag, "RENAME completed"),
            Err(err) => backend_no(out, tag, &err),
        };
        if let State::Selected { view, .. } = &mut self.state {
            if view.name == from && from != "INBOX" {
                view.name = to;
            }
        }
        Flow::Continue
    }

    pub(super) fn subscribe(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        subscribed: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let verb = if subscribed { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        match self.store.set_subscribed(&account, &name, subscribed) {
            Ok(()) => ok(out, tag, &format!("{verb} completed")),
            Err(err) => backend_no(out, tag, &err),
        };
        Flow::Continue
    }

    pub(super) fn list(
        &mut self,
        tag: &str,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let reference: Vec<u8> = match reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.inner().as_ref().to_vec(),
        };
        let pattern: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let command = ListCommand {
            reference,
            patterns: vec![pattern.to_vec()],
            ..ListCommand::default()
        };
        self.list_extended(tag, &command, lsub, out)
    }

    /// LIST, LSUB and LIST-EXTENDED (RFC 3501 §6.3.8-9, RFC 5258, RFC 5819, RFC 6154).
    pub(super) fn list_extended(
        &mut self,
        tag: &str,
        command: &ListCommand,
        lsub: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let verb = if lsub { "LSUB" } else { "LIST" };
        // Each pattern costs its length × each name's length to match; no mailbox name
        // is longer than 255 octets, so longer patterns are refused rather than matched.
        let too_long = |p: &Vec<u8>| command.reference.len() + p.len() > MAX_LIST_PATTERN;
        if command.patterns.len() > MAX_LIST_PATTERNS || command.patterns.iter().any(too_long) {
            return self.bad(out, tag, "Pattern too long");
        }
        let reference = decode_name(&command.reference, self.utf8);
        let patterns: Vec<String> = command
            .patterns
            .iter()
            .map(|p| decode_name(p, self.utf8))
            .collect();
        if !lsub && patterns.len() == 1 && patterns[0].is_empty() {
            out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            ok(out, tag, "LIST completed");
            return Flow::Continue;
        }
        let full: Vec<String> = patterns
            .iter()
            .map(|p| canonical_inbox(&format!("{reference}{p}")))
            .collect();
        let (mailboxes, subscriptions) = match self.store.mailboxes_and_subscriptions(&account) {
            Ok(both) => both,
            Err(err) => return backend_no(out, tag, &err),
        };
        let names = ListedNames::new(&mailboxes, &subscriptions);
        let matches = |name: &str| full.iter().any(|p| list_matches(p, name));
        // What the command selects (RFC 5258 §3.1): subscribed names for LSUB and
        // (SUBSCRIBED), whether or not they exist; special-use mailboxes; otherwise every
        // mailbox and every parent that exists only through its children.
        let selected = |n: &ListedName| {
            if lsub {
                return n.subscribed;
            }
            if !command.select_subscribed && !command.select_special_use {
                return n.info.is_some() || n.has_children;
            }
            (!command.select_subscribed || n.subscribed)
                && (!command.select_special_use || n.info.is_some_and(|i| i.special_use.is_some()))
        };
        let filtered = command.select_subscribed || command.select_special_use;
        let show_subscribed = command.select_subscribed || command.return_subscribed;
        for (name, entry) in names.in_list_order() {
            if !matches(name) {
                continue;
            }
            // A selected name below this one that the pattern does not reach (`%` stops
            // at a level): RECURSIVEMATCH reports it as CHILDINFO on this name, selected
            // or not (RFC 5258 §3.5, examples 8 and 9); LSUB lists an unsubscribed parent
            // of a subscribed name as \Noselect (RFC 3501 §6.3.9).
            let unreached_child = (lsub || command.recursive_match)
                && names.descendants(name).any(|(n, d)| selected(d) && !matches(n));
            let is_selected = selected(entry);
            if !is_selected && !unreached_child {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if lsub {
                if !is_selected || entry.info.is_none() {
                    attrs.push("\\Noselect");
                }
            } else {
                if entry.info.is_none() {
                    attrs.push(if filtered { "\\NonExistent" } else { "\\Noselect" });
                }
                // Children are existing mailboxes, whatever the selection (RFC 5258 §4);
                // of a name that does not exist and has none, nothing is said.
                if entry.has_children {
                    attrs.push("\\HasChildren");
                } else if entry.info.is_some() {
                    attrs.push("\\HasNoChildren");
                }
                if show_subscribed && entry.subscribed {
                    attrs.push("\\Subscribed");
                }
                if let Some(su) = entry.info.and_then(|i| i.special_use) {
                    attrs.push(su.attribute());
                }
            }
            out.extend_from_slice(format!("* {verb} ({}) \"/\" ", attrs.join(" ")).as_bytes());
            push_mailbox(out, name, self.utf8);
            if !lsub && command.recursive_match && unreached_child {
                let what = if command.select_subscribed {
                    "SUBSCRIBED"
                } else {
                    "SPECIAL-USE"
                };
                out.extend_from_slice(format!(" (\"CHILDINFO\" (\"{what}\"))").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            if let (Some(items), Some(info)) = (&command.return_status, entry.info) {
                // LIST-STATUS (RFC 5819): a failure for one mailbox is left out, not fatal.
                if let Err(err) = self.status_response(&account, info, items, out) {
                    tracing::warn!(%err, mailbox = info.id, "imap LIST-STATUS failed");
                }
            }
        }
        ok(out, tag, &format!("{verb} completed"));
        Flow::Continue
    }

    pub(super) fn status(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        if self.rev2 && items.contains(&StatusDataItemName::Recent) {
            return self.bad(out, tag, "RECENT is not an IMAP4rev2 status item");
        }
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
            no(out, tag, "[NONEXISTENT] Mailbox does not exist");
            return Flow::Continue;
        };
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(err) => return backend_no(out, tag, &err),
        };
        if let Err(err) = self.status_response(&account, &info, items, out) {
            return backend_no(out, tag, &err);
        }
        ok(out, tag, "STATUS completed");
        Flow::Continue
    }

    /// `* STATUS name (...)`.
    pub(super) fn status_response(
        &self,
        account: &Account,
        info: &MailboxInfo,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        // DELETED needs each message's flags; RECENT only when some message may still be
        // unclaimed (a mailbox nobody selected since new mail came).
        let needs_messages = items.iter().any(|i| match i {
            StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage => true,
            StatusDataItemName::Recent => info.recent_uid < info.uid_next,
            _ => false,
        });
        let (deleted, deleted_storage, recent) = if needs_messages {
            let (_, metas) = self.store.messages(account, info.id)?;
            let deleted = || metas.iter().filter(|m| m.flags.has(Flags::DELETED));
            (
                deleted().count(),
                deleted().map(|m| u64::from(m.size)).sum::<u64>(),
                metas.iter().filter(|m| m.uid >= info.recent_uid).count(),
            )
        } else {
            (0, 0, 0)
        };
        let mut parts: Vec<String> = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", info.exists)),
                // Counted, not claimed: only SELECT takes \Recent (RFC 3501 §6.3.10).
                // LIST-STATUS in an IMAP4rev2 session: no RECENT (STATUS refuses it).
                StatusDataItemName::Recent if self.rev2 => {}
                StatusDataItemName::Recent => parts.push(format!("RECENT {recent}")),
                StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", info.uid_next)),
                StatusDataItemName::UidValidity => parts.push(format!("UIDVALIDITY {}", info.uid_validity)),
                StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", info.unseen)),
                StatusDataItemName::Deleted => parts.push(format!("DELETED {deleted}")),
                // RFC 8438 and RFC 9208 §4.2.2 (what EXPUNGE would free).
                StatusDataItemName::Size => parts.push(format!("SIZE {}", info.size)),
                StatusDataItemName::DeletedStorage => {
                    parts.push(format!("DELETED-STORAGE {deleted_storage}"))
                }
                StatusDataItemName::HighestModSeq => {
                    parts.push(format!("HIGHESTMODSEQ {}", info.highest_modseq))
                }
            }
        }
        out.extend_from_slice(b"* STATUS ");
        push_mailbox(out, &info.name, self.utf8);
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(())
    }
}

impl ImapSession {
    /// The target of CREATE or RENAME, checked by the rules the store applies
    /// (`understudy_types::NewMailboxName`), so the store is not asked for a name it
    /// refuses: a malformed one gets `BAD`, a forbidden one the `NO` the store's refusal
    /// gets. On refusal the reply is written and the flow returned.
    fn new_name(&mut self, tag: &str, name: &str, out: &mut Vec<u8>) -> Result<NewMailboxName, Flow> {
        NewMailboxName::from_client(name).map_err(|e| {
            if e.is_malformed() {
                self.bad(out, tag, "Invalid mailbox name")
            } else {
                backend_no(out, tag, &BackendError::Invalid(e.to_string()));
                Flow::Continue
            }
        })
    }
}

/// A name LIST or LSUB may show: a mailbox, a parent that exists only through its
/// children, a subscribed name (whose mailbox may be gone), or a parent of one.
#[derive(Default)]
struct ListedName<'a> {
    info: Option<&'a MailboxInfo>,
    subscribed: bool,
    /// Some existing mailbox lies below it.
    has_children: bool,
}

/// Every name of a user's hierarchy that a LIST may show, by name.
struct ListedNames<'a>(BTreeMap<String, ListedName<'a>>);

impl<'a> ListedNames<'a> {
    fn new(mailboxes: &'a [MailboxInfo], subscriptions: &[String]) -> ListedNames<'a> {
        let mut names: BTreeMap<String, ListedName<'a>> = BTreeMap::new();
        for m in mailboxes {
            names.entry(m.name.clone()).or_default().info = Some(m);
            for parent in ancestors(&m.name) {
                names.entry(parent.to_string()).or_default().has_children = true;
            }
        }
        for s in subscriptions {
            names.entry(s.clone()).or_default().subscribed = true;
            for parent in ancestors(s) {
                names.entry(parent.to_string()).or_default();
            }
        }
        ListedNames(names)
    }

    /// INBOX first, then byte order.
    fn in_list_order(&self) -> impl Iterator<Item = (&str, &ListedName<'a>)> {
        let inbox = self.0.get_key_value("INBOX");
        inbox
            .into_iter()
            .chain(self.0.iter().filter(|(n, _)| n.as_str() != "INBOX"))
            .map(|(n, e)| (n.as_str(), e))
    }

    /// The names below `name` (`name/...`): one range of the map, as `/` + 1 is `0`.
    fn descendants(&self, name: &str) -> impl Iterator<Item = (&str, &ListedName<'a>)> {
        let from = format!("{name}/");
        let to = format!("{name}0");
        self.0.range(from..to).map(|(n, e)| (n.as_str(), e))
    }
}

/// `a/b/c` → `a/b`, `a`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    let mut rest = name;
    std::iter::from_fn(move || {
        let i = rest.rfind('/')?;
        rest = &rest[..i];
        Some(rest)
    })
}
