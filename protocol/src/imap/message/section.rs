//! The octets of BODY[section] (RFC 3501 §6.4.5): parts, HEADER, HEADER.FIELDS (NOT),
//! TEXT and MIME of any part, addressed through the part tree.

use super::*;

/// Octets of a section (None = whole message) exactly as BODY[...] returns them, before
/// `<partial>`. A part that does not exist yields no octets, as in Dovecot.
pub fn section(msg: &ParsedMessage<'_>, section: Option<&Section<'_>>) -> Vec<u8> {
    let raw = msg.raw;
    let Some(section) = section else {
        return raw.to_vec();
    };
    let header_of = |idx: usize| msg.entity(idx).map(|e| get(raw, e.header.clone()).to_vec());
    let result = match section {
        Section::Part(part) => msg
            .find_part(part)
            .and_then(|idx| msg.entity(idx))
            .map(|e| get(raw, e.body.clone()).to_vec()),
        Section::Mime(part) => msg.find_part(part).and_then(header_of),
        Section::Header(part) => msg.message_of(part.as_ref()).and_then(header_of),
        Section::Text(part) => msg
            .message_of(part.as_ref())
            .and_then(|idx| msg.entity(idx))
            .map(|e| get(raw, e.body.clone()).to_vec()),
        Section::HeaderFields(part, names) => msg
            .message_of(part.as_ref())
            .and_then(|idx| msg.entity(idx))
            .map(|e| header_fields(raw, e, names.as_ref(), true)),
        Section::HeaderFieldsNot(part, names) => msg
            .message_of(part.as_ref())
            .and_then(|idx| msg.entity(idx))
            .map(|e| header_fields(raw, e, names.as_ref(), false)),
    };
    result.unwrap_or_default()
}

pub(super) fn header_fields<N: AsRef<[u8]>>(raw: &[u8], entity: &Entity, names: &[N], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in &entity.fields {
        let name = get(raw, field.name.clone());
        let listed = names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name));
        if listed == keep {
            let line = get(raw, field.line.clone());
            out.extend_from_slice(line);
            if line_terminator_len(line) == 0 {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
