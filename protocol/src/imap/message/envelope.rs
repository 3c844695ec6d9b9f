//! ENVELOPE (RFC 3501 §7.4.2): the header fields as raw strings, address lists with
//! RFC 5322 group syntax as group start and end markers; ASCII only for a session
//! without UTF-8 (`downgrade.rs`).

use super::downgrade;
use super::*;

/// The ENVELOPE of the message.
pub fn envelope(msg: &ParsedMessage<'_>) -> Envelope<'static> {
    envelope_of(msg, 0)
}

pub(super) fn envelope_of(msg: &ParsedMessage<'_>, idx: usize) -> Envelope<'static> {
    let Some(entity) = msg.entity(idx) else {
        return empty_envelope();
    };
    let raw = msg.raw;
    let down = msg.downgrade;
    let text = |name: &str| {
        entity.field_value(raw, name).map_or(NString(None), |v| {
            nstring(if down { downgrade::ascii_text(v) } else { v })
        })
    };
    // An identifier that is not ASCII cannot be encoded and still match: NIL.
    let id = |name: &str| {
        entity
            .field_value(raw, name)
            .filter(|v| !down || v.is_ascii())
            .map_or(NString(None), nstring)
    };
    let addresses = |name: &str| {
        let list = entity
            .field_value(raw, name)
            .map(|v| parse_address_list(&v))
            .unwrap_or_default();
        if down {
            downgrade::ascii_addresses(list)
        } else {
            list
        }
    };
    let from = addresses("from");
    let mut sender = addresses("sender");
    if sender.is_empty() {
        sender = from.clone();
    }
    let mut reply_to = addresses("reply-to");
    if reply_to.is_empty() {
        reply_to = from.clone();
    }
    Envelope {
        date: text("date"),
        subject: text("subject"),
        from,
        sender,
        reply_to,
        to: addresses("to"),
        cc: addresses("cc"),
        bcc: addresses("bcc"),
        in_reply_to: id("in-reply-to"),
        message_id: id("message-id"),
    }
}

pub(super) fn empty_envelope() -> Envelope<'static> {
    Envelope {
        date: NString(None),
        subject: NString(None),
        from: Vec::new(),
        sender: Vec::new(),
        reply_to: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        in_reply_to: NString(None),
        message_id: NString(None),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Atom(Vec<u8>),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    DomainLiteral(Vec<u8>),
    Special(u8),
}

pub(super) fn tokenize_addresses(value: &[u8]) -> Vec<Tok> {
    let mut lx = Lexer::new(value);
    let mut toks = Vec::new();
    while let Some(b) = lx.peek() {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => lx.pos += 1,
            b'(' => toks.push(Tok::Comment(lx.comment())),
            b'"' => toks.push(Tok::Quoted(lx.quoted())),
            b'[' => {
                let start = lx.pos;
                while let Some(c) = lx.peek() {
                    lx.pos += 1;
                    if c == b']' {
                        break;
                    }
                }
                toks.push(Tok::DomainLiteral(get(value, start..lx.pos).to_vec()));
            }
            b',' | b';' | b':' | b'<' | b'>' | b'@' | b'.' => {
                lx.pos += 1;
                toks.push(Tok::Special(b));
            }
            _ => {
                let start = lx.pos;
                while let Some(c) = lx.peek() {
                    if c <= b' ' || b"()<>@,;:\\\".[]".contains(&c) {
                        break;
                    }
                    lx.pos += 1;
                }
                if lx.pos == start {
                    // A lone backslash or ']': skip it rather than loop forever.
                    lx.pos += 1;
                } else {
                    toks.push(Tok::Atom(get(value, start..lx.pos).to_vec()));
                }
            }
        }
    }
    toks
}

/// Parses an address-list into IMAP addresses, with RFC 3501 group markers.
pub(super) fn parse_address_list(value: &[u8]) -> Vec<Address<'static>> {
    let toks = tokenize_addresses(value);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks.get(i) == Some(&Tok::Special(b',')) {
            i += 1;
            continue;
        }
        // A group's display name ends at ':' before any '<', ',' or ';'.
        let mut j = i;
        let mut group = false;
        while let Some(t) = toks.get(j) {
            match t {
                Tok::Special(b':') => {
                    group = true;
                    break;
                }
                Tok::Special(b'<' | b',' | b';') => break,
                _ => j += 1,
            }
        }
        if group {
            let name = phrase(toks.get(i..j).unwrap_or_default());
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: nstring(name),
                host: NString(None),
            });
            i = j + 1;
            while i < toks.len() {
                match toks.get(i) {
                    Some(Tok::Special(b';')) => {
                        i += 1;
                        break;
                    }
                    Some(Tok::Special(b',')) => i += 1,
                    _ => {
                        let end = mailbox_end(&toks, i, true);
                        if let Some(a) = parse_mailbox(toks.get(i..end).unwrap_or_default()) {
                            out.push(a);
                        }
                        i = end;
                    }
                }
            }
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: NString(None),
                host: NString(None),
            });
        } else {
            let end = mailbox_end(&toks, i, false);
            if let Some(a) = parse_mailbox(toks.get(i..end).unwrap_or_default()) {
                out.push(a);
            }
            i = end.max(i + 1);
        }
    }
    out
}

/// Index of the ',' (or ';' inside a group) that ends the mailbox starting at `i`.
pub(super) fn mailbox_end(toks: &[Tok], mut i: usize, in_group: bool) -> usize {
    let mut in_angle = false;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Special(b'<') => in_angle = true,
            Tok::Special(b'>') => in_angle = false,
            Tok::Special(b',') if !in_angle => break,
            Tok::Special(b';') if in_group && !in_angle => break,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Words of a display name joined by single spaces, quotes removed.
pub(super) fn phrase(toks: &[Tok]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(w) | Tok::Quoted(w) | Tok::DomainLiteral(w) => {
                if !out.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(w);
            }
            Tok::Special(c) => out.push(*c),
            Tok::Comment(_) => {}
        }
    }
    out
}

pub(super) fn parse_mailbox(toks: &[Tok]) -> Option<Address<'static>> {
    // Nothing but comments (`group2: (foo) ;`) is no address: it once became
    // ("foo" NIL "MISSING_MAILBOX" "MISSING_DOMAIN") inside the group.
    if toks.iter().all(|t| matches!(t, Tok::Comment(_))) {
        return None;
    }
    let comment = toks.iter().rev().find_map(|t| match t {
        Tok::Comment(c) if !c.is_empty() => Some(c.clone()),
        _ => None,
    });
    let (name, spec, adl) = match toks.iter().position(|t| *t == Tok::Special(b'<')) {
        Some(open) => {
            let close = toks
                .iter()
                .skip(open)
                .position(|t| *t == Tok::Special(b'>'))
                .map_or(toks.len(), |p| open + p);
            let inside = toks.get(open + 1..close).unwrap_or_default();
            // Obsolete source route: <@a,@b:user@host>.
            let (adl, spec) = match inside.iter().position(|t| *t == Tok::Special(b':')) {
                Some(colon) if inside.first() == Some(&Tok::Special(b'@')) => (
                    Some(plain(inside.get(..colon).unwrap_or_default())),
                    inside.get(colon + 1..).unwrap_or_default(),
                ),
                _ => (None, inside),
            };
            let name = phrase(toks.get(..open).unwrap_or_default());
            (if name.is_empty() { None } else { Some(name) }, spec, adl)
        }
        None => (None, toks, None),
    };
    let name = name.or(comment);
    let at = spec.iter().rposition(|t| *t == Tok::Special(b'@'));
    let (local, domain) = match at {
        Some(at) => (
            plain(spec.get(..at).unwrap_or_default()),
            plain(spec.get(at + 1..).unwrap_or_default()),
        ),
        None => (plain(spec), Vec::new()),
    };
    if local.is_empty() && domain.is_empty() && name.is_none() {
        return None;
    }
    let or_missing = |v: Vec<u8>, missing: &str| {
        if v.is_empty() {
            missing.as_bytes().to_vec()
        } else {
            v
        }
    };
    Some(Address {
        name: name.map_or(NString(None), nstring),
        adl: adl.map_or(NString(None), nstring),
        mailbox: nstring(or_missing(local, "MISSING_MAILBOX")),
        host: nstring(or_missing(domain, "MISSING_DOMAIN")),
    })
}

/// Local parts, domains and routes: tokens concatenated without spaces, comments dropped.
pub(super) fn plain(toks: &[Tok]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(w) | Tok::Quoted(w) | Tok::DomainLiteral(w) => out.extend_from_slice(w),
            Tok::Special(c) => out.push(*c),
            Tok::Comment(_) => {}
        }
    }
    out
}
