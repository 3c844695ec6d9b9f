//! The MIME walk behind FETCH: parses arbitrary bytes as a message and builds its
//! ENVELOPE, BODYSTRUCTURE (with extension data) and whole-message section.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_protocol::imap::message::{body_structure, envelope, section, ParsedMessage};

fuzz_target!(|data: &[u8]| {
    let msg = ParsedMessage::parse(data);
    let _ = envelope(&msg);
    let _ = body_structure(&msg, true);
    let _ = body_structure(&msg, false);
    let _ = section(&msg, None);
});
