//! The password policy, decided where the command runs. The CLI hashes a new password
//! in its own process (only the argon2id hash crosses the admin socket), so the server
//! never sees the password; what it needs to apply its policy is the password's
//! [`PasswordTraits`] (length and character classes), which the CLI sends beside the
//! hash. So `user add` and `user passwd` through a running server are checked against
//! the server's policy (as reloaded), the same one a CSV import through the socket
//! meets, and never against whatever configuration the admin's CLI happened to read.
//!
//! The traits come from the admin's own CLI: they keep an admin from choosing a weak
//! password by mistake, they are not a boundary against the admin.

use serde::{Deserialize, Serialize};

use crate::config::PasswordPolicy;

/// What the policy looks at in a password, without the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordTraits {
    /// Characters (not bytes).
    pub length: usize,
    pub upper: bool,
    pub lower: bool,
    pub digit: bool,
}

impl PasswordTraits {
    pub fn of(password: &str) -> PasswordTraits {
        PasswordTraits {
            length: password.chars().count(),
            upper: password.chars().any(char::is_uppercase),
            lower: password.chars().any(char::is_lowercase),
            digit: password.chars().any(|c| c.is_ascii_digit()),
        }
    }

    /// Checks against `policy`; the error names every rule that failed.
    pub fn check(&self, policy: &PasswordPolicy) -> Result<(), String> {
        let mut failed = Vec::new();
        if self.length < policy.min_length {
            failed.push(format!("at least {} characters", policy.min_length));
        }
        if policy.require_upper && !self.upper {
            failed.push("an upper-case letter".to_string());
        }
        if policy.require_lower && !self.lower {
            failed.push("a lower-case letter".to_string());
        }
        if policy.require_digit && !self.digit {
            failed.push("a digit".to_string());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("the password needs {}", failed.join(", ")))
        }
    }
}

/// Checks a password against the policy; the error says which rules failed.
pub fn check_policy(policy: &PasswordPolicy, password: &str) -> Result<(), String> {
    PasswordTraits::of(password).check(policy)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traits_say_what_the_policy_needs_and_nothing_more() {
        let t = PasswordTraits::of("Grüße1");
        assert_eq!(
            t,
            PasswordTraits {
                length: 6,
                upper: true,
                lower: true,
                digit: true
            }
        );
        assert_eq!(
            t.check(&PasswordPolicy::default()),
            Err("the password needs at least 8 characters".into())
        );
        let strict = PasswordPolicy {
            min_length: 12,
            ..PasswordPolicy::default()
        };
        assert!(PasswordTraits::of("Longenough1")
            .check(&PasswordPolicy::default())
            .is_ok());
        assert!(PasswordTraits::of("Longenough1").check(&strict).is_err());
    }
}
