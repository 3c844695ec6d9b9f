//! DKIM key generation for `understudy domain dkim-keygen`: a 2048-bit RSA key made by
//! the system's `openssl` (ring, our crypto provider, cannot generate RSA keys, and the
//! key is made once per domain by an admin), stored 0600 under the data directory, and
//! the public key as the DNS TXT record value.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use base64::Engine;

pub struct DkimRecord {
    pub key_path: PathBuf,
    /// `v=DKIM1; k=rsa; p=...`
    pub txt: String,
}

pub fn keygen(data_dir: &Path, domain: &str, selector: &str) -> anyhow::Result<DkimRecord> {
    if selector.is_empty()
        || !selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("'{selector}' is not a DKIM selector (letters, digits, - and _)");
    }
    let dir = data_dir.join("dkim");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let key_path = dir.join(format!("{domain}.{selector}.pem"));
    if key_path.exists() {
        bail!(
            "{} exists already; choose another --selector to rotate keys",
            key_path.display()
        );
    }
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot run openssl (install the openssl package)")?;
    if !status.success() {
        bail!("openssl could not generate the key");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key_path)
        .output()
        .context("cannot run openssl")?;
    if !public.status.success() {
        bail!("openssl could not read the key back");
    }
    let p = base64::engine::general_purpose::STANDARD.encode(&public.stdout);
    Ok(DkimRecord {
        key_path,
        txt: format!("v=DKIM1; k=rsa; p={p}"),
    })
}
