//! Configuration C on the MX: a message DKIM-signed (in the test, with `mail-auth`) for a
//! `p=reject` domain is stored with an `Authentication-Results` header saying so; a
//! forged one from another `p=reject` domain is refused with `550 5.7.1` and nothing is
//! stored. DNS answers come from the server's test-only record file: no network.

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::pem::PemObject;

use crate::harness::*;

fn sign(message: &[u8], key: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(key).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let key = RsaKey::<Sha256>::from_key_der(der).unwrap();
    let signature = DkimSigner::from_key(key)
        .domain("good.example")
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(message)
        .unwrap();
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(message);
    out
}

#[test]
fn dkim_signed_mail_passes_and_forged_mail_from_a_reject_domain_gets_550() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = dkim_key(tmp.path());
    let records = tmp.path().join("dns.toml");
    // good.example's SPF does not list 127.0.0.1: the DKIM signature alone must carry DMARC.
    std::fs::write(
        &records,
        format!(
            "[txt]\n\
             \"good.example\" = \"v=spf1 ip4:192.0.2.10 -all\"\n\
             \"sel._domainkey.good.example\" = \"v=DKIM1; k=rsa; p={public}\"\n\
             \"_dmarc.good.example\" = \"v=DMARC1; p=reject\"\n\
             \"bank.example\" = \"v=spf1 ip4:192.0.2.1 -all\"\n\
             \"_dmarc.bank.example\" = \"v=DMARC1; p=reject\"\n"
        ),
    )
    .unwrap();
    let config = format!(
        "[smtp]\nverify_inbound = \"enforce\"\ntrusted_relays = []\ntest_dns_records = \"{}\"\n",
        records.display()
    );
    let server = TestServer::setup(&config, |s| {
        s.admin_ok(&["domain", "add", "example.com"]);
        s.add_user("anna@example.com", PASSWORD);
    });

    let good = sign(
        b"From: News <news@good.example>\r\nTo: anna@example.com\r\nSubject: signed\r\n\
Message-ID: <signed@good.example>\r\n\r\nA signed message.\r\n",
        &key,
    );
    // A sender's own verdict claiming to be ours must not survive (RFC 8601 §5).
    let mut good_with_forged_results = b"Authentication-Results: localhost; dmarc=pass\r\n".to_vec();
    good_with_forged_results.extend_from_slice(&good);
    let forged =
        b"From: CEO <ceo@bank.example>\r\nTo: anna@example.com\r\nSubject: wire the money\r\n\r\nNow.\r\n";
    let good_path = tmp.path().join("good.eml");
    let forged_path = tmp.path().join("forged.eml");
    std::fs::write(&good_path, &good_with_forged_results).unwrap();
    std::fs::write(&forged_path, forged).unwrap();

    let script = r#"
import smtplib, sys, poplib, ssl
port, good, forged, ca, pop3s = int(sys.argv[1]), open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read(), sys.argv[4], int(sys.argv[5])
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("mail.good.example")
s.sendmail("news@good.example", ["anna@example.com"], good)
print("good accepted")
try:
    s.sendmail("ceo@bank.example", ["anna@example.com"], forged)
    print("forged accepted")
except smtplib.SMTPDataError as e:
    print("forged", e.smtp_code, e.smtp_error.decode())
s.quit()
p = poplib.POP3_SSL("127.0.0.1", pop3s, context=ssl.create_default_context(cafile=ca), timeout=30)
p.user("anna@example.com"); p.pass_("Correct1horse")
print("count", p.stat()[0])
for line in p.retr(1)[1]:
    print("|" + line.decode())
p.quit()
"#;
    let out = python_ok(
        script,
        &[
            server.addr("smtp").port().to_string(),
            good_path.display().to_string(),
            forged_path.display().to_string(),
            ca_cert().display().to_string(),
            server.addr("pop3s").port().to_string(),
        ],
    );
    assert!(out.contains("good accepted"), "{out}");
    assert!(
        out.contains(
            "forged 550 5.7.1 Message rejected: it fails the DMARC policy (p=reject) of bank.example"
        ),
        "{out}"
    );
    // Only the good message was stored.
    assert!(out.contains("count 1"), "{out}");
    let stored: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix('|')).collect();
    assert_eq!(
        stored[..5],
        [
            "Authentication-Results: localhost;",
            "\tspf=fail smtp.mailfrom=news@good.example;",
            "\tdkim=pass header.d=good.example header.s=sel;",
            "\tdmarc=pass header.from=good.example policy.dmarc=reject",
            "Received: from mail.good.example ([127.0.0.1])",
        ],
        "{out}"
    );
    assert_eq!(
        stored
            .iter()
            .filter(|l| l.starts_with("Authentication-Results:"))
            .count(),
        1,
        "the forged verdict was removed:\n{out}"
    );
    assert!(stored.iter().any(|l| l.starts_with("DKIM-Signature:")), "{out}");
}
