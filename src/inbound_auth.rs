//! Inbound sender authentication for deployment C (Understudy as a secondary MX with no
//! filter in front, SPEC "Mail flow"): SPF (RFC 7208) for MAIL FROM and HELO against the
//! peer's address, DKIM (RFC 6376) and DMARC (RFC 7489 / RFC 9989) with `mail-auth`,
//! recorded in an `Authentication-Results` header (RFC 8601) prepended to the message.
//!
//! The `[smtp]` section chooses how much is done: `verify_inbound = "headers"` (the
//! default: record, never refuse, which is safe whichever deployment this is; behind a
//! filter SPF sees the filter's address and would fail), `"enforce"` (deployment C: a
//! secondary MX that nobody else filters must not hand the users mail that fails DMARC
//! at a domain asking for `p=reject`) or `"off"` (deployments A/B: the filter in front
//! has checked already). Peers listed in
//! `trusted_relays` (loopback by default) are not checked at all.
//!
//! Only a DMARC `fail` under `p=reject` refuses a message (`550 5.7.1`, nothing stored).
//! `p=quarantine` is accepted with the verdict in the header for the user's rules and
//! the primary's filter. A DNS failure or time-out is `temperror` and never refuses:
//! every DNS lookup is bounded and the whole verification has a budget
//! (`dns_timeout_secs`), after which the checks not yet done count as `temperror`.
//!
//! Lookups go through `mail-auth`'s hickory resolver. `test_dns_records` (TEST ONLY)
//! names a TOML file of TXT records that answer every lookup instead, so integration
//! tests need no network.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::hickory_resolver::config::ResolverConfig;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::spf::Spf;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, DnsError, DnssecStatus, MessageAuthenticator, Parameters,
    RecordSet, ResolverCache, SpfResult, Txt,
};
use serde::Deserialize;
use understudy_protocol::smtp::{DeliveryError, Envelope, SmtpReply};
use understudy_storage::EmailAddress;

use crate::config_types::{ConfigProblem, Network};

/// What the MX does with inbound mail authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifyInbound {
    /// No checks, no header (a filter in front has checked).
    Off,
    /// Checks and an `Authentication-Results` header; nothing is refused.
    #[default]
    Headers,
    /// As `headers`, and a DMARC failure at a `p=reject` domain is refused.
    Enforce,
}

/// The inbound checks' settings: the `[smtp]` section of the file (its historical name;
/// it holds only these checks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundAuthConfig {
    pub verify_inbound: VerifyInbound,
    /// Networks (CIDR) whose mail is taken without checks: the filter in front, local
    /// injectors. Loopback by default.
    pub trusted_relays: Vec<String>,
    /// Time allowed for all the DNS lookups of one message, in seconds.
    pub dns_timeout_secs: u64,
    /// TEST ONLY: a TOML file `[txt] "name" = "record"` answering every DNS lookup
    /// (names absent from it do not exist). Never set this in production.
    pub test_dns_records: Option<PathBuf>,
}

impl Default for InboundAuthConfig {
    fn default() -> Self {
        InboundAuthConfig {
            verify_inbound: VerifyInbound::Headers,
            trusted_relays: vec!["127.0.0.0/8".into(), "::1/128".into()],
            dns_timeout_secs: 10,
            test_dns_records: None,
        }
    }
}

impl InboundAuthConfig {
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (i, net) in self.trusted_relays.iter().enumerate() {
            if Network::parse(net).is_none() {
                problems.push(ConfigProblem {
                    key: format!("smtp.trusted_relays[{i}]"),
                    message: format!("'{net}' is not a network (e.g. 192.0.2.0/24)"),
                });
            }
        }
        if !(1..=120).contains(&self.dns_timeout_secs) {
            problems.push(ConfigProblem {
                key: "smtp.dns_timeout_secs".into(),
                message: "must be between 1 and 120".into(),
            });
        }
        if let Some(path) = &self.test_dns_records {
            if let Err(e) = StaticRecords::load(path) {
                problems.push(ConfigProblem {
                    key: "smtp.test_dns_records".into(),
                    message: format!("{e:#}"),
                });
            }
        }
        problems
    }
}

/// An RFC 8601 result keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Outcome {
    fn keyword(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

/// Which identity SPF checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfIdentity {
    MailFrom(String),
    /// The null sender `<>`: the HELO name was checked (RFC 7208 §2.4).
    Helo(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    pub outcome: Outcome,
    /// `d=` and `s=` of the signature, when it could be parsed.
    pub domain: Option<String>,
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// Every check's result for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub spf: Outcome,
    pub spf_identity: SpfIdentity,
    /// One entry per signature; empty: unsigned (`dkim=none`).
    pub dkim: Vec<DkimVerdict>,
    pub dmarc: Outcome,
    /// The RFC 5322 From domain DMARC looked at; empty when there was none.
    pub dmarc_domain: String,
    pub dmarc_policy: DmarcPolicy,
}

/// What becomes of a checked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store it with this header (CRLF-terminated) on top.
    Accept { header: String },
    /// `550 5.7.1 <text>`.
    Reject { text: String },
}

/// The verdict → header/reply mapping.
pub fn decide(mode: VerifyInbound, hostname: &str, verdict: &Verdict) -> Decision {
    if mode == VerifyInbound::Enforce
        && verdict.dmarc == Outcome::Fail
        && verdict.dmarc_policy == DmarcPolicy::Reject
    {
        return Decision::Reject {
            text: format!(
                "Message rejected: it fails the DMARC policy (p=reject) of {}",
                pvalue(&verdict.dmarc_domain)
            ),
        };
    }
    Decision::Accept {
        header: results_header(hostname, verdict),
    }
}

/// `Authentication-Results: <hostname>; spf=...; dkim=...; dmarc=...` (RFC 8601 §2.2),
/// folded one method per line.
pub fn results_header(hostname: &str, verdict: &Verdict) -> String {
    let mut h = format!("Authentication-Results: {}", pvalue(hostname));
    h.push_str(";\r\n\tspf=");
    h.push_str(verdict.spf.keyword());
    match &verdict.spf_identity {
        SpfIdentity::MailFrom(from) => {
            h.push_str(" smtp.mailfrom=");
            h.push_str(&pvalue(from));
        }
        SpfIdentity::Helo(helo) => {
            h.push_str(" smtp.helo=");
            h.push_str(&pvalue(helo));
        }
    }
    if verdict.dkim.is_empty() {
        h.push_str(";\r\n\tdkim=none");
    }
    for dkim in &verdict.dkim {
        h.push_str(";\r\n\tdkim=");
        h.push_str(dkim.outcome.keyword());
        if let Some(d) = &dkim.domain {
            h.push_str(" header.d=");
            h.push_str(&pvalue(d));
        }
        if let Some(s) = &dkim.selector {
            h.push_str(" header.s=");
            h.push_str(&pvalue(s));
        }
    }
    h.push_str(";\r\n\tdmarc=");
    h.push_str(verdict.dmarc.keyword());
    if !verdict.dmarc_domain.is_empty() {
        h.push_str(" header.from=");
        h.push_str(&pvalue(&verdict.dmarc_domain));
        h.push_str(match verdict.dmarc_policy {
            DmarcPolicy::None => " policy.dmarc=none",
            DmarcPolicy::Quarantine => " policy.dmarc=quarantine",
            DmarcPolicy::Reject => " policy.dmarc=reject",
        });
    }
    h.push_str("\r\n");
    h
}

/// A property value (RFC 8601 §2.2 `pvalue`): bare when it is an address or a token,
/// quoted otherwise. Control characters are dropped so a hostile HELO cannot add lines.
fn pvalue(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    let bare = !clean.is_empty()
        && clean
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-./=?^_`{|}~@".contains(&b));
    if bare {
        clean
    } else {
        let mut quoted = String::with_capacity(clean.len() + 2);
        quoted.push('"');
        for c in clean.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    }
}

/// `header` on top of `message`, without any `Authentication-Results` field that
/// claims to be ours (RFC 8601 §5: a sender could otherwise forge our verdict).
pub fn prepend_results(header: &str, message: &[u8], hostname: &str) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    let mut out = Vec::with_capacity(header.len() + message.len());
    out.extend_from_slice(header.as_bytes());
    let mut pos = 0;
    while pos < end {
        // One field: its first line and the folded lines that follow.
        let mut next = pos;
        loop {
            next = match message[next..end].iter().position(|&b| b == b'\n') {
                Some(lf) => next + lf + 1,
                None => end,
            };
            if next >= end || !matches!(message[next], b' ' | b'\t') {
                break;
            }
        }
        let field = &message[pos..next];
        if !claims_to_be_ours(field, hostname) {
            out.extend_from_slice(field);
        }
        pos = next;
    }
    out.extend_from_slice(&message[end..]);
    out
}

fn claims_to_be_ours(field: &[u8], hostname: &str) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    let Some(value) = field
        .get(..NAME.len())
        .filter(|head| head.eq_ignore_ascii_case(NAME))
        .and_then(|_| field.get(NAME.len()..))
    else {
        return false;
    };
    let value = String::from_utf8_lossy(value);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or_default()
        .trim_matches('"');
    id.eq_ignore_ascii_case(hostname)
}

/// TEST ONLY: TXT records from a file, answering every lookup.
#[derive(Default)]
struct StaticRecords {
    txt: HashMap<Box<str>, Txt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsFile {
    #[serde(default)]
    txt: HashMap<String, String>,
    /// Names whose lookup fails as if the DNS server did not answer.
    #[serde(default)]
    servfail: Vec<String>,
}

impl StaticRecords {
    fn load(path: &Path) -> anyhow::Result<StaticRecords> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: RecordsFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut txt = HashMap::new();
        for (name, value) in file.txt {
            let v = value.as_bytes();
            let record: Txt = if value.starts_with("v=spf1") {
                Spf::parse(v).into()
            } else if value.starts_with("v=DMARC1") {
                Dmarc::parse(v).into()
            } else if value.starts_with("v=DKIM1") || name.contains("._domainkey.") {
                DomainKey::parse(v).into()
            } else {
                anyhow::bail!("{}: record for {name} is not SPF, DKIM or DMARC", path.display());
            };
            txt.insert(fqdn(&name), record);
        }
        for name in file.servfail {
            txt.insert(
                fqdn(&name),
                Txt::Error(mail_auth::Error::Dns(DnsError::Resolver(
                    "test: no answer".into(),
                ))),
            );
        }
        Ok(StaticRecords { txt })
    }
}

fn fqdn(name: &str) -> Box<str> {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name.into_boxed_str()
}

/// The TXT cache handed to `mail-auth`: with static records, every name is answered
/// (absent ones with NXDOMAIN); without, every lookup goes to the resolver, whose own
/// cache keeps answers for their TTL.
struct TxtAnswers<'a>(Option<&'a StaticRecords>);

impl ResolverCache<Box<str>, Txt> for TxtAnswers<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let records = self.0?;
        Some(records.txt.get(name).cloned().unwrap_or_else(|| {
            Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain,
            )))
        }))
    }
    fn remove<Q>(&self, _name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _key: Box<str>, _value: Txt, _valid_until: std::time::Instant) {}
}

/// A, AAAA, MX and PTR lookups: with static records, none exist.
struct OtherAnswers<T>(bool, PhantomData<T>);

impl<K, T> ResolverCache<K, RecordSet<T>> for OtherAnswers<T> {
    fn get<Q>(&self, _name: &Q) -> Option<RecordSet<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.then(|| RecordSet {
            rrset: Arc::from(Vec::new()),
            dnssec_status: DnssecStatus::Indeterminate,
        })
    }
    fn remove<Q>(&self, _name: &Q) -> Option<RecordSet<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _key: K, _value: RecordSet<T>, _valid_until: std::time::Instant) {}
}

/// Checks inbound MX mail; built once at start from `[smtp]`.
pub struct InboundVerifier {
    mode: VerifyInbound,
    hostname: String,
    trusted: Vec<Network>,
    budget: Duration,
    authenticator: MessageAuthenticator,
    records: Option<StaticRecords>,
    /// The server's runtime: `check` runs on a blocking-pool thread and waits there.
    runtime: tokio::runtime::Handle,
}

/// Longest wait for one DNS answer (two tries); the message's budget bounds the total.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

impl InboundVerifier {
    /// `None` when `verify_inbound = "off"`. Must be called inside the tokio runtime.
    pub fn from_config(
        config: &InboundAuthConfig,
        hostname: &str,
    ) -> anyhow::Result<Option<Arc<InboundVerifier>>> {
        if config.verify_inbound == VerifyInbound::Off {
            return Ok(None);
        }
        let records = match &config.test_dns_records {
            Some(path) => {
                tracing::warn!(path = %path.display(), "smtp.test_dns_records is set: DNS answers come from a TEST file");
                Some(StaticRecords::load(path)?)
            }
            None => None,
        };
        let (resolver_config, mut options) = match mail_auth::hickory_resolver::system_conf::read_system_conf(
        ) {
            Ok(system) => system,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; using Cloudflare's resolvers for SPF/DKIM/DMARC");
                (
                    ResolverConfig::udp_and_tcp(&mail_auth::hickory_resolver::config::CLOUDFLARE),
                    Default::default(),
                )
            }
        };
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 2;
        options.cache_size = options.cache_size.max(4096);
        let authenticator =
            MessageAuthenticator::new(resolver_config, options).context("cannot start the DNS resolver")?;
        let trusted = config
            .trusted_relays
            .iter()
            .filter_map(|n| Network::parse(n))
            .collect();
        tracing::info!(mode = ?config.verify_inbound, "inbound SPF/DKIM/DMARC checks on the MX");
        Ok(Some(Arc::new(InboundVerifier {
            mode: config.verify_inbound,
            hostname: hostname.to_string(),
            trusted,
            budget: Duration::from_secs(config.dns_timeout_secs),
            authenticator,
            records,
            runtime: tokio::runtime::Handle::current(),
        })))
    }

    /// For MX mail: `Ok(None)` when the peer is trusted (store `message` as is),
    /// `Ok(Some(bytes))` the message with its `Authentication-Results` header, or the
    /// `550 5.7.1` refusal. Blocks (DNS): call it from a blocking-pool thread.
    pub fn check(&self, envelope: &Envelope, message: &[u8]) -> Result<Option<Vec<u8>>, DeliveryError> {
        if self.trusted.iter().any(|n| n.contains(envelope.peer)) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let verdict = self.runtime.block_on(self.verify(envelope, message));
        tracing::debug!(?verdict, elapsed = ?started.elapsed(), "inbound authentication");
        match decide(self.mode, &self.hostname, &verdict) {
            Decision::Accept { header } => {
                if verdict.dmarc == Outcome::Fail {
                    tracing::info!(
                        domain = %verdict.dmarc_domain,
                        policy = ?verdict.dmarc_policy,
                        "message fails DMARC; accepted with the verdict in Authentication-Results"
                    );
                }
                Ok(Some(prepend_results(&header, message, &self.hostname)))
            }
            Decision::Reject { text } => {
                tracing::info!(
                    from = %envelope.mail_from,
                    peer = %envelope.peer,
                    domain = %verdict.dmarc_domain,
                    "message refused: DMARC p=reject"
                );
                match SmtpReply::refusal(550, "5.7.1", &text) {
                    Ok(reply) => Err(DeliveryError::Rejected(reply)),
                    // 550 with 5.7.1 is a refusal by construction; were it ever refused,
                    // the message is still not accepted.
                    Err(e) => Err(DeliveryError::Temporary(e.to_string())),
                }
            }
        }
    }

    async fn verify(&self, envelope: &Envelope, message: &[u8]) -> Verdict {
        let deadline = tokio::time::Instant::now() + self.budget;
        let static_mode = self.records.is_some();
        let txt = TxtAnswers(self.records.as_ref());
        let mx = OtherAnswers::<mail_auth::MX>(static_mode, PhantomData);
        let ipv4 = OtherAnswers::<std::net::Ipv4Addr>(static_mode, PhantomData);
        let ipv6 = OtherAnswers::<std::net::Ipv6Addr>(static_mode, PhantomData);
        let ptr = OtherAnswers::<Box<str>>(static_mode, PhantomData);
        macro_rules! params {
            ($p:expr) => {
                Parameters::new($p)
                    .with_txt_cache(&txt)
                    .with_mx_cache(&mx)
                    .with_ipv4_cache(&ipv4)
                    .with_ipv6_cache(&ipv6)
                    .with_ptr_cache(&ptr)
            };
        }
        let helo = envelope.helo.as_str();
        let mail_from = envelope.mail_from.as_str();
        let spf_identity = if mail_from.is_empty() {
            SpfIdentity::Helo(helo.to_string())
        } else {
            SpfIdentity::MailFrom(mail_from.to_string())
        };
        let spf_output = tokio::time::timeout_at(
            deadline,
            self.authenticator.verify_spf(params!(SpfParameters::verify(
                envelope.peer,
                helo,
                &self.hostname,
                mail_from,
            ))),
        )
        .await
        .ok();
        let spf = spf_output
            .as_ref()
            .map_or(Outcome::TempError, |o| spf_outcome(o.result()));

        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // No header block to check: nothing for DKIM or DMARC to say.
            return Verdict {
                spf,
                spf_identity,
                dkim: Vec::new(),
                dmarc: Outcome::None,
                dmarc_domain: String::new(),
                dmarc_policy: DmarcPolicy::None,
            };
        };
        let dkim_output = tokio::time::timeout_at(deadline, self.authenticator.verify_dkim(params!(&parsed)))
            .await
            .ok();
        let dkim: Vec<DkimVerdict> = match &dkim_output {
            Some(outputs) => outputs
                .iter()
                .map(|o| DkimVerdict {
                    outcome: dkim_outcome(o.result()),
                    domain: o.signature().map(|s| s.d.clone()),
                    selector: o.signature().map(|s| s.s.clone()),
                })
                .collect(),
            None => vec![DkimVerdict {
                outcome: Outcome::TempError,
                domain: None,
                selector: None,
            }],
        };
        let from_domain = parsed
            .from
            .first()
            .and_then(|f| EmailAddress::parse(f))
            .map(|a| a.domain().to_string())
            .unwrap_or_default();
        let (Some(spf_output), Some(dkim_output)) = (&spf_output, &dkim_output) else {
            // Out of time before DMARC could be evaluated: it cannot fail this message.
            return Verdict {
                spf,
                spf_identity,
                dkim,
                dmarc: Outcome::TempError,
                dmarc_domain: from_domain,
                dmarc_policy: DmarcPolicy::None,
            };
        };
        let sender = EmailAddress::parse(mail_from);
        let mail_from_domain = sender.as_ref().map_or(helo, |a| a.domain());
        let dmarc_output = tokio::time::timeout_at(
            deadline,
            self.authenticator.verify_dmarc(params!(DmarcParameters {
                message: &parsed,
                dkim_output,
                dkim2_output: None,
                rfc5321_mail_from_domain: mail_from_domain,
                spf_output,
            })),
        )
        .await;
        let (mut dmarc, dmarc_domain, dmarc_policy) = match dmarc_output {
            Ok(out) => (
                dmarc_outcome(&out.result()),
                if out.domain().is_empty() {
                    from_domain
                } else {
                    out.domain().to_string()
                },
                match out.policy() {
                    Policy::Reject => DmarcPolicy::Reject,
                    Policy::Quarantine => DmarcPolicy::Quarantine,
                    Policy::None | Policy::Unspecified => DmarcPolicy::None,
                },
            ),
            Err(_) => (Outcome::TempError, from_domain, DmarcPolicy::None),
        };
        // A check that could not be made might have passed: DMARC has not failed then.
        if dmarc == Outcome::Fail
            && (spf == Outcome::TempError || dkim.iter().any(|d| d.outcome == Outcome::TempError))
        {
            dmarc = Outcome::TempError;
        }
        Verdict {
            spf,
            spf_identity,
            dkim,
            dmarc,
            dmarc_domain,
            dmarc_policy,
        }
    }
}

fn spf_outcome(result: SpfResult) -> Outcome {
    match result {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(result: &DkimResult) -> Outcome {
    match result {
        DkimResult::Pass => Outcome::Pass,
        DkimResult::Neutral(_) => Outcome::Neutral,
        DkimResult::Fail(_) => Outcome::Fail,
        DkimResult::PermError(_) => Outcome::PermError,
        DkimResult::TempError(_) => Outcome::TempError,
        DkimResult::None => Outcome::None,
    }
}

fn dmarc_outcome(result: &DmarcResult) -> Outcome {
    match result {
        DmarcResult::Pass => Outcome::Pass,
        DmarcResult::Fail(_) => Outcome::Fail,
        DmarcResult::TempError(_) => Outcome::TempError,
        DmarcResult::PermError(_) => Outcome::PermError,
        DmarcResult::None => Outcome::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(dmarc: Outcome, policy: DmarcPolicy) -> Verdict {
        Verdict {
            spf: Outcome::Fail,
            spf_identity: SpfIdentity::MailFrom("ceo@bank.example".into()),
            dkim: Vec::new(),
            dmarc,
            dmarc_domain: "bank.example".into(),
            dmarc_policy: policy,
        }
    }

    #[test]
    fn dmarc_fail_at_a_reject_domain_is_refused_only_when_enforcing() {
        let v = verdict(Outcome::Fail, DmarcPolicy::Reject);
        assert_eq!(
            decide(VerifyInbound::Enforce, "mx.example.com", &v),
            Decision::Reject {
                text: "Message rejected: it fails the DMARC policy (p=reject) of bank.example".into()
            }
        );
        let Decision::Accept { header } = decide(VerifyInbound::Headers, "mx.example.com", &v) else {
            panic!("headers mode never refuses");
        };
        assert_eq!(
            header,
            "Authentication-Results: mx.example.com;\r\n\tspf=fail smtp.mailfrom=ceo@bank.example;\r\n\t\
             dkim=none;\r\n\tdmarc=fail header.from=bank.example policy.dmarc=reject\r\n"
        );
    }

    #[test]
    fn quarantine_temperror_and_none_are_accepted_with_the_verdict() {
        for (outcome, policy, text) in [
            (
                Outcome::Fail,
                DmarcPolicy::Quarantine,
                "dmarc=fail header.from=bank.example policy.dmarc=quarantine",
            ),
            (
                Outcome::TempError,
                DmarcPolicy::Reject,
                "dmarc=temperror header.from=bank.example policy.dmarc=reject",
            ),
            (Outcome::PermError, DmarcPolicy::Reject, "dmarc=permerror"),
            (Outcome::Pass, DmarcPolicy::Reject, "dmarc=pass"),
            (Outcome::None, DmarcPolicy::None, "dmarc=none"),
        ] {
            match decide(VerifyInbound::Enforce, "mx", &verdict(outcome, policy)) {
                Decision::Accept { header } => assert!(header.contains(text), "{header}"),
                other => panic!("{outcome:?}/{policy:?} refused: {other:?}"),
            }
        }
    }

    #[test]
    fn header_lists_every_signature_and_the_helo_for_a_null_sender() {
        let v = Verdict {
            spf: Outcome::TempError,
            spf_identity: SpfIdentity::Helo("mail.sender.example".into()),
            dkim: vec![
                DkimVerdict {
                    outcome: Outcome::Pass,
                    domain: Some("sender.example".into()),
                    selector: Some("s1".into()),
                },
                DkimVerdict {
                    outcome: Outcome::TempError,
                    domain: None,
                    selector: None,
                },
            ],
            dmarc: Outcome::None,
            dmarc_domain: String::new(),
            dmarc_policy: DmarcPolicy::None,
        };
        assert_eq!(
            results_header("mx.example.com", &v),
            "Authentication-Results: mx.example.com;\r\n\tspf=temperror smtp.helo=mail.sender.example;\r\n\t\
             dkim=pass header.d=sender.example header.s=s1;\r\n\tdkim=temperror;\r\n\tdmarc=none\r\n"
        );
    }

    #[test]
    fn values_are_quoted_and_cannot_add_lines() {
        assert_eq!(pvalue("a@b.example"), "a@b.example");
        assert_eq!(
            pvalue("odd \"name\"\r\nX-Evil: 1"),
            "\"odd \\\"name\\\"X-Evil: 1\""
        );
        assert_eq!(pvalue(""), "\"\"");
    }

    #[test]
    fn forged_results_for_our_hostname_are_removed_others_kept() {
        let message = b"Received: from x\r\n\tby mx\r\nAuthentication-Results: MX.example.com;\r\n\tdmarc=pass\r\n\
Authentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example.com; body\r\n";
        let out = prepend_results(
            "Authentication-Results: mx.example.com; none\r\n",
            message,
            "mx.example.com",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Authentication-Results: mx.example.com; none\r\nReceived: from x\r\n\tby mx\r\n\
Authentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example.com; body\r\n"
        );
    }

    #[test]
    fn config_defaults_and_problems() {
        let c = InboundAuthConfig::default();
        assert_eq!(c.verify_inbound, VerifyInbound::Headers);
        assert!(c.validate().is_empty());
        let bad = InboundAuthConfig {
            trusted_relays: vec!["10.0.0.0/99".into()],
            dns_timeout_secs: 0,
            ..InboundAuthConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["smtp.trusted_relays[0]", "smtp.dns_timeout_secs"]);
    }

    #[test]
    fn static_records_answer_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns.toml");
        std::fs::write(
            &path,
            "servfail = [\"slow.example\"]\n[txt]\n\"Bank.example\" = \"v=spf1 ip4:192.0.2.1 -all\"\n\
             \"_dmarc.bank.example\" = \"v=DMARC1; p=reject\"\n",
        )
        .unwrap();
        let records = StaticRecords::load(&path).unwrap();
        let txt = TxtAnswers(Some(&records));
        assert!(matches!(txt.get("bank.example."), Some(Txt::Spf(_))));
        assert!(matches!(txt.get("_dmarc.bank.example."), Some(Txt::Dmarc(_))));
        assert!(matches!(
            txt.get("nowhere.example."),
            Some(Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(_))))
        ));
        assert!(matches!(
            txt.get("slow.example."),
            Some(Txt::Error(mail_auth::Error::Dns(DnsError::Resolver(_))))
        ));
        assert!(TxtAnswers(None).get("bank.example.").is_none());
    }

    fn envelope(peer: &str, mail_from: &str) -> Envelope {
        Envelope {
            id: "T1".into(),
            mode: understudy_protocol::smtp::SmtpMode::Mx,
            mail_from: mail_from.into(),
            rcpts: vec!["anna@example.com".into()],
            helo: "mail.sender.example".into(),
            peer: peer.parse().unwrap(),
            tls: false,
            account: None,
            smtputf8: false,
            body_8bit: false,
        }
    }

    /// SPF and DMARC end to end through mail-auth with the test records (no network).
    #[test]
    fn spf_and_dmarc_through_mail_auth_with_test_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns.toml");
        std::fs::write(
            &path,
            "servfail = [\"_dmarc.flaky.example\"]\n[txt]\n\
             \"bank.example\" = \"v=spf1 ip4:192.0.2.1 -all\"\n\
             \"_dmarc.bank.example\" = \"v=DMARC1; p=reject\"\n\
             \"flaky.example\" = \"v=spf1 ip4:192.0.2.1 -all\"\n",
        )
        .unwrap();
        let config = InboundAuthConfig {
            verify_inbound: VerifyInbound::Enforce,
            trusted_relays: vec!["10.0.0.0/8".into()],
            test_dns_records: Some(path),
            ..InboundAuthConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let verifier = runtime
            .block_on(async { InboundVerifier::from_config(&config, "mx.example.com") })
            .unwrap()
            .unwrap();
        let message = b"From: CEO <ceo@bank.example>\r\nSubject: pay\r\n\r\nnow\r\n";
        // From the bank's own server: SPF passes and is aligned, so DMARC passes.
        let good = verifier
            .check(&envelope("192.0.2.1", "ceo@bank.example"), message)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(good).unwrap();
        assert!(
            text.starts_with(
                "Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=ceo@bank.example;\r\n\t\
                 dkim=none;\r\n\tdmarc=pass header.from=bank.example policy.dmarc=reject\r\nFrom: CEO"
            ),
            "{text}"
        );
        // Anyone else: refused.
        let forged = verifier.check(&envelope("198.51.100.7", "ceo@bank.example"), message);
        assert!(
            matches!(&forged, Err(DeliveryError::Rejected(reply)) if reply.code() == 550 && reply.enhanced() == "5.7.1"),
            "{forged:?}"
        );
        // A trusted relay is not checked.
        assert_eq!(
            verifier.check(&envelope("10.1.2.3", "ceo@bank.example"), message),
            Ok(None)
        );
        // The DMARC record cannot be fetched: temperror, accepted.
        let flaky = b"From: ceo@flaky.example\r\n\r\nx\r\n";
        let out = verifier
            .check(&envelope("198.51.100.7", "ceo@flaky.example"), flaky)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("spf=fail") && text.contains("dmarc=temperror"),
            "{text}"
        );
    }
}
