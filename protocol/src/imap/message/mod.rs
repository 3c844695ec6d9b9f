//! IMAP views of one stored message: ENVELOPE, BODY/BODYSTRUCTURE, the octets of
//! BODY[section] and the content keys of SEARCH (RFC 3501 §6.4.4, §6.4.5, §7.4.2).
//!
//! Dovecot is the reference clients are tested against, so its choices are followed where
//! the RFC leaves room: header strings are returned raw (not RFC 2047 decoded), missing
//! address parts become `MISSING_MAILBOX` / `MISSING_DOMAIN`, a text part without
//! parameters gets `("charset" "us-ascii")`, the default transfer encoding is `"7bit"`,
//! a multipart without parts shows one empty text/plain part, and RFC 2231 parameter
//! continuations are merged but not charset-decoded (`name*` keeps `charset''value`).
//! A session that has not enabled UTF8=ACCEPT or IMAP4rev2 gets that header data
//! downgraded to ASCII as RFC 6857 describes (`downgrade.rs` says which parts and how).
//!
//! The part tree and its byte ranges are computed here rather than taken from
//! mail-parser's `Message`: BODY[section] and the sizes in BODYSTRUCTURE must be exact
//! octet ranges of the stored bytes, and mail-parser keeps offsets of nested messages
//! relative to different buffers and decodes header strings that IMAP wants raw.
//! mail-parser does what it is good at: RFC 2047 header decoding, transfer and charset
//! decoding of bodies for SEARCH, and Date parsing.
//!
//! Hostile input never panics: the walk is iterative, nesting deeper than [`MAX_DEPTH`]
//! and parts beyond [`MAX_PARTS`] are treated as opaque `application/octet-stream`
//! leaves, and every slice is taken with `get`.

use std::ops::Range;

use imap_codec::imap_types::{
    body::{
        BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    },
    core::{IString, NString, Vec1},
    datetime::NaiveDate,
    envelope::{Address, Envelope},
    fetch::{Part, Section},
    search::SearchKey,
};
use mail_parser::{DateTime, HeaderValue, MessageParser, PartType};

/// Deeper MIME nesting than this is shown as one opaque part; it bounds recursion when
/// rendering BODYSTRUCTURE and the work spent on a hostile message.
pub const MAX_DEPTH: usize = 100;
/// At most this many MIME entities are split out of one message.
pub const MAX_PARTS: usize = 10_000;

mod binary;
mod downgrade;
mod envelope;
mod search;
mod section;
mod structure;
mod summary;

pub use binary::{binary_section, UnknownCte};
pub use envelope::envelope;
pub use search::{is_content_key, matches_content};
pub use section::section;
pub use structure::body_structure;
pub use summary::{base_subject, MessageSummary};

/// A message split into its MIME entities, borrowing the stored bytes.
pub struct ParsedMessage<'a> {
    raw: &'a [u8],
    /// Entity 0 is the message itself; children always have larger indices.
    entities: Vec<Entity>,
    /// Header data goes to a session that has not enabled UTF-8 (`downgrade.rs`).
    downgrade: bool,
}

struct Entity {
    /// Header block including the empty line that ends it (when present).
    header: Range<usize>,
    body: Range<usize>,
    fields: Vec<Field>,
    content_type: MimeValue,
    kind: Kind,
}

#[derive(Clone)]
struct Field {
    name: Range<usize>,
    /// The whole field: every (folded) line with its line break.
    line: Range<usize>,
    /// After the colon up to, not including, the final line break.
    value: Range<usize>,
}

enum Kind {
    Leaf,
    Multipart(Vec<usize>),
    /// message/rfc822: the entity of the encapsulated message.
    Message(usize),
}

/// A parsed Content-Type or Content-Disposition: `value` is `type` (and `subtype`).
#[derive(Clone, Debug, Default)]
struct MimeValue {
    value: Vec<u8>,
    subtype: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MimeValue {
    fn is(&self, value: &str, subtype: &str) -> bool {
        self.value.eq_ignore_ascii_case(value.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }

    fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    fn default_for(in_digest: bool) -> MimeValue {
        let (value, subtype) = if in_digest {
            ("message", "rfc822")
        } else {
            ("text", "plain")
        };
        MimeValue {
            value: value.into(),
            subtype: subtype.into(),
            params: Vec::new(),
        }
    }
}

fn get(raw: &[u8], range: Range<usize>) -> &[u8] {
    raw.get(range).unwrap_or_default()
}

/// End of the line starting at `pos` (after its LF), or `end`.
fn line_end(raw: &[u8], pos: usize, end: usize) -> usize {
    get(raw, pos..end)
        .iter()
        .position(|&b| b == b'\n')
        .map_or(end, |i| pos + i + 1)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl<'a> ParsedMessage<'a> {
    /// With `yes`, ENVELOPE, BODYSTRUCTURE and header sections come out ASCII, as RFC
    /// 6857 downgrades them, for a session without UTF8=ACCEPT (`downgrade.rs`).
    pub fn downgraded(mut self, yes: bool) -> ParsedMessage<'a> {
        self.downgrade = yes;
        self
    }

    /// Splits `raw` into its MIME entities. Never fails: anything unparsable becomes a
    /// text/plain or opaque leaf, as Dovecot does.
    pub fn parse(raw: &'a [u8]) -> ParsedMessage<'a> {
        let mut msg = ParsedMessage {
            raw,
            entities: vec![Entity::new(raw, 0..raw.len())],
            downgrade: false,
        };
        // (entity, depth, parent is multipart/digest)
        let mut work = vec![(0usize, 0usize, false)];
        while let Some((idx, depth, in_digest)) = work.pop() {
            let Some(entity) = msg.entities.get(idx) else {
                continue;
            };
            let mut content_type = entity
                .field_value(raw, "content-type")
                .and_then(|v| parse_mime_value(&v, true))
                .unwrap_or_else(|| MimeValue::default_for(in_digest));
            let body = entity.body.clone();
            let full = depth >= MAX_DEPTH || msg.entities.len() >= MAX_PARTS;
            let is_multipart = content_type.value.eq_ignore_ascii_case(b"multipart");
            let is_message = content_type.is("message", "rfc822");
            if full && (is_multipart || is_message) {
                content_type = MimeValue {
                    value: b"application".to_vec(),
                    subtype: b"octet-stream".to_vec(),
                    params: Vec::new(),
                };
            }
            let kind = if full {
                Kind::Leaf
            } else if is_multipart {
                let digest = content_type.subtype.eq_ignore_ascii_case(b"digest");
                let ranges = match content_type.param("boundary") {
                    Some(boundary) if !boundary.is_empty() => split_multipart(raw, body, boundary),
                    _ => Vec::new(),
                };
                let mut children = Vec::with_capacity(ranges.len());
                for range in ranges {
                    if msg.entities.len() >= MAX_PARTS {
                        break;
                    }
                    children.push(msg.entities.len());
                    work.push((msg.entities.len(), depth + 1, digest));
                    msg.entities.push(Entity::new(raw, range));
                }
                Kind::Multipart(children)
            } else if is_message {
                let inner = msg.entities.len();
                msg.entities.push(Entity::new(raw, body));
                work.push((inner, depth + 1, false));
                Kind::Message(inner)
            } else {
                Kind::Leaf
            };
            if let Some(entity) = msg.entities.get_mut(idx) {
                entity.content_type = content_type;
                entity.kind = kind;
            }
        }
        msg
    }

    fn entity(&self, idx: usize) -> Option<&Entity> {
        self.entities.get(idx)
    }

    /// Finds the entity a section part path names (RFC 3501 §6.4.5): in a multipart, N
    /// is its Nth child; in anything else, 1 is the entity itself; a message/rfc822 part
    /// is first entered so numbers address the encapsulated message's parts.
    fn find_part(&self, part: &Part) -> Option<usize> {
        let mut idx = 0;
        for (step, n) in part.0.as_ref().iter().enumerate() {
            let n = n.get() as usize;
            let entity = self.entity(idx)?;
            // Past the first number, a message/rfc822 entity is entered. Deciding by
            // "not the root" instead made a top-level message/rfc822 answer [1.1] with
            // the same octets as [1], and never reach the encapsulated parts.
            let container = match entity.kind {
                Kind::Message(inner) if step > 0 => inner,
                _ => idx,
            };
            let container_entity = self.entity(container)?;
            idx = match &container_entity.kind {
                Kind::Multipart(children) => *children.get(n - 1)?,
                // Part 1 of anything else is itself (a leaf part's [N.1] is the part,
                // as in Dovecot).
                _ if n == 1 => container,
                _ => return None,
            };
        }
        Some(idx)
    }

    /// The message an entity carries for HEADER/TEXT/HEADER.FIELDS: the top-level
    /// message itself, or the encapsulated message of a message/rfc822 part.
    fn message_of(&self, part: Option<&Part>) -> Option<usize> {
        match part {
            None => Some(0),
            Some(part) => {
                let idx = self.find_part(part)?;
                match self.entity(idx)?.kind {
                    Kind::Message(inner) => Some(inner),
                    _ => None,
                }
            }
        }
    }
}

impl Entity {
    fn new(raw: &[u8], range: Range<usize>) -> Entity {
        let (header, body) = split_header(raw, range);
        let fields = parse_fields(raw, header.clone());
        Entity {
            header,
            body,
            fields,
            content_type: MimeValue::default(),
            kind: Kind::Leaf,
        }
    }

    fn field(&self, raw: &[u8], name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| get(raw, f.name.clone()).eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The first field of that name, unfolded (CR and LF removed), leading blanks dropped.
    fn field_value(&self, raw: &[u8], name: &str) -> Option<Vec<u8>> {
        self.field(raw, name).map(|f| unfold(get(raw, f.value.clone())))
    }
}

fn unfold(value: &[u8]) -> Vec<u8> {
    let start = value.iter().position(|&b| !is_wsp(b)).unwrap_or(value.len());
    get(value, start..value.len())
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect()
}

/// Splits an entity into its header block (with the terminating empty line) and body.
/// Without an empty line everything is header, as in Dovecot.
fn split_header(raw: &[u8], range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let (start, end) = (range.start, range.end.min(raw.len()));
    let mut pos = start;
    while pos < end {
        let le = line_end(raw, pos, end);
        let line = get(raw, pos..le);
        if line == b"\r\n" || line == b"\n" {
            return (start..le, le..end);
        }
        pos = le;
    }
    (start..end, end..end)
}

fn parse_fields(raw: &[u8], header: Range<usize>) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = header.start;
    while pos < header.end {
        let le = line_end(raw, pos, header.end);
        let line = get(raw, pos..le);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let content_end = le - line_terminator_len(line);
        match (line.first(), fields.last_mut()) {
            (Some(&b), Some(last)) if is_wsp(b) => {
                last.line.end = le;
                last.value.end = content_end;
            }
            _ => {
                let colon = line.iter().position(|&b| b == b':');
                let (name, value) = match colon {
                    Some(c) => {
                        let name_len = get(line, 0..c)
                            .iter()
                            .rposition(|&b| !is_wsp(b))
                            .map_or(0, |i| i + 1);
                        (pos..pos + name_len, (pos + c + 1).min(content_end)..content_end)
                    }
                    // Not a field: kept so HEADER.FIELDS.NOT and HEADER return it.
                    None => (pos..pos, content_end..content_end),
                };
                fields.push(Field {
                    name,
                    line: pos..le,
                    value,
                });
            }
        }
        pos = le;
    }
    fields
}

fn line_terminator_len(line: &[u8]) -> usize {
    if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    }
}

/// Ranges of the body parts between `--boundary` delimiter lines (RFC 2046 §5.1.1).
/// The line break before a delimiter belongs to the delimiter. A missing close delimiter
/// ends the last part at the end of the body; preamble and epilogue are dropped.
fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut pos = body.start;
    while pos < body.end {
        let le = line_end(raw, pos, body.end);
        if let Some(close) = delimiter(get(raw, pos..le), boundary) {
            if let Some(start) = current {
                let mut end = pos;
                if end > start && raw.get(end - 1) == Some(&b'\n') {
                    end -= 1;
                    if end > start && raw.get(end - 1) == Some(&b'\r') {
                        end -= 1;
                    }
                }
                parts.push(start..end);
            }
            if close {
                return parts;
            }
            current = Some(le);
        }
        pos = le;
    }
    if let Some(start) = current {
        parts.push(start..body.end.max(start));
    }
    parts
}

/// `Some(is_close)` when the line is a delimiter for `boundary`.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        Some(true)
    } else if rest.iter().all(|&b| is_wsp(b) || b == b'\r' || b == b'\n') {
        Some(false)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// RFC 2045 structured values: Content-Type and Content-Disposition.

/// Lexer over header bytes that skips white space and (nested) comments.
struct Lexer<'v> {
    s: &'v [u8],
    pos: usize,
}

const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

impl<'v> Lexer<'v> {
    fn new(s: &'v [u8]) -> Self {
        Lexer { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_cfws(&mut self) {
        while let Some(b) = self.peek() {
            if is_wsp(b) || b == b'\r' || b == b'\n' {
                self.pos += 1;
            } else if b == b'(' {
                self.comment();
            } else {
                break;
            }
        }
    }

    /// Reads a comment (the `(` is next) and returns its text.
    fn comment(&mut self) -> Vec<u8> {
        let mut depth = 0usize;
        let mut text = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'(' => {
                    if depth > 0 {
                        text.push(b);
                    }
                    depth += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                    text.push(b);
                }
                b'\\' => {
                    if let Some(c) = self.peek() {
                        text.push(c);
                        self.pos += 1;
                    }
                }
                _ => text.push(b),
            }
        }
        text
    }

    /// Reads a quoted string (the `"` is next), unescaped.
    fn quoted(&mut self) -> Vec<u8> {
        self.pos += 1;
        let mut text = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(c) = self.peek() {
                        text.push(c);
                        self.pos += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => text.push(b),
            }
        }
        text
    }

    /// Reads an RFC 2045 token.
    fn token(&mut self) -> Option<Vec<u8>> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b <= b' ' || b == 0x7f || TSPECIALS.contains(&b) {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| get(self.s, start..self.pos).to_vec())
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

/// Parses `type/subtype; a=b` (or `disposition; a=b` when `with_subtype` is false).
fn parse_mime_value(value: &[u8], with_subtype: bool) -> Option<MimeValue> {
    let mut lx = Lexer::new(value);
    lx.skip_cfws();
    let primary = lx.token()?;
    let mut subtype = Vec::new();
    if with_subtype {
        lx.skip_cfws();
        if !lx.eat(b'/') {
            return None;
        }
        lx.skip_cfws();
        subtype = lx.token()?;
    }
    let mut raw_params = Vec::new();
    loop {
        lx.skip_cfws();
        if !lx.eat(b';') {
            break;
        }
        lx.skip_cfws();
        let Some(name) = lx.token() else {
            // Tolerate "; ;" and a trailing ";" as Dovecot does.
            if lx.peek() == Some(b';') {
                continue;
            }
            break;
        };
        lx.skip_cfws();
        if !lx.eat(b'=') {
            break;
        }
        lx.skip_cfws();
        let value = if lx.peek() == Some(b'"') {
            lx.quoted()
        } else {
            match lx.token() {
                Some(v) => v,
                None => break,
            }
        };
        raw_params.push((name, value));
    }
    Some(MimeValue {
        value: primary,
        subtype,
        params: merge_rfc2231(raw_params),
    })
}

/// Merges RFC 2231 continuations (`name*0`, `name*1*`, ...) the way Dovecot does: values
/// are concatenated in order; if the first segment is extended the result is `name*`
/// with the still-encoded `charset'lang'value` and plain segments %-escaped.
fn merge_rfc2231(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    struct Segment {
        base: Vec<u8>,
        index: u32,
        extended: bool,
        value: Vec<u8>,
    }
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    for (name, value) in raw {
        let star = name.iter().position(|&b| b == b'*');
        let continuation = star.and_then(|s| {
            let rest = get(&name, s + 1..name.len());
            let (digits, extended) = match rest.strip_suffix(b"*") {
                Some(d) => (d, true),
                None => (rest, false),
            };
            let index = std::str::from_utf8(digits).ok()?.parse::<u32>().ok()?;
            Some(Segment {
                base: get(&name, 0..s).to_vec(),
                index,
                extended,
                value: value.clone(),
            })
        });
        match continuation {
            Some(segment) => segments.push(segment),
            None => out.push((name, value)),
        }
    }
    // Stable sort keeps duplicates in their original order.
    segments.sort_by(|a, b| {
        a.base
            .to_ascii_lowercase()
            .cmp(&b.base.to_ascii_lowercase())
            .then(a.index.cmp(&b.index))
    });
    let mut i = 0;
    while let Some(first) = segments.get(i) {
        let mut j = i;
        let mut value = Vec::new();
        while let Some(seg) = segments.get(j) {
            if !seg.base.eq_ignore_ascii_case(&first.base) {
                break;
            }
            if first.extended && !seg.extended {
                for &b in &seg.value {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        value.push(b);
                    } else {
                        value.extend_from_slice(format!("%{b:02X}").as_bytes());
                    }
                }
            } else {
                value.extend_from_slice(&seg.value);
            }
            j += 1;
        }
        let mut name = first.base.clone();
        if first.extended {
            name.push(b'*');
        }
        out.push((name, value));
        i = j;
    }
    out
}

// ---------------------------------------------------------------------------------------
// IMAP strings.

fn nstring(bytes: Vec<u8>) -> NString<'static> {
    // NUL cannot be sent in any IMAP string; dropping it beats dropping the whole value.
    let bytes: Vec<u8> = bytes.into_iter().filter(|&b| b != 0).collect();
    NString::try_from(bytes).unwrap_or_default()
}

fn istring(bytes: Vec<u8>) -> IString<'static> {
    let bytes: Vec<u8> = bytes.into_iter().filter(|&b| b != 0).collect();
    match IString::try_from(bytes) {
        Ok(s) => s,
        // Unreachable once NUL is removed; an empty quoted string is the harmless fallback.
        Err(_) => IString::try_from("").unwrap_or(IString::Quoted(
            imap_codec::imap_types::core::Quoted::unvalidated(""),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// ENVELOPE (RFC 3501 §7.4.2).

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use imap_codec::{
        decode::Decoder,
        encode::Encoder,
        imap_types::{
            command::CommandBody,
            fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
            response::{Data, Response},
        },
        CommandCodec, ResponseCodec,
    };

    use super::*;

    /// Renders one FETCH data item as the server would send it.
    fn fetch(item: MessageDataItem<'_>) -> String {
        let response = Response::Data(Data::Fetch {
            seq: NonZeroU32::new(1).unwrap(),
            items: Vec1::from(item),
        });
        String::from_utf8_lossy(&ResponseCodec::new().encode(&response).dump()).into_owned()
    }

    fn envelope_of_raw(raw: &str) -> String {
        fetch(MessageDataItem::Envelope(envelope(&ParsedMessage::parse(
            raw.as_bytes(),
        ))))
    }

    fn bodystructure(raw: &str) -> String {
        let msg = ParsedMessage::parse(raw.as_bytes());
        fetch(MessageDataItem::BodyStructure(body_structure(&msg, true)))
    }

    fn body(raw: &str) -> String {
        let msg = ParsedMessage::parse(raw.as_bytes());
        fetch(MessageDataItem::Body(body_structure(&msg, false)))
    }

    /// `BODY[spec]` of `raw`, the section parsed from IMAP text by imap-codec.
    fn body_section(raw: &str, spec: &str) -> String {
        let line = format!("A FETCH 1 (BODY.PEEK[{spec}])\r\n");
        let (_, command) = CommandCodec::new().decode(line.as_bytes()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            ..
        } = command.body
        else {
            panic!("not a fetch: {line}");
        };
        let Some(MessageDataItemName::BodyExt { section: sec, .. }) = names.first() else {
            panic!("no section: {line}");
        };
        let msg = ParsedMessage::parse(raw.as_bytes());
        let data = section(&msg, sec.as_ref());
        String::from_utf8(data).unwrap()
    }

    /// Whether `raw` matches the SEARCH criteria `criteria` (content keys only).
    fn search(raw: &str, criteria: &str) -> bool {
        let line = format!("A SEARCH {criteria}\r\n");
        let (_, command) = CommandCodec::new().decode(line.as_bytes()).unwrap();
        let CommandBody::Search { criteria, .. } = command.body else {
            panic!("not a search: {line}");
        };
        let msg = ParsedMessage::parse(raw.as_bytes());
        criteria.as_ref().iter().all(|key| {
            assert!(is_content_key(key), "{key:?}");
            matches_content(&msg, key)
        })
    }

    /// Non-ASCII needles need CHARSET UTF-8 and literals on the wire; built directly here.
    fn search_key(raw: &str, key: SearchKey<'_>) -> bool {
        matches_content(&ParsedMessage::parse(raw.as_bytes()), &key)
    }

    const SIMPLE: &str = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
From: Terry Gray <gray@cac.washington.edu>\r\n\
Subject: IMAP4rev1 WG mtg summary and\r\n minutes\r\n\
To: imap@cac.washington.edu\r\n\
cc: minutes@CNRI.Reston.VA.US,\r\n \"John Klensin\" <KLENSIN@MIT.EDU>\r\n\
Message-Id: <B27397-0100000@cac.washington.edu>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\
\r\n\
Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

    /// multipart/mixed holding multipart/alternative (QP text, base64 HTML) and a PDF.
    const MIXED: &str = "From: \"Doe, Jane\" <jane@example.org>\r\n\
To: Team: alice@example.org, Bob <bob@example.org>;, carol@example.org\r\n\
Subject: =?UTF-8?Q?R=C3=A9sum=C3=A9?= attached\r\n\
Date: Fri, 2 Feb 2024 10:00:00 +0100\r\n\
Message-ID: <m1@example.org>\r\n\
In-Reply-To: <m0@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed;\r\n boundary=\"outer\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Please find my r=C3=A9sum=C3=A9 attached.\r\n\
--inner\r\n\
Content-Type: text/html; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PHA+UGxlYXNlIGZpbmQgbXkgcsOpc3Vtw6kgYXR0YWNoZWQuPC9wPg==\r\n\
--inner--\r\n\
\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"cv.pdf\"\r\n\
Content-Disposition: attachment; filename=\"cv.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--outer--\r\n";

    /// A forwarded message: text, then message/rfc822 whose body is multipart.
    const FORWARD: &str = "From: fwd@example.net\r\n\
Subject: Fwd: plans\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\
\r\n\
--b\r\n\
\r\n\
See below.\r\n\
\r\n\
--b\r\n\
Content-Type: message/rfc822\r\n\
Content-Description: Forwarded\r\n\
\r\n\
From: Orig Sender <orig@example.com>\r\n\
Date: Tue, 30 Jan 2024 08:00:00 +0000\r\n\
Subject: plans\r\n\
Content-Type: multipart/alternative; boundary=c\r\n\
\r\n\
--c\r\n\
Content-Type: text/plain\r\n\
\r\n\
Lunch at noon\r\n\
--c\r\n\
Content-Type: text/html\r\n\
\r\n\
<b>Lunch</b>\r\n\
--c--\r\n\
--b--\r\n";

    /// What Apple Mail sends with an inline picture: multipart/related inside
    /// multipart/alternative, 8-bit text, Content-ID, language and location.
    const RELATED: &str = "From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>\r\n\
To: undisclosed-recipients:;\r\n\
Subject: Photo\r\n\
Date: Mon, 4 Mar 2024 09:15:00 +0100\r\n\
Message-Id: <A1B2@example.fr>\r\n\
Mime-Version: 1.0 (Mac OS X Mail 16.0)\r\n\
Content-Type: multipart/alternative; boundary=\"Apple-Mail=_1\"\r\n\
\r\n\
--Apple-Mail=_1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Voil\u{e0} la photo.\r\n\
\r\n\
--Apple-Mail=_1\r\n\
Content-Type: multipart/related; type=\"text/html\"; boundary=\"Apple-Mail=_2\"\r\n\
\r\n\
--Apple-Mail=_2\r\n\
Content-Transfer-Encoding: 7bit\r\n\
Content-Type: text/html; charset=us-ascii\r\n\
Content-Language: fr\r\n\
\r\n\
<img src=\"cid:img1\">\r\n\
--Apple-Mail=_2\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: inline; filename=photo.jpg\r\n\
Content-Type: image/jpeg; name=\"photo.jpg\"\r\n\
Content-Id: <img1>\r\n\
Content-Location: photo.jpg\r\n\
\r\n\
/9j/4AAQ\r\n\
--Apple-Mail=_2--\r\n\
\r\n\
--Apple-Mail=_1--\r\n";

    #[test]
    fn apple_mail_related_inline_image_and_eight_bit_text() {
        // Sizes in octets: "Voil\u{e0}" is six of them in UTF-8.
        assert_eq!(
            bodystructure(RELATED),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 18 1 \
             NIL NIL NIL NIL)((\"TEXT\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 20 0 \
             NIL NIL (\"fr\") NIL)(\"image\" \"jpeg\" (\"name\" \"photo.jpg\") \"<img1>\" NIL \"base64\" 8 \
             NIL (\"inline\" (\"filename\" \"photo.jpg\")) NIL \"photo.jpg\") \"related\" \
             (\"type\" \"text/html\" \"boundary\" \"Apple-Mail=_2\") NIL NIL NIL) \"alternative\" \
             (\"boundary\" \"Apple-Mail=_1\") NIL NIL NIL))\r\n"
        );
        // The encoded word stays as sent; an empty group is its two markers.
        assert_eq!(
            envelope_of_raw(RELATED),
            "* 1 FETCH (ENVELOPE (\"Mon, 4 Mar 2024 09:15:00 +0100\" \"Photo\" \
             ((\"=?ISO-8859-1?Q?Andr=E9?=\" NIL \"andre\" \"example.fr\")) \
             ((\"=?ISO-8859-1?Q?Andr=E9?=\" NIL \"andre\" \"example.fr\")) \
             ((\"=?ISO-8859-1?Q?Andr=E9?=\" NIL \"andre\" \"example.fr\")) \
             ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL \
             \"<A1B2@example.fr>\"))\r\n"
        );
    }

    #[test]
    fn rfc3501_example_envelope_and_body() {
        assert_eq!(
            envelope_of_raw(SIMPLE),
            "* 1 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \
             \"IMAP4rev1 WG mtg summary and minutes\" \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((NIL NIL \"imap\" \"cac.washington.edu\")) \
             ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")\
             (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
             \"<B27397-0100000@cac.washington.edu>\"))\r\n"
        );
        assert_eq!(
            bodystructure(SIMPLE),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \
             \"7bit\" 55 1 NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(
            body(SIMPLE),
            "* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7bit\" 55 1))\r\n"
        );
    }

    #[test]
    fn simple_message_sections() {
        let header_len = SIMPLE.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(body_section(SIMPLE, ""), SIMPLE);
        assert_eq!(body_section(SIMPLE, "HEADER"), &SIMPLE[..header_len]);
        assert_eq!(body_section(SIMPLE, "TEXT"), &SIMPLE[header_len..]);
        // Part 1 of a non-multipart message is its body; there is no part 2.
        assert_eq!(body_section(SIMPLE, "1"), &SIMPLE[header_len..]);
        assert_eq!(body_section(SIMPLE, "2"), "");
        assert_eq!(body_section(SIMPLE, "1.MIME"), &SIMPLE[..header_len]);
        // HEADER of a part that is not message/rfc822 does not exist.
        assert_eq!(body_section(SIMPLE, "1.HEADER"), "");
    }

    #[test]
    fn header_fields_keep_folding_and_end_with_blank_line() {
        assert_eq!(
            body_section(SIMPLE, "HEADER.FIELDS (SUBJECT cc)"),
            "Subject: IMAP4rev1 WG mtg summary and\r\n minutes\r\n\
             cc: minutes@CNRI.Reston.VA.US,\r\n \"John Klensin\" <KLENSIN@MIT.EDU>\r\n\r\n"
        );
        assert_eq!(body_section(SIMPLE, "HEADER.FIELDS (X-Absent)"), "\r\n");
        assert_eq!(
            body_section(
                SIMPLE,
                "HEADER.FIELDS.NOT (Subject CC Date Message-ID MIME-Version Content-Type)"
            ),
            "From: Terry Gray <gray@cac.washington.edu>\r\n\
             To: imap@cac.washington.edu\r\n\r\n"
        );
    }

    #[test]
    fn multipart_mixed_with_alternative_and_attachment() {
        assert_eq!(
            bodystructure(MIXED),
            "* 1 FETCH (BODYSTRUCTURE (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \
             \"quoted-printable\" 41 0 NIL NIL NIL NIL)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"base64\" 56 0 NIL NIL NIL NIL) \
             \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)\
             (\"application\" \"pdf\" (\"name\" \"cv.pdf\") NIL NIL \"base64\" 12 NIL \
             (\"attachment\" (\"filename\" \"cv.pdf\")) NIL NIL) \
             \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL))\r\n"
        );
        assert_eq!(
            body(MIXED),
            "* 1 FETCH (BODY (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \
             \"quoted-printable\" 41 0)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"base64\" 56 0) \"alternative\")\
             (\"application\" \"pdf\" (\"name\" \"cv.pdf\") NIL NIL \"base64\" 12) \"mixed\"))\r\n"
        );
        // Encoded words stay encoded and groups get RFC 3501 markers.
        assert_eq!(
            envelope_of_raw(MIXED),
            "* 1 FETCH (ENVELOPE (\"Fri, 2 Feb 2024 10:00:00 +0100\" \
             \"=?UTF-8?Q?R=C3=A9sum=C3=A9?= attached\" \
             ((\"Doe, Jane\" NIL \"jane\" \"example.org\")) \
             ((\"Doe, Jane\" NIL \"jane\" \"example.org\")) \
             ((\"Doe, Jane\" NIL \"jane\" \"example.org\")) \
             ((NIL NIL \"Team\" NIL)(NIL NIL \"alice\" \"example.org\")\
             (\"Bob\" NIL \"bob\" \"example.org\")(NIL NIL NIL NIL)\
             (NIL NIL \"carol\" \"example.org\")) \
             NIL NIL \"<m0@example.org>\" \"<m1@example.org>\"))\r\n"
        );
    }

    #[test]
    fn multipart_sections() {
        assert_eq!(
            body_section(MIXED, "1.1"),
            "Please find my r=C3=A9sum=C3=A9 attached."
        );
        assert_eq!(
            body_section(MIXED, "1.2.MIME"),
            "Content-Type: text/html; charset=\"utf-8\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        assert_eq!(body_section(MIXED, "2"), "JVBERi0xLjQK");
        assert!(body_section(MIXED, "1").starts_with("--inner\r\nContent-Type: text/plain"));
        assert!(body_section(MIXED, "1").ends_with("--inner--\r\n"));
        assert_eq!(body_section(MIXED, "3"), "");
        assert_eq!(body_section(MIXED, "1.3"), "");
        assert_eq!(body_section(MIXED, "2.1"), "JVBERi0xLjQK");
        assert_eq!(body_section(MIXED, "2.2"), "");
    }

    #[test]
    fn message_rfc822_attachment() {
        assert_eq!(
            bodystructure(FORWARD),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
             \"7bit\" 12 1 NIL NIL NIL NIL)\
             (\"MESSAGE\" \"RFC822\" NIL NIL \"Forwarded\" \"7bit\" 243 \
             (\"Tue, 30 Jan 2024 08:00:00 +0000\" \"plans\" \
             ((\"Orig Sender\" NIL \"orig\" \"example.com\")) \
             ((\"Orig Sender\" NIL \"orig\" \"example.com\")) \
             ((\"Orig Sender\" NIL \"orig\" \"example.com\")) NIL NIL NIL NIL NIL) \
             ((\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0 NIL NIL NIL NIL)\
             (\"TEXT\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0 NIL NIL NIL NIL) \
             \"alternative\" (\"boundary\" \"c\") NIL NIL NIL) 13 NIL NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"b\") NIL NIL NIL))\r\n"
        );
        let inner_start = FORWARD.find("From: Orig").unwrap();
        let inner_end = FORWARD.find("\r\n--b--").unwrap();
        let inner = &FORWARD[inner_start..inner_end];
        let inner_header_len = inner.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(body_section(FORWARD, "1"), "See below.\r\n");
        assert_eq!(body_section(FORWARD, "2"), inner);
        assert_eq!(body_section(FORWARD, "2.HEADER"), &inner[..inner_header_len]);
        assert_eq!(body_section(FORWARD, "2.TEXT"), &inner[inner_header_len..]);
        assert_eq!(
            body_section(FORWARD, "2.MIME"),
            "Content-Type: message/rfc822\r\nContent-Description: Forwarded\r\n\r\n"
        );
        assert_eq!(body_section(FORWARD, "2.1"), "Lunch at noon");
        assert_eq!(body_section(FORWARD, "2.2"), "<b>Lunch</b>");
        assert_eq!(
            body_section(FORWARD, "2.2.MIME"),
            "Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(
            body_section(FORWARD, "2.HEADER.FIELDS (subject)"),
            "Subject: plans\r\n\r\n"
        );
        assert_eq!(body_section(FORWARD, "1.HEADER"), "");
        assert_eq!(body_section(FORWARD, "2.3"), "");
    }

    #[test]
    fn rfc2231_parameters_are_merged_not_decoded() {
        let raw = "Content-Type: multipart/mixed; boundary=\"=_x\"\r\n\
\r\n\
--=_x\r\n\
Content-Type: application/octet-stream;\r\n name*0=\"very long \";\r\n name*1=\"file name.txt\"\r\n\
Content-Disposition: attachment;\r\n filename*=utf-8''%E2%82%AC%20rates.txt\r\n\
Content-Language: de-CH\r\n\
Content-Location: rates.txt\r\n\
Content-ID: <p1@example.org>\r\n\
Content-Transfer-Encoding: ?invalid\r\n\
\r\n\
data\r\n\
--=_x\r\n\
Content-Type: text/plain; title*0*=us-ascii'en'This%20is%20; title*1=\"fun!\"; format=flowed\r\n\
\r\n\
x\r\n\
--=_x--\r\n";
        assert_eq!(
            bodystructure(raw),
            "* 1 FETCH (BODYSTRUCTURE ((\"application\" \"octet-stream\" \
             (\"name\" \"very long file name.txt\") \"<p1@example.org>\" NIL \"7bit\" 4 NIL \
             (\"attachment\" (\"filename*\" \"utf-8''%E2%82%AC%20rates.txt\")) (\"de-CH\") \
             \"rates.txt\")\
             (\"TEXT\" \"plain\" (\"format\" \"flowed\" \"title*\" \"us-ascii'en'This%20is%20fun!\") \
             NIL NIL \"7bit\" 1 0 NIL NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"=_x\") NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn single_part_extension_fields() {
        let raw = "Content-Type: text/x-custom; charset=us-ascii; note=\"say \\\"hi\\\"\"\r\n\
Content-ID: <c@example.org>\r\n\
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
Content-Disposition: inline; size=5\r\n\
Content-Description: greeting\r\n\
Content-Language: en, fi (Finnish)\r\n\
Content-Location: http://example.org/hi.txt\r\n\
\r\n\
hi\r\n\r\n";
        assert_eq!(
            bodystructure(raw),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"x-custom\" \
             (\"charset\" \"us-ascii\" \"note\" \"say \\\"hi\\\"\") \"<c@example.org>\" \"greeting\" \
             \"7bit\" 6 2 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"inline\" (\"size\" \"5\")) (\"en\" \"fi\") \
             \"http://example.org/hi.txt\"))\r\n"
        );
    }

    #[test]
    fn multipart_without_parts_shows_one_empty_text_part() {
        let raw = "Content-Type: multipart/mixed; boundary=\"foo\"\r\n\r\nno delimiter here\r\n";
        assert_eq!(
            bodystructure(raw),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
             \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo\") NIL NIL NIL))\r\n"
        );
        assert_eq!(body_section(raw, "1"), "");
    }

    #[test]
    fn missing_close_delimiter_ends_parts_at_the_outer_boundary() {
        let raw = "Content-Type: multipart/mixed; boundary=o\r\n\r\n\
--o\r\n\
Content-Type: multipart/alternative; boundary=i\r\n\r\n\
--i\r\n\r\nfirst\r\n\
--o\r\n\r\nsecond\r\n\
--o--\r\n";
        assert_eq!(body_section(raw, "1.1"), "first");
        assert_eq!(body_section(raw, "2"), "second");
    }

    #[test]
    fn missing_headers_give_nil_and_defaults() {
        let raw = "\r\nbody only\r\n";
        assert_eq!(
            envelope_of_raw(raw),
            "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(
            bodystructure(raw),
            "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
             \"7bit\" 11 1 NIL NIL NIL NIL))\r\n"
        );
        assert_eq!(body_section(raw, "HEADER"), "\r\n");
        // Headers only, no empty line: all header, empty body.
        let raw = "Subject: hi\r\n";
        assert_eq!(body_section(raw, "HEADER"), raw);
        assert_eq!(body_section(raw, "TEXT"), "");
    }

    #[test]
    fn odd_addresses() {
        let raw = "From: user@host (Comment Name)\r\n\
Sender: <>\r\n\
Reply-To: local-only, \"quoted\\\"name\" <\"a b\"@[10.0.0.1]>\r\n\
To: undisclosed-recipients:;\r\n\
Cc: <@relay.example,@r2.example:route@example.com>\r\n\
Bcc: =?utf-8?B?w4Rrw7Zu?= <x@y>\r\n\
\r\n";
        assert_eq!(
            envelope_of_raw(raw),
            "* 1 FETCH (ENVELOPE (NIL NIL \
             ((\"Comment Name\" NIL \"user\" \"host\")) \
             ((\"Comment Name\" NIL \"user\" \"host\")) \
             ((NIL NIL \"local-only\" \"MISSING_DOMAIN\")(\"quoted\\\"name\" NIL \"a b\" \"[10.0.0.1]\")) \
             ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
             ((NIL \"@relay.example,@r2.example\" \"route\" \"example.com\")) \
             ((\"=?utf-8?B?w4Rrw7Zu?=\" NIL \"x\" \"y\")) NIL NIL))\r\n"
        );
    }

    #[test]
    fn eight_bit_header_becomes_a_literal() {
        let raw = "Subject: caf\u{e9}\r\n\r\n";
        assert_eq!(
            envelope_of_raw(raw),
            "* 1 FETCH (ENVELOPE (NIL {5}\r\ncaf\u{e9} NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
        );
    }

    fn deep_multipart(depth: usize) -> String {
        let mut raw = String::new();
        for level in 0..depth {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
            ));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
        for level in (0..depth).rev() {
            raw.push_str(&format!("--b{level}--\r\n"));
        }
        raw
    }

    #[test]
    fn ten_thousand_nested_multiparts_do_not_overflow() {
        let raw = deep_multipart(10_000);
        let msg = ParsedMessage::parse(raw.as_bytes());
        let text = fetch(MessageDataItem::BodyStructure(body_structure(&msg, true)));
        // MAX_DEPTH multiparts, then the rest is one opaque part.
        assert_eq!(text.matches("\"mixed\"").count(), MAX_DEPTH);
        assert!(text.contains("(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" "));
        // The opaque part still has its octets: its MIME header and its body.
        let path = vec!["1"; MAX_DEPTH].join(".");
        assert_eq!(
            body_section(&raw, &format!("{path}.MIME")),
            "Content-Type: multipart/mixed; boundary=\"b100\"\r\n\r\n"
        );
        assert!(body_section(&raw, &path).starts_with("--b100\r\nContent-Type: multipart/mixed"));
        let _ = envelope(&msg);
        assert!(!matches_content(
            &msg,
            &SearchKey::Body("deep".try_into().unwrap())
        ));
    }

    #[test]
    fn ten_thousand_nested_messages_do_not_overflow() {
        let raw = "Content-Type: message/rfc822\r\n\r\n".repeat(10_000) + "Subject: x\r\n\r\nhi\r\n";
        let msg = ParsedMessage::parse(raw.as_bytes());
        let text = fetch(MessageDataItem::BodyStructure(body_structure(&msg, true)));
        assert_eq!(text.matches("\"MESSAGE\" \"RFC822\"").count(), MAX_DEPTH);
        let _ = section(&msg, None);
        assert!(matches_content(&msg, &SearchKey::Body("".try_into().unwrap())));
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 9] = [
            b"",
            b"\r\n",
            b"\n\n\n",
            b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n--x--",
            b"Content-Type: text/plain; charset=\"\xff\xfe\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\xff\x00",
            b"From: ((((((\"\\\r\nTo: <<<>>>,,,;;;:::@@@\r\nSubject: \x00\x01\r\n\r\n",
            b"Content-Type: message/rfc822\r\n\r\n",
        ];
        for raw in inputs {
            let msg = ParsedMessage::parse(raw);
            let _ = fetch(MessageDataItem::Envelope(envelope(&msg)));
            let _ = fetch(MessageDataItem::BodyStructure(body_structure(&msg, true)));
            for spec in [
                "", "1", "1.1", "2", "HEADER", "TEXT", "1.MIME", "1.HEADER", "1.TEXT",
            ] {
                let _ = body_section(std::str::from_utf8(raw).unwrap_or(""), spec);
            }
            for key in [
                SearchKey::Body("x".try_into().unwrap()),
                SearchKey::Text("x".try_into().unwrap()),
                SearchKey::From("x".try_into().unwrap()),
            ] {
                let _ = matches_content(&msg, &key);
            }
        }
    }

    #[test]
    fn search_headers_are_decoded_and_case_insensitive() {
        assert!(search_key(
            MIXED,
            SearchKey::Subject("résumé".try_into().unwrap())
        ));
        assert!(search_key(
            MIXED,
            SearchKey::Subject("RÉSUMÉ ATT".try_into().unwrap())
        ));
        assert!(!search(MIXED, "SUBJECT holiday"));
        assert!(search(MIXED, "FROM \"doe, jane\""));
        assert!(search(MIXED, "FROM JANE@EXAMPLE.ORG"));
        assert!(search(MIXED, "TO bob"));
        assert!(!search(MIXED, "CC bob"));
        assert!(!search(MIXED, "BCC \"\""));
        assert!(search(MIXED, "HEADER In-Reply-To m0@"));
        assert!(search(MIXED, "HEADER MIME-Version \"\""));
        assert!(!search(MIXED, "HEADER X-Spam \"\""));
    }

    #[test]
    fn search_body_decodes_transfer_encoding_and_charset() {
        // Only in the quoted-printable text part, decoded.
        assert!(search_key(
            MIXED,
            SearchKey::Body("MY RÉSUMÉ".try_into().unwrap())
        ));
        // Only in the base64 HTML part.
        assert!(search(MIXED, "BODY \"<P>PLEASE\""));
        // Encoded form is not what users search for.
        assert!(!search(MIXED, "BODY C3=A9"));
        // Headers are not body.
        assert!(!search(MIXED, "BODY carol"));
        assert!(search(MIXED, "TEXT carol"));
        assert!(search_key(
            MIXED,
            SearchKey::Text("résumé attached.".try_into().unwrap())
        ));
        // The attached message is in the body of the outer one.
        assert!(search(FORWARD, "BODY \"lunch at\""));
        let latin1 = "Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nna=EFve\r\n";
        assert!(search_key(latin1, SearchKey::Body("naïve".try_into().unwrap())));
    }

    #[test]
    fn search_sent_dates_ignore_time_and_zone() {
        // Date: Fri, 2 Feb 2024 10:00:00 +0100
        assert!(search(MIXED, "SENTON 2-Feb-2024"));
        assert!(!search(MIXED, "SENTON 1-Feb-2024"));
        assert!(search(MIXED, "SENTSINCE 2-Feb-2024"));
        assert!(search(MIXED, "SENTSINCE 31-Jan-2024"));
        assert!(!search(MIXED, "SENTSINCE 3-Feb-2024"));
        assert!(search(MIXED, "SENTBEFORE 3-Feb-2024"));
        assert!(!search(MIXED, "SENTBEFORE 2-Feb-2024"));
        // No Date header: no sent date matches.
        assert!(!search(FORWARD, "SENTBEFORE 1-Jan-2100"));
    }

    #[test]
    fn search_ids_with_or_without_brackets() {
        assert!(search(MIXED, "HEADER Message-ID <m1@example.org>"));
        assert!(search(MIXED, "HEADER message-id m1@example.org"));
        assert!(search(MIXED, "TEXT \"Message-ID: <m1@\""));
    }

    #[test]
    fn pure_content_composites_are_evaluated() {
        assert!(search(MIXED, "OR SUBJECT holiday FROM jane"));
        assert!(!search(MIXED, "OR SUBJECT holiday FROM joe"));
        assert!(search(MIXED, "NOT BODY zebra"));
        assert!(!search(MIXED, "NOT BODY please"));
        assert!(search(MIXED, "(FROM jane NOT SENTBEFORE 1-Jan-2024)"));
        assert!(!search(MIXED, "(FROM jane SENTBEFORE 1-Jan-2024)"));
    }

    #[test]
    fn other_keys_are_left_to_the_caller() {
        let msg = ParsedMessage::parse(SIMPLE.as_bytes());
        assert!(!is_content_key(&SearchKey::Seen));
        assert!(matches_content(&msg, &SearchKey::Seen));
        assert!(matches_content(&msg, &SearchKey::Larger(1_000_000)));
        // A composite with a flag key is the caller's, even under NOT.
        let mixed = SearchKey::Not(Box::new(SearchKey::Seen));
        assert!(!is_content_key(&mixed));
        assert!(matches_content(&msg, &mixed));
    }

    #[test]
    fn digest_parts_default_to_message_rfc822() {
        let raw = "Content-Type: multipart/digest; boundary=d\r\n\r\n\
--d\r\n\
\r\n\
Subject: one\r\n\
\r\n\
first\r\n\
--d--\r\n";
        assert_eq!(
            body(raw),
            "* 1 FETCH (BODY ((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 21 \
             (NIL \"one\" NIL NIL NIL NIL NIL NIL NIL NIL) \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0) 2) \"digest\"))\r\n"
        );
        assert_eq!(body_section(raw, "1.1"), "first");
        assert_eq!(body_section(raw, "1.HEADER"), "Subject: one\r\n\r\n");
    }

    #[test]
    fn groups_get_their_markers_and_no_address_made_of_a_comment() {
        // Issue 14 defect 6.
        let raw = "From: a@example.com\r\nCc: group:;, group2: (foo) ;\r\nSubject: s\r\n\r\nx\r\n";
        assert_eq!(
            envelope_of_raw(raw),
            "* 1 FETCH (ENVELOPE (NIL \"s\" ((NIL NIL \"a\" \"example.com\")) \
             ((NIL NIL \"a\" \"example.com\")) ((NIL NIL \"a\" \"example.com\")) NIL \
             ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) \
             NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn sections_inside_a_top_level_message_rfc822() {
        // Issue 14 defect 5: numbers after the first address the encapsulated message.
        let raw = "Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: inner\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n\
--z\r\nContent-Type: text/plain\r\n\r\none\r\n\
--z\r\nContent-Type: message/rfc822\r\n\r\nSubject: deepest\r\n\r\nthree\r\n\
--z--\r\n";
        let inner = &raw[raw.find("Subject: inner").unwrap()..];
        assert_eq!(body_section(raw, "1"), inner);
        assert_eq!(body_section(raw, "1.1"), "one");
        assert_eq!(body_section(raw, "1.1.MIME"), "Content-Type: text/plain\r\n\r\n");
        assert_eq!(body_section(raw, "1.2.HEADER"), "Subject: deepest\r\n\r\n");
        // The CRLF before the boundary belongs to the boundary.
        assert_eq!(body_section(raw, "1.2.TEXT"), "three");
        assert_eq!(body_section(raw, "1.2.1"), "three");
        assert_eq!(body_section(raw, "1.3"), "");
    }
}
