//! The command forms imap-codec 2.0.0-alpha.10 does not parse: LIST with selection and
//! return options (LIST-EXTENDED, RFC 5258; LIST-STATUS, RFC 5819; SPECIAL-USE, RFC 6154
//! §3) and SEARCH and SORT with RETURN options (ESEARCH, RFC 4731; ESORT, RFC 5267). They are recognised here from
//! the framed command bytes; SEARCH criteria are still parsed by imap-codec.

use imap_codec::imap_types::status::StatusDataItemName;

/// One token of a command: an atom, a string (quoted or literal), or a parenthesised list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Token>),
}

impl Token {
    fn atom_is(&self, word: &str) -> bool {
        matches!(self, Token::Atom(a) if a.eq_ignore_ascii_case(word))
    }

    /// Atom or string as bytes (mailbox names and patterns may be either).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Token::Atom(a) => Some(a.as_bytes()),
            Token::Str(s) => Some(s),
            Token::List(_) => None,
        }
    }
}

/// Parenthesised lists nest at most this deep in the forms parsed here (`RETURN (STATUS
/// (MESSAGES))` needs two); deeper input is none of them.
const MAX_NESTING: usize = 8;

struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_spaces(&mut self) {
        while self.input.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_spaces();
        matches!(self.input.get(self.pos), None | Some(b'\r') | Some(b'\n'))
    }

    /// The next token. Iterative with an explicit stack and bounded nesting: an
    /// unauthenticated line of 30,000 `(` once overflowed the worker's stack here and
    /// took every session down with it (issue 19).
    fn token(&mut self) -> Option<Token> {
        let mut open: Vec<Vec<Token>> = Vec::new();
        loop {
            self.skip_spaces();
            let token = match *self.input.get(self.pos)? {
                b'(' => {
                    if open.len() >= MAX_NESTING {
                        return None;
                    }
                    self.pos += 1;
                    open.push(Vec::new());
                    continue;
                }
                b')' if !open.is_empty() => {
                    self.pos += 1;
                    Token::List(open.pop()?)
                }
                _ => self.scalar()?,
            };
            match open.last_mut() {
                Some(items) => items.push(token),
                None => return Some(token),
            }
        }
    }

    /// An atom or a string (quoted or literal).
    fn scalar(&mut self) -> Option<Token> {
        match *self.input.get(self.pos)? {
            b'"' => {
                self.pos += 1;
                let mut s = Vec::new();
                loop {
                    let b = *self.input.get(self.pos)?;
                    self.pos += 1;
                    match b {
                        b'"' => return Some(Token::Str(s)),
                        b'\\' => {
                            s.push(*self.input.get(self.pos)?);
                            self.pos += 1;
                        }
                        b'\r' | b'\n' => return None,
                        _ => s.push(b),
                    }
                }
            }
            b'{' => {
                let close = self.input[self.pos..].iter().position(|b| *b == b'}')? + self.pos;
                let digits = std::str::from_utf8(&self.input[self.pos + 1..close]).ok()?;
                let length: usize = digits.trim_end_matches('+').parse().ok()?;
                let mut start = close + 1;
                if self.input.get(start) == Some(&b'\r') {
                    start += 1;
                }
                if self.input.get(start) != Some(&b'\n') {
                    return None;
                }
                start += 1;
                let end = start.checked_add(length)?;
                let data = self.input.get(start..end)?.to_vec();
                self.pos = end;
                Some(Token::Str(data))
            }
            _ => {
                let start = self.pos;
                while let Some(&b) = self.input.get(self.pos) {
                    if matches!(b, b' ' | b'(' | b')' | b'\r' | b'\n' | b'"') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return None;
                }
                Some(Token::Atom(
                    String::from_utf8_lossy(&self.input[start..self.pos]).into_owned(),
                ))
            }
        }
    }
}

/// A LIST-EXTENDED command.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListCommand {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub select_subscribed: bool,
    pub select_special_use: bool,
    pub recursive_match: bool,
    pub return_subscribed: bool,
    pub return_status: Option<Vec<StatusDataItemName>>,
}

/// ESEARCH result options (RFC 4731 §3.1) and those of CONTEXT=SEARCH (RFC 5267 §4).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EsearchOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// UPDATE: keep the result and report its changes (ADDTO, REMOVEFROM).
    pub update: bool,
    /// PARTIAL low:high, 1-based positions in the result; negative ones count from
    /// the end (-1 is the last).
    pub partial: Option<(i32, i32)>,
    /// SAVE (SEARCHRES, RFC 5182): keep the result for `$`.
    pub save: bool,
}

/// `low:high` of PARTIAL (RFC 5267 §4.4): both non-zero and of one sign.
fn partial_range(token: &Token) -> Option<(i32, i32)> {
    let Token::Atom(a) = token else { return None };
    let (low, high) = a.split_once(':')?;
    let (low, high): (i32, i32) = (low.parse().ok()?, high.parse().ok()?);
    (low != 0 && high != 0 && (low > 0) == (high > 0)).then_some((low, high))
}

pub enum Extended {
    List {
        tag: String,
        command: ListCommand,
    },
    /// `criteria` is a plain `tag [UID] SEARCH ...` or `tag [UID] SORT ...` command for
    /// imap-codec (ESEARCH, RFC 4731; ESORT, RFC 5267).
    Search {
        tag: String,
        options: EsearchOptions,
        criteria: Vec<u8>,
    },
    /// CANCELUPDATE of the UPDATE contexts of these search tags (RFC 5267 §4.3.5).
    CancelUpdate {
        tag: String,
        tags: Vec<String>,
    },
    /// Recognised, but malformed or using an option we do not offer.
    Bad {
        tag: String,
        text: &'static str,
    },
    /// A SEARCH RETURN refused as malformed, whose options asked for SAVE: the saved
    /// result becomes empty (RFC 5182 §2.1) as for any failed SAVE search.
    SearchSaveBad {
        tag: String,
        text: &'static str,
    },
}

/// Whether a (possibly incomplete) command is one of the extended forms, so that a
/// synchronizing literal in it may be accepted although imap-codec rejects the prefix.
pub fn is_extended_form(command: &[u8]) -> bool {
    let mut lx = Lexer {
        input: command,
        pos: 0,
    };
    let (Some(Token::Atom(_)), Some(name)) = (lx.token(), lx.token()) else {
        return false;
    };
    if name.atom_is("LIST") || name.atom_is("CANCELUPDATE") {
        return true;
    }
    let is_search = |t: &Token| t.atom_is("SEARCH") || t.atom_is("SORT");
    let search = if name.atom_is("UID") {
        lx.token().is_some_and(|t| is_search(&t))
    } else {
        is_search(&name)
    };
    search && lx.token().is_some_and(|t| t.atom_is("RETURN"))
}

/// Recognises the extended forms; `None` for anything else.
pub fn parse(command: &[u8]) -> Option<Extended> {
    let mut lx = Lexer {
        input: command,
        pos: 0,
    };
    let Token::Atom(tag) = lx.token()? else {
        return None;
    };
    let name = lx.token()?;
    if name.atom_is("LIST") {
        return Some(match parse_list(&mut lx) {
            Some(command) => Extended::List { tag, command },
            None => Extended::Bad {
                tag,
                text: "Invalid LIST arguments",
            },
        });
    }
    if name.atom_is("CANCELUPDATE") {
        let mut tags = Vec::new();
        while !lx.at_end() {
            match lx.token() {
                Some(Token::Str(t)) if tags.len() < 64 => tags.push(String::from_utf8_lossy(&t).into_owned()),
                _ => {
                    return Some(Extended::Bad {
                        tag,
                        text: "Invalid CANCELUPDATE arguments",
                    })
                }
            }
        }
        if tags.is_empty() {
            return Some(Extended::Bad {
                tag,
                text: "Invalid CANCELUPDATE arguments",
            });
        }
        return Some(Extended::CancelUpdate { tag, tags });
    }
    let uid = name.atom_is("UID");
    let command_name = if uid { lx.token()? } else { name };
    if !command_name.atom_is("SEARCH") && !command_name.atom_is("SORT") {
        return None;
    }
    let after_search = lx.pos;
    if !lx.token()?.atom_is("RETURN") {
        return None;
    }
    let Some(Token::List(opts)) = lx.token() else {
        return Some(Extended::Bad {
            tag,
            text: "Invalid SEARCH RETURN options",
        });
    };
    // A refused SEARCH that asked for SAVE still empties the saved result.
    let save_asked = command_name.atom_is("SEARCH")
        && opts
            .iter()
            .any(|t| matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case("SAVE")));
    let bad = |tag: String, text: &'static str| {
        if save_asked {
            Extended::SearchSaveBad { tag, text }
        } else {
            Extended::Bad { tag, text }
        }
    };
    let mut options = EsearchOptions::default();
    let mut i = 0;
    while i < opts.len() {
        match &opts[i] {
            Token::Atom(a) if a.eq_ignore_ascii_case("MIN") => options.min = true,
            Token::Atom(a) if a.eq_ignore_ascii_case("MAX") => options.max = true,
            Token::Atom(a) if a.eq_ignore_ascii_case("ALL") => options.all = true,
            Token::Atom(a) if a.eq_ignore_ascii_case("COUNT") => options.count = true,
            Token::Atom(a) if a.eq_ignore_ascii_case("UPDATE") => options.update = true,
            Token::Atom(a) if a.eq_ignore_ascii_case("SAVE") && command_name.atom_is("SEARCH") => {
                options.save = true
            }
            // A hint that the search will be refined; nothing is cached (RFC 5267 §4.2).
            Token::Atom(a) if a.eq_ignore_ascii_case("CONTEXT") => {}
            Token::Atom(a) if a.eq_ignore_ascii_case("PARTIAL") && options.partial.is_none() => {
                i += 1;
                match opts.get(i).and_then(partial_range) {
                    Some(range) => options.partial = Some(range),
                    None => return Some(bad(tag, "Invalid PARTIAL range")),
                }
            }
            _ => return Some(bad(tag, "Unsupported SEARCH RETURN option")),
        }
        i += 1;
    }
    // RETURN () is ALL (RFC 4731 §3.1); so is RETURN (UPDATE), which would otherwise
    // give the client no result for the updates to apply to.
    // RETURN (SAVE) alone returns nothing (RFC 5182 §2.1).
    if !(options.min
        || options.max
        || options.count
        || options.all
        || options.partial.is_some()
        || options.save)
    {
        options.all = true;
    }
    if options.save && options.partial.is_some() {
        return Some(bad(tag, "SAVE with PARTIAL is not supported"));
    }
    lx.skip_spaces();
    let mut criteria = command[..after_search].to_vec();
    criteria.push(b' ');
    criteria.extend_from_slice(&command[lx.pos..]);
    Some(Extended::Search {
        tag,
        options,
        criteria,
    })
}

fn parse_list(lx: &mut Lexer<'_>) -> Option<ListCommand> {
    let mut cmd = ListCommand::default();
    let mut first = lx.token()?;
    if let Token::List(opts) = &first {
        for o in opts {
            match o {
                Token::Atom(a) if a.eq_ignore_ascii_case("SUBSCRIBED") => cmd.select_subscribed = true,
                Token::Atom(a) if a.eq_ignore_ascii_case("SPECIAL-USE") => cmd.select_special_use = true,
                Token::Atom(a) if a.eq_ignore_ascii_case("RECURSIVEMATCH") => cmd.recursive_match = true,
                Token::Atom(a) if a.eq_ignore_ascii_case("REMOTE") => {}
                _ => return None,
            }
        }
        // RFC 5258 §3.1: RECURSIVEMATCH alone is an error.
        if cmd.recursive_match && !cmd.select_subscribed && !cmd.select_special_use {
            return None;
        }
        first = lx.token()?;
    }
    cmd.reference = first.bytes()?.to_vec();
    match lx.token()? {
        Token::List(patterns) => {
            for p in &patterns {
                cmd.patterns.push(p.bytes()?.to_vec());
            }
            if cmd.patterns.is_empty() {
                return None;
            }
        }
        other => cmd.patterns.push(other.bytes()?.to_vec()),
    }
    if !lx.at_end() {
        if !lx.token()?.atom_is("RETURN") {
            return None;
        }
        let Token::List(opts) = lx.token()? else {
            return None;
        };
        let mut i = 0;
        while i < opts.len() {
            let o = &opts[i];
            if o.atom_is("SUBSCRIBED") {
                cmd.return_subscribed = true;
            } else if o.atom_is("CHILDREN") || o.atom_is("SPECIAL-USE") {
                // Always returned.
            } else if o.atom_is("STATUS") {
                i += 1;
                let Some(Token::List(items)) = opts.get(i) else {
                    return None;
                };
                let mut names = Vec::new();
                for item in items {
                    names.push(status_item(item)?);
                }
                cmd.return_status = Some(names);
            } else {
                return None;
            }
            i += 1;
        }
        if !lx.at_end() {
            return None;
        }
    }
    Some(cmd)
}

fn status_item(token: &Token) -> Option<StatusDataItemName> {
    let Token::Atom(a) = token else { return None };
    Some(match a.to_ascii_uppercase().as_str() {
        "MESSAGES" => StatusDataItemName::Messages,
        "RECENT" => StatusDataItemName::Recent,
        "UIDNEXT" => StatusDataItemName::UidNext,
        "UIDVALIDITY" => StatusDataItemName::UidValidity,
        "UNSEEN" => StatusDataItemName::Unseen,
        "DELETED" => StatusDataItemName::Deleted,
        "HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        "SIZE" => StatusDataItemName::Size,
        "DELETED-STORAGE" => StatusDataItemName::DeletedStorage,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(cmd: &str) -> ListCommand {
        match parse(cmd.as_bytes()) {
            Some(Extended::List { command, .. }) => command,
            _ => panic!("not a LIST: {cmd}"),
        }
    }

    #[test]
    fn list_forms() {
        let c = list("a LIST (SPECIAL-USE) \"\" \"*\"\r\n");
        assert!(c.select_special_use);
        assert_eq!(c.patterns, vec![b"*".to_vec()]);
        let c =
            list("a list \"\" (INBOX \"Sent\" {4}\r\nJunk) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(c.patterns.len(), 3);
        assert_eq!(c.patterns[2], b"Junk");
        assert!(c.return_subscribed);
        assert_eq!(
            c.return_status,
            Some(vec![StatusDataItemName::Messages, StatusDataItemName::Unseen])
        );
        assert!(matches!(
            parse(b"a LIST (RECURSIVEMATCH) \"\" *\r\n"),
            Some(Extended::Bad { .. })
        ));
        assert!(matches!(
            parse(b"a LIST \"\" * RETURN (FOO)\r\n"),
            Some(Extended::Bad { .. })
        ));
    }

    #[test]
    fn search_return() {
        match parse(b"t UID SEARCH RETURN (MIN COUNT) UNSEEN\r\n") {
            Some(Extended::Search {
                tag,
                options,
                criteria,
            }) => {
                assert_eq!(tag, "t");
                assert!(options.min && options.count && !options.max && !options.all);
                assert_eq!(criteria, b"t UID SEARCH UNSEEN\r\n");
            }
            _ => panic!(),
        }
        assert!(parse(b"t SEARCH UNSEEN\r\n").is_none());
        assert!(parse(b"t FETCH 1 FLAGS\r\n").is_none());
    }
}
