//! SEARCHRES (RFC 5182): the result `SEARCH RETURN (SAVE)` keeps, and `$` in the
//! sequence sets of later commands, which is replaced here by the saved set before
//! imap-codec (whose sequence sets cannot hold `$`) parses the command.

use super::text::compress_ordered;
use super::*;

/// What `$` in a command came to.
pub(super) enum Substituted {
    /// The command with every `$` replaced.
    Command(Vec<u8>),
    /// A FETCH, STORE, COPY, MOVE or UID EXPUNGE of `$` with nothing saved: it names no
    /// message, and succeeds doing nothing (RFC 5182 §2.1). The verb for the OK.
    Empty { tag: String, uid: bool, verb: String },
    /// The set is longer than `ImapLimits::max_saved_set`.
    TooLong { tag: String },
}

/// Byte ranges of the `$` tokens outside quoted strings and literals, with whether the
/// token before is `UID` (a SEARCH key).
fn dollar_tokens(command: &[u8]) -> Vec<(usize, Option<usize>)> {
    let mut found = Vec::new();
    let mut i = 0;
    let mut prev_token_start = None;
    let mut token_start = None;
    while i < command.len() {
        let c = command[i];
        match c {
            b'"' => {
                i += 1;
                while i < command.len() && command[i] != b'"' {
                    if command[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => {
                // A literal `{n}` or `{n+}` then CRLF and n octets.
                let digits: Vec<u8> = command[i + 1..]
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_digit)
                    .collect();
                let n: usize = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                let mut j = i + 1 + digits.len();
                if command.get(j) == Some(&b'+') {
                    j += 1;
                }
                if command.get(j) == Some(&b'}') && command.get(j + 1..j + 3) == Some(b"\r\n") {
                    i = j + 3 + n;
                    continue;
                }
            }
            b' ' | b'(' | b')' | b'\r' | b'\n' => {
                if let Some(s) = token_start.take() {
                    prev_token_start = Some(s);
                }
            }
            _ => {
                if token_start.is_none() {
                    token_start = Some(i);
                    let boundary = |b: Option<&u8>| matches!(b, None | Some(b' ' | b')' | b'\r' | b'\n'));
                    if c == b'$' && boundary(command.get(i + 1)) {
                        let uid_before = prev_token_start.filter(|&p| {
                            command[p..].len() >= 4
                                && command[p..p + 4].eq_ignore_ascii_case(b"UID ")
                                && p + 4 == i
                        });
                        found.push((i, uid_before));
                    }
                }
            }
        }
        i += 1;
    }
    found
}

impl ImapSession {
    /// The command with `$` replaced by the saved result, or `None` when it has no `$`
    /// (or is not one that takes a sequence set in the selected state).
    pub(super) fn substitute_saved(&self, command: &[u8]) -> Option<Substituted> {
        if !command.contains(&b'$') {
            return None;
        }
        let State::Selected { view, .. } = &self.state else {
            return None;
        };
        let words: Vec<&[u8]> = command.splitn(4, |&b| b == b' ').collect();
        let tag = String::from_utf8_lossy(words.first()?).into_owned();
        let uid = words.get(1)?.eq_ignore_ascii_case(b"UID");
        let name = words.get(if uid { 2 } else { 1 })?;
        let name = String::from_utf8_lossy(name.split(|&b| b == b'\r').next()?).to_ascii_uppercase();
        let search = matches!(name.as_str(), "SEARCH" | "SORT" | "THREAD");
        let set_command =
            matches!(name.as_str(), "FETCH" | "STORE" | "COPY" | "MOVE") || (uid && name == "EXPUNGE");
        if !search && !set_command {
            return None;
        }
        let dollars = dollar_tokens(command);
        if dollars.is_empty() {
            return None;
        }
        // The saved messages still in the view, as UIDs and as sequence numbers.
        let mut uids = Vec::new();
        let mut seqs = Vec::new();
        for &u in &self.saved {
            if let Some(i) = view.index_of_uid(u) {
                uids.push(u);
                seqs.push(i as u32 + 1);
            }
        }
        seqs.sort_unstable();
        if uids.is_empty() && set_command {
            let verb = if uid && name == "FETCH" {
                "UID FETCH".to_string()
            } else {
                name
            };
            return Some(Substituted::Empty { tag, uid, verb });
        }
        let uid_set = compress_ordered(&uids);
        let seq_set = compress_ordered(&seqs);
        if uid_set.len().max(seq_set.len()) > self.limits.max_saved_set {
            return Some(Substituted::TooLong { tag });
        }
        let mut out = Vec::with_capacity(command.len() + uid_set.len());
        let mut copied = 0;
        for (at, uid_before) in dollars {
            if search {
                // A SEARCH key: `$` or `UID $`, both the saved messages.
                let start = uid_before.unwrap_or(at);
                out.extend_from_slice(&command[copied..start]);
                if uids.is_empty() {
                    out.extend_from_slice(b"(NOT ALL)");
                } else {
                    out.extend_from_slice(b"UID ");
                    out.extend_from_slice(uid_set.as_bytes());
                }
            } else {
                out.extend_from_slice(&command[copied..at]);
                out.extend_from_slice(if uid {
                    uid_set.as_bytes()
                } else {
                    seq_set.as_bytes()
                });
            }
            copied = at + 1;
        }
        out.extend_from_slice(&command[copied..]);
        Some(Substituted::Command(out))
    }
}
