//! Webmail on top of Understudy: `understudy webmail print-config roundcube` writes the
//! Roundcube settings that follow from this server's own configuration (IMAP over TLS to
//! its imaps listener, submission with AUTH as the logged-in user, the CA that verifies
//! its certificate, the special folders every mailbox is created with, the product name
//! and a login hint). `contrib/roundcube/setup-debian.sh` installs Roundcube from
//! Debian's packages with nginx and PHP-FPM and uses this output; the browser tests
//! run the same output under `php -S`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum WebmailCommand {
    /// Print a webmail's settings for this server (include the output from the
    /// webmail's own configuration file).
    PrintConfig {
        #[command(subcommand)]
        webmail: Webmail,
    },
}

#[derive(Debug, Subcommand)]
pub enum Webmail {
    /// Roundcube 1.6: a PHP file for /etc/roundcube/ (config.inc.php includes it).
    Roundcube(RoundcubeOptions),
}

#[derive(Debug, Clone, Args)]
pub struct RoundcubeOptions {
    /// Address Roundcube connects to, when not the configured `hostname` (e.g. 127.0.0.1
    /// on the same machine); the certificate is still checked for `hostname`.
    #[arg(long)]
    pub connect: Option<String>,
    /// IMAP port, when not the first `listen.imaps` port (port 0 in the file, or NAT).
    #[arg(long)]
    pub imap_port: Option<u16>,
    /// Submission port, when not the first `listen.submissions` (465) or `listen.submission` (587) port.
    #[arg(long)]
    pub smtp_port: Option<u16>,
    /// CA certificate (PEM) that signed the server's certificate; without it the
    /// system's trusted CAs are used (a public certificate needs nothing more).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Name shown on the login page and in the window title.
    #[arg(long, default_value = "Webmail")]
    pub product_name: String,
    /// Text under the login form.
    #[arg(
        long,
        default_value = "Log in with your company email address and your Understudy password."
    )]
    pub login_hint: String,
}

/// Runs a `webmail` subcommand: prints to stdout.
pub fn run(config: &Config, command: WebmailCommand) -> anyhow::Result<()> {
    match command {
        WebmailCommand::PrintConfig {
            webmail: Webmail::Roundcube(options),
        } => {
            print!("{}", roundcube_config(config, &options)?);
            Ok(())
        }
    }
}

/// How Roundcube reaches one of our listeners: `ssl://` for implicit TLS, `tls://` for
/// STARTTLS.
fn endpoint(
    implicit: &[String],
    starttls: &[String],
    port: Option<u16>,
    what: &str,
) -> anyhow::Result<(&'static str, u16)> {
    let first_port = |listen: &[String]| -> Option<u16> {
        let addr: SocketAddr = listen.first()?.parse().ok()?;
        Some(addr.port())
    };
    let (scheme, found) = match (first_port(implicit), first_port(starttls)) {
        (Some(p), _) => ("ssl", p),
        (None, Some(p)) => ("tls", p),
        (None, None) if port.is_some() => ("ssl", 0),
        (None, None) => bail!("no {what} listener in the configuration"),
    };
    let port = port.unwrap_or(found);
    if port == 0 {
        bail!("the {what} listener is on port 0 (chosen at start-up): pass its port");
    }
    Ok((scheme, port))
}

/// A PHP single-quoted string literal.
fn php(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The Roundcube settings for this server, as PHP.
pub fn roundcube_config(config: &Config, options: &RoundcubeOptions) -> anyhow::Result<String> {
    if config.tls.is_none() {
        bail!("the server has no [tls] section: Roundcube must reach IMAP and submission over TLS");
    }
    let listen = &config.listen;
    let (imap_scheme, imap_port) = endpoint(&listen.imaps, &listen.imap, options.imap_port, "IMAP")?;
    let (smtp_scheme, smtp_port) = endpoint(
        &listen.submissions,
        &listen.submission,
        options.smtp_port,
        "submission",
    )?;
    let host = options.connect.as_deref().unwrap_or(&config.hostname);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut tls = format!(
        "['ssl' => ['verify_peer' => true, 'verify_peer_name' => true, 'peer_name' => {}",
        php(&config.hostname)
    );
    if let Some(ca) = &options.ca_file {
        let ca = ca
            .canonicalize()
            .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
        write!(tls, ", 'cafile' => {}", php(&ca.display().to_string()))?;
    }
    tls.push_str("]]");
    let folder = |use_: understudy_storage::SpecialUse| {
        understudy_storage::DEFAULT_MAILBOXES
            .iter()
            .find(|(_, u)| *u == Some(use_))
            .map_or("", |(name, _)| name)
    };
    use understudy_storage::SpecialUse as U;
    let default_folders = understudy_storage::DEFAULT_MAILBOXES
        .iter()
        .map(|(name, _)| php(name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    writeln!(out, "<?php")?;
    writeln!(
        out,
        "// Roundcube for Understudy at {}, from `understudy webmail print-config roundcube`.",
        config.hostname
    )?;
    writeln!(
        out,
        "// Regenerate it after changing Understudy's listeners or certificate."
    )?;
    writeln!(out)?;
    writeln!(out, "// IMAP over TLS; the certificate is verified.")?;
    writeln!(
        out,
        "$config['imap_host'] = {};",
        php(&format!("{imap_scheme}://{host}:{imap_port}"))
    )?;
    writeln!(out, "$config['imap_conn_options'] = {tls};")?;
    writeln!(
        out,
        "// Submission with AUTH as the logged-in user (full address and password)."
    )?;
    writeln!(
        out,
        "$config['smtp_host'] = {};",
        php(&format!("{smtp_scheme}://{host}:{smtp_port}"))
    )?;
    writeln!(out, "$config['smtp_user'] = '%u';")?;
    writeln!(out, "$config['smtp_pass'] = '%p';")?;
    writeln!(out, "$config['smtp_conn_options'] = {tls};")?;
    writeln!(
        out,
        "// Users log in with their full address, as in every other mail app."
    )?;
    writeln!(out, "$config['username_domain'] = '';")?;
    writeln!(out, "$config['login_lc'] = 2;")?;
    writeln!(
        out,
        "// The special-use folders Understudy creates with every mailbox (RFC 6154)."
    )?;
    for (key, use_) in [
        ("drafts_mbox", U::Drafts),
        ("sent_mbox", U::Sent),
        ("junk_mbox", U::Junk),
        ("trash_mbox", U::Trash),
    ] {
        writeln!(out, "$config['{key}'] = {};", php(folder(use_)))?;
    }
    writeln!(out, "$config['default_folders'] = [{default_folders}];")?;
    writeln!(out, "$config['create_default_folders'] = false;")?;
    writeln!(out, "$config['product_name'] = {};", php(&options.product_name))?;
    writeln!(
        out,
        "// The understudy plugin (contrib/roundcube/understudy) shows the hint below the"
    )?;
    writeln!(
        out,
        "// login form and names each user's own address to IMAP (ID x-originating-ip),"
    )?;
    writeln!(
        out,
        "// which Understudy believes from hosts listed in its auth.webmail_hosts."
    )?;
    writeln!(out, "$config['plugins'] = ['understudy'];")?;
    writeln!(
        out,
        "$config['understudy_login_hint'] = {};",
        php(&options.login_hint)
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> RoundcubeOptions {
        RoundcubeOptions {
            connect: None,
            imap_port: None,
            smtp_port: None,
            ca_file: None,
            product_name: "Example's Webmail".into(),
            login_hint: "Your company address".into(),
        }
    }

    fn config(listen: &str) -> Config {
        let text = format!(
            "hostname = \"mail.example.com\"\ndata_dir = \"/tmp/x\"\n[tls]\ncertificate = \"/c\"\nprivate_key = \"/k\"\n[listen]\n{listen}\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn imaps_and_submissions_with_the_certificate_checked_for_the_hostname() {
        let c = config("imaps = [\"[::]:993\"]\nimap = [\"[::]:143\"]\nsubmissions = [\"[::]:465\"]");
        let php = roundcube_config(&c, &options()).unwrap();
        assert!(
            php.contains("$config['imap_host'] = 'ssl://mail.example.com:993';"),
            "{php}"
        );
        assert!(
            php.contains("$config['smtp_host'] = 'ssl://mail.example.com:465';"),
            "{php}"
        );
        assert!(php.contains("'peer_name' => 'mail.example.com'"), "{php}");
        assert!(php.contains("$config['sent_mbox'] = 'Sent';"), "{php}");
        assert!(php.contains("$config['drafts_mbox'] = 'Drafts';"), "{php}");
        assert!(
            php.contains(
                "$config['default_folders'] = ['INBOX', 'Sent', 'Drafts', 'Trash', 'Junk', 'Archive'];"
            ),
            "{php}"
        );
        assert!(
            php.contains("$config['product_name'] = 'Example\\'s Webmail';"),
            "{php}"
        );
    }

    #[test]
    fn starttls_ports_and_overrides() {
        let c = config("imap = [\"[::]:143\"]\nsubmission = [\"[::]:587\"]");
        let php = roundcube_config(&c, &options()).unwrap();
        assert!(php.contains("'tls://mail.example.com:143'"), "{php}");
        assert!(php.contains("'tls://mail.example.com:587'"), "{php}");
        let c = config("imaps = [\"127.0.0.1:0\"]\nsubmissions = [\"127.0.0.1:0\"]");
        let err = roundcube_config(&c, &options()).unwrap_err().to_string();
        assert!(err.contains("port 0"), "{err}");
        let php = roundcube_config(
            &c,
            &RoundcubeOptions {
                connect: Some("::1".into()),
                imap_port: Some(10993),
                smtp_port: Some(10465),
                ..options()
            },
        )
        .unwrap();
        assert!(php.contains("'ssl://[::1]:10993'"), "{php}");
        assert!(php.contains("'ssl://[::1]:10465'"), "{php}");
        let c = config("pop3 = [\"[::]:110\"]");
        assert!(roundcube_config(&c, &options()).is_err());
    }
}
