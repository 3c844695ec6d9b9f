//! LOGIN and AUTHENTICATE (PLAIN, LOGIN; SASL-IR) before authentication (RFC 3501 §6.2,
//! RFC 4959): credentials go to the auth backend, failures are counted and end the
//! session after `max_auth_failures`. And ID (RFC 2971), through which a webmail host
//! names the user's own address before the login, for the throttle.

use super::*;

impl ImapSession {
    pub(super) fn login(&mut self, tag: &str, user: String, password: Secret, out: &mut Vec<u8>) -> Flow {
        let credentials = Credentials {
            username: user,
            password,
            peer: self.client_ip.unwrap_or(self.info.peer),
            protocol: "imap",
        };
        match self.auth.authenticate(&credentials) {
            Ok(account) => {
                tracing::info!(user = %account.address, peer = %self.info.peer, client = %credentials.peer, "imap login");
                self.state = State::Authenticated { account };
                out.extend_from_slice(
                    format!("{tag} OK [CAPABILITY {}] Logged in\r\n", self.capabilities()).as_bytes(),
                );
                Flow::Continue
            }
            Err(err) => {
                let text = match &err {
                    AuthError::Invalid => "[AUTHENTICATIONFAILED] Authentication failed",
                    AuthError::RateLimited => "[UNAVAILABLE] Too many failed logins; try again later",
                    AuthError::AccessDenied => {
                        "[UNAVAILABLE] Mail access through this server is not available for your account now"
                    }
                    AuthError::OutsideOutage => {
                        "[UNAVAILABLE] Your own mail server is working; this server opens your mailbox only during an outage of it"
                    }
                    // RFC 5530 LIMIT; the text is what Outlook and iOS show the user.
                    AuthError::TooManySessions => {
                        "[LIMIT] Too many open connections for this account; close another mail app and try again"
                    }
                    // RFC 5530: the passphrase no longer grants access; get a new one.
                    AuthError::PasswordChangeRequired => {
                        "[EXPIRED] Your password must be changed; ask your administrator for a new one"
                    }
                    AuthError::Temporary(cause) => {
                        tracing::warn!(%cause, "imap login: auth backend failed");
                        "[UNAVAILABLE] Temporary failure; try again later"
                    }
                };
                no(out, tag, text);
                self.auth_failures += 1;
                if self.auth_failures >= self.limits.max_auth_failures {
                    out.extend_from_slice(b"* BYE Too many failed logins\r\n");
                    return Flow::Close;
                }
                Flow::Continue
            }
        }
    }

    /// ID (RFC 2971): answers the server's name. Before login, from a webmail host
    /// (`ConnectionInfo::webmail_host`), an `x-originating-ip` field (the name
    /// Dovecot and Roundcube use) is the user's own address: the throttle counts
    /// failures against it, not against the webmail host every user shares. From anyone
    /// else the field is ignored, or it would let a guesser pick the address counted.
    pub(super) fn id(
        &mut self,
        tag: &str,
        parameters: Option<Vec<(IString<'_>, NString<'_>)>>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if self.info.webmail_host && matches!(self.state, State::NotAuthenticated) {
            let originating = parameters.iter().flatten().find_map(|(key, value)| {
                let key: &[u8] = key.as_ref();
                if !key.eq_ignore_ascii_case(b"x-originating-ip") {
                    return None;
                }
                let value: &[u8] = value.0.as_ref()?.as_ref();
                std::str::from_utf8(value).ok()?.trim().parse::<IpAddr>().ok()
            });
            if let Some(ip) = originating {
                tracing::debug!(peer = %self.info.peer, client = %ip, "imap: webmail host names the client");
                self.client_ip = Some(ip);
            }
        }
        out.extend_from_slice(b"* ID (\"name\" \"Understudy\")\r\n");
        ok(out, tag, "ID completed")
    }

    pub(super) fn authenticate(
        &mut self,
        tag: &str,
        mechanism: AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if !self.login_allowed() {
            no(
                out,
                tag,
                "[PRIVACYREQUIRED] Plaintext authentication disallowed; use STARTTLS",
            );
            return Flow::Continue;
        }
        match (mechanism, initial) {
            (AuthMechanism::Plain, Some(ir)) => self.sasl_plain(tag, &ir, out),
            (AuthMechanism::Plain, None) => {
                out.extend_from_slice(b"+ \r\n");
                self.mode = Mode::Sasl {
                    tag: tag.to_string(),
                    step: SaslStep::Plain,
                };
                Flow::Continue
            }
            (AuthMechanism::Login, Some(ir)) => match sasl::parse_login_step(&ir) {
                Ok(user) => {
                    out.extend_from_slice(
                        format!("+ {}\r\n", sasl::encode_challenge("Password:")).as_bytes(),
                    );
                    self.mode = Mode::Sasl {
                        tag: tag.to_string(),
                        step: SaslStep::LoginPassword { user },
                    };
                    Flow::Continue
                }
                Err(_) => self.bad(out, tag, "Malformed SASL response"),
            },
            (AuthMechanism::Login, None) => {
                out.extend_from_slice(format!("+ {}\r\n", sasl::encode_challenge("Username:")).as_bytes());
                self.mode = Mode::Sasl {
                    tag: tag.to_string(),
                    step: SaslStep::LoginUser,
                };
                Flow::Continue
            }
            _ => {
                no(out, tag, "Unsupported authentication mechanism");
                Flow::Continue
            }
        }
    }

    pub(super) fn sasl_plain(&mut self, tag: &str, message: &[u8], out: &mut Vec<u8>) -> Flow {
        match sasl::parse_plain(message) {
            Ok((user, pass)) => self.login(tag, user, pass, out),
            Err(_) => self.bad(out, tag, "Malformed SASL response"),
        }
    }

    pub(super) fn sasl_line(&mut self, tag: String, step: SaslStep, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let decoded = match sasl::decode_response(line) {
            Ok(d) => d,
            Err(SaslError::Cancelled) => return self.bad(out, &tag, "Authentication cancelled"),
            Err(_) => return self.bad(out, &tag, "Malformed SASL response"),
        };
        match step {
            SaslStep::Plain => self.sasl_plain(&tag, &decoded, out),
            SaslStep::LoginUser => match sasl::parse_login_step(&decoded) {
                Ok(user) => {
                    out.extend_from_slice(
                        format!("+ {}\r\n", sasl::encode_challenge("Password:")).as_bytes(),
                    );
                    self.mode = Mode::Sasl {
                        tag,
                        step: SaslStep::LoginPassword { user },
                    };
                    Flow::Continue
                }
                Err(_) => self.bad(out, &tag, "Malformed SASL response"),
            },
            SaslStep::LoginPassword { user } => match sasl::parse_login_step(&decoded) {
                Ok(pass) => self.login(&tag, user, Secret::new(pass), out),
                Err(_) => self.bad(out, &tag, "Malformed SASL response"),
            },
        }
    }
}
