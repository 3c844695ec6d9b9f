//! The content keys of SEARCH (RFC 3501 §6.4.4): headers decoded (RFC 2047) and bodies
//! decoded (transfer encoding, charset) by mail-parser before matching.

use super::*;

/// Whether [`matches_content`] evaluates this key itself: a content leaf, or AND, OR and
/// NOT made only of content leaves. Flag, size, INTERNALDATE, set and MODSEQ keys (and
/// any composite containing one) are for the caller, which walks the key tree and asks
/// about the content parts.
pub fn is_content_key(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(is_content_key),
        SearchKey::Or(a, b) => is_content_key(a) && is_content_key(b),
        SearchKey::Not(k) => is_content_key(k),
        _ => matches!(
            key,
            SearchKey::Body(_)
                | SearchKey::Text(_)
                | SearchKey::Header(..)
                | SearchKey::Subject(_)
                | SearchKey::From(_)
                | SearchKey::To(_)
                | SearchKey::Cc(_)
                | SearchKey::Bcc(_)
                | SearchKey::SentBefore(_)
                | SearchKey::SentOn(_)
                | SearchKey::SentSince(_)
        ),
    }
}

/// Content search keys: BODY, TEXT, HEADER name value, SUBJECT, FROM, TO, CC, BCC,
/// SENTBEFORE/SENTON/SENTSINCE. Other keys: return true (the caller evaluates them).
/// AND/OR/NOT are evaluated here only when [`is_content_key`] says they are pure
/// content; otherwise they too return true. Strings match as case-insensitive
/// substrings of RFC 2047 decoded header values (or their raw form) and of transfer-
/// and charset-decoded text parts. A message without a parsable Date: header matches no
/// SENT* key.
pub fn matches_content(msg: &ParsedMessage<'_>, key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) if is_content_key(key) => keys.as_ref().iter().all(|k| matches_content(msg, k)),
        SearchKey::Or(a, b) if is_content_key(key) => matches_content(msg, a) || matches_content(msg, b),
        SearchKey::Not(k) if is_content_key(key) => !matches_content(msg, k),
        SearchKey::Body(s) => body_contains(msg, &needle(s.as_ref())),
        SearchKey::Text(s) => {
            let n = needle(s.as_ref());
            header_contains(msg, None, &n) || body_contains(msg, &n)
        }
        SearchKey::Header(name, s) => header_contains(
            msg,
            Some(&String::from_utf8_lossy(name.as_ref())),
            &needle(s.as_ref()),
        ),
        SearchKey::Subject(s) => header_contains(msg, Some("subject"), &needle(s.as_ref())),
        SearchKey::From(s) => header_contains(msg, Some("from"), &needle(s.as_ref())),
        SearchKey::To(s) => header_contains(msg, Some("to"), &needle(s.as_ref())),
        SearchKey::Cc(s) => header_contains(msg, Some("cc"), &needle(s.as_ref())),
        SearchKey::Bcc(s) => header_contains(msg, Some("bcc"), &needle(s.as_ref())),
        SearchKey::SentBefore(d) => sent_date(msg).is_some_and(|sent| sent < naive(d)),
        SearchKey::SentOn(d) => sent_date(msg).is_some_and(|sent| sent == naive(d)),
        SearchKey::SentSince(d) => sent_date(msg).is_some_and(|sent| sent >= naive(d)),
        _ => true,
    }
}

pub(super) fn needle(s: &[u8]) -> String {
    String::from_utf8_lossy(s).to_lowercase()
}

pub(super) fn contains(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(needle)
}

/// Decoded header values of the top-level message, optionally only those named `name`.
pub(super) fn header_contains(msg: &ParsedMessage<'_>, name: Option<&str>, needle: &str) -> bool {
    let Some(entity) = msg.entity(0) else {
        return false;
    };
    let block = get(msg.raw, entity.header.clone());
    // A header search for an absent field never matches, even with an empty string.
    let present = name.is_none_or(|n| entity.field(msg.raw, n).is_some());
    if !present {
        return false;
    }
    let parsed = MessageParser::new().default_header_text().parse_headers(block);
    let Some(headers) = parsed.as_ref().and_then(|m| m.parts.first()).map(|p| &p.headers) else {
        // mail-parser found nothing to decode: fall back to the raw bytes.
        return contains(&String::from_utf8_lossy(block), needle);
    };
    headers.iter().any(|h| {
        if name.is_some_and(|n| !h.name.as_str().eq_ignore_ascii_case(n)) {
            return false;
        }
        let raw_value = get(block, h.offset_start as usize..h.offset_end as usize);
        let value = decoded_value(&h.value, raw_value);
        // Ids lose their angle brackets when decoded; clients search with them too.
        let raw = String::from_utf8_lossy(&unfold(raw_value)).into_owned();
        if name.is_none() {
            let field = h.name.as_str();
            contains(&format!("{field}: {value}"), needle) || contains(&format!("{field}: {raw}"), needle)
        } else {
            contains(&value, needle) || contains(&raw, needle)
        }
    })
}

/// A header value as a person reads it: encoded words decoded, addresses written out as
/// `Name <addr>`; structured values mail-parser reshapes (dates, ids) stay raw.
pub(super) fn decoded_value(value: &HeaderValue<'_>, raw_value: &[u8]) -> String {
    let raw = String::from_utf8_lossy(&unfold(raw_value)).into_owned();
    let addr = |a: &mail_parser::Addr<'_>| match (&a.name, &a.address) {
        (Some(n), Some(x)) => format!("{n} <{x}>"),
        (Some(n), None) => n.to_string(),
        (None, Some(x)) => x.to_string(),
        (None, None) => String::new(),
    };
    match value {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(mail_parser::Address::List(list)) => {
            let decoded: Vec<String> = list.iter().map(addr).collect();
            decoded.join(", ")
        }
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            let decoded: Vec<String> = groups
                .iter()
                .map(|g| {
                    let members: Vec<String> = g.addresses.iter().map(addr).collect();
                    match &g.name {
                        Some(n) => format!("{n}: {};", members.join(", ")),
                        None => members.join(", "),
                    }
                })
                .collect();
            decoded.join(", ")
        }
        _ => raw,
    }
}

/// Whether any text part (including those of attached messages) contains `needle` once
/// transfer- and charset-decoded.
pub(super) fn body_contains(msg: &ParsedMessage<'_>, needle: &str) -> bool {
    let raw = msg.raw;
    let parser = MessageParser::new().with_mime_headers();
    // Text bodies are searched; multipart preambles and binary attachments are not.
    let mut stack = vec![0usize];
    while let Some(idx) = stack.pop() {
        let Some(entity) = msg.entity(idx) else {
            continue;
        };
        match &entity.kind {
            Kind::Multipart(children) => stack.extend(children.iter().copied()),
            Kind::Message(inner) => {
                // The attached message's header is part of the outer message's body.
                let header = get(raw, msg.entity(*inner).map_or(0..0, |e| e.header.clone()));
                if contains(&String::from_utf8_lossy(header), needle) {
                    return true;
                }
                stack.push(*inner);
            }
            Kind::Leaf => {
                if !entity.content_type.value.eq_ignore_ascii_case(b"text") {
                    continue;
                }
                let part_bytes = get(raw, entity.header.start..entity.body.end);
                let text = parser
                    .parse(part_bytes)
                    .and_then(|m| {
                        m.parts.into_iter().next().and_then(|p| match p.body {
                            PartType::Text(t) | PartType::Html(t) => Some(t.into_owned()),
                            _ => None,
                        })
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(get(raw, entity.body.clone())).into_owned());
                if contains(&text, needle) {
                    return true;
                }
            }
        }
    }
    false
}

/// The calendar date of the Date: header as written, ignoring time and zone (RFC 3501).
pub(super) fn sent_date(msg: &ParsedMessage<'_>) -> Option<(i32, u32, u32)> {
    let value = msg.entity(0)?.field_value(msg.raw, "date")?;
    let date = DateTime::parse_rfc822(&String::from_utf8_lossy(&value))?;
    Some((i32::from(date.year), u32::from(date.month), u32::from(date.day)))
}

/// imap-types wraps a chrono date without re-exporting chrono, and this crate does not
/// depend on chrono; chrono's `Debug` for dates in IMAP's range is `YYYY-MM-DD`.
pub(super) fn naive(date: &NaiveDate) -> (i32, u32, u32) {
    let text = format!("{date:?}");
    let mut it = text.split('-').map(|p| p.parse::<i64>().unwrap_or(0));
    let (y, m, d) = (it.next(), it.next(), it.next());
    (
        i32::try_from(y.unwrap_or(0)).unwrap_or(0),
        u32::try_from(m.unwrap_or(0)).unwrap_or(0),
        u32::try_from(d.unwrap_or(0)).unwrap_or(0),
    )
}
