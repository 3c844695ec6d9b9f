//! CATENATE (RFC 4469): an APPEND message put together from literal text and IMAP URLs
//! (RFC 5092) naming messages or sections in this user's own mailboxes. URLAUTH is not
//! offered, so a URL naming another user is refused with `NO [BADURL]`.

use std::borrow::Cow;

use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};

use super::append::CatenatePart;
use super::message::ParsedMessage;
use super::*;

/// Longest URL accepted; RFC 5092 sets none, a message reference needs far less.
const MAX_URL: usize = 2048;

/// A message (or part) reference: `[imap://[user@]host[:port]]/mailbox[;UIDVALIDITY=v]
/// /;UID=u[/;SECTION=s][/;PARTIAL=o[.l]]`, or `;UID=..` in the selected mailbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MessageUrl {
    user: Option<String>,
    /// None: the selected mailbox.
    mailbox: Option<String>,
    uid_validity: Option<u32>,
    uid: u32,
    section: Option<String>,
    partial: Option<(u32, Option<u32>)>,
}

fn decode_percent(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

pub(crate) fn parse_url(url: &str) -> Option<MessageUrl> {
    if url.len() > MAX_URL {
        return None;
    }
    let mut user = None;
    // `get`, not indexing: the 7th byte may fall inside a multi-byte character.
    let scheme = url.get(..7).filter(|s| s.eq_ignore_ascii_case("imap://"));
    let path = if let (Some(_), Some(rest)) = (scheme, url.get(7..)) {
        let slash = rest.find('/')?;
        let authority = &rest[..slash];
        if let Some((userinfo, _host)) = authority.rsplit_once('@') {
            // `;AUTH=...` names a SASL mechanism; the user is what comes before.
            let name = userinfo.split(';').next().unwrap_or_default();
            user = Some(decode_percent(name)?);
        }
        &rest[slash..]
    } else {
        url
    };
    let (mailbox, uid_validity, message) = if let Some(rest) = path.strip_prefix('/') {
        let (mailbox_part, message) = rest.split_once("/;")?;
        let (name, validity) = match mailbox_part.split_once(';') {
            Some((name, param)) => {
                let (key, value) = param.split_once('=')?;
                if !key.eq_ignore_ascii_case("UIDVALIDITY") {
                    return None;
                }
                (name, Some(value.parse().ok()?))
            }
            None => (mailbox_part, None),
        };
        (Some(decode_percent(name)?), validity, message)
    } else {
        (None, None, path.strip_prefix(';')?)
    };
    let mut uid = None;
    let mut section = None;
    let mut partial = None;
    for (n, param) in message.split("/;").enumerate() {
        let (key, value) = param.split_once('=')?;
        match key.to_ascii_uppercase().as_str() {
            "UID" if n == 0 => uid = Some(value.parse::<u32>().ok().filter(|&u| u > 0)?),
            "SECTION" if n > 0 && section.is_none() => section = Some(decode_percent(value)?),
            "PARTIAL" if n > 0 && partial.is_none() => {
                partial = Some(match value.split_once('.') {
                    Some((o, l)) => (o.parse().ok()?, Some(l.parse().ok()?)),
                    None => (value.parse().ok()?, None),
                });
            }
            _ => return None,
        }
    }
    Some(MessageUrl {
        user,
        mailbox,
        uid_validity,
        uid: uid?,
        section,
        partial,
    })
}

/// A URL's section (`1.2`, `HEADER`, `1.MIME`, `HEADER.FIELDS (SUBJECT)`) as imap-codec
/// reads it inside `BODY[...]`.
pub(crate) fn parse_section(section: &str) -> Option<Section<'static>> {
    if section.len() > 1024 || section.bytes().any(|b| b == b']' || b == b'\r' || b == b'\n') {
        return None;
    }
    let command = format!("x FETCH 1 BODY.PEEK[{section}]\r\n");
    match CommandCodec::default().decode(command.as_bytes()) {
        Ok((
            _,
            Command {
                body:
                    CommandBody::Fetch {
                        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
                        ..
                    },
                ..
            },
        )) => match names.into_iter().next() {
            Some(MessageDataItemName::BodyExt {
                section: Some(section),
                ..
            }) => Some(fetch::bounded_static_free::to_static_section(&section)),
            _ => None,
        },
        _ => None,
    }
}

/// The URL as it may appear in `[BADURL url]`: no `]`, CR or LF (RFC 4469 §6).
fn url_for_code(url: &str) -> String {
    url.chars()
        .filter(|c| !matches!(c, ']' | '\r' | '\n'))
        .take(MAX_URL)
        .collect()
}

impl ImapSession {
    /// Puts one CATENATE message together, at most `max_literal` octets. `Err` is the
    /// text of the tagged NO.
    pub(super) fn catenate(
        &self,
        account: &Account,
        command: &[u8],
        parts: &[CatenatePart],
    ) -> Result<Vec<u8>, String> {
        let max = self.limits.max_literal as usize;
        let mut message = Vec::new();
        for part in parts {
            let piece: Cow<'_, [u8]> = match part {
                CatenatePart::Text(range) => Cow::Borrowed(command.get(range.clone()).unwrap_or_default()),
                CatenatePart::Url(url) => {
                    let bad = || format!("[BADURL {}] Cannot use this URL", url_for_code(url));
                    Cow::Owned(self.url_octets(account, url).ok_or_else(bad)?)
                }
            };
            if message.len() + piece.len() > max {
                return Err("[TOOBIG] Message too big".to_string());
            }
            message.extend_from_slice(&piece);
        }
        Ok(message)
    }

    /// The octets an IMAP URL names: a message of this user's, or a section of it, as
    /// BODY[section]<partial> returns them. None: not a URL we resolve.
    fn url_octets(&self, account: &Account, url: &str) -> Option<Vec<u8>> {
        let url = parse_url(url)?;
        if url
            .user
            .as_ref()
            .is_some_and(|u| !u.eq_ignore_ascii_case(&account.address))
        {
            return None;
        }
        let (mailbox, validity) = match &url.mailbox {
            Some(name) => {
                let info = self
                    .store
                    .mailbox(account, &decode_name(name.as_bytes(), self.utf8))
                    .ok()?;
                (info.id, info.uid_validity)
            }
            None => match &self.state {
                State::Selected { view, .. } => (view.id, view.uid_validity),
                _ => return None,
            },
        };
        if url.uid_validity.is_some_and(|v| v != validity) {
            return None;
        }
        let body = self.store.body(account, mailbox, url.uid).ok()?;
        let mut octets = match &url.section {
            None => body,
            Some(section) => {
                let section = parse_section(section)?;
                message::section(&ParsedMessage::parse(&body), Some(&section))
            }
        };
        if let Some((origin, length)) = url.partial {
            let start = (origin as usize).min(octets.len());
            let end = length.map_or(octets.len(), |l| {
                start.saturating_add(l as usize).min(octets.len())
            });
            octets = octets[start..end].to_vec();
        }
        Some(octets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_rfc_4469_and_5092() {
        assert_eq!(
            parse_url("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER"),
            Some(MessageUrl {
                user: None,
                mailbox: Some("Drafts".into()),
                uid_validity: Some(385759045),
                uid: 20,
                section: Some("HEADER".into()),
                partial: None,
            })
        );
        assert_eq!(
            parse_url("imap://anna%40example.com;AUTH=*@mail.example.com:993/Arch%C3%ADv/;UID=3/;SECTION=1.2/;PARTIAL=0.100"),
            Some(MessageUrl {
                user: Some("anna@example.com".into()),
                mailbox: Some("Archív".into()),
                uid_validity: None,
                uid: 3,
                section: Some("1.2".into()),
                partial: Some((0, Some(100))),
            })
        );
        assert_eq!(parse_url(";UID=7").map(|u| (u.mailbox, u.uid)), Some((None, 7)));
        for bad in [
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/INBOX;FOO=1/;UID=1",
            "/INBOX/;SECTION=1",
            "imap://host",
            // Found by the imap_extended fuzz target: byte 7 inside a character.
            "imap:/\u{7ac}/;UID=1",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
        assert!(parse_section("HEADER.FIELDS (SUBJECT)").is_some());
        assert!(parse_section("1.2.MIME").is_some());
        assert!(parse_section("1]x").is_none());
    }
}
