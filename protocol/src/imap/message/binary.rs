//! The content of BINARY[section] (RFC 3516 §4.2): a part's body with its
//! Content-Transfer-Encoding undone. Both decoders are linear and lenient, as mail
//! readers are: base64 skips what is not in its alphabet, quoted-printable keeps a
//! malformed `=` escape as it is.

use std::num::NonZeroU32;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::structure::transfer_encoding_token;
use super::*;

/// The part names a transfer encoding other than the identity ones, base64 and
/// quoted-printable: `NO [UNKNOWN-CTE]` (RFC 3516 §4.3).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownCte;

/// The decoded octets of BINARY[part] (`[]`: the whole message, as stored). A part that
/// does not exist yields no octets, as BODY[part] does.
pub fn binary_section(msg: &ParsedMessage<'_>, part: &[NonZeroU32]) -> Result<Vec<u8>, UnknownCte> {
    let Ok(path) = Vec1::try_from(part.to_vec()) else {
        return Ok(msg.raw.to_vec());
    };
    let Some(entity) = msg.find_part(&Part(path)).and_then(|idx| msg.entity(idx)) else {
        return Ok(Vec::new());
    };
    let body = get(msg.raw, entity.body.clone());
    let encoding = entity
        .field_value(msg.raw, "Content-Transfer-Encoding")
        .and_then(|v| transfer_encoding_token(&v))
        .map(|t| t.to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some(b"7bit") | Some(b"8bit") | Some(b"binary") => Ok(body.to_vec()),
        Some(b"base64") => Ok(decode_base64(body)),
        Some(b"quoted-printable") => Ok(decode_quoted_printable(body)),
        Some(_) => Err(UnknownCte),
    }
}

fn decode_base64(body: &[u8]) -> Vec<u8> {
    let mut clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    // A dangling sixth of a byte cannot be decoded; what comes before it can.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    engine.decode(&clean).unwrap_or_default()
}

fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'=' {
            // Trailing blanks of a line are transport padding (RFC 2045 §6.7 rule 3).
            if b == b'\r' || b == b'\n' {
                while out.last().is_some_and(|&l| l == b' ' || l == b'\t') {
                    out.pop();
                }
            }
            out.push(b);
            i += 1;
            continue;
        }
        match (body.get(i + 1).copied(), body.get(i + 2).copied()) {
            (Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0));
                i += 3;
            }
            // A soft line break: `=` at the end of a line, blanks allowed before it.
            _ => {
                let mut j = i + 1;
                while body.get(j).is_some_and(|&c| c == b' ' || c == b'\t') {
                    j += 1;
                }
                match (body.get(j).copied(), body.get(j + 1).copied()) {
                    (Some(b'\r'), Some(b'\n')) => i = j + 2,
                    (Some(b'\n'), _) => i = j + 1,
                    (None, _) => i = j,
                    _ => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: &[u32]) -> Vec<NonZeroU32> {
        n.iter().filter_map(|&n| NonZeroU32::new(n)).collect()
    }

    const MIXED: &str = "Content-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=C3=A9 =\r\nsoft  \r\nbroken=ZZ end=\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\n\
AAEC\r\n/w=\r\n\
--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
--b--\r\n";

    #[test]
    fn parts_are_decoded_by_their_transfer_encoding() {
        let msg = ParsedMessage::parse(MIXED.as_bytes());
        assert_eq!(
            binary_section(&msg, &part(&[1])).unwrap(),
            "café soft\r\nbroken=ZZ end".as_bytes()
        );
        assert_eq!(binary_section(&msg, &part(&[2])).unwrap(), vec![0, 1, 2, 0xff]);
        assert_eq!(binary_section(&msg, &part(&[3])), Err(UnknownCte));
        assert_eq!(binary_section(&msg, &part(&[4])).unwrap(), b"plain");
        assert_eq!(binary_section(&msg, &part(&[9])).unwrap(), b"");
        assert_eq!(binary_section(&msg, &[]).unwrap(), MIXED.as_bytes());
    }
}
