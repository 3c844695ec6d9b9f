//! Header data made ASCII for a session that has not enabled UTF8=ACCEPT or IMAP4rev2:
//! RFC 6855 §7 forbids sending it raw UTF-8 header data (SMTPUTF8 mail carries it), and
//! RFC 6857 describes how to downgrade. Only what the server writes out of the header
//! changes; the stored octets and every size stay as they are.
//!
//! What is downgraded, and how (only when the field holds an octet above 127):
//!
//! - ENVELOPE: Date and Subject become RFC 2047 encoded-words (charset UTF-8, or
//!   UNKNOWN-8BIT for octets that are not UTF-8; "B" encoding, whole characters, at most
//!   75 characters a word). A display name or group name becomes encoded-words. A
//!   mailbox whose address is not ASCII becomes RFC 6857's group form: an empty group
//!   whose name is the encoded original (`=?UTF-8?B?...?= :;`, in ENVELOPE a group start
//!   with that name and a group end). RFC 5322 has no groups inside groups, so such a
//!   member of a group is left out of it. Message-ID and In-Reply-To are NIL: an
//!   identifier cannot be encoded and still match.
//! - BODY and BODYSTRUCTURE: parameter values (charset, name, filename, ...) become RFC
//!   2231 extended values (`filename*` `utf-8''J%C3%B6rg.pdf`; an already extended
//!   value has its raw octets %-escaped); Content-Description becomes encoded-words;
//!   Content-ID, Content-MD5 and Content-Location are NIL and a language tag is left
//!   out; the ENVELOPE of a message/rfc822 part as above.
//! - Header sections (BODY[HEADER], [HEADER.FIELDS (..)], [HEADER.FIELDS.NOT (..)],
//!   [n.MIME], [n.HEADER], RFC822.HEADER): each such field is written again, unfolded
//!   and refolded: address fields as the addresses above; Content-Type and
//!   Content-Disposition with their parameters as above; Message-ID, In-Reply-To,
//!   References, Content-ID, Content-Location and Return-Path are left out; every other
//!   field (Subject, Received, X-...) is unstructured text made encoded-words. A line
//!   that is not a field and is not ASCII is left out.
//! - Not downgraded: BODY[], BODY[TEXT], BODY[n] and RFC822 (the message's octets: their
//!   size must stay RFC822.SIZE and the body parts' sizes, and a literal may carry any
//!   octet but NUL), and MIME type, subtype and transfer-encoding names (tokens, never
//!   8-bit in practice).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::*;

/// Octets of text in one encoded-word: 60 base64 characters, so with `=?UTF-8?B?` and
/// `?=` a word is at most 72 characters (RFC 2047 §2: 75).
const WORD_OCTETS: usize = 45;

/// `text` as encoded-words separated by `sep` (" " in ENVELOPE, CRLF SP in a header).
pub(super) fn encoded_words(text: &[u8], sep: &[u8]) -> Vec<u8> {
    let utf8 = std::str::from_utf8(text).is_ok();
    let charset: &[u8] = if utf8 { b"UTF-8" } else { b"UNKNOWN-8BIT" };
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + WORD_OCTETS).min(text.len());
        // RFC 2047 §5: a word holds whole characters.
        while utf8 && end > start + 1 && end < text.len() && text[end] & 0xC0 == 0x80 {
            end -= 1;
        }
        if !out.is_empty() {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(b"=?");
        out.extend_from_slice(charset);
        out.extend_from_slice(b"?B?");
        out.extend_from_slice(STANDARD.encode(get(text, start..end)).as_bytes());
        out.extend_from_slice(b"?=");
        start = end;
    }
    out
}

/// A header text value as it goes to this session: encoded-words when not ASCII.
pub(super) fn ascii_text(value: Vec<u8>) -> Vec<u8> {
    if value.is_ascii() {
        value
    } else {
        encoded_words(trim(&value), b" ")
    }
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| !is_wsp(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|&b| !is_wsp(b)).map_or(start, |i| i + 1);
    get(value, start..end)
}

fn bytes<'a>(s: &'a NString<'_>) -> Option<&'a [u8]> {
    s.0.as_ref().map(|i| i.as_ref())
}

/// ENVELOPE addresses as RFC 6857 downgrades them (module comment).
pub(super) fn ascii_addresses(list: Vec<Address<'static>>) -> Vec<Address<'static>> {
    let mut out = Vec::with_capacity(list.len());
    let mut in_group = false;
    for a in list {
        if bytes(&a.host).is_none() {
            // A group's start (its name as the mailbox) or end (all NIL).
            match bytes(&a.mailbox) {
                Some(name) => {
                    in_group = true;
                    let name = ascii_text(name.to_vec());
                    out.push(Address {
                        mailbox: nstring(name),
                        ..a
                    });
                }
                None => {
                    in_group = false;
                    out.push(a);
                }
            }
            continue;
        }
        let ascii_address = [&a.adl, &a.mailbox, &a.host]
            .iter()
            .all(|s| bytes(s).is_none_or(<[u8]>::is_ascii));
        if ascii_address {
            let name = match bytes(&a.name) {
                Some(n) if !n.is_ascii() => nstring(ascii_text(n.to_vec())),
                _ => a.name.clone(),
            };
            out.push(Address { name, ..a });
        } else if !in_group {
            let mut text = Vec::new();
            let name = bytes(&a.name);
            if let Some(n) = name {
                text.extend_from_slice(n);
                text.extend_from_slice(b" <");
            }
            if let Some(adl) = bytes(&a.adl) {
                text.extend_from_slice(adl);
                text.push(b':');
            }
            text.extend_from_slice(bytes(&a.mailbox).unwrap_or_default());
            text.push(b'@');
            text.extend_from_slice(bytes(&a.host).unwrap_or_default());
            if name.is_some() {
                text.push(b'>');
            }
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: nstring(encoded_words(&text, b" ")),
                host: NString(None),
            });
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: NString(None),
                host: NString(None),
            });
        }
    }
    out
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn quoted(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A display name as a phrase: bare when it is atoms (encoded-words are), else quoted.
fn write_phrase(name: &[u8], out: &mut Vec<u8>) {
    let words = name.split(|&b| b == b' ');
    if !name.is_empty()
        && words
            .into_iter()
            .all(|w| !w.is_empty() && w.iter().all(|&b| is_atext(b)))
    {
        out.extend_from_slice(name);
    } else {
        quoted(name, out);
    }
}

fn write_local_part(local: &[u8], out: &mut Vec<u8>) {
    let dot_atom = local
        .split(|&b| b == b'.')
        .all(|w| !w.is_empty() && w.iter().all(|&b| is_atext(b)));
    if dot_atom {
        out.extend_from_slice(local);
    } else {
        quoted(local, out);
    }
}

fn write_mailbox(a: &Address<'_>, out: &mut Vec<u8>) {
    let name = bytes(&a.name);
    let adl = bytes(&a.adl);
    let angle = name.is_some() || adl.is_some();
    if let Some(n) = name {
        write_phrase(n, out);
        out.push(b' ');
    }
    if angle {
        out.push(b'<');
    }
    if let Some(adl) = adl {
        out.extend_from_slice(adl);
        out.push(b':');
    }
    write_local_part(bytes(&a.mailbox).unwrap_or_default(), out);
    out.push(b'@');
    out.extend_from_slice(bytes(&a.host).unwrap_or_default());
    if angle {
        out.push(b'>');
    }
}

/// Addresses (with group markers) as an address-list, one per line.
pub(super) fn write_addresses(list: &[Address<'_>]) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut group: Option<(Vec<u8>, Vec<Vec<u8>>)> = None;
    for a in list {
        if bytes(&a.host).is_none() {
            match (bytes(&a.mailbox), group.take()) {
                (Some(name), _) => group = Some((name.to_vec(), Vec::new())),
                (None, Some((name, members))) => {
                    let mut item = Vec::new();
                    write_phrase(&name, &mut item);
                    if name.ends_with(b"?=") {
                        // `=?UTF-8?B?...?= :;` as RFC 6857 writes it.
                        item.push(b' ');
                    }
                    item.push(b':');
                    if !members.is_empty() {
                        item.push(b' ');
                        item.extend_from_slice(&members.join(&b", "[..]));
                    }
                    item.push(b';');
                    items.push(item);
                }
                (None, None) => {}
            }
            continue;
        }
        let mut item = Vec::new();
        write_mailbox(a, &mut item);
        match group.as_mut() {
            Some((_, members)) => members.push(item),
            None => items.push(item),
        }
    }
    items.join(&b",\r\n "[..])
}

/// An RFC 2231 value: attribute-chars as they are, every other octet %XX.
fn percent_encode(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        let plain = b.is_ascii_graphic() && !b"*'%()<>@,;:\\\"/[]?=".contains(&b);
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// MIME parameters with every value that is not ASCII as an RFC 2231 extended value.
pub(super) fn ascii_params(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    params
        .iter()
        .map(|(k, v)| {
            if v.is_ascii() {
                return (k.clone(), v.clone());
            }
            if k.ends_with(b"*") {
                // Already `charset'lang'value` (merged continuations): escape the rest.
                let mut value = Vec::new();
                for &b in v {
                    if b.is_ascii() {
                        value.push(b);
                    } else {
                        value.extend_from_slice(format!("%{b:02X}").as_bytes());
                    }
                }
                return (k.clone(), value);
            }
            let charset: &[u8] = if std::str::from_utf8(v).is_ok() {
                b"utf-8''"
            } else {
                b"unknown-8bit''"
            };
            let mut value = charset.to_vec();
            percent_encode(v, &mut value);
            let mut name = k.clone();
            name.push(b'*');
            (name, value)
        })
        .collect()
}

fn is_token(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// A Content-Type (with `subtype`) or Content-Disposition value with ASCII parameters.
fn write_mime(value: &MimeValue, with_subtype: bool) -> Vec<u8> {
    let mut out = value.value.clone();
    if with_subtype {
        out.push(b'/');
        out.extend_from_slice(&value.subtype);
    }
    for (k, v) in ascii_params(&value.params) {
        out.extend_from_slice(b";\r\n ");
        out.extend_from_slice(&k);
        out.push(b'=');
        if k.ends_with(b"*") || is_token(&v) {
            out.extend_from_slice(&v);
        } else {
            quoted(&v, &mut out);
        }
    }
    out
}

const ADDRESS_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "disposition-notification-to",
];
const LEFT_OUT: &[&str] = &[
    "message-id",
    "in-reply-to",
    "references",
    "content-id",
    "content-location",
    "return-path",
    "resent-message-id",
];

/// Appends a header field as this session gets it: as stored when ASCII, else as the
/// module comment says (or nothing, for a field left out).
pub(super) fn push_field(raw: &[u8], field: &Field, downgrade: bool, out: &mut Vec<u8>) {
    let line = get(raw, field.line.clone());
    if !downgrade || line.is_ascii() {
        out.extend_from_slice(line);
        if line_terminator_len(line) == 0 {
            out.extend_from_slice(b"\r\n");
        }
        return;
    }
    let name = get(raw, field.name.clone());
    if name.is_empty() || !name.is_ascii() {
        return;
    }
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = unfold(get(raw, field.value.clone()));
    let new_value = if ADDRESS_FIELDS.contains(&lower.as_str()) {
        Some(write_addresses(&ascii_addresses(envelope::parse_address_list(
            &value,
        ))))
    } else if lower == "content-type" {
        parse_mime_value(&value, true).map(|m| write_mime(&m, true))
    } else if lower == "content-disposition" {
        parse_mime_value(&value, false).map(|m| write_mime(&m, false))
    } else if LEFT_OUT.contains(&lower.as_str()) {
        None
    } else {
        Some(encoded_words(trim(&value), b"\r\n "))
    };
    let Some(new_value) = new_value.filter(|v| !v.is_empty()) else {
        return;
    };
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(&new_value);
    out.extend_from_slice(b"\r\n");
}

/// An entity's whole header block (fields and the empty line after them) as this
/// session gets it.
pub(super) fn header_block(raw: &[u8], entity: &Entity, downgrade: bool) -> Vec<u8> {
    let block = get(raw, entity.header.clone());
    if !downgrade || block.is_ascii() {
        return block.to_vec();
    }
    let mut out = Vec::with_capacity(block.len() + 64);
    for field in &entity.fields {
        push_field(raw, field, true, &mut out);
    }
    let fields_end = entity.fields.last().map_or(entity.header.start, |f| f.line.end);
    out.extend_from_slice(get(raw, fields_end..entity.header.end));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_hold_whole_characters_and_at_most_75_characters() {
        let text = "Überweisung für die Grüße-Lieferung nach Köln, Düsseldorf und Münster";
        let out = String::from_utf8(encoded_words(text.as_bytes(), b" ")).unwrap();
        let mut decoded = Vec::new();
        for word in out.split(' ') {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?UTF-8?B?")
                .unwrap()
                .strip_suffix("?=")
                .unwrap();
            let octets = STANDARD.decode(b64).unwrap();
            // Each word decodes on its own (RFC 2047 §5).
            assert!(std::str::from_utf8(&octets).is_ok(), "{word}");
            decoded.extend(octets);
        }
        assert!(out.matches("=?UTF-8?B?").count() > 1, "{out}");
        assert_eq!(String::from_utf8(decoded).unwrap(), text);
        // Octets that are not UTF-8 keep their value under UNKNOWN-8BIT.
        assert_eq!(encoded_words(b"caf\xe9", b" "), b"=?UNKNOWN-8BIT?B?Y2Fm6Q==?=");
    }

    #[test]
    fn parameters_become_rfc_2231_values() {
        let params = vec![
            (b"charset".to_vec(), b"utf-8".to_vec()),
            (b"name".to_vec(), "März 1.pdf".as_bytes().to_vec()),
            (
                b"title*".to_vec(),
                "utf-8''Gr%C3%BC"
                    .as_bytes()
                    .iter()
                    .copied()
                    .chain("ße".bytes())
                    .collect(),
            ),
        ];
        assert_eq!(
            ascii_params(&params),
            vec![
                (b"charset".to_vec(), b"utf-8".to_vec()),
                (b"name*".to_vec(), b"utf-8''M%C3%A4rz%201.pdf".to_vec()),
                (b"title*".to_vec(), b"utf-8''Gr%C3%BC%C3%9Fe".to_vec()),
            ]
        );
    }
}
