//! [`ImapSession`] as a driver [`Session`]: forwards to the session's own methods.

use super::ImapSession;
use crate::session::{Goodbye, Output, Session};

impl Session for ImapSession {
    fn greeting(&mut self) -> Output {
        ImapSession::greeting(self)
    }
    fn receive(&mut self, input: &[u8]) -> Output {
        ImapSession::receive(self, input)
    }
    fn tls_started(&mut self) {
        ImapSession::tls_started(self)
    }
    fn mailbox_changed(&mut self) -> Output {
        ImapSession::mailbox_changed(self)
    }
    fn goodbye(&mut self, why: Goodbye) -> Vec<u8> {
        ImapSession::goodbye(self, why)
    }
    fn authenticated(&self) -> bool {
        self.account().is_some()
    }
    fn has_pending(&self) -> bool {
        ImapSession::has_pending(self)
    }
    fn commands(&self) -> u64 {
        ImapSession::commands(self)
    }
}
