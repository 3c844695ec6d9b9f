//! [`EmailAddress`]: a mail address split once at its last `@`, the domain lower-cased,
//! with [`EmailAddress::local`] and [`EmailAddress::domain`], so no caller splits the
//! string again. Two ways in: [`EmailAddress::parse`] takes an address as a peer wrote
//! it (an envelope, a `From:` header; the local part is kept as written, RFC 5321 §2.4),
//! and [`EmailAddress::normalized`] checks and lower-cases an address of an account or
//! alias here, the form the store keys and compares.

use std::fmt;

use crate::error::{StoreError, StoreResult};

/// A mail address with a non-empty local part and domain; the domain is lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    text: String,
    /// Byte offset of the `@` that separates local part and domain.
    at: usize,
}

impl EmailAddress {
    /// Splits `text` (trimmed) at its last `@` and lower-cases the domain; None when
    /// either side is empty. Nothing else is checked: this is for addresses as peers
    /// send them.
    pub fn parse(text: &str) -> Option<EmailAddress> {
        let (local, domain) = split(text.trim())?;
        Some(EmailAddress {
            text: format!("{local}@{}", domain.to_ascii_lowercase()),
            at: local.len(),
        })
    }

    /// An address for an account or alias: trimmed and lower-cased whole, local part at
    /// most 64 and the address at most 254 octets, a dot in the domain, no whitespace,
    /// NUL or angle brackets, one `@`.
    pub fn normalized(text: &str) -> StoreResult<EmailAddress> {
        let lower = text.trim().to_ascii_lowercase();
        let valid = match split(&lower) {
            Some((local, domain)) => {
                local.len() <= 64
                    && lower.len() <= 254
                    && domain.contains('.')
                    && !lower
                        .chars()
                        .any(|c| c.is_whitespace() || c == '\0' || c == '<' || c == '>')
                    && !local.contains('@')
            }
            None => false,
        };
        match (valid, lower.rfind('@')) {
            (true, Some(at)) => Ok(EmailAddress { text: lower, at }),
            _ => Err(StoreError::Invalid(format!(
                "'{lower}' is not a valid mail address"
            ))),
        }
    }

    /// The part before the last `@`.
    pub fn local(&self) -> &str {
        self.text.get(..self.at).unwrap_or("")
    }

    /// The part after the last `@`, lower-case.
    pub fn domain(&self) -> &str {
        self.text.get(self.at + 1..).unwrap_or("")
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// The one place an address is split: at the last `@`, both sides non-empty, nothing
/// else changed (for keys built from addresses already normalized).
pub(crate) fn split(address: &str) -> Option<(&str, &str)> {
    address
        .rsplit_once('@')
        .filter(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

/// The lower-cased domain of an address given as text, or "" when it has none (a
/// malformed envelope address routes nowhere rather than failing the caller).
pub fn domain_of(address: &str) -> String {
    EmailAddress::parse(address)
        .map(|a| a.domain().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_once_with_the_domain_lower_cased() {
        let a = EmailAddress::parse(" Anna.B@Example.COM ").unwrap();
        assert_eq!(
            (a.local(), a.domain(), a.as_str()),
            ("Anna.B", "example.com", "Anna.B@example.com")
        );
        let quoted = EmailAddress::parse("\"a@b\"@Example.org").unwrap();
        assert_eq!((quoted.local(), quoted.domain()), ("\"a@b\"", "example.org"));
        assert!(EmailAddress::parse("nobody").is_none());
        assert!(EmailAddress::parse("@example.com").is_none());
        assert_eq!(domain_of("x@Y.Org"), "y.org");
        assert_eq!(domain_of("no-domain"), "");

        let n = EmailAddress::normalized(" Anna@Example.COM").unwrap();
        assert_eq!(
            (n.as_str(), n.local(), n.domain()),
            ("anna@example.com", "anna", "example.com")
        );
        for bad in [
            "anna",
            "anna@localhost",
            "a b@example.com",
            "<a>@example.com",
            "a@b@example.com",
        ] {
            assert!(EmailAddress::normalized(bad).is_err(), "{bad}");
        }
    }
}
