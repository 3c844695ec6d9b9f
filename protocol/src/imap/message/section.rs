//! The octets of BODY[section] (RFC 3501 §6.4.5): parts, HEADER, HEADER.FIELDS (NOT),
//! TEXT and MIME of any part, addressed through the part tree; header sections ASCII
//! for a session without UTF-8 (`downgrade.rs`).

use super::downgrade;
use super::*;

/// Octets of a section (None = whole message) exactly as BODY[...] returns them, before
/// `<partial>`. A part that does not exist yields no octets, as in Dovecot.
pub fn section(msg: &ParsedMessage<'_>, section: Option<&Section<'_>>) -> Vec<u8> {
    let raw = msg.raw;
    let Some(section) = section else {
        return raw.to_vec();
    };
    let down = msg.downgrade;
    let header_of = |idx: usize| msg.entity(idx).map(|e| downgrade::header_block(raw, e, down));
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
            .map(|e| header_fields(raw, e, names.as_ref(), true, down)),
        Section::HeaderFieldsNot(part, names) => msg
            .message_of(part.as_ref())
            .and_then(|idx| msg.entity(idx))
            .map(|e| header_fields(raw, e, names.as_ref(), false, down)),
    };
    result.unwrap_or_default()
}

pub(super) fn header_fields<N: AsRef<[u8]>>(
    raw: &[u8],
    entity: &Entity,
    names: &[N],
    keep: bool,
    downgrade: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for field in &entity.fields {
        let name = get(raw, field.name.clone());
        let listed = names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name));
        if listed == keep {
            downgrade::push_field(raw, field, downgrade, &mut out);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
