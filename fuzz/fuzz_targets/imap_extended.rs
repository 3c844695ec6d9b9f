//! The IMAP extended-form lexer and parser (LIST-EXTENDED, SEARCH RETURN, CANCELUPDATE),
//! which recursed once per parenthesis until issue 19, and the MULTIAPPEND/CATENATE
//! parser with its IMAP URLs and sections: one framed command of up to a line's length
//! (64 KiB), after `understudy_fuzz::expand`, so deep nesting is a few bytes away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_protocol::testing::parsers;

fuzz_target!(|data: &[u8]| {
    let command = understudy_fuzz::expand(data, 64 * 1024);
    parsers::imap_extended(&command);
});
