//! Message body decoding for DATA (dot-stuffed, RFC 5321 §4.1.1.4 and §4.5.2) and BDAT
//! (counted, RFC 3030), with the size and line-length bounds applied as bytes arrive.
//!
//! ```text
//!          '.' (DATA only)         CR                 LF (strict start) -> end of data
//!   Start ---------------> Dot ---------> DotCr ----------------------------------->
//!     |  other               | other: drop the dot (unstuff), rest of line -> Middle
//!     v                      v
//!   Middle --CR--> Cr --LF--> Start{strict}      Middle --LF--> Start{not strict}
//!                   \--other: bare CR, written as CRLF --> Start{not strict}
//! ```
//!
//! Bare LF and bare CR are accepted and written as CRLF (be liberal in what you
//! accept), but only `<CRLF>.<CRLF>` ends the data: a dot line next to a bare LF or CR
//! is content. That closes the SMTP smuggling hole where two servers disagree on where
//! a message ends. Once a bound is exceeded the decoder keeps scanning for the end but
//! stores nothing more, so memory never exceeds the size limit.

/// Longest text line, without its CRLF (RFC 5321 §4.5.3.1.6: 1000 octets with CRLF).
pub(super) const MAX_TEXT_LINE: usize = 998;

/// Most memory reserved up front from the client's SIZE= declaration.
const RESERVE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `strict` when the previous line ended with a real CRLF
    /// (or the data just started).
    Start {
        strict: bool,
    },
    Middle,
    Cr,
    Dot {
        strict: bool,
    },
    DotCr {
        strict: bool,
    },
}

#[derive(Debug)]
pub(super) struct BodyDecoder {
    dot_stuffed: bool,
    state: State,
    line_len: usize,
    max_size: usize,
    body: Vec<u8>,
    oversize: bool,
    long_line: bool,
}

impl BodyDecoder {
    /// A decoder for DATA (`dot_stuffed`) or BDAT; `size_hint` is the SIZE= the client
    /// declared, used only to reserve memory up to `max_size`.
    pub(super) fn new(dot_stuffed: bool, max_size: usize, size_hint: usize) -> Self {
        BodyDecoder {
            dot_stuffed,
            state: State::Start { strict: true },
            line_len: 0,
            max_size,
            // A declared SIZE is only a claim: reserve at most 1 MiB on its word.
            body: Vec::with_capacity(size_hint.min(max_size).min(RESERVE_LIMIT)),
            oversize: false,
            long_line: false,
        }
    }

    /// Consumes `input`. In DATA mode returns `Some(n)` once `<CRLF>.<CRLF>` ends the
    /// data, `n` being the bytes of `input` used (the rest belongs to the next command).
    pub(super) fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                State::Start { strict } => {
                    if self.dot_stuffed && b == b'.' {
                        self.state = State::Dot { strict };
                        i += 1;
                    } else {
                        self.state = State::Middle;
                    }
                }
                State::Middle => {
                    let rest = input.get(i..).unwrap_or_default();
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    if run > 0 {
                        self.content(rest.get(..run).unwrap_or_default());
                        i += run;
                    } else {
                        if b == b'\r' {
                            self.state = State::Cr;
                        } else {
                            self.end_line(false);
                        }
                        i += 1;
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        self.end_line(true);
                        i += 1;
                    } else {
                        // Bare CR: the byte after it starts a new line.
                        self.end_line(false);
                    }
                }
                State::Dot { strict } => match b {
                    b'\r' => {
                        self.state = State::DotCr { strict };
                        i += 1;
                    }
                    b'\n' => {
                        self.content(b".");
                        self.end_line(false);
                        i += 1;
                    }
                    // A stuffed dot: drop it and treat the byte as the line's first.
                    _ => self.state = State::Middle,
                },
                State::DotCr { strict } => {
                    if b == b'\n' {
                        if strict {
                            return Some(i + 1);
                        }
                        self.content(b".");
                        self.end_line(true);
                        i += 1;
                    } else {
                        self.content(b".");
                        self.end_line(false);
                    }
                }
            }
        }
        None
    }

    /// Ends a BDAT body: a CR left pending at the very end becomes a line end.
    pub(super) fn finish(&mut self) {
        match self.state {
            State::Cr => self.end_line(false),
            State::Dot { .. } => self.content(b"."),
            State::DotCr { .. } => {
                self.content(b".");
                self.end_line(false);
            }
            State::Start { .. } | State::Middle => {}
        }
    }

    /// The body exceeded the size limit; nothing past the limit was kept.
    pub(super) fn oversize(&self) -> bool {
        self.oversize
    }

    /// A line exceeded `MAX_TEXT_LINE`.
    pub(super) fn long_line(&self) -> bool {
        self.long_line
    }

    pub(super) fn into_body(self) -> Vec<u8> {
        self.body
    }

    fn rejected(&self) -> bool {
        self.oversize || self.long_line
    }

    fn content(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        if self.line_len > MAX_TEXT_LINE {
            self.long_line = true;
        }
        self.emit(bytes);
    }

    fn end_line(&mut self, strict: bool) {
        self.emit(b"\r\n");
        self.line_len = 0;
        self.state = State::Start { strict };
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.rejected() {
            return;
        }
        if self.body.len() + bytes.len() > self.max_size {
            self.oversize = true;
            // Free what was kept: the message will be refused anyway.
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn data(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
        let mut d = BodyDecoder::new(true, 1 << 20, 0);
        let mut end = None;
        for chunk in chunks {
            end = d.feed(chunk);
            if end.is_some() {
                break;
            }
        }
        (d.into_body(), end)
    }

    #[test]
    fn unstuffs_and_stops_at_crlf_dot_crlf() {
        let (body, end) = data(&[b"a\r\n..b\r\n.c\r\n.\r\nNOOP\r\n"]);
        assert_eq!(body, b"a\r\n.b\r\nc\r\n");
        assert_eq!(end, Some(15));
    }

    #[test]
    fn empty_body_and_split_terminator() {
        assert_eq!(data(&[b".\r\n"]), (Vec::new(), Some(3)));
        let (body, end) = data(&[b"x\r", b"\n", b".", b"\r", b"\nrest"]);
        assert_eq!(body, b"x\r\n");
        assert_eq!(end, Some(1));
    }

    #[test]
    fn bare_lf_and_cr_become_crlf_but_do_not_end_data() {
        let (body, end) = data(&[b"a\nb\rc\n.\nd\r\n.\re\r\n.\r\n"]);
        assert_eq!(body, b"a\r\nb\r\nc\r\n.\r\nd\r\n.\r\ne\r\n");
        assert!(end.is_some());
        // "\n.\r\n": the dot line follows a bare LF, so it is content.
        let (body, end) = data(&[b"a\n.\r\nb\r\n.\r\n"]);
        assert_eq!(body, b"a\r\n.\r\nb\r\n");
        assert!(end.is_some());
    }

    #[test]
    fn long_line_and_oversize_stop_storing_but_find_the_end() {
        let mut d = BodyDecoder::new(true, 1 << 20, 0);
        let line = vec![b'x'; MAX_TEXT_LINE + 1];
        assert_eq!(d.feed(&line), None);
        assert_eq!(d.feed(b"\r\n.\r\n"), Some(5));
        assert!(d.long_line() && !d.oversize());

        let mut d = BodyDecoder::new(true, 10, 0);
        assert_eq!(d.feed(b"0123456789\r\nmore\r\n.\r\n"), Some(21));
        assert!(d.oversize());
        assert!(d.into_body().is_empty());
    }

    #[test]
    fn bdat_keeps_dots() {
        let mut d = BodyDecoder::new(false, 100, 0);
        assert_eq!(d.feed(b".\r\n..x\r"), None);
        d.finish();
        assert_eq!(d.into_body(), b".\r\n..x\r\n");
    }
}
