//! The readiness report: before an outage, who could not log in on the day and what
//! would not work — users with no password (or only a temporary one), users who never
//! logged in, directory users with no cached credential (a `login = "bind"` domain whose directory is down then
//! has nothing to check against), domains with no alert recipient or no relay host, and
//! a TLS certificate that expires within 30 days. `readiness` on the CLI, a page and a
//! CSV in the console.

use std::io::Write;

use serde::Serialize;

use super::AdminContext;

/// How far ahead a certificate's expiry is reported.
pub const CERTIFICATE_WARNING_SECS: i64 = 30 * 86_400;

/// One problem found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessItem {
    /// "user", "domain" or "server".
    pub kind: String,
    /// The address, domain or file concerned.
    pub subject: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    pub now: i64,
    pub items: Vec<ReadinessItem>,
}

/// Checks every domain `covers` accepts (and, with `server`, the server's certificate).
pub fn report(
    ctx: &AdminContext,
    covers: &dyn Fn(&str) -> bool,
    server: bool,
) -> anyhow::Result<ReadinessReport> {
    let store = ctx.store;
    let now = store.now();
    let mut items = Vec::new();
    let mut item = |kind: &str, subject: &str, problem: &str| {
        items.push(ReadinessItem {
            kind: kind.into(),
            subject: subject.into(),
            problem: problem.into(),
        })
    };
    for d in store.domains()? {
        if !covers(&d.name) {
            continue;
        }
        if d.alert_recipients.is_empty() {
            item(
                "domain",
                &d.name,
                "no alert recipient: nobody is told when an outage starts",
            );
        }
        if d.relay_host.is_none() {
            item(
                "domain",
                &d.name,
                "no relay host: spooled mail cannot be handed back to the primary",
            );
        }
        let bind_logins = ctx
            .config
            .ldap
            .iter()
            .any(|l| l.domain.eq_ignore_ascii_case(&d.name));
        for u in store.users(&d.name)? {
            if !u.is_active() {
                continue;
            }
            match (&u.password_hash, u.ldap_dn.is_some()) {
                (None, true) if bind_logins => item(
                    "user",
                    &u.address,
                    "directory user with no cached credential: cannot log in while the directory is down",
                ),
                (None, _) => item("user", &u.address, "no password: cannot log in"),
                (Some(_), _) if u.force_password_reset => item(
                    "user",
                    &u.address,
                    "temporary password: must be changed before mail can be read",
                ),
                // Logins are recorded per protocol (`logins` column family).
                _ if store.last_logins(u.id)?.is_empty() => item(
                    "user",
                    &u.address,
                    "never logged in: password and devices untried",
                ),
                _ => {}
            }
        }
    }
    if server {
        if let Some(tls) = &ctx.config.tls {
            match certificate_expiry(&tls.certificate) {
                Ok(at) if at - now < 0 => item(
                    "server",
                    &tls.certificate.display().to_string(),
                    "the TLS certificate has expired",
                ),
                Ok(at) if at - now < CERTIFICATE_WARNING_SECS => item(
                    "server",
                    &tls.certificate.display().to_string(),
                    &format!("the TLS certificate expires in {} days", (at - now) / 86_400),
                ),
                Ok(_) => {}
                Err(e) => item(
                    "server",
                    &tls.certificate.display().to_string(),
                    &format!("cannot read the certificate: {e:#}"),
                ),
            }
        }
    }
    Ok(ReadinessReport { now, items })
}

/// The leaf certificate's notAfter, Unix seconds.
pub fn certificate_expiry(path: &std::path::Path) -> anyhow::Result<i64> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The report as CSV (kind, subject, problem), with a header row.
pub fn csv(report: &ReadinessReport) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["kind", "subject", "problem"])?;
    for i in &report.items {
        w.write_record([&i.kind, &i.subject, &i.problem])?;
    }
    let mut out = Vec::new();
    out.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    Ok(String::from_utf8(out)?)
}
