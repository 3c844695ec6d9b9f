//! [`SmtpReply`]: a reply a backend words itself (a DMARC refusal, say), checked once
//! when it is made: a 4xx or 5xx reply code (RFC 5321 §4.2) with an enhanced status
//! code of the same class (RFC 3463 §2, `class.subject.detail`) and text that cannot
//! break the reply line. An invalid one cannot be built, so the session has nothing to
//! check when it sends it.

use std::fmt;

/// A refusal reply: code, enhanced code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    code: u16,
    enhanced: String,
    text: String,
}

/// Why [`SmtpReply::refusal`] refused its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an SMTP refusal: {code} {enhanced}")]
pub struct InvalidReply {
    pub code: u16,
    pub enhanced: String,
}

impl SmtpReply {
    /// A 4xx or 5xx reply whose enhanced code (e.g. "5.7.1") has the reply code's class.
    /// Control characters in `text` (CR, LF) become spaces: backend text cannot split
    /// the reply line.
    pub fn refusal(code: u16, enhanced: &str, text: &str) -> Result<SmtpReply, InvalidReply> {
        if !(400..600).contains(&code) || !valid_enhanced(enhanced, code) {
            return Err(InvalidReply {
                code,
                enhanced: enhanced.to_string(),
            });
        }
        Ok(SmtpReply {
            code,
            enhanced: enhanced.to_string(),
            text: one_line(text),
        })
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> &str {
        &self.enhanced
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The reply as sent: `550 5.7.1 text\r\n`.
    pub fn line(&self) -> String {
        format!("{self}\r\n")
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// RFC 3463: `class.subject.detail`, the class matching the reply code's first digit,
/// subject and detail one to three digits.
fn valid_enhanced(enhanced: &str, code: u16) -> bool {
    let mut parts = enhanced.split('.');
    let class = parts.next();
    let rest: Vec<&str> = parts.collect();
    class.is_some_and(|c| c.parse::<u16>().ok() == Some(code / 100))
        && rest.len() == 2
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Text going into a reply line: no CR/LF (or other control character) may split it.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_with_a_matching_enhanced_code_are_made() {
        let r = SmtpReply::refusal(550, "5.7.1", "DMARC policy\r\nreject").unwrap();
        assert_eq!(r.line(), "550 5.7.1 DMARC policy  reject\r\n");
        assert_eq!((r.code(), r.enhanced()), (550, "5.7.1"));
        assert!(SmtpReply::refusal(451, "4.3.0", "later").is_ok());
        for (code, enhanced) in [
            (250, "2.0.0"),
            (550, "4.7.1"),
            (550, "5.7"),
            (550, "5.7.1234"),
            (600, "6.0.0"),
        ] {
            assert!(
                SmtpReply::refusal(code, enhanced, "x").is_err(),
                "{code} {enhanced}"
            );
        }
    }
}
