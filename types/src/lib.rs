//! Value types that both `understudy-protocol` and `understudy-storage` need and that
//! neither may take from the other (the arrows between them must not exist): today the
//! checked name of a mailbox to create, [`NewMailboxName`]. No dependencies, no I/O.

use std::fmt;

/// A name for a new mailbox (CREATE, RENAME's target, the store's create and rename):
/// UTF-8, "/" as the hierarchy delimiter with no empty level, no "." or ".." level, no
/// control character, no LIST wildcard (`*`, `%`), at most 255 octets. Built only by
/// [`NewMailboxName::new`] or [`NewMailboxName::from_client`], so a value of this type
/// has passed the rules once and for all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewMailboxName(String);

/// Why a name is not a [`NewMailboxName`]; its text names the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxNameError {
    name: String,
    malformed: bool,
}

impl MailboxNameError {
    /// Empty, or with an empty level: not a name at all (IMAP answers `BAD`), as opposed
    /// to a well-formed name the rules forbid (`NO`).
    pub fn is_malformed(&self) -> bool {
        self.malformed
    }
}

impl fmt::Display for MailboxNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mailbox name '{}'", self.name.escape_debug())
    }
}

impl std::error::Error for MailboxNameError {}

impl NewMailboxName {
    /// `name` exactly as given.
    pub fn new(name: &str) -> Result<NewMailboxName, MailboxNameError> {
        let error = |malformed| MailboxNameError {
            name: name.to_string(),
            malformed,
        };
        if name.is_empty() || name.split('/').any(str::is_empty) {
            return Err(error(true));
        }
        let forbidden = name.len() > 255
            || name.chars().any(|c| c.is_control())
            || name.split('/').any(|level| level == "." || level == "..")
            || name.contains('*')
            || name.contains('%');
        if forbidden {
            return Err(error(false));
        }
        Ok(NewMailboxName(name.to_string()))
    }

    /// A name as a client sends it (already decoded from modified UTF-7): a trailing
    /// delimiter is dropped first (RFC 3501 §6.3.3: "foo/" creates "foo").
    pub fn from_client(name: &str) -> Result<NewMailboxName, MailboxNameError> {
        NewMailboxName::new(name.trim_end_matches('/'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for NewMailboxName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_with_malformed_told_apart() {
        assert_eq!(
            NewMailboxName::new("Archive/2024").unwrap().as_str(),
            "Archive/2024"
        );
        assert_eq!(NewMailboxName::from_client("Work/").unwrap().as_str(), "Work");
        for malformed in ["", "/", "a//b", "/a"] {
            assert!(
                NewMailboxName::from_client(malformed).unwrap_err().is_malformed(),
                "{malformed:?}"
            );
        }
        assert!(
            NewMailboxName::new("a/").unwrap_err().is_malformed(),
            "exact: no trimming"
        );
        let long = "x".repeat(256);
        for forbidden in ["a/../b", ".", "new\nline", "star*", "per%cent", long.as_str()] {
            let e = NewMailboxName::new(forbidden).unwrap_err();
            assert!(!e.is_malformed(), "{forbidden:?}");
        }
        assert_eq!(
            NewMailboxName::new("a\tb").unwrap_err().to_string(),
            "invalid mailbox name 'a\\tb'"
        );
    }
}
