//! Delivery status notifications (RFC 3464): a multipart/report with a readable
//! explanation, the machine-readable per-recipient status, and the original headers.
//! DKIM signing of outgoing mail with `mail-auth` lives here too: both shape a message
//! before it leaves.

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use rustls_pki_types::pem::PemObject;

/// Why one recipient was not delivered.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// The remote reply, or our own reason (queue lifetime).
    pub diagnostic: String,
    /// The host that answered, if any.
    pub remote_mta: Option<String>,
    /// True for expiry (Action: failed with status 4.4.7).
    pub expired: bool,
}

fn status_of(f: &FailedRecipient) -> String {
    if f.expired {
        return "4.4.7".into();
    }
    // An enhanced status code in the reply ("550 5.1.1 ...") is the best status.
    let mut words = f.diagnostic.split_whitespace();
    let _code = words.next();
    match words.next() {
        Some(w) if w.split('.').count() == 3 && w.split('.').all(|p| p.parse::<u16>().is_ok()) => w.into(),
        _ if f.diagnostic.starts_with('4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// Builds the DSN for `failed` recipients of a message sent by `sender`.
pub fn build_dsn(
    hostname: &str,
    sender: &str,
    original: &[u8],
    original_envelope_id: Option<&str>,
    failed: &[FailedRecipient],
    arrival: i64,
) -> Vec<u8> {
    let mut text = format!(
        "This is the mail system at host {hostname}.\r\n\r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         The original message's headers are attached.\r\n\r\n"
    );
    for f in failed {
        let what = if f.expired {
            "could not be delivered in time and was given up".to_string()
        } else {
            match &f.remote_mta {
                Some(host) => format!("was refused by {host}"),
                None => "was refused".to_string(),
            }
        };
        text.push_str(&format!(
            "<{}>: {what}:\r\n    {}\r\n\r\n",
            f.address, f.diagnostic
        ));
    }
    let arrival_date = time::OffsetDateTime::from_unix_timestamp(arrival)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())
        .unwrap_or_default();
    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(id) = original_envelope_id {
        status.push_str(&format!("X-Original-Message-ID: {id}\r\n"));
    }
    if !arrival_date.is_empty() {
        status.push_str(&format!("Arrival-Date: {arrival_date}\r\n"));
    }
    for f in failed {
        status.push_str("\r\n");
        status.push_str(&format!("Final-Recipient: rfc822; {}\r\n", f.address));
        status.push_str("Action: failed\r\n");
        status.push_str(&format!("Status: {}\r\n", status_of(f)));
        if let Some(host) = &f.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
            status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", f.diagnostic));
        } else {
            status.push_str(&format!("Diagnostic-Code: x-understudy; {}\r\n", f.diagnostic));
        }
    }
    let header_end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(original.len());
    let headers = original[..header_end].to_vec();
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", text),
            MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
            MimePart::new("text/rfc822-headers", headers).transfer_encoding("7bit"),
        ],
    );
    let from = format!("MAILER-DAEMON@{hostname}");
    MessageBuilder::new()
        .from(("Mail Delivery System", from.as_str()))
        .to(sender)
        .subject("Undelivered Mail Returned to Sender")
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

/// Prepends a DKIM-Signature for `domain` with the PEM key at `key_path` (RSA, PKCS#8 or
/// PKCS#1). On a key problem the message goes unsigned and the reason is logged: mail
/// should not stop flowing because a key file went missing.
pub fn dkim_sign(message: &[u8], domain: &str, selector: &str, key_path: &str) -> Vec<u8> {
    let signed = (|| -> anyhow::Result<Vec<u8>> {
        let pem = std::fs::read_to_string(key_path)?;
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())?;
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let signature = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers([
                "From",
                "To",
                "Cc",
                "Subject",
                "Date",
                "Message-ID",
                "Reply-To",
                "In-Reply-To",
                "References",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
            ])
            .sign(message)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut out = signature.to_header().into_bytes();
        out.extend_from_slice(message);
        Ok(out)
    })();
    match signed {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(domain, key = key_path, error = %format!("{e:#}"), "DKIM signing failed; sending unsigned");
            message.to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_is_a_delivery_status_report() {
        let dsn = build_dsn(
            "mx.example.com",
            "anna@example.com",
            b"From: anna@example.com\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody text\r\n",
            Some("<1@x>"),
            &[FailedRecipient {
                address: "bob@remote.org".into(),
                diagnostic: "550 5.1.1 no such user".into(),
                remote_mta: Some("127.0.0.1:25".into()),
                expired: false,
            }],
            1_700_000_000,
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("multipart/report"), "{text}");
        assert!(
            text.contains("report-type=\"delivery-status\"") || text.contains("report-type=delivery-status"),
            "{text}"
        );
        assert!(text.contains("Final-Recipient: rfc822; bob@remote.org"), "{text}");
        assert!(text.contains("Status: 5.1.1"), "{text}");
        assert!(text.contains("Subject: hi"), "{text}");
        assert!(!text.contains("body text"), "{text}");
        assert!(
            text.contains("To: <anna@example.com>") || text.contains("To: anna@example.com"),
            "{text}"
        );
    }
}
