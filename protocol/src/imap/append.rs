//! APPEND (RFC 3501 §6.3.11, UIDPLUS APPENDUID RFC 4315, APPENDLIMIT RFC 7889): big
//! message literals go to the backend's spool as they arrive. MULTIAPPEND (RFC 3502):
//! several messages in one command, stored in one write or not at all; imap-codec
//! parses one message, so the longer forms are parsed here (`parse_append`), CATENATE
//! (RFC 4469) among them, whose parts `catenate.rs` puts together.

use std::ops::Range;

use super::backend::AppendMessage;
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
        let Some(name) = mailbox_name(mailbox, self.utf8) else {
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

impl ImapSession {
    /// An APPEND imap-codec could not parse: MULTIAPPEND (RFC 3502), CATENATE (RFC 4469).
    pub(super) fn append_extended(
        &mut self,
        command: &[u8],
        append: AppendCommand,
        out: &mut Vec<u8>,
    ) -> Flow {
        let tag = append.tag.as_str();
        match self.phase() {
            Phase::NotAuthenticated => return self.bad(out, tag, "Command not valid before login"),
            Phase::Logout => return Flow::Close,
            _ => {}
        }
        if append.messages.iter().any(|m| m.utf8) && !self.utf8 {
            return self.bad(out, tag, "APPEND UTF8 needs ENABLE UTF8=ACCEPT");
        }
        if self.read_only_user() {
            return no(out, tag, READ_ONLY_ACCESS);
        }
        let Some(account) = self.account_clone() else {
            return Flow::Continue;
        };
        let (spooled, spool_failed) = self.framer.take_spool();
        if spooled.is_some() && spool_failed {
            return no(out, tag, "[UNAVAILABLE] Temporary failure; try again later");
        }
        // The spool, if any, holds the first message: only a literal that completes a
        // one-message APPEND so far is spooled (`start_spool`).
        let first = match spooled.map(|s| s.into_bytes()) {
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(err)) => {
                tracing::warn!(%err, "imap APPEND: spooled message unreadable");
                return no(out, tag, "[UNAVAILABLE] Temporary failure; try again later");
            }
            None => None,
        };
        let mut datas: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(append.messages.len());
        for (n, m) in append.messages.iter().enumerate() {
            let data = match (&m.data, n, &first) {
                (AppendData::Literal(_), 0, Some(bytes)) => std::borrow::Cow::Borrowed(bytes.as_slice()),
                (AppendData::Literal(range), _, _) => match command.get(range.clone()) {
                    Some(d) => std::borrow::Cow::Borrowed(d),
                    None => return self.bad(out, tag, "Invalid APPEND arguments"),
                },
                (AppendData::Catenate(parts), _, _) => match self.catenate(&account, command, parts) {
                    Ok(message) => std::borrow::Cow::Owned(message),
                    Err(text) => return no(out, tag, &text),
                },
            };
            if data.len() > self.limits.max_literal as usize {
                return no(out, tag, "[TOOBIG] Message too big");
            }
            datas.push(data);
        }
        let Some(name) = decode_astring_mailbox(&append.mailbox, self.utf8) else {
            return no(out, tag, "[TRYCREATE] Mailbox does not exist");
        };
        let info = match self.store.mailbox(&account, &name) {
            Ok(info) => info,
            Err(BackendError::NotFound) => return no(out, tag, "[TRYCREATE] Mailbox does not exist"),
            Err(err) => return backend_no(out, tag, &err),
        };
        let flags: Vec<Flags> = append.messages.iter().map(|m| flags_of(&m.flags)).collect();
        let messages: Vec<AppendMessage<'_>> = append
            .messages
            .iter()
            .zip(&datas)
            .zip(&flags)
            .map(|((m, data), flags)| AppendMessage {
                message: data.as_ref(),
                flags,
                internal_date: m.date,
            })
            .collect();
        match self.store.append_many(&account, info.id, &messages) {
            Ok((validity, uids)) => {
                self.catch_up(true, out);
                let uids = text::compress_ordered(&uids);
                out.extend_from_slice(
                    format!("{tag} OK [APPENDUID {validity} {uids}] APPEND completed\r\n").as_bytes(),
                );
                Flow::Continue
            }
            Err(err) => backend_no(out, tag, &err),
        }
    }
}

/// A mailbox astring of our own APPEND parser as the store's name (see `mailbox_name`).
fn decode_astring_mailbox(raw: &[u8], utf8: bool) -> Option<String> {
    if raw.eq_ignore_ascii_case(b"INBOX") {
        return Some("INBOX".to_string());
    }
    let name = decode_name(raw, utf8);
    (!name.is_empty()).then_some(name)
}

/// Flag names of an APPEND as stored flags: system flags by name, `\Recent` and
/// unknown `\` flags dropped, keywords kept (as `convert_flags`).
fn flags_of(names: &[String]) -> Flags {
    let mut out = Flags::default();
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "\\seen" => out.system |= Flags::SEEN,
            "\\answered" => out.system |= Flags::ANSWERED,
            "\\flagged" => out.system |= Flags::FLAGGED,
            "\\deleted" => out.system |= Flags::DELETED,
            "\\draft" => out.system |= Flags::DRAFT,
            n if n.starts_with('\\') => {}
            _ => {
                if !out.has_keyword(name) {
                    out.keywords.push(name.clone());
                }
            }
        }
    }
    out
}

/// The APPEND forms imap-codec does not parse: several messages (MULTIAPPEND, RFC 3502)
/// and messages put together from parts (CATENATE, RFC 4469). Literal octets stay in
/// the command; the parts name them by range.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AppendCommand {
    pub tag: String,
    /// The mailbox as the client wrote it (astring octets).
    pub mailbox: Vec<u8>,
    pub messages: Vec<AppendMessageSpec>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AppendMessageSpec {
    pub flags: Vec<String>,
    pub date: Option<(i64, i16)>,
    pub data: AppendData,
    /// Given as `UTF8 (~{n})` (RFC 6855 §4): only after ENABLE UTF8=ACCEPT.
    pub utf8: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendData {
    /// The message literal (`{n}` or literal8 `~{n}`), as a range of the command.
    Literal(Range<usize>),
    Catenate(Vec<CatenatePart>),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CatenatePart {
    /// `TEXT literal`: octets of the command.
    Text(Range<usize>),
    /// `URL astring`: an IMAP URL of a message or section of this user's (RFC 5092).
    Url(String),
}

/// Most messages in one MULTIAPPEND, and parts in one CATENATE; the command's octets
/// are bounded by the framer, these bound the work per octet.
pub(super) const MAX_APPEND_MESSAGES: usize = 1000;
pub(super) const MAX_CATENATE_PARTS: usize = 256;

/// A cursor over one framed command. Literals are trusted to be complete: the framer
/// read exactly the octets each announcement promised.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn space(&mut self) -> bool {
        self.eat(b' ')
    }

    fn at_eol(&self) -> bool {
        matches!(self.input.get(self.pos..), Some(b"\r\n") | Some(b"\n"))
    }

    fn atom(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b <= b' ' || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'"' | b'%' | b'*') {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.input[start..self.pos])
    }

    fn keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        match self.input.get(self.pos..end) {
            Some(w) if w.eq_ignore_ascii_case(word.as_bytes()) => {
                let next = self.input.get(end).copied();
                if next.is_none_or(|b| matches!(b, b' ' | b'(' | b'\r' | b'\n')) {
                    self.pos = end;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    fn quoted(&mut self) -> Option<Vec<u8>> {
        if !self.eat(b'"') {
            return None;
        }
        let mut s = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return Some(s),
                b'\\' => {
                    let e = self.peek()?;
                    if e != b'"' && e != b'\\' {
                        return None;
                    }
                    s.push(e);
                    self.pos += 1;
                }
                b'\r' | b'\n' => return None,
                _ => s.push(b),
            }
        }
    }

    /// `{n}`/`{n+}` CRLF octets, or with `binary` also `~{n}`; the octets' range.
    fn literal(&mut self, binary: bool) -> Option<Range<usize>> {
        if binary {
            self.eat(b'~');
        }
        if !self.eat(b'{') {
            return None;
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.input[start..self.pos]).ok()?;
        if digits.is_empty() || digits.len() > 12 {
            return None;
        }
        let length: usize = digits.parse().ok()?;
        self.eat(b'+');
        if !self.eat(b'}') {
            return None;
        }
        self.eat(b'\r');
        if !self.eat(b'\n') {
            return None;
        }
        let data = self.pos..self.pos.checked_add(length)?;
        if data.end > self.input.len() {
            return None;
        }
        self.pos = data.end;
        Some(data)
    }

    fn astring(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'"' => self.quoted(),
            b'{' => self.literal(false).map(|r| self.input[r].to_vec()),
            _ => {
                let start = self.pos;
                while let Some(b) = self.peek() {
                    // ATOM-CHAR plus resp-specials `]` (RFC 3501 ASTRING-CHAR).
                    if b <= b' ' || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'"' | b'\\') {
                        break;
                    }
                    self.pos += 1;
                }
                (self.pos > start).then(|| self.input[start..self.pos].to_vec())
            }
        }
    }

    /// `(flag *(SP flag))`: atoms, `\`-prefixed or not.
    fn flag_list(&mut self) -> Option<Vec<String>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut flags = Vec::new();
        loop {
            if self.eat(b')') {
                return Some(flags);
            }
            if !flags.is_empty() && !self.space() {
                return None;
            }
            let backslash = self.eat(b'\\');
            let atom = self.atom()?;
            let mut flag = String::with_capacity(atom.len() + 1);
            if backslash {
                flag.push('\\');
            }
            flag.push_str(std::str::from_utf8(atom).ok()?);
            if flags.len() >= 64 {
                return None;
            }
            flags.push(flag);
        }
    }
}

/// Whether a (possibly incomplete) command is an APPEND, so that a synchronizing
/// literal after its first message may be accepted although imap-codec, which parses
/// one message, rejects the command so far.
pub(crate) fn is_append(command: &[u8]) -> bool {
    let mut c = Cursor {
        input: command,
        pos: 0,
    };
    c.atom().is_some() && c.space() && c.keyword("APPEND")
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` (RFC 3501 date-time) as Unix seconds and offset.
fn parse_date_time(raw: &[u8]) -> Option<(i64, i16)> {
    let text = std::str::from_utf8(raw).ok()?;
    let date = chrono::DateTime::parse_from_str(text.trim_start(), "%d-%b-%Y %H:%M:%S %z").ok()?;
    let offset = i16::try_from(date.offset().local_minus_utc() / 60).ok()?;
    Some((date.timestamp(), offset))
}

/// Parses `tag APPEND mailbox 1*(append-opts SP append-data) CRLF` (RFC 3502 §6.3.11,
/// RFC 4469 §5). `None` when it is not an APPEND at all; `Err` with the tag for a
/// malformed one.
pub(crate) fn parse_append(command: &[u8]) -> Option<Result<AppendCommand, String>> {
    let mut c = Cursor {
        input: command,
        pos: 0,
    };
    let tag = String::from_utf8(c.atom()?.to_vec()).ok()?;
    if !c.space() || !c.keyword("APPEND") {
        return None;
    }
    let bad = || Some(Err(tag.clone()));
    if !c.space() {
        return bad();
    }
    let Some(mailbox) = c.astring() else {
        return bad();
    };
    let mut messages = Vec::new();
    while !c.at_eol() {
        if !c.space() || messages.len() >= MAX_APPEND_MESSAGES {
            return bad();
        }
        // imapclient's multiappend puts two spaces between messages; Dovecot takes it.
        while c.space() {}
        let mut flags = Vec::new();
        if c.peek() == Some(b'(') {
            let Some(f) = c.flag_list() else { return bad() };
            flags = f;
            if !c.space() {
                return bad();
            }
        }
        let mut date = None;
        if c.peek() == Some(b'"') {
            let Some(d) = c.quoted().as_deref().and_then(parse_date_time) else {
                return bad();
            };
            date = Some(d);
            if !c.space() {
                return bad();
            }
        }
        let mut utf8 = false;
        let data = if c.keyword("CATENATE") {
            if !c.space() || !c.eat(b'(') {
                return bad();
            }
            let mut parts = Vec::new();
            loop {
                if !parts.is_empty() && c.eat(b')') {
                    break;
                }
                if (!parts.is_empty() && !c.space()) || parts.len() >= MAX_CATENATE_PARTS {
                    return bad();
                }
                if c.keyword("TEXT") {
                    // RFC 4469: TEXT takes a literal (literal8 with BINARY, RFC 3516).
                    match (c.space(), c.literal(true)) {
                        (true, Some(r)) => parts.push(CatenatePart::Text(r)),
                        _ => return bad(),
                    }
                } else if c.keyword("URL") {
                    match (c.space(), c.astring().map(String::from_utf8)) {
                        (true, Some(Ok(url))) => parts.push(CatenatePart::Url(url)),
                        _ => return bad(),
                    }
                } else {
                    return bad();
                }
            }
            AppendData::Catenate(parts)
        } else if c.keyword("UTF8") {
            // RFC 6855 §4: `UTF8 (literal8)`, a message with UTF-8 headers.
            utf8 = true;
            match (c.space() && c.eat(b'('), c.literal(true)) {
                (true, Some(r)) if c.eat(b')') => AppendData::Literal(r),
                _ => return bad(),
            }
        } else {
            match c.literal(true) {
                Some(r) => AppendData::Literal(r),
                None => return bad(),
            }
        };
        messages.push(AppendMessageSpec {
            flags,
            date,
            data,
            utf8,
        });
    }
    if messages.is_empty() {
        return bad();
    }
    Some(Ok(AppendCommand {
        tag,
        mailbox,
        messages,
    }))
}
