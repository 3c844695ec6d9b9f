//! Builds the protocol session for each service and adapts it to the driver.

use std::sync::Arc;

use understudy_protocol::pop3::{Pop3Limits, Pop3Session};
use understudy_protocol::smtp::{SmtpLimits, SmtpMode, SmtpSession};
use understudy_protocol::{AuthBackend, ConnectionInfo, Goodbye, Output};

use crate::config::Service;
use crate::driver::Session;
use crate::server::Shared;

impl Session for Box<dyn Session> {
    fn greeting(&mut self) -> Output {
        (**self).greeting()
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        (**self).receive(input)
    }
    fn tls_started(&mut self) {
        (**self).tls_started()
    }
    fn mailbox_changed(&mut self) -> Output {
        (**self).mailbox_changed()
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        (**self).goodbye(why)
    }
    fn authenticated(&self) -> bool {
        (**self).authenticated()
    }
    fn busy(&self) -> bool {
        (**self).busy()
    }
    fn has_pending(&self) -> bool {
        (**self).has_pending()
    }
    fn account_id(&self) -> Option<u64> {
        (**self).account_id()
    }
}

/// A new session for a connection accepted on `service`.
/// Logins are recorded in `account` so an admin can end the session (`admin::revoke`).
pub fn new_session(
    service: Service,
    info: ConnectionInfo,
    shared: &Shared,
    account: &crate::admin::revoke::SessionAccount,
) -> Box<dyn Session> {
    let auth: Arc<dyn AuthBackend> = account.auth(shared.auth.clone());
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
        Service::Imap | Service::Imaps => Box::new(NotYetServed { service, info }),
    }
}

/// Answers on a service whose protocol is not wired yet with the protocol's own
/// "temporarily unavailable" so clients retry rather than fail hard.
struct NotYetServed {
    service: Service,
    info: ConnectionInfo,
}

impl Session for NotYetServed {
    fn greeting(&mut self) -> Output {
        let host = &self.info.hostname;
        let text = match self.service {
            Service::Imap | Service::Imaps => "* BYE Service temporarily unavailable\r\n".to_string(),
            Service::Pop3 | Service::Pop3s => {
                "-ERR [SYS/TEMP] Service temporarily unavailable\r\n".to_string()
            }
            _ => format!("421 4.3.2 {host} Service temporarily unavailable\r\n"),
        };
        Output::close(text)
    }
    fn receive(&mut self, _input: &[u8]) -> Output {
        Output::close(Vec::new())
    }
    fn tls_started(&mut self) {}
    fn goodbye(&mut self, _why: Goodbye) -> Vec<u8> {
        Vec::new()
    }
}
