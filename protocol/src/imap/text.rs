//! Small IMAP text helpers: strings on the wire, modified UTF-7 mailbox names (RFC 3501
//! §5.1.3), flag lists and LIST wildcard matching (RFC 3501 §6.3.8).

use super::backend::Flags;

/// Appends `s` as an IMAP string: quoted when it is short and safe, a literal otherwise.
pub fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// Appends a mailbox name (UTF-8 in the store) as the client sees it: modified UTF-7,
/// or with `utf8` (IMAP4rev2, UTF8=ACCEPT) UTF-8 as it is, quoted when it can be.
pub fn push_mailbox(out: &mut Vec<u8>, name: &str, utf8: bool) {
    if utf8 {
        push_string_utf8(out, name);
    } else {
        push_string(out, encode_mutf7(name).as_bytes());
    }
}

/// Appends `s` as an IMAP4rev2 / RFC 6855 string: quoted UTF-8 when it is short and
/// holds no CR, LF or NUL, a literal otherwise.
pub fn push_string_utf8(out: &mut Vec<u8>, s: &str) {
    let quotable = s.len() < 1024 && !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    if quotable {
        out.push(b'"');
        for &b in s.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        push_string(out, s.as_bytes());
    }
}

/// `(\Seen \Answered kw)`, plus `\Recent` when asked.
pub fn push_flags(out: &mut Vec<u8>, flags: &Flags, recent: bool) {
    out.push(b'(');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    for (bit, name) in Flags::SYSTEM {
        if flags.has(bit) {
            sep(out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    if recent {
        sep(out);
        out.extend_from_slice(b"\\Recent");
    }
    for k in &flags.keywords {
        sep(out);
        out.extend_from_slice(k.as_bytes());
    }
    out.push(b')');
}

/// UTF-8 to modified UTF-7.
pub fn encode_mutf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&b64_encode(&bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Modified UTF-7 to UTF-8; `None` if malformed. Names that are not valid modified
/// UTF-7 but are valid UTF-8 (clients that send raw UTF-8) are taken as they are by the
/// caller.
pub fn decode_mutf7(name: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'&' {
            let end = name[i + 1..].iter().position(|&c| c == b'-')? + i + 1;
            let chunk = &name[i + 1..end];
            if chunk.is_empty() {
                out.push('&');
            } else {
                let bytes = b64_decode(chunk)?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            i = end + 1;
        } else if (0x20..0x7f).contains(&b) {
            out.push(b as char);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..=n {
            out.push(B64[((v >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Longest LIST pattern (reference and pattern together, in octets) a client may send;
/// mailbox names are at most 255 octets, so nothing useful is longer.
pub const MAX_LIST_PATTERN: usize = 1024;

/// LIST pattern match: `*` matches anything, `%` anything but the delimiter `/`.
/// INBOX is matched case-insensitively.
///
/// Simulates the pattern as a set of positions reached so far (an NFA), so the work is
/// at most pattern length × name length whatever the wildcards: the backtracking
/// matcher this replaces took exponential time on `LIST "" "<1000 × *>Q"`, pinned a
/// core and recursed once per wildcard (issue 19).
pub fn list_matches(pattern: &str, name: &str) -> bool {
    let mut p: Vec<char> = Vec::new();
    // `**`, `*%` and `%*` match what `*` matches, and `%%` what `%` does.
    for c in canonical_inbox(pattern).chars() {
        match (p.last_mut(), c) {
            (Some(last @ ('*' | '%')), '*' | '%') => {
                if c == '*' {
                    *last = '*';
                }
            }
            _ => p.push(c),
        }
    }
    // `at[i]`: the first i pattern characters can match the name read so far.
    let mut at = vec![false; p.len() + 1];
    let mut next = vec![false; p.len() + 1];
    at[0] = true;
    close_wildcards(&p, &mut at);
    for c in name.chars() {
        next.fill(false);
        for (i, pc) in p.iter().enumerate() {
            if !at[i] {
                continue;
            }
            match *pc {
                '*' => next[i] = true,
                '%' if c != '/' => next[i] = true,
                '%' => {}
                pc if pc == c => next[i + 1] = true,
                _ => {}
            }
        }
        close_wildcards(&p, &mut next);
        std::mem::swap(&mut at, &mut next);
        if !at.contains(&true) {
            return false;
        }
    }
    at[p.len()]
}

/// A wildcard may match nothing: reaching it reaches the position after it too.
fn close_wildcards(p: &[char], at: &mut [bool]) {
    for (i, pc) in p.iter().enumerate() {
        if at[i] && matches!(pc, '*' | '%') {
            at[i + 1] = true;
        }
    }
}

/// "inbox", "Inbox/x" ... → "INBOX", "INBOX/x": INBOX is case-insensitive (RFC 3501 §5.1).
pub fn canonical_inbox(name: &str) -> String {
    match name.get(..5) {
        Some(head) if head.eq_ignore_ascii_case("inbox") => {
            let rest = &name[5..];
            if rest.is_empty() || rest.starts_with('/') {
                format!("INBOX{rest}")
            } else {
                name.to_string()
            }
        }
        _ => name.to_string(),
    }
}

/// Sorted numbers as a sequence set: `1:3,7`.
pub(super) fn compress(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    compress_ordered(&sorted)
}

/// Numbers in the given order as a set, merging runs of consecutive values; the order
/// matters for COPYUID, whose two sets correspond element by element.
pub(super) fn compress_ordered(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trip() {
        assert_eq!(encode_mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode_mutf7("A&B"), "A&-B");
        assert_eq!(encode_mutf7("日本語"), "&ZeVnLIqe-");
        assert_eq!(decode_mutf7(b"Entw&APw-rfe").unwrap(), "Entwürfe");
        assert_eq!(decode_mutf7(b"&ZeVnLIqe-").unwrap(), "日本語");
        assert_eq!(decode_mutf7(b"A&-B").unwrap(), "A&B");
        assert!(decode_mutf7(b"&ZeV").is_none());
    }

    #[test]
    fn wildcards() {
        assert!(list_matches("*", "a/b"));
        assert!(!list_matches("%", "a/b"));
        assert!(list_matches("a/%", "a/b"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(!list_matches("S%", "Trash"));
        assert!(list_matches("%/%", "a/b"));
        assert!(!list_matches("%/%", "a/b/c"));
        assert!(list_matches("%/*", "a/b/c"));
        assert!(list_matches("*%", "a/b"));
        assert!(!list_matches("%*%/", "a"));
        assert!(list_matches("a*b*c", "axxbyyc"));
        assert!(!list_matches("a*b*c", "axxbyy"));
        assert!(list_matches("INBOX*", "INBOX"));
        assert!(list_matches("Inbox/%", "INBOX/x"));
        assert!(!list_matches("", "a"));
        assert!(list_matches("", ""));
    }

    /// Issue 19: a thousand `*` before a character the name lacks took exponential time
    /// (never returned) and 60,000 overflowed the stack.
    #[test]
    fn many_wildcards_match_in_linear_time() {
        let name = "a/".repeat(100) + "a";
        for wild in ["*", "%", "*%"] {
            let pattern = format!("{}Q", wild.repeat(60_000));
            assert!(!list_matches(&pattern, &name));
            let pattern = format!("{}a", wild.repeat(60_000));
            assert_eq!(list_matches(&pattern, &name), wild != "%");
        }
        // Alternating literals defeat wildcard folding; still pattern × name steps.
        let pattern = "*a".repeat(500) + "Q";
        assert!(!list_matches(&pattern, &"a".repeat(255)));
    }

    #[test]
    fn strings() {
        let mut v = Vec::new();
        push_string(&mut v, b"a \"b\"");
        push_string(&mut v, "é".as_bytes());
        assert_eq!(v, b"\"a \\\"b\\\"\"{2}\r\n\xc3\xa9");
    }
}
