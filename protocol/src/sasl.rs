//! SASL PLAIN (RFC 4616) and LOGIN decoding shared by IMAP AUTHENTICATE, POP3 AUTH and
//! SMTP AUTH.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::Secret;

/// Largest base64 blob accepted for one SASL step; a PLAIN response of two 255-octet
/// names and a 1 KiB password fits easily.
pub const MAX_SASL_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("malformed SASL message")]
    Malformed,
    #[error("authentication cancelled")]
    Cancelled,
    #[error("SASL response too long")]
    TooLong,
}

/// Decodes one base64 client response; `*` cancels (RFC 4422 §3.5).
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = trim_crlf(line);
    if line == b"*" {
        return Err(SaslError::Cancelled);
    }
    if line.len() > MAX_SASL_LINE {
        return Err(SaslError::TooLong);
    }
    if line == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::Base64)
}

/// Splits a decoded PLAIN message `authzid NUL authcid NUL passwd`. An authzid other than
/// empty or the authcid itself is refused: we do not support proxy authorisation.
pub fn parse_plain(message: &[u8]) -> Result<(String, Secret), SaslError> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let authc = std::str::from_utf8(authc).map_err(|_| SaslError::Malformed)?;
    let pass = std::str::from_utf8(pass).map_err(|_| SaslError::Malformed)?;
    if authc.is_empty() || (!authz.is_empty() && authz != authc.as_bytes()) {
        return Err(SaslError::Malformed);
    }
    Ok((authc.to_string(), Secret::new(pass)))
}

/// Decodes a LOGIN step (user name or password) to UTF-8.
pub fn parse_login_step(message: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(message.to_vec()).map_err(|_| SaslError::Malformed)
}

/// Base64 of a server challenge ("Username:", "Password:").
pub fn encode_challenge(text: &str) -> String {
    STANDARD.encode(text)
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_known_answer() {
        let raw = decode_response(b"AHRpbUBleGFtcGxlLmNvbQB0YW5zdGFhZnRhbnN0YWFm\r\n").unwrap();
        let (user, pass) = parse_plain(&raw).unwrap();
        assert_eq!(user, "tim@example.com");
        assert_eq!(pass.expose(), "tanstaaftanstaaf");
    }

    #[test]
    fn plain_rejects_foreign_authzid_and_garbage() {
        assert_eq!(parse_plain(b"other\0tim\0pw"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"tim\0pw"), Err(SaslError::Malformed));
        assert_eq!(decode_response(b"!!!"), Err(SaslError::Base64));
        assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
