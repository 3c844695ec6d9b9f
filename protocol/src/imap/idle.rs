//! IDLE (RFC 2177): the driver waits on the store's notification for the selected
//! mailbox and calls `mailbox_changed`; every change is pushed at once until DONE.

use super::*;

impl ImapSession {
    /// During IDLE: the store says the selected mailbox changed.
    pub fn mailbox_changed(&mut self) -> Output {
        let mut out = Vec::new();
        if matches!(self.mode, Mode::Idle { .. }) {
            self.catch_up(true, &mut out);
        }
        Output::new(out, self.idle_action())
    }

    pub(super) fn idle_action(&self) -> Action {
        match (&self.mode, &self.state) {
            (Mode::Idle { .. }, State::Selected { view, .. }) => Action::Idle { mailbox_id: view.id },
            _ => Action::Continue,
        }
    }

    pub(super) fn idle_line(&mut self, tag: String, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.eq_ignore_ascii_case(b"DONE") {
            if matches!(self.state, State::Selected { .. }) {
                self.catch_up(true, out);
            }
            ok(out, &tag, "IDLE terminated");
            Flow::Continue
        } else {
            self.bad(out, &tag, "Expected DONE")
        }
    }
}
