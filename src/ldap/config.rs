//! The `[[ldap]]` sections of the server config: one per protected domain whose users
//! come from an LDAP directory or Active Directory, with attribute-map presets and
//! validation that names each problem's key path (`ldap[0].url`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config_types::ConfigProblem;

/// Which directory schema the attribute defaults follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// `mail` (or `userPrincipalName`), `proxyAddresses` with `smtp:`/`SMTP:` prefixes,
    /// `userAccountControl` bit 0x2 for disabled accounts, `displayName`.
    ActiveDirectory,
    /// `mail`, `mailAlternateAddress`/`mailLocalAddress`, `displayName`/`cn`; a disabled
    /// attribute only when configured.
    Openldap,
}

/// How passwords of the domain's users are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMode {
    /// Against the argon2id hash in the store (set with `user passwd` or an import).
    #[default]
    Local,
    /// By binding to the directory as the user; the password is cached as an argon2id
    /// hash and checked against that only while the directory cannot be reached.
    Bind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// The protected domain whose users this directory provides.
    pub domain: String,
    /// `ldaps://host[:636]`, or `ldap://host[:389]` upgraded with StartTLS.
    pub url: String,
    /// StartTLS on an `ldap://` URL. Off only for a directory on this host (loopback).
    #[serde(default = "yes")]
    pub starttls: bool,
    /// PEM bundle of CAs trusted for the directory's certificate.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Service account for searches; unset: anonymous.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the service account's password (one line, mode 0600 or stricter).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub preset: Preset,
    /// Search filter for mail users; default from the preset.
    #[serde(default)]
    pub filter: Option<String>,
    /// Attributes holding the user's address, first match wins; default from the preset.
    #[serde(default)]
    pub address_attributes: Option<Vec<String>>,
    /// Attributes holding aliases (`smtp:`/`SMTP:` prefixes are understood).
    #[serde(default)]
    pub alias_attributes: Option<Vec<String>>,
    /// Attributes holding the display name, first present wins.
    #[serde(default)]
    pub name_attributes: Option<Vec<String>>,
    /// An account is disabled when this attribute has `disabled_value` (`*`: is present)
    /// or, with `disabled_bit`, when that bit of its integer value is set.
    #[serde(default)]
    pub disabled_attribute: Option<String>,
    #[serde(default)]
    pub disabled_value: Option<String>,
    #[serde(default)]
    pub disabled_bit: Option<u64>,
    /// Entries per page of the paged search (Active Directory's limit is 1000).
    #[serde(default = "default_page_size")]
    pub page_size: i32,
    /// Seconds between syncs in the running server; 0: only `understudy ldap sync`.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    #[serde(default)]
    pub login: LoginMode,
    /// DN to bind as for a login: `{user}` is the local part, `{address}` the whole
    /// address (Active Directory accepts the UPN: `{address}`). Unset: the user's entry
    /// is searched for with the service account, then bound as.
    #[serde(default)]
    pub bind_dn_template: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Time-out for each operation (bind, each search page).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_ca_file() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}
fn default_page_size() -> i32 {
    500
}
fn default_sync_interval() -> u64 {
    900
}
fn default_connect_timeout() -> u64 {
    3
}
fn default_timeout() -> u64 {
    5
}

/// When a directory entry counts as a disabled account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisabledRule {
    /// A bit of an integer attribute (Active Directory's `userAccountControl` & 0x2).
    Bit { attribute: String, mask: u64 },
    /// The attribute has this value (case-insensitive).
    Value { attribute: String, value: String },
    /// The attribute is present at all.
    Present { attribute: String },
}

/// The attributes read from each entry, after the preset and overrides are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMap {
    pub address: Vec<String>,
    pub aliases: Vec<String>,
    pub name: Vec<String>,
    pub disabled: Option<DisabledRule>,
}

impl AttributeMap {
    /// Every attribute a search must ask for.
    pub fn requested(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let disabled = match &self.disabled {
            Some(
                DisabledRule::Bit { attribute, .. }
                | DisabledRule::Value { attribute, .. }
                | DisabledRule::Present { attribute },
            ) => Some(attribute),
            None => None,
        };
        for a in self
            .address
            .iter()
            .chain(&self.aliases)
            .chain(&self.name)
            .chain(disabled)
        {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a.clone());
            }
        }
        out
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl LdapConfig {
    pub fn filter(&self) -> String {
        match (&self.filter, self.preset) {
            (Some(f), _) => f.clone(),
            (None, Preset::ActiveDirectory) => "(&(objectCategory=person)(objectClass=user))".into(),
            (None, Preset::Openldap) => "(objectClass=inetOrgPerson)".into(),
        }
    }

    pub fn attributes(&self) -> AttributeMap {
        let (address, aliases, name) = match self.preset {
            Preset::ActiveDirectory => (
                strings(&["mail", "userPrincipalName"]),
                strings(&["proxyAddresses"]),
                strings(&["displayName", "cn"]),
            ),
            Preset::Openldap => (
                strings(&["mail"]),
                strings(&["mailAlternateAddress", "mailLocalAddress"]),
                strings(&["displayName", "cn"]),
            ),
        };
        let disabled = match (&self.disabled_attribute, &self.disabled_value, self.disabled_bit) {
            (Some(attribute), _, Some(mask)) => Some(DisabledRule::Bit {
                attribute: attribute.clone(),
                mask,
            }),
            (Some(attribute), Some(value), None) if value == "*" => Some(DisabledRule::Present {
                attribute: attribute.clone(),
            }),
            (Some(attribute), Some(value), None) => Some(DisabledRule::Value {
                attribute: attribute.clone(),
                value: value.clone(),
            }),
            (Some(attribute), None, None) => Some(DisabledRule::Present {
                attribute: attribute.clone(),
            }),
            (None, _, _) if self.preset == Preset::ActiveDirectory => Some(DisabledRule::Bit {
                attribute: "userAccountControl".into(),
                mask: 0x2,
            }),
            (None, _, _) => None,
        };
        AttributeMap {
            address: self.address_attributes.clone().unwrap_or(address),
            aliases: self.alias_attributes.clone().unwrap_or(aliases),
            name: self.name_attributes.clone().unwrap_or(name),
            disabled,
        }
    }

    /// TLS is used: `ldaps://`, or `ldap://` with StartTLS.
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("ldaps://") || self.starttls
    }

    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [Some(&mut self.ca_file), self.bind_password_file.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// `(scheme, host)` of an `ldap://` or `ldaps://` URL.
fn parse_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "ldap" && scheme != "ldaps" {
        return None;
    }
    let hostport = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "1"));
        if port.parse::<u16>().is_err() {
            return None;
        }
        host
    };
    (!host.is_empty()).then_some((scheme, host))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Every problem of the `[[ldap]]` sections, with key paths.
pub fn validate(sections: &[LdapConfig]) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, l) in sections.iter().enumerate() {
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: format!("ldap[{i}].{key}"),
                message,
            })
        };
        match understudy_storage::accounts::normalize_domain(&l.domain) {
            Ok(d) if seen.contains(&d) => problem("domain", format!("{d} has another [[ldap]] section")),
            Ok(d) => seen.push(d),
            Err(e) => problem("domain", e.to_string()),
        }
        match parse_url(&l.url) {
            None => problem(
                "url",
                format!("'{}' is not an ldap:// or ldaps:// URL (e.g. ldaps://dc1.example.com)", l.url),
            ),
            Some(("ldap", host)) if !l.starttls && !is_loopback(host) => problem(
                "starttls",
                "passwords would cross the network in clear: use StartTLS or ldaps:// (plain ldap:// only to a directory on this host)".into(),
            ),
            Some(_) => {}
        }
        if l.uses_tls() && !l.ca_file.is_file() {
            problem("ca_file", format!("file {} does not exist", l.ca_file.display()));
        }
        match (&l.bind_dn, &l.bind_password_file) {
            (Some(_), None) => problem("bind_password_file", "needed with bind_dn".into()),
            (None, Some(_)) => problem("bind_dn", "needed with bind_password_file".into()),
            (Some(_), Some(path)) => {
                if let Err(why) = check_password_file(path) {
                    problem("bind_password_file", why);
                }
            }
            (None, None) => {}
        }
        if l.base_dn.trim().is_empty() {
            problem("base_dn", "must not be empty".into());
        }
        let filter = l.filter();
        if !(filter.starts_with('(') && filter.ends_with(')')) {
            problem(
                "filter",
                format!("'{filter}' is not an LDAP filter (e.g. (objectClass=person))"),
            );
        }
        for (key, list) in [
            ("address_attributes", &l.address_attributes),
            ("alias_attributes", &l.alias_attributes),
            ("name_attributes", &l.name_attributes),
        ] {
            if list
                .as_ref()
                .is_some_and(|v| v.iter().any(|a| a.trim().is_empty()))
            {
                problem(key, "attribute names must not be empty".into());
            }
        }
        if l.address_attributes.as_ref().is_some_and(Vec::is_empty) {
            problem("address_attributes", "needs at least one attribute".into());
        }
        if l.disabled_attribute.is_none() && (l.disabled_value.is_some() || l.disabled_bit.is_some()) {
            problem(
                "disabled_attribute",
                "needed with disabled_value or disabled_bit".into(),
            );
        }
        if l.disabled_value.is_some() && l.disabled_bit.is_some() {
            problem("disabled_bit", "use either disabled_value or disabled_bit".into());
        }
        if !(1..=10_000).contains(&l.page_size) {
            problem("page_size", "must be between 1 and 10000".into());
        }
        for (key, value) in [
            ("connect_timeout_secs", l.connect_timeout_secs),
            ("timeout_secs", l.timeout_secs),
        ] {
            if !(1..=120).contains(&value) {
                problem(key, "must be between 1 and 120".into());
            }
        }
        if let Some(t) = &l.bind_dn_template {
            if !t.contains("{user}") && !t.contains("{address}") {
                problem(
                    "bind_dn_template",
                    "must contain {user} or {address} (e.g. uid={user},ou=people,dc=example,dc=com)".into(),
                );
            }
        }
    }
    problems
}

pub use crate::config_types::{check_password_file, read_password_file};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_directory_preset() {
        let l: LdapConfig = toml::from_str(
            "domain = \"example.com\"\nurl = \"ldaps://dc1\"\nbase_dn = \"dc=x\"\npreset = \"active-directory\"\n",
        )
        .unwrap();
        let map = l.attributes();
        assert_eq!(
            map.disabled,
            Some(DisabledRule::Bit {
                attribute: "userAccountControl".into(),
                mask: 2
            })
        );
        assert_eq!(
            map.requested(),
            [
                "mail",
                "userPrincipalName",
                "proxyAddresses",
                "displayName",
                "cn",
                "userAccountControl"
            ]
        );
        assert_eq!(l.login, LoginMode::Local);
        assert!(l.filter().contains("objectCategory=person"));
    }
}
