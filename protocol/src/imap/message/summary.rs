//! The SORT and THREAD keys of one message (RFC 5256, RFC 5957), taken from its header
//! once and kept beside the body in the store, so that sorting or threading a big
//! mailbox reads a few hundred octets per message instead of parsing every body.
//!
//! Strings are kept in the form they are compared in: FROM, TO, CC and the base subject
//! ASCII-uppercased (`i;ascii-casemap`, RFC 4790), the display names as
//! `i;unicode-casemap` (RFC 5051: each character's titlecase, here its uppercase, which
//! differs only for a few digraphs, then NFKD).

use mail_parser::{HeaderName, HeaderValue, MessageParser};
use unicode_normalization::UnicodeNormalization;

/// Each string is cut to this many octets (at a character boundary); longer sort keys
/// never decide an order in practice and bound what a hostile header can make us keep.
const MAX_FIELD: usize = 512;
/// References kept per message: the last ones (the parent is last).
const MAX_REFERENCES: usize = 64;
/// Version of the encoding below; a summary of another version is computed again.
const VERSION: u8 = 1;

/// What SORT and THREAD need of a message's header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageSummary {
    /// The Date: header in UTC seconds; `None` when absent or unparsable (SORT then
    /// uses INTERNALDATE, RFC 5256 §2.2).
    pub date: Option<i64>,
    /// addr-mailbox of the first From/To/Cc address, uppercased; empty when none.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// RFC 5957: the display name of the first From/To address, else its addr-spec.
    pub display_from: String,
    pub display_to: String,
    /// The base subject (RFC 5256 §2.1), uppercased.
    pub subject: String,
    /// The subject had a reply or forward marker (`Re:`, `Fwd:`, `(fwd)`, `[fwd: ...]`).
    pub subject_is_reply: bool,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// References (or, without them, the first In-Reply-To id), oldest first.
    pub references: Vec<String>,
}

impl MessageSummary {
    /// Reads the header of `raw` (the body is not looked at).
    pub fn of(raw: &[u8]) -> MessageSummary {
        let parser = MessageParser::new()
            .header_date(HeaderName::Date)
            .header_text(HeaderName::Subject)
            .header_address(HeaderName::From)
            .header_address(HeaderName::To)
            .header_address(HeaderName::Cc)
            .header_id(HeaderName::MessageId)
            .header_id(HeaderName::InReplyTo)
            .header_id(HeaderName::References);
        let Some(msg) = parser.parse_headers(raw) else {
            return MessageSummary::default();
        };
        let from = msg.from().and_then(|a| a.first());
        let to = msg.to().and_then(|a| a.first());
        let cc = msg.cc().and_then(|a| a.first());
        let (subject, subject_is_reply) = base_subject(msg.subject().unwrap_or(""));
        let mut references = ids(msg.references());
        if references.is_empty() {
            references = ids(msg.in_reply_to()).into_iter().take(1).collect();
        }
        if references.len() > MAX_REFERENCES {
            references.drain(..references.len() - MAX_REFERENCES);
        }
        MessageSummary {
            date: msg.date().map(|d| d.to_timestamp()),
            from: mailbox_key(from),
            to: mailbox_key(to),
            cc: mailbox_key(cc),
            display_from: display_key(from),
            display_to: display_key(to),
            subject: cut(subject.to_ascii_uppercase()),
            subject_is_reply,
            message_id: msg
                .message_id()
                .map(|m| cut(m.to_string()))
                .filter(|m| !m.is_empty()),
            references,
        }
    }

    /// The stored form: a version octet, then the fields length-prefixed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.subject.len() + self.from.len());
        out.push(VERSION);
        let flags = u8::from(self.date.is_some())
            | u8::from(self.subject_is_reply) << 1
            | u8::from(self.message_id.is_some()) << 2;
        out.push(flags);
        out.extend_from_slice(&self.date.unwrap_or(0).to_be_bytes());
        for s in [
            &self.from,
            &self.to,
            &self.cc,
            &self.display_from,
            &self.display_to,
            &self.subject,
        ] {
            put_str(&mut out, s);
        }
        put_str(&mut out, self.message_id.as_deref().unwrap_or(""));
        out.extend_from_slice(&(self.references.len() as u16).to_be_bytes());
        for r in &self.references {
            put_str(&mut out, r);
        }
        out
    }

    /// `None` for another version or damaged bytes (the caller computes it again).
    pub fn from_bytes(bytes: &[u8]) -> Option<MessageSummary> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(1)?[0] != VERSION {
            return None;
        }
        let flags = r.take(1)?[0];
        let date = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let mut strings = [(); 7].map(|_| String::new());
        for s in &mut strings {
            *s = r.string()?;
        }
        let count = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
        let mut references = Vec::with_capacity(count.min(MAX_REFERENCES));
        for _ in 0..count {
            references.push(r.string()?);
        }
        let [from, to, cc, display_from, display_to, subject, message_id] = strings;
        Some(MessageSummary {
            date: (flags & 1 != 0).then_some(date),
            from,
            to,
            cc,
            display_from,
            display_to,
            subject,
            subject_is_reply: flags & 2 != 0,
            message_id: (flags & 4 != 0).then_some(message_id),
            references,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn string(&mut self) -> Option<String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// At most `MAX_FIELD` octets, cut at a character boundary.
fn cut(mut s: String) -> String {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| cut(s.to_string()))
        .collect()
}

/// addr-mailbox (the local part) of an address, uppercased.
fn mailbox_key(addr: Option<&mail_parser::Addr<'_>>) -> String {
    let Some(address) = addr.and_then(|a| a.address.as_deref()) else {
        return String::new();
    };
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    cut(local.to_ascii_uppercase())
}

/// RFC 5957 §3: the display name if there is one, else the address itself.
fn display_key(addr: Option<&mail_parser::Addr<'_>>) -> String {
    let Some(addr) = addr else {
        return String::new();
    };
    let name = addr.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let text = name.or(addr.address.as_deref()).unwrap_or("");
    cut(text.to_uppercase().nfkd().collect())
}

/// The base subject of RFC 5256 §2.1 and whether a reply or forward marker was removed.
/// Every step is a loop over the string that only shortens it, so it ends.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Decoded already; blanks (tabs, folding) become one space.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if c == '\t' || c == '\r' || c == '\n' {
            ' '
        } else {
            c
        };
        if !(c == ' ' && s.ends_with(' ')) {
            s.push(c);
        }
    }
    let mut reply = false;
    loop {
        // (2) Trailing "(fwd)" and blanks.
        loop {
            let t = s.trim_end_matches(' ');
            if t.len() >= 5
                && t.is_char_boundary(t.len() - 5)
                && t[t.len() - 5..].eq_ignore_ascii_case("(fwd)")
            {
                s.truncate(t.len() - 5);
                reply = true;
            } else {
                s.truncate(t.len());
                break;
            }
        }
        // (3)-(5) Leaders and blobs at the front.
        loop {
            let before = s.len();
            while let Some((n, refwd)) = leader(&s) {
                reply |= refwd;
                s.drain(..n);
            }
            if let Some(n) = blob(&s) {
                if n < s.len() {
                    s.drain(..n);
                }
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd: ... ]" around the whole.
        let is_fwd =
            s.len() >= 6 && s.is_char_boundary(5) && s[..5].eq_ignore_ascii_case("[fwd:") && s.ends_with(']');
        if !is_fwd {
            break;
        }
        s = s[5..s.len() - 1].to_string();
        reply = true;
    }
    (s, reply)
}

/// Length of a `subj-blob` at the start: `[` *BLOBCHAR `]` *WSP.
fn blob(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b.iter().skip(1).position(|&c| c == b'[' || c == b']')? + 1;
    if b[close] != b']' {
        return None;
    }
    let mut n = close + 1;
    while b.get(n) == Some(&b' ') {
        n += 1;
    }
    Some(n)
}

/// Length of a `subj-leader` at the start, and whether it held a `subj-refwd`:
/// `(*subj-blob subj-refwd) / WSP`, `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`.
fn leader(s: &str) -> Option<(usize, bool)> {
    let b = s.as_bytes();
    if b.first() == Some(&b' ') {
        return Some((1, false));
    }
    let mut n = 0;
    while let Some(len) = blob(&s[n..]) {
        n += len;
    }
    let rest = &b[n..];
    let word = if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"fwd") {
        3
    } else if rest.len() >= 2
        && (rest[..2].eq_ignore_ascii_case(b"re") || rest[..2].eq_ignore_ascii_case(b"fw"))
    {
        2
    } else {
        return None;
    };
    n += word;
    while b.get(n) == Some(&b' ') {
        n += 1;
    }
    if let Some(len) = blob(&s[n..]) {
        n += len;
    }
    (b.get(n) == Some(&b':')).then_some((n + 1, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_as_rfc_5256_extracts_them() {
        for (subject, base, reply) in [
            ("Hello", "Hello", false),
            ("Re: Hello", "Hello", true),
            ("RE:  re: Fwd: Hello", "Hello", true),
            ("Re[2]: Hello", "Hello", true),
            ("[list] Re: Hello (fwd)", "Hello", true),
            ("[Fwd: Re: Hello]", "Hello", true),
            ("[list] Hello", "Hello", false),
            ("[only a blob]", "[only a blob]", false),
            ("  Hello \t  world  ", "Hello world", false),
            ("Re:", "", true),
            ("Réponse: été", "Réponse: été", false),
            ("", "", false),
        ] {
            assert_eq!(base_subject(subject), (base.to_string(), reply), "{subject:?}");
        }
    }

    #[test]
    fn summary_of_a_header_and_back() {
        let raw = b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@example.org>\r\n\
To: carol@example.net\r\n\
Cc: \"Dan\" <Dan.X@example.com>, eve@example.com\r\n\
Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\
Subject: Re: [team] Lunch?\r\n\
Message-ID: <1@example.org>\r\n\
References: <a@x> <b@x>\r\n\
In-Reply-To: <b@x>\r\n\r\nbody\r\n";
        let s = MessageSummary::of(raw);
        assert_eq!(s.date, Some(760_686_745));
        assert_eq!(s.from, "BJORN");
        assert_eq!(s.to, "CAROL");
        assert_eq!(s.cc, "DAN.X");
        assert_eq!(s.display_from, "BJO\u{308}RN");
        assert_eq!(s.display_to, "CAROL@EXAMPLE.NET");
        assert_eq!(s.subject, "LUNCH?");
        assert!(s.subject_is_reply);
        assert_eq!(s.message_id.as_deref(), Some("1@example.org"));
        assert_eq!(s.references, vec!["a@x".to_string(), "b@x".to_string()]);
        assert_eq!(MessageSummary::from_bytes(&s.to_bytes()), Some(s));
        let bare = MessageSummary::of(b"Subject: x\r\nIn-Reply-To: <p@x> <q@x>\r\n\r\n");
        assert_eq!(bare.date, None);
        assert_eq!(bare.references, vec!["p@x".to_string()]);
        assert_eq!(MessageSummary::from_bytes(&bare.to_bytes()), Some(bare));
        assert_eq!(MessageSummary::from_bytes(b"\x01\x00"), None);
        assert_eq!(MessageSummary::from_bytes(b""), None);
    }
}
