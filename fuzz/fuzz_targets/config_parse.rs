//! The config loader's parse-and-validate stage on arbitrary text (no file, no store).
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml", None);
    }
});
