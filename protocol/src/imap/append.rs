//! APPEND (RFC 3501 §6.3.11, UIDPLUS APPENDUID RFC 4315, APPENDLIMIT RFC 7889): big
//! message literals go to the backend's spool as they arrive.

use super::*;

impl ImapSession {
    /// A literal of `SPOOL_FROM` octets or more that is the message of an APPEND goes to
    /// the backend's spool as it arrives, and the command keeps an empty literal in its
    /// place: a slow upload of 50 MiB no longer sits in this session's memory (issue 19
    /// item 4). The command so far ends with the announcement (`{N}` or `{N+}`, CRLF).
    pub(super) fn start_spool(&mut self, length: usize) {
        if length < SPOOL_FROM {
            return;
        }
        let Some(account) = self.account_clone() else {
            return;
        };
        let Some(open) = self.framer.command().iter().rposition(|b| *b == b'{') else {
            return;
        };
        let mut probe = self.framer.command()[..open].to_vec();
        probe.extend_from_slice(b"{0}\r\n\r\n");
        let is_message = matches!(
            CommandCodec::default().decode(&probe),
            Ok((
                _,
                Command {
                    body: CommandBody::Append { .. },
                    ..
                }
            ))
        );
        if !is_message {
            return;
        }
        if let Some(spool) = self.store.spool(&account, length) {
            self.framer.spool_literal(open, spool);
        }
    }

    pub(super) fn append(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<(i64, i16)>,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Flow {
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let Some(name) = mailbox_name(mailbox) else {
            no(out, tag, "[TRYCREATE] Mailbox does not exist");
            return Flow::Continue;
        };
        // The message came in through `start_spool`, or inline in `data`.
        let (spooled, spool_failed) = self.framer.take_spool();
        if spooled.is_some() && spool_failed {
            no(out, tag, "[UNAVAILABLE] Temporary failure; try again later");
            return Flow::Continue;
        }
        let size = spooled.as_ref().map_or(data.len(), |s| s.len());
        if size > self.limits.max_literal as usize {
            no(out, tag, "[TOOBIG] Message too big");
            return Flow::Continue;
        }
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(BackendError::NotFound) => {
                no(out, tag, "[TRYCREATE] Mailbox does not exist");
                return Flow::Continue;
            }
            Err(err) => return backend_no(out, tag, &err),
        };
        let flags = convert_flags(flags);
        let appended = match spooled {
            Some(spool) => self.store.append_spooled(&account, info.id, spool, &flags, date),
            None => self.store.append(&account, info.id, data, &flags, date),
        };
        match appended {
            Ok((validity, uid)) => {
                self.catch_up(true, out);
                out.extend_from_slice(
                    format!("{tag} OK [APPENDUID {validity} {uid}] APPEND completed\r\n").as_bytes(),
                );
                Flow::Continue
            }
            Err(err) => backend_no(out, tag, &err),
        }
    }
}
