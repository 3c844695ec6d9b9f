//! Console administrators and their API tokens: `admin add|list|passwd|remove` and
//! `admin token add|list|revoke`. Passwords arrive hashed (the CLI hashes them, the
//! console hashes what was typed into it); a new TOTP secret and a new token are made
//! here and reported once through `AdminEvents::secret`. [`execute`] runs a parsed
//! [`AdminCommand`] and writes the CLI's report.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use understudy_storage::admins::{AdminAccount, AdminRole, ApiToken};

use super::AdminContext;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Create a console administrator (the first one is made this way).
    Add {
        /// The login name.
        name: String,
        /// global: everything; domain: only the domains given with --domain.
        #[arg(long, default_value = "global")]
        role: RoleArg,
        /// A domain a domain administrator manages (repeat for more).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Require a TOTP code at login; the secret is printed once (otpauth URI).
        #[arg(long)]
        totp: bool,
        /// Filled in by the CLI process: the argon2id hash of the password.
        #[arg(skip)]
        password_hash: Option<String>,
    },
    /// Every administrator with role, domains, TOTP and last login.
    List,
    /// Set an administrator's password.
    Passwd {
        /// The administrator.
        name: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        stdin: bool,
        #[arg(skip)]
        password_hash: Option<String>,
    },
    /// Remove an administrator (their API tokens stop working).
    Remove {
        /// The administrator.
        name: String,
    },
    /// API tokens for scripts (JSON API), scoped like their administrator.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum TokenCommand {
    /// Make a token for ADMIN; it is printed once.
    Add {
        /// The administrator the token acts as.
        admin: String,
        /// What the token is for, shown in `admin token list`.
        #[arg(long, default_value = "")]
        label: String,
        /// Reads only.
        #[arg(long)]
        read_only: bool,
    },
    /// Every token: id, administrator, label, read-only (never the secret).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's id from `admin token list`.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum RoleArg {
    Global,
    Domain,
}

/// An administrator as listed (never the hash or the TOTP secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminListing {
    pub name: String,
    /// "global", or the domains managed.
    pub role: String,
    pub totp: bool,
    pub last_login: Option<i64>,
}

/// A token made by [`add_token`]: the secret is in here once, never stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    pub id: String,
    pub secret: String,
}

/// Runs an `admin` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: AdminCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AdminCommand::Add {
            name,
            role,
            domains,
            totp,
            password_hash,
            ..
        } => {
            let hash = password_hash.context("no password was given")?;
            let role = role_of(ctx, role, domains)?;
            let uri = add(ctx, &name, hash, role, totp)?;
            writeln!(out, "added administrator {name}")?;
            if let Some(uri) = uri {
                ctx.events.secret(&format!("TOTP for {name}: {uri}"));
            }
        }
        AdminCommand::List => {
            for a in list(ctx)? {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    a.name,
                    a.role,
                    if a.totp { "totp" } else { "password only" }
                )?;
            }
        }
        AdminCommand::Passwd {
            name, password_hash, ..
        } => {
            passwd(ctx, &name, password_hash.context("no new password was given")?)?;
            writeln!(out, "password changed for administrator {name}")?;
        }
        AdminCommand::Remove { name } => {
            remove(ctx, &name)?;
            writeln!(out, "removed administrator {name}")?;
        }
        AdminCommand::Token(TokenCommand::Add {
            admin,
            label,
            read_only,
        }) => {
            let token = add_token(ctx, &admin, &label, read_only)?;
            writeln!(out, "token {} made for {admin}", token.id)?;
            ctx.events
                .secret(&format!("API token {}: {}", token.id, token.secret));
        }
        AdminCommand::Token(TokenCommand::List) => {
            for t in ctx.store.api_tokens()? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.admin,
                    if t.read_only { "read-only" } else { "read-write" },
                    t.label
                )?;
            }
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            if !ctx.store.remove_api_token(&id)? {
                bail!("no token {id}");
            }
            writeln!(out, "revoked token {id}")?;
        }
    }
    Ok(())
}

fn role_of(ctx: &AdminContext, role: RoleArg, domains: Vec<String>) -> anyhow::Result<AdminRole> {
    match role {
        RoleArg::Global if domains.is_empty() => Ok(AdminRole::Global),
        RoleArg::Global => bail!("--domain is for --role domain"),
        RoleArg::Domain => {
            if domains.is_empty() {
                bail!("a domain administrator needs at least one --domain");
            }
            let mut names = Vec::new();
            for d in domains {
                let domain = ctx.store.domain(&d)?.with_context(|| format!("no domain {d}"))?;
                names.push(domain.name);
            }
            Ok(AdminRole::Domains(names))
        }
    }
}

/// Creates an administrator; with `totp`, returns the otpauth URI of the new secret.
pub fn add(
    ctx: &AdminContext,
    name: &str,
    password_hash: String,
    role: AdminRole,
    totp: bool,
) -> anyhow::Result<Option<String>> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("an administrator name is 1 to 64 characters without spaces");
    }
    let secret = totp.then(new_totp_secret);
    ctx.store.create_admin(&AdminAccount {
        name: name.to_string(),
        password_hash,
        totp_secret: secret.clone(),
        totp_last_step: 0,
        role,
        created_at: ctx.store.now(),
        account_id: hex::encode(random_bytes::<16>()),
        last_login: None,
    })?;
    Ok(secret.map(|s| totp_uri(&ctx.config.hostname, name, &s)))
}

pub fn list(ctx: &AdminContext) -> anyhow::Result<Vec<AdminListing>> {
    Ok(ctx
        .store
        .admins()?
        .into_iter()
        .map(|a| AdminListing {
            role: match &a.role {
                AdminRole::Global => "global".into(),
                AdminRole::Domains(d) => d.join(", "),
            },
            totp: a.totp_secret.is_some(),
            last_login: a.last_login,
            name: a.name,
        })
        .collect())
}

pub fn passwd(ctx: &AdminContext, name: &str, password_hash: String) -> anyhow::Result<()> {
    let mut a = ctx
        .store
        .admin(name)?
        .with_context(|| format!("no administrator {name}"))?;
    a.password_hash = password_hash;
    Ok(ctx.store.update_admin(&a)?)
}

pub fn remove(ctx: &AdminContext, name: &str) -> anyhow::Result<()> {
    Ok(ctx.store.remove_admin(name)?)
}

/// Makes an API token for `admin`. The secret is `us_<id>_<random>`; only its SHA-256
/// is stored.
pub fn add_token(ctx: &AdminContext, admin: &str, label: &str, read_only: bool) -> anyhow::Result<NewToken> {
    ctx.store
        .admin(admin)?
        .with_context(|| format!("no administrator {admin}"))?;
    let id = hex::encode(random_bytes::<4>());
    let secret = format!("us_{id}_{}", hex::encode(random_bytes::<24>()));
    ctx.store.add_api_token(
        &token_hash(&secret),
        &ApiToken {
            id: id.clone(),
            admin: admin.to_string(),
            label: label.to_string(),
            read_only,
            created_at: ctx.store.now(),
        },
    )?;
    Ok(NewToken { id, secret })
}

/// The key a token is stored under.
pub fn token_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new 160-bit TOTP secret, base32 (RFC 4648, no padding) as authenticator apps take it.
fn new_totp_secret() -> String {
    totp_rs::Secret::from(random_bytes::<20>().to_vec()).to_base32()
}

/// The `otpauth://` URI an authenticator app scans.
pub fn totp_uri(issuer_host: &str, name: &str, secret: &str) -> String {
    let label = format!("Understudy {issuer_host}");
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(&label),
        enc(name),
        enc(&label)
    )
}

/// Checks a TOTP code at `now` (one step of skew either way). Returns the time step it
/// matched, which must be later than the last one accepted (a code works once).
pub fn check_totp(secret: &str, code: &str, now: i64, last_step: u64) -> Option<u64> {
    let bytes = totp_rs::Secret::try_from_base32(secret).ok()?;
    let totp = totp_rs::Builder::new().with_secret(bytes.to_vec()).build().ok()?;
    let step = totp.check(code.trim(), u64::try_from(now).ok()?)?;
    (step > last_step).then_some(step)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn totp_codes_match_rfc_6238_and_work_once() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 -> 94287082
        // (8 digits); the 6-digit code is its last six.
        let secret = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let step = check_totp(&secret, "287082", 59, 0).unwrap();
        assert!(check_totp(&secret, "287082", 59, step).is_none(), "replayed");
        assert!(check_totp(&secret, "000000", 59, 0).is_none());
        let uri = totp_uri("mx.example.com", "root", &secret);
        assert!(
            uri.starts_with("otpauth://totp/Understudy%20mx.example.com:root?secret="),
            "{uri}"
        );
    }
}
