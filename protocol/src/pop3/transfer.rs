//! Message text as POP3 sends it: RETR/TOP multi-line bodies (RFC 1939 §3) and the
//! header/body split TOP needs.

/// Appends `message` as a multi-line response body: a `.` is doubled at the start of
/// every line, the last line is made to end with CRLF, and the `.CRLF` terminator follows.
///
/// A line start is any octet after LF, bare LF included: clients such as Python's poplib
/// split on LF, so an unstuffed `.` after a bare LF would end the response early for them.
/// NUL becomes 0x80 (Dovecot's `outlook-no-nuls` workaround): Outlook stops at a NUL,
/// and replacing instead of dropping keeps LIST sizes exact.
pub(crate) fn append_multiline(out: &mut Vec<u8>, message: &[u8]) {
    out.reserve(message.len() + message.len() / 64 + 5);
    let body_start = out.len();
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if message.contains(&0) {
        out[body_start..]
            .iter_mut()
            .filter(|b| **b == 0)
            .for_each(|b| *b = 0x80);
    }
    match message {
        [] | [.., b'\r', b'\n'] => {}
        [.., b'\n'] => {
            // A final bare LF: make it CRLF so the terminator sits on a line of its own
            // for clients that split on CRLF only.
            out.pop();
            out.extend_from_slice(b"\r\n");
        }
        [.., b'\r'] => out.push(b'\n'),
        _ => out.extend_from_slice(b"\r\n"),
    }
    out.extend_from_slice(b".\r\n");
}

/// The part of `message` TOP sends (RFC 1939 §7): the header, the blank line that ends
/// it, and the first `body_lines` lines of the body. A message with no blank line is all
/// header and is returned whole.
pub(crate) fn top_part(message: &[u8], body_lines: u64) -> &[u8] {
    let mut pos = 0;
    let mut header_end = None;
    while pos < message.len() {
        let end = line_end(message, pos);
        let line = &message[pos..end];
        pos = end;
        if line == b"\r\n" || line == b"\n" {
            header_end = Some(pos);
            break;
        }
    }
    let Some(mut pos) = header_end else {
        return message;
    };
    let mut left = body_lines;
    while left > 0 && pos < message.len() {
        pos = line_end(message, pos);
        left -= 1;
    }
    &message[..pos]
}

/// Index just past the LF that ends the line starting at `start`, or the end of `data`.
fn line_end(data: &[u8], start: usize) -> usize {
    data[start..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(data.len(), |i| start + i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multiline(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        append_multiline(&mut out, message);
        out
    }

    #[test]
    fn stuffs_dots_at_line_starts_only() {
        assert_eq!(
            multiline(b".a\r\nb.c\r\n..\r\n.\r\n"),
            b"..a\r\nb.c\r\n...\r\n..\r\n.\r\n".to_vec()
        );
        assert_eq!(multiline(b"x\n.y\r\n"), b"x\n..y\r\n.\r\n".to_vec());
    }

    #[test]
    fn ends_last_line_with_crlf() {
        assert_eq!(multiline(b""), b".\r\n".to_vec());
        assert_eq!(multiline(b"a"), b"a\r\n.\r\n".to_vec());
        assert_eq!(multiline(b"a\r"), b"a\r\n.\r\n".to_vec());
        assert_eq!(multiline(b"a\n"), b"a\r\n.\r\n".to_vec());
        assert_eq!(multiline(b"."), b"..\r\n.\r\n".to_vec());
    }

    #[test]
    fn replaces_nul_keeping_length_and_8bit() {
        assert_eq!(
            multiline(b"a\0b\xc3\xa9\r\n"),
            b"a\x80b\xc3\xa9\r\n.\r\n".to_vec()
        );
    }

    #[test]
    fn top_cuts_after_header_and_n_lines() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top_part(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top_part(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top_part(m, 3), &m[..]);
        assert_eq!(top_part(m, u64::MAX), &m[..]);
        assert_eq!(top_part(b"A: 1\r\nB: 2\r\n", 5), b"A: 1\r\nB: 2\r\n");
        assert_eq!(top_part(b"\r\nbody\r\n", 0), b"\r\n");
        assert_eq!(top_part(b"A: 1\r\n\r\nno crlf", 1), b"A: 1\r\n\r\nno crlf");
    }
}
