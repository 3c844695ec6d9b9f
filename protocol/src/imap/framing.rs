//! IMAP framing: the octets a client sent, cut into lines and literals before imap-codec
//! sees a byte (RFC 3501 §4.3, LITERAL+ RFC 7888). `Framer` owns the input buffer, the
//! command being assembled and the literal in progress; the session asks it for the next
//! line, decides what a line means (a command, a SASL response, IDLE's DONE) and tells
//! it when a literal of accepted length follows. Bounds are checked before memory is
//! used: a line longer than `max_line` without LF is refused as soon as it is seen, and
//! a literal's length is checked against the session's limit before `+` or a byte of it.
//!
//! imap-next (not in this build's registry) and imap-codec's own `Fragmentizer` were not
//! used: the fragmentizer keeps unparsed input in a buffer whose size it does not expose,
//! so a line without LF grows unchecked, it decodes only whole messages (the session needs
//! the prefix decoded before `+ `), and SASL and IDLE lines are framed here too.

use super::backend::Spool;

/// What the framer has next.
pub(super) enum Frame {
    /// One line, CRLF (or LF) included.
    Line(Vec<u8>),
    /// Nothing complete yet: wait for more input.
    NeedMore,
    /// A line longer than the limit: the connection cannot be resynchronised.
    TooLong,
}

#[derive(Default)]
pub(super) struct Framer {
    /// Received octets; those before `start` are taken.
    input: Vec<u8>,
    start: usize,
    /// The command being assembled: its lines and literals so far.
    command: Vec<u8>,
    /// Octets of the current literal still to come.
    literal_left: usize,
    /// Where a literal of this command went instead of `command` (a big APPEND message).
    spool: Option<Box<dyn Spool>>,
    /// The literal being read goes to `spool` (only the one `spool_literal` was called
    /// for: later literals of a MULTIAPPEND stay in the command).
    spooling: bool,
    /// A write to `spool` failed; the APPEND then fails, the framing goes on.
    spool_failed: bool,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Octets received and not yet taken (a client that keeps pipelining without
    /// reading answers makes this grow; the session bounds it).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.start
    }

    /// A complete line waits (the driver then calls `receive(&[])` before reading more).
    pub fn has_line(&self) -> bool {
        self.input[self.start..].contains(&b'\n')
    }

    /// Drops everything received and assembled: after STARTTLS nothing sent before the
    /// handshake may count (CVE-2011-0411).
    pub fn discard(&mut self) {
        self.input.clear();
        self.start = 0;
        self.command.clear();
        self.literal_left = 0;
        self.spool = None;
        self.spooling = false;
    }

    /// Drops the unread input only.
    pub fn discard_input(&mut self) {
        self.input.clear();
        self.start = 0;
    }

    pub fn in_literal(&self) -> bool {
        self.literal_left > 0
    }

    /// Moves the literal octets that have arrived into the command (or the spool).
    /// Returns true while the literal still misses octets.
    pub fn take_literal(&mut self) -> bool {
        let take = self.literal_left.min(self.input.len() - self.start);
        let bytes = &self.input[self.start..self.start + take];
        match &mut self.spool {
            Some(spool) if self.spooling => {
                if !self.spool_failed && spool.write(bytes).is_err() {
                    self.spool_failed = true;
                }
            }
            _ => self.command.extend_from_slice(bytes),
        }
        self.start += take;
        self.literal_left -= take;
        if self.literal_left == 0 {
            self.spooling = false;
        }
        self.literal_left > 0
    }

    /// The next line, if a whole one has arrived and fits `max_line`.
    pub fn next_line(&mut self, max_line: usize) -> Frame {
        let pending = &self.input[self.start..];
        let Some(lf) = pending.iter().position(|b| *b == b'\n') else {
            return if pending.len() > max_line {
                Frame::TooLong
            } else {
                Frame::NeedMore
            };
        };
        if lf + 1 > max_line {
            return Frame::TooLong;
        }
        let line = pending[..=lf].to_vec();
        self.start += lf + 1;
        Frame::Line(line)
    }

    /// Ends a `receive` step: taken octets are released.
    pub fn compact(&mut self) {
        let start = self.start.min(self.input.len());
        self.input.drain(..start);
        self.start = 0;
    }

    /// The command assembled so far.
    pub fn command(&self) -> &[u8] {
        &self.command
    }

    pub fn append_to_command(&mut self, line: &[u8]) {
        self.command.extend_from_slice(line);
    }

    pub fn clear_command(&mut self) {
        self.command.clear();
    }

    /// The whole command, leaving an empty one.
    pub fn take_command(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.command)
    }

    /// Gives back a taken command's buffer so the next command reuses its allocation.
    pub fn recycle(&mut self, mut command: Vec<u8>) {
        if self.command.capacity() < command.capacity() && command.capacity() <= 64 * 1024 {
            command.clear();
            self.command = command;
        }
    }

    /// A literal of `length` octets follows (its length already checked).
    pub fn begin_literal(&mut self, length: usize) {
        self.literal_left = length;
    }

    /// The literal just announced goes to `spool`: the command keeps `{0}` in its place.
    /// `announcement` is where the `{` of the announcement is in the command.
    pub fn spool_literal(&mut self, announcement: usize, spool: Box<dyn Spool>) {
        self.command.truncate(announcement);
        self.command.extend_from_slice(b"{0}\r\n");
        self.spool = Some(spool);
        self.spooling = true;
        self.spool_failed = false;
    }

    /// The spool of the command just completed and whether writing to it failed.
    pub fn take_spool(&mut self) -> (Option<Box<dyn Spool>>, bool) {
        (self.spool.take(), std::mem::take(&mut self.spool_failed))
    }

    /// Octets written to the spool so far, if the literal goes to one (tests).
    #[cfg(test)]
    pub fn spool_len(&self) -> Option<usize> {
        self.spool.as_ref().map(|s| s.len())
    }

    /// Forgets a spool the command did not use (it failed to parse).
    pub fn drop_spool(&mut self) {
        self.spool = None;
        self.spooling = false;
    }
}

/// `{123}\r\n` or `{123+}\r\n` at the end of a line: (length, non-synchronizing).
pub(super) fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    let mut digits = &line[open + 1..];
    let non_sync = digits.last() == Some(&b'+');
    if non_sync {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((length, non_sync))
}

/// The tag of a (possibly malformed) command, or `*`.
pub(super) fn tag_of(command: &[u8]) -> String {
    let end = command
        .iter()
        .position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
        .unwrap_or(command.len());
    let tag = &command[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    if valid {
        String::from_utf8_lossy(tag).into_owned()
    } else {
        "*".to_string()
    }
}
