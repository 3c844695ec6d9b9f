//! POP3 command lines (RFC 1939 §3, RFC 2449 §3, RFC 2595 §4, RFC 5034 §4) parsed into
//! a typed command.

/// A message number as the client wrote it. Numbers too large for `u64` become
/// `u64::MAX`, which no maildrop holds, so they get "no such message" like any other miss.
pub(crate) type MessageNumber = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    Capa,
    Stls,
    User(&'a str),
    /// The rest of the line after `PASS `, spaces included (RFC 1939 §7 allows them).
    Pass(&'a str),
    /// `AUTH` alone lists the mechanisms; otherwise a mechanism and an optional initial
    /// response (RFC 5034 §4).
    Auth {
        mechanism: Option<&'a str>,
        initial: Option<&'a str>,
    },
    Stat,
    List(Option<MessageNumber>),
    Uidl(Option<MessageNumber>),
    Retr(MessageNumber),
    Top(MessageNumber, u64),
    Dele(MessageNumber),
    Rset,
    Noop,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    Unknown,
    Syntax,
}

/// Parses one command line without its line end. Keywords are case-insensitive; arguments
/// are separated by single spaces, but runs of spaces are tolerated.
pub(crate) fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax)?;
    let (keyword, rest) = match line.split_once(' ') {
        Some((keyword, rest)) => (keyword, rest),
        None => (line, ""),
    };
    let keyword = keyword.to_ascii_uppercase();
    let mut args = rest.split(' ').filter(|a| !a.is_empty());
    let command = match keyword.as_str() {
        // PASS takes the raw remainder, so it is handled before the argument count check.
        "PASS" => {
            return if rest.is_empty() {
                Err(ParseError::Syntax)
            } else {
                Ok(Command::Pass(rest))
            }
        }
        "CAPA" => Command::Capa,
        "STLS" => Command::Stls,
        "USER" => Command::User(args.next().ok_or(ParseError::Syntax)?),
        "AUTH" => Command::Auth {
            mechanism: args.next(),
            initial: args.next(),
        },
        "STAT" => Command::Stat,
        "LIST" => Command::List(args.next().map(number).transpose()?),
        "UIDL" => Command::Uidl(args.next().map(number).transpose()?),
        "RETR" => Command::Retr(number(args.next().ok_or(ParseError::Syntax)?)?),
        "TOP" => {
            let msg = number(args.next().ok_or(ParseError::Syntax)?)?;
            Command::Top(msg, number(args.next().ok_or(ParseError::Syntax)?)?)
        }
        "DELE" => Command::Dele(number(args.next().ok_or(ParseError::Syntax)?)?),
        "RSET" => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        _ => return Err(ParseError::Unknown),
    };
    if args.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(command)
}

fn number(arg: &str) -> Result<u64, ParseError> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax);
    }
    Ok(arg.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_case_insensitively() {
        assert_eq!(parse(b"capa"), Ok(Command::Capa));
        assert_eq!(parse(b"LiSt"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"top 1  10"), Ok(Command::Top(1, 10)));
        assert_eq!(
            parse(b"UIDL 99999999999999999999999"),
            Ok(Command::Uidl(Some(u64::MAX)))
        );
        assert_eq!(parse(b"PASS two words "), Ok(Command::Pass("two words ")));
        assert_eq!(
            parse(b"AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN"),
                initial: Some("AGEAYg==")
            })
        );
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        assert_eq!(parse(b"RETR"), Err(ParseError::Syntax));
        assert_eq!(parse(b"RETR -1"), Err(ParseError::Syntax));
        assert_eq!(parse(b"RETR 1 2"), Err(ParseError::Syntax));
        assert_eq!(parse(b"TOP 1"), Err(ParseError::Syntax));
        assert_eq!(parse(b"PASS"), Err(ParseError::Syntax));
        assert_eq!(parse(b"STAT x"), Err(ParseError::Syntax));
        assert_eq!(parse(b"APOP a b"), Err(ParseError::Unknown));
        assert_eq!(parse(b""), Err(ParseError::Unknown));
        assert_eq!(parse(b"USER \xff"), Err(ParseError::Syntax));
    }
}
