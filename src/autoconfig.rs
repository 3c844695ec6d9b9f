//! Client setup in a hurry: the settings a user needs, as Thunderbird autoconfig
//! (`/mail/config-v1.1.xml`), Outlook autodiscover (POX, `/autodiscover/autodiscover.xml`),
//! an Apple configuration profile (`/apple.mobileconfig?email=`), and plain text for
//! `understudy client-setup ADDRESS`. Served over HTTPS with the server's certificate on
//! `[autoconfig] listen`. Settings are given for any address of a protected domain, so
//! the answers do not tell which users exist.

use std::fmt::Write as _;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use understudy_storage::EmailAddress;
use understudy_storage::Store;

use crate::config::Config;
use crate::config_types::Service;
use crate::shared::Shared;

/// Public host name and implicit-TLS ports users should configure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub address: String,
    pub domain: String,
    pub host: String,
    pub imap: Option<u16>,
    pub pop3: Option<u16>,
    pub smtp: Option<u16>,
}

fn port(config: &Config, service: Service) -> Option<u16> {
    config
        .listen
        .addresses(service)
        .first()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.port())
}

/// Settings for `address`, or `None` if it is not an address of a protected domain.
/// Ports come from the configuration.
pub fn settings(config: &Config, store: &Store, address: &str) -> Option<Settings> {
    settings_with_ports(config, store, address, &|service| port(config, service))
}

/// As `settings`, with the ports the running server actually bound (port 0 in a config
/// means "any").
pub fn settings_with_ports(
    config: &Config,
    store: &Store,
    address: &str,
    port: &dyn Fn(Service) -> Option<u16>,
) -> Option<Settings> {
    let address = EmailAddress::normalized(address).ok()?;
    let domain = address.domain().to_string();
    let address = address.into_string();
    store.domain(&domain).ok()??;
    Some(Settings {
        address,
        domain,
        host: config.hostname.clone(),
        imap: port(Service::Imaps),
        pop3: port(Service::Pop3s),
        smtp: port(Service::Submissions),
    })
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Plain text for people.
pub fn describe(s: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Mail settings for {} during an outage", s.address);
    let _ = writeln!(
        out,
        "User name: {} (the full address)   Password: the usual one",
        s.address
    );
    if let Some(p) = s.imap {
        let _ = writeln!(
            out,
            "Incoming (IMAP): {}  port {p}  SSL/TLS  normal password",
            s.host
        );
    }
    if let Some(p) = s.pop3 {
        let _ = writeln!(
            out,
            "Incoming (POP3): {}  port {p}  SSL/TLS  normal password",
            s.host
        );
    }
    if let Some(p) = s.smtp {
        let _ = writeln!(
            out,
            "Outgoing (SMTP): {}  port {p}  SSL/TLS  normal password, authentication required",
            s.host
        );
    }
    out
}

pub fn thunderbird(s: &Settings) -> String {
    let host = xml(&s.host);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} (continuity)</displayName>\n",
        d = xml(&s.domain)
    );
    for (kind, port, tag) in [
        ("imap", s.imap, "incomingServer"),
        ("pop3", s.pop3, "incomingServer"),
        ("smtp", s.smtp, "outgoingServer"),
    ] {
        if let Some(port) = port {
            let _ = write!(
                out,
                "    <{tag} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{port}</port>\n      <socketType>SSL</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </{tag}>\n"
            );
        }
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

pub fn outlook(s: &Settings) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
    );
    for (kind, port) in [("IMAP", s.imap), ("POP3", s.pop3), ("SMTP", s.smtp)] {
        if let Some(port) = port {
            let _ = write!(
                out,
                "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{}</Server>\n        <Port>{port}</Port>\n        <LoginName>{}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        <SSL>on</SSL>\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n",
                xml(&s.host),
                xml(&s.address)
            );
        }
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

/// A stable UUID-shaped identifier derived from the address, so reinstalling the profile
/// replaces it instead of adding a second account.
fn uuid(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
    .to_uppercase()
}

pub fn apple(s: &Settings) -> String {
    let (imap, smtp) = (s.imap.unwrap_or(993), s.smtp.unwrap_or(465));
    let (a, h, d) = (xml(&s.address), xml(&s.host), xml(&s.domain));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{a} (continuity)</string>
      <key>EmailAccountType</key><string>EmailTypeIMAP</string>
      <key>EmailAddress</key><string>{a}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{h}</string>
      <key>IncomingMailServerPortNumber</key><integer>{imap}</integer>
      <key>IncomingMailServerUseSSL</key><true/>
      <key>IncomingMailServerUsername</key><string>{a}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{h}</string>
      <key>OutgoingMailServerPortNumber</key><integer>{smtp}</integer>
      <key>OutgoingMailServerUseSSL</key><true/>
      <key>OutgoingMailServerUsername</key><string>{a}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadIdentifier</key><string>email.understudy.{d}.account</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{u1}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>{d} mail (continuity)</string>
  <key>PayloadIdentifier</key><string>email.understudy.{d}</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{u2}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        u1 = uuid(&format!("account {}", s.address)),
        u2 = uuid(&format!("profile {}", s.address)),
    )
}

/// The address in an Outlook autodiscover request body (`<EMailAddress>`).
fn requested_address(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let start = text.find("<EMailAddress>")? + "<EMailAddress>".len();
    let end = text[start..].find("</EMailAddress>")? + start;
    xml_text(text[start..end].trim())
}

/// Character data with its entity and character references decoded (XML 1.0 §4.6 and
/// §4.1): `anna&#64;example.com` is anna@example.com, as Outlook may send it (issue 19
/// item 10). `None` for a malformed reference.
fn xml_text(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';')? + amp;
        let name = &rest[amp + 1..semi];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => name.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The autoconfig documents, for `crate::web::serve`: any method (Outlook POSTs its
/// request, Thunderbird GETs), the address from the query (`emailaddress` or `email`,
/// any case) or from Outlook's request body.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/mail/config-v1.1.xml", any(thunderbird_doc))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            any(thunderbird_doc),
        )
        .route("/autodiscover/autodiscover.xml", any(outlook_doc))
        .route("/Autodiscover/Autodiscover.xml", any(outlook_doc))
        .route("/apple.mobileconfig", any(apple_doc))
        .route("/settings.txt", any(text_doc))
        .fallback(crate::metrics::not_found)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

type Params = axum::extract::Query<Vec<(String, String)>>;

fn query_address(query: &[(String, String)]) -> Option<String> {
    ["emailaddress", "email"].iter().find_map(|name| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    })
}

/// The settings for `address`, with the ports the server bound; `None` (404) for an
/// address outside the protected domains.
async fn lookup(shared: Arc<Shared>, address: Option<String>) -> Option<Settings> {
    let address = address?;
    tokio::task::spawn_blocking(move || {
        let bound = |service| shared.bound_port(service);
        settings_with_ports(&shared.config, &shared.store, &address, &bound)
    })
    .await
    .ok()
    .flatten()
}

fn document(
    settings: Option<Settings>,
    content_type: &'static str,
    render: fn(&Settings) -> String,
) -> Response {
    match settings {
        Some(s) => ([(CONTENT_TYPE, content_type)], render(&s)).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn thunderbird_doc(State(shared): State<Arc<Shared>>, axum::extract::Query(query): Params) -> Response {
    document(
        lookup(shared, query_address(&query)).await,
        "application/xml",
        thunderbird,
    )
}

async fn outlook_doc(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    document(
        lookup(shared, requested_address(&body)).await,
        "application/xml",
        outlook,
    )
}

async fn apple_doc(State(shared): State<Arc<Shared>>, axum::extract::Query(query): Params) -> Response {
    document(
        lookup(shared, query_address(&query)).await,
        "application/x-apple-aspen-config",
        apple,
    )
}

async fn text_doc(State(shared): State<Arc<Shared>>, axum::extract::Query(query): Params) -> Response {
    document(
        lookup(shared, query_address(&query)).await,
        "text/plain; charset=utf-8",
        describe,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn autodiscover_addresses_are_xml_decoded() {
        let body = |a: &str| {
            format!("<Autodiscover><Request><EMailAddress>{a}</EMailAddress></Request></Autodiscover>")
        };
        assert_eq!(
            requested_address(body("anna&#64;example.com").as_bytes()).as_deref(),
            Some("anna@example.com")
        );
        assert_eq!(
            requested_address(body("anna&#x40;example.com").as_bytes()).as_deref(),
            Some("anna@example.com")
        );
        assert_eq!(
            requested_address(body("o&apos;neil@example.com").as_bytes()).as_deref(),
            Some("o'neil@example.com")
        );
        assert_eq!(
            requested_address(body("a&amp;b@example.com").as_bytes()).as_deref(),
            Some("a&b@example.com")
        );
        assert_eq!(requested_address(body("bad&#xZZ;@x").as_bytes()), None);
        assert_eq!(
            requested_address(body("plain@example.com").as_bytes()).as_deref(),
            Some("plain@example.com")
        );
    }

    use super::*;

    fn sample() -> Settings {
        Settings {
            address: "anna@example.com".into(),
            domain: "example.com".into(),
            host: "mx<1>.example.com".into(),
            imap: Some(993),
            pop3: None,
            smtp: Some(465),
        }
    }

    #[test]
    fn documents_escape_and_list_what_is_served() {
        let t = thunderbird(&sample());
        assert!(t.contains("<hostname>mx&lt;1&gt;.example.com</hostname>"), "{t}");
        assert!(
            t.contains("type=\"imap\"") && !t.contains("type=\"pop3\"") && t.contains("<port>465</port>")
        );
        let o = outlook(&sample());
        assert!(o.contains("<Type>IMAP</Type>") && o.contains("<LoginName>anna@example.com</LoginName>"));
        let a = apple(&sample());
        assert!(a.contains("<integer>993</integer>") && a.contains("com.apple.mail.managed"));
        assert_eq!(uuid("x"), uuid("x"));
        assert_eq!(
            requested_address(b"<Request><EMailAddress>anna@example.com</EMailAddress></Request>").as_deref(),
            Some("anna@example.com")
        );
    }
}
