//! The vocabulary every configuration section shares: [`ConfigProblem`], what
//! validation reports, [`Network`], a CIDR network, and [`Service`], the listeners'
//! names. Kept apart from `config`, the
//! aggregator that imports every section, so the sections (`delivery::config`,
//! `ldap::config`, `inbound_auth`) need not import it back.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

/// One configuration problem, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A CIDR network for `auth.plaintext_networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A password file (LDAP service account, smarthost login) must exist and be readable
/// by its owner only.
pub fn check_password_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {mode:04o}); chmod 600 it",
            path.display()
        ));
    }
    Ok(())
}

/// Reads a password file's first line, after [`check_password_file`].
pub fn read_password_file(path: &Path) -> anyhow::Result<understudy_protocol::Secret> {
    check_password_file(path).map_err(|e| anyhow::anyhow!(e))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(understudy_protocol::Secret::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

/// The services Understudy listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Submission,
    Submissions,
    Smtp,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Imap,
        Service::Imaps,
        Service::Pop3,
        Service::Pop3s,
        Service::Submission,
        Service::Submissions,
        Service::Smtp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Smtp => "smtp",
        }
    }

    /// Implicit TLS from the first byte.
    pub fn implicit_tls(self) -> bool {
        matches!(self, Service::Imaps | Service::Pop3s | Service::Submissions)
    }
}

/// An I/O error's reason as a sentence part, without Rust's "(os error 2)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
