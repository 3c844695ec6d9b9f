//! BODY and BODYSTRUCTURE (RFC 3501 §7.4.2) from the part tree: exact octet sizes and
//! line counts, extension data (MD5, disposition, language, location); ASCII only for
//! a session without UTF-8 (`downgrade.rs`).

use super::downgrade;
use super::envelope::envelope_of;
use super::*;

/// BODY (`extension_data` false) or BODYSTRUCTURE (`extension_data` true) of the message.
pub fn body_structure(msg: &ParsedMessage<'_>, extension_data: bool) -> BodyStructure<'static> {
    structure_of(msg, 0, extension_data)
}

pub(super) fn params_of(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<(IString<'static>, IString<'static>)> {
    params
        .iter()
        .map(|(k, v)| (istring(k.clone()), istring(v.clone())))
        .collect()
}

/// The parameters as this session gets them (RFC 2231 values when downgrading).
fn params_for(
    msg: &ParsedMessage<'_>,
    params: &[(Vec<u8>, Vec<u8>)],
) -> Vec<(IString<'static>, IString<'static>)> {
    if msg.downgrade {
        params_of(&downgrade::ascii_params(params))
    } else {
        params_of(params)
    }
}

/// A field that is an identifier or URL: NIL when it is not ASCII and must be.
fn ident_field(msg: &ParsedMessage<'_>, entity: &Entity, name: &str) -> NString<'static> {
    entity
        .field_value(msg.raw, name)
        .filter(|v| !msg.downgrade || v.is_ascii())
        .map_or(NString(None), nstring)
}

pub(super) fn count_lines(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX)
}

pub(super) fn disposition_tail(msg: &ParsedMessage<'_>, entity: &Entity) -> Option<Disposition<'static>> {
    let raw = msg.raw;
    let disposition = entity
        .field_value(raw, "content-disposition")
        .and_then(|v| parse_mime_value(&v, false))
        .map(|d| (istring(d.value), params_for(msg, &d.params)));
    let language = entity
        .field_value(raw, "content-language")
        .map(|v| {
            language_tags(&v)
                .into_iter()
                .filter(|t| !msg.downgrade || t.is_ascii())
                .map(istring)
                .collect()
        })
        .unwrap_or_default();
    let location = ident_field(msg, entity, "content-location");
    Some(Disposition {
        disposition,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location,
                extensions: Vec::new(),
            }),
        }),
    })
}

/// Content-Language tags (RFC 3282): comma-separated tokens, comments dropped.
pub(super) fn language_tags(value: &[u8]) -> Vec<Vec<u8>> {
    let mut lx = Lexer::new(value);
    let mut tags = Vec::new();
    loop {
        lx.skip_cfws();
        match lx.token() {
            Some(tag) => tags.push(tag),
            None if lx.eat(b',') => {}
            None => break,
        }
    }
    tags
}

/// The Content-Transfer-Encoding token, or None when the field is not a single token
/// (Dovecot then reports the default, 7bit).
pub(super) fn transfer_encoding_token(value: &[u8]) -> Option<Vec<u8>> {
    let mut lx = Lexer::new(value);
    lx.skip_cfws();
    let token = lx.token()?;
    lx.skip_cfws();
    lx.peek().is_none().then_some(token)
}

/// Dovecot's stand-in for a multipart with no parts, which IMAP cannot express.
pub(super) fn empty_text_part(extension_data: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring(b"charset".to_vec()), istring(b"us-ascii".to_vec()))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7bit".to_vec()),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: istring(b"plain".to_vec()),
                number_of_lines: 0,
            },
        },
        extension_data: extension_data.then_some(SinglePartExtensionData {
            md5: NString(None),
            tail: Some(Disposition {
                disposition: None,
                tail: Some(Language {
                    language: Vec::new(),
                    tail: Some(Location {
                        location: NString(None),
                        extensions: Vec::new(),
                    }),
                }),
            }),
        }),
    }
}

pub(super) fn structure_of(msg: &ParsedMessage<'_>, idx: usize, ext: bool) -> BodyStructure<'static> {
    let raw = msg.raw;
    let Some(entity) = msg.entity(idx) else {
        return empty_text_part(ext);
    };
    let ct = &entity.content_type;
    if let Kind::Multipart(children) = &entity.kind {
        let bodies: Vec<_> = children.iter().map(|&c| structure_of(msg, c, ext)).collect();
        let bodies = Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(empty_text_part(ext)));
        return BodyStructure::Multi {
            bodies,
            subtype: istring(ct.subtype.clone()),
            extension_data: ext.then(|| MultiPartExtensionData {
                parameter_list: params_for(msg, &ct.params),
                tail: disposition_tail(msg, entity),
            }),
        };
    }
    let body_bytes = get(raw, entity.body.clone());
    let is_text = ct.value.eq_ignore_ascii_case(b"text");
    let mut parameter_list = params_for(msg, &ct.params);
    if parameter_list.is_empty() && is_text {
        parameter_list.push((istring(b"charset".to_vec()), istring(b"us-ascii".to_vec())));
    }
    let basic = BasicFields {
        parameter_list,
        id: ident_field(msg, entity, "content-id"),
        description: entity
            .field_value(raw, "content-description")
            .map_or(NString(None), |v| {
                nstring(if msg.downgrade {
                    downgrade::ascii_text(v)
                } else {
                    v
                })
            }),
        content_transfer_encoding: istring(
            entity
                .field_value(raw, "content-transfer-encoding")
                .and_then(|v| transfer_encoding_token(&v))
                .unwrap_or_else(|| b"7bit".to_vec()),
        ),
        size: u32::try_from(body_bytes.len()).unwrap_or(u32::MAX),
    };
    let specific = match entity.kind {
        Kind::Message(inner) => SpecificFields::Message {
            envelope: Box::new(envelope_of(msg, inner)),
            body_structure: Box::new(structure_of(msg, inner, ext)),
            number_of_lines: count_lines(body_bytes),
        },
        _ if is_text => SpecificFields::Text {
            subtype: istring(ct.subtype.clone()),
            number_of_lines: count_lines(body_bytes),
        },
        _ => SpecificFields::Basic {
            r#type: istring(ct.value.clone()),
            subtype: istring(ct.subtype.clone()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: ext.then(|| SinglePartExtensionData {
            md5: ident_field(msg, entity, "content-md5"),
            tail: disposition_tail(msg, entity),
        }),
    }
}
