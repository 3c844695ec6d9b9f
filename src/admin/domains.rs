//! Protected domains: `domain add|list|show|set|remove|dkim-keygen`. Each operation takes
//! typed arguments and returns what it did as a serialisable value; [`execute`] runs a
//! parsed [`DomainCommand`] and writes the CLI's report.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use understudy_storage::{AccessLevel, AccessWindow, DeliveryMode, Domain, Engagement, RelayTls};

use super::format::{or_dash, write_listing, ListFormat, Table};
use super::AdminContext;
use crate::delivery::config::split_host_port;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum DomainCommand {
    /// Add a protected domain (engagement is automatic unless --engagement manual).
    Add {
        /// The domain, e.g. example.com.
        name: String,
        #[command(flatten)]
        settings: DomainSettings,
    },
    /// List the protected domains with their mode, relay host and user count.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Show every setting of a domain.
    Show {
        /// The domain.
        name: String,
    },
    /// Change settings of a domain.
    Set {
        /// The domain.
        name: String,
        #[command(flatten)]
        settings: DomainSettings,
    },
    /// Remove a domain that has no users or aliases left.
    Remove {
        /// The domain.
        name: String,
    },
    /// Create a DKIM key for mail sent during outages, set it on the domain and print
    /// the DNS records to publish.
    DkimKeygen {
        /// The domain.
        name: String,
        /// The DKIM selector (the DNS name is SELECTOR._domainkey.DOMAIN).
        #[arg(long, default_value = "understudy")]
        selector: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum ModeArg {
    /// Queue and redeliver only; no local mailboxes.
    Relay,
    /// Keep a shadow mailbox per user as well as redelivering.
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum TlsArg {
    /// STARTTLS when the primary offers it, any certificate.
    Opportunistic,
    /// STARTTLS required, certificate verified.
    Required,
    /// Never STARTTLS.
    Disabled,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum EngagementArg {
    /// The monitor probes the relay host and engages an outage by itself.
    Automatic,
    /// Only `outage start` and `outage stop` change the state.
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum AccessArg {
    /// Read and send.
    Full,
    /// Read only: nothing changes in the mailboxes, no sending.
    ReadOnly,
    /// No login at all.
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum WindowArg {
    /// Mailboxes reachable at any time (archive access).
    Always,
    /// Mailboxes reachable only while the domain is in an outage or draining.
    OutageOnly,
}

/// Domain settings (SPEC "Domains"); unset flags keep the current value.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct DomainSettings {
    /// relay: queue and redeliver only; both: also keep a shadow mailbox.
    #[arg(long)]
    pub mode: Option<ModeArg>,
    /// Primary server, host[:port] (port 25 if omitted); "" removes it.
    #[arg(long)]
    pub relay_host: Option<String>,
    /// TLS toward the primary when redelivering.
    #[arg(long)]
    pub relay_tls: Option<TlsArg>,
    /// Who starts and ends outages: the monitor (automatic) or an admin (manual).
    #[arg(long)]
    pub engagement: Option<EngagementArg>,
    /// Probe the relay host (automatic engagement only): true or false.
    #[arg(long)]
    pub monitoring: Option<bool>,
    /// Seconds between probes of the relay host.
    #[arg(long)]
    pub probe_interval: Option<u32>,
    /// Failed probes in a row before an outage is engaged.
    #[arg(long)]
    pub failures: Option<u32>,
    /// Successful probes in a row before it is recovered.
    #[arg(long)]
    pub successes: Option<u32>,
    /// Alert recipient, hosted elsewhere than the domain (repeat up to four times;
    /// replaces the list).
    #[arg(long = "alert")]
    pub alerts: Vec<String>,
    /// Default access of the domain's users during outages.
    #[arg(long)]
    pub access: Option<AccessArg>,
    /// When the domain's users may log in by default.
    #[arg(long)]
    pub access_window: Option<WindowArg>,
    /// Days a message stays in the continuity mailboxes (0: forever).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Days a message may wait for the primary before it is bounced.
    #[arg(long)]
    pub queue_lifetime_days: Option<u32>,
    /// DKIM selector for mail sent during outages ("" removes it).
    #[arg(long)]
    pub dkim_selector: Option<String>,
    /// Path of the DKIM private key (PEM) for mail sent during outages ("" removes it).
    #[arg(long)]
    pub dkim_key: Option<String>,
    /// Redeliver to the primary also the messages a user deleted here during the
    /// outage: true or false (default false: deleted mail stays deleted).
    #[arg(long)]
    pub redeliver_deleted: Option<bool>,
    /// Keep a copy of each message a user sends in their Sent folder (for clients that
    /// do not save one themselves, e.g. over POP3): true or false.
    #[arg(long)]
    pub save_sent: Option<bool>,
}

/// One line of `domain list`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainListing {
    pub domain: Domain,
    pub users: usize,
}

/// A DKIM key made by `domain dkim-keygen`, and the DNS records to publish.
#[derive(Debug, Clone, Serialize)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub key_path: PathBuf,
    /// `v=DKIM1; k=rsa; p=...`
    pub txt: String,
    /// This server's host name, for the SPF record.
    pub hostname: String,
}

/// Runs a `domain` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: DomainCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        DomainCommand::DkimKeygen { name, selector } => {
            print_dkim(&dkim_keygen(ctx, &name, &selector)?, out)?
        }
        DomainCommand::Add { name, settings } => {
            let d = add(ctx, &name, &settings)?;
            writeln!(out, "added domain {}", d.name)?;
            if d.engagement == Engagement::Automatic && d.monitoring && d.relay_host.is_some() {
                writeln!(
                    out,
                    "engagement automatic: an outage starts by itself after {} failed probes of {} \
                     (every {} s); use --engagement manual to start and stop outages yourself",
                    d.failures_before_engage,
                    d.relay_host.as_deref().unwrap_or("-"),
                    d.probe_interval_secs
                )?;
            }
        }
        DomainCommand::List { format } => {
            let listing = list(ctx)?;
            write_listing(
                format,
                &listing,
                || {
                    let mut t = Table::new(&["DOMAIN", "MODE", "RELAY HOST", "ENGAGEMENT", "USERS"]);
                    for l in &listing {
                        let d = &l.domain;
                        t.push(vec![
                            d.name.clone(),
                            format!("{:?}", d.delivery_mode).to_lowercase(),
                            or_dash(d.relay_host.clone().unwrap_or_default()),
                            format!("{:?}", d.engagement).to_lowercase(),
                            l.users.to_string(),
                        ]);
                    }
                    t
                },
                out,
            )?;
        }
        DomainCommand::Show { name } => print_domain(&show(ctx, &name)?, out)?,
        DomainCommand::Set { name, settings } => print_domain(&set(ctx, &name, &settings)?, out)?,
        DomainCommand::Remove { name } => {
            remove(ctx, &name)?;
            writeln!(out, "removed domain {name}")?;
        }
    }
    Ok(())
}

pub fn add(ctx: &AdminContext, name: &str, settings: &DomainSettings) -> anyhow::Result<Domain> {
    let mut d = Domain::new(name);
    apply_settings(&mut d, settings)?;
    Ok(ctx.store.add_domain(&d)?)
}

pub fn list(ctx: &AdminContext) -> anyhow::Result<Vec<DomainListing>> {
    let mut listing = Vec::new();
    for domain in ctx.store.domains()? {
        let users = ctx.store.users(&domain.name)?.len();
        listing.push(DomainListing { domain, users });
    }
    Ok(listing)
}

pub fn show(ctx: &AdminContext, name: &str) -> anyhow::Result<Domain> {
    ctx.store
        .domain(name)?
        .with_context(|| format!("{name} is not a protected domain"))
}

/// Changes the given settings; users on the domain's default access policy get the new
/// one at once (their sessions end) if it changed.
pub fn set(ctx: &AdminContext, name: &str, settings: &DomainSettings) -> anyhow::Result<Domain> {
    let mut d = show(ctx, name)?;
    let policy_before = (d.access, d.access_window);
    apply_settings(&mut d, settings)?;
    ctx.store.update_domain(&d)?;
    if (d.access, d.access_window) != policy_before {
        // Users on the domain default get the new policy now, not at next login.
        for u in ctx.store.users(&d.name)? {
            if u.access.is_none() || u.access_window.is_none() {
                ctx.events.revoked(u.id);
            }
        }
    }
    Ok(d)
}

pub fn remove(ctx: &AdminContext, name: &str) -> anyhow::Result<()> {
    Ok(ctx.store.remove_domain(name)?)
}

/// Makes a DKIM key under the data directory and sets it on the domain.
pub fn dkim_keygen(ctx: &AdminContext, name: &str, selector: &str) -> anyhow::Result<DkimKey> {
    let mut d = show(ctx, name)?;
    let record = crate::dkim::keygen(&ctx.config.data_dir, &d.name, selector)?;
    d.dkim_selector = Some(selector.to_string());
    d.dkim_key_path = Some(record.key_path.display().to_string());
    ctx.store.update_domain(&d)?;
    Ok(DkimKey {
        domain: d.name,
        selector: selector.to_string(),
        key_path: record.key_path,
        txt: record.txt,
        hostname: ctx.config.hostname.clone(),
    })
}

/// Applies the given settings, refusing what would not work: a relay host that is not
/// host[:port], an alert recipient inside the domain itself (it would be down with the
/// domain's mail server).
fn apply_settings(domain: &mut Domain, s: &DomainSettings) -> anyhow::Result<()> {
    if let Some(m) = s.mode {
        domain.delivery_mode = match m {
            ModeArg::Relay => DeliveryMode::Relay,
            ModeArg::Both => DeliveryMode::Both,
        };
    }
    if let Some(h) = &s.relay_host {
        let h = h.trim();
        if !h.is_empty() {
            match split_host_port(h, 25) {
                Some((host, port)) if port != 0 && !host.is_empty() => {}
                _ => bail!(
                    "relay host '{h}' is not host[:port] with a port from 1 to 65535 \
                     (e.g. mail.example.com:25 or [2001:db8::25]:25)"
                ),
            }
        }
        domain.relay_host = (!h.is_empty()).then(|| h.to_string());
    }
    if let Some(t) = s.relay_tls {
        domain.relay_tls = match t {
            TlsArg::Opportunistic => RelayTls::Opportunistic,
            TlsArg::Required => RelayTls::Required,
            TlsArg::Disabled => RelayTls::Disabled,
        };
    }
    if let Some(e) = s.engagement {
        domain.engagement = match e {
            EngagementArg::Automatic => Engagement::Automatic,
            EngagementArg::Manual => Engagement::Manual,
        };
    }
    if let Some(v) = s.monitoring {
        domain.monitoring = v;
    }
    if let Some(v) = s.probe_interval {
        domain.probe_interval_secs = v;
    }
    if let Some(v) = s.failures {
        domain.failures_before_engage = v;
    }
    if let Some(v) = s.successes {
        domain.successes_before_recover = v;
    }
    if !s.alerts.is_empty() {
        let alerts: Vec<String> = s.alerts.iter().map(|a| a.trim().to_ascii_lowercase()).collect();
        for a in &alerts {
            if understudy_storage::address::domain_of(a) == domain.name {
                bail!(
                    "alert recipient {a} is inside {}: alerts go out while {}'s mail server is down, \
                     so they must go to an address hosted elsewhere",
                    domain.name,
                    domain.name
                );
            }
        }
        domain.alert_recipients = alerts;
    }
    if let Some(a) = s.access {
        domain.access = access_level(a);
    }
    if let Some(w) = s.access_window {
        domain.access_window = access_window(w);
    }
    if let Some(v) = s.retention_days {
        domain.retention_days = v;
    }
    if let Some(v) = s.queue_lifetime_days {
        domain.queue_lifetime_days = v;
    }
    if let Some(v) = &s.dkim_selector {
        domain.dkim_selector = (!v.is_empty()).then(|| v.clone());
    }
    if let Some(v) = &s.dkim_key {
        domain.dkim_key_path = (!v.is_empty()).then(|| v.clone());
    }
    if let Some(v) = s.redeliver_deleted {
        domain.redeliver_deleted = v;
    }
    if let Some(v) = s.save_sent {
        domain.save_sent = v;
    }
    Ok(())
}

pub(super) fn access_level(a: AccessArg) -> AccessLevel {
    match a {
        AccessArg::Full => AccessLevel::Full,
        AccessArg::ReadOnly => AccessLevel::ReadOnly,
        AccessArg::None => AccessLevel::None,
    }
}

pub(super) fn access_window(w: WindowArg) -> AccessWindow {
    match w {
        WindowArg::Always => AccessWindow::Always,
        WindowArg::OutageOnly => AccessWindow::OutageOnly,
    }
}

fn print_domain(d: &Domain, out: &mut dyn Write) -> std::io::Result<()> {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "domain:              {}", d.name)?;
    writeln!(out, "delivery mode:       {:?}", d.delivery_mode)?;
    writeln!(out, "relay host:          {}", opt(&d.relay_host))?;
    writeln!(out, "relay TLS:           {:?}", d.relay_tls)?;
    writeln!(out, "engagement:          {:?}", d.engagement)?;
    writeln!(
        out,
        "monitoring:          {} (every {} s, engage after {} failures, recover after {} successes)",
        d.monitoring, d.probe_interval_secs, d.failures_before_engage, d.successes_before_recover
    )?;
    writeln!(out, "alert recipients:    {}", list(&d.alert_recipients))?;
    writeln!(out, "access:              {:?}, {:?}", d.access, d.access_window)?;
    writeln!(out, "retention:           {} days", d.retention_days)?;
    writeln!(out, "queue lifetime:      {} days", d.queue_lifetime_days)?;
    writeln!(
        out,
        "DKIM:                selector {}, key {}",
        opt(&d.dkim_selector),
        opt(&d.dkim_key_path)
    )?;
    writeln!(
        out,
        "redeliver deleted:   {}",
        if d.redeliver_deleted {
            "yes (messages users delete here still go to the primary)"
        } else {
            "no (messages users delete here are not redelivered; `queue redeliver` recovers one)"
        }
    )?;
    writeln!(
        out,
        "save sent:           {}",
        if d.save_sent {
            "yes (a copy of each sent message goes into the sender's Sent folder)"
        } else {
            "no (the mail app saves its own copy)"
        }
    )
}

fn print_dkim(k: &DkimKey, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "DKIM key for {} written to {} (mode 0600)",
        k.domain,
        k.key_path.display()
    )?;
    writeln!(
        out,
        "Publish this TXT record, then mail sent during outages is signed:"
    )?;
    writeln!(
        out,
        "  {}._domainkey.{}. IN TXT \"{}\"",
        k.selector, k.domain, k.txt
    )?;
    writeln!(
        out,
        "And let the server send for the domain in its SPF record, e.g. add \"a:{}\":",
        k.hostname
    )?;
    writeln!(out, "  {}. IN TXT \"v=spf1 mx a:{} ~all\"", k.domain, k.hostname)
}
