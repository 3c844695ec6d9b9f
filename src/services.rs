//! Builds the protocol session for each service and adapts it to the driver.

use std::sync::Arc;

use understudy_protocol::imap::{ImapLimits, ImapSession};
use understudy_protocol::pop3::{Pop3Limits, Pop3Session};
use understudy_protocol::smtp::{SmtpLimits, SmtpMode, SmtpSession};
use understudy_protocol::{AuthBackend, ConnectionInfo, Session};

use crate::config_types::Service;
use crate::shared::Shared;

/// A new session for a connection accepted on `service`.
/// Logins are recorded in `account` so an admin can end the session (`revoke`).
pub fn new_session(
    service: Service,
    info: ConnectionInfo,
    shared: &Shared,
    account: &crate::revoke::SessionAccount,
    logins: &crate::auth::LoginPacer,
) -> Box<dyn Session> {
    // Mailbox sessions count against the user's limit; submission connections are short.
    let auth: Arc<dyn AuthBackend> = match service {
        Service::Imap | Service::Imaps | Service::Pop3 | Service::Pop3s => {
            account.auth(shared.user_sessions.limit(shared.auth.clone()), &shared.store)
        }
        _ => account.auth(shared.auth.clone(), &shared.store),
    };
    let auth = logins.auth(auth);
    let limits = &shared.config.limits;
    match service {
        Service::Pop3 | Service::Pop3s => Box::new(Pop3Session::new(
            info,
            auth,
            shared.pop3.clone(),
            Pop3Limits::default(),
        )),
        Service::Smtp | Service::Submission | Service::Submissions => {
            let mode = if service == Service::Smtp {
                SmtpMode::Mx
            } else {
                SmtpMode::Submission
            };
            let smtp_limits = SmtpLimits {
                max_message_size: limits.max_message_size as usize,
                max_recipients: limits.max_recipients,
                ..SmtpLimits::default()
            };
            Box::new(SmtpSession::new(
                info,
                mode,
                auth,
                shared.smtp.clone(),
                smtp_limits,
            ))
        }
        Service::Imap | Service::Imaps => {
            let imap_limits = ImapLimits {
                max_literal: u32::try_from(limits.max_message_size).unwrap_or(u32::MAX),
                ..ImapLimits::default()
            };
            Box::new(ImapSession::new(info, auth, shared.imap.clone(), imap_limits))
        }
    }
}
