//! The user-import CSV reader on arbitrary text (the store-free part of `user import`),
//! then address normalisation of each row's first cell as the importer does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy::admin::import::parse_rows;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (rows, _errors) = parse_rows(text);
        for row in rows {
            if let Some(address) = row.fields.first() {
                let _ = understudy_storage::accounts::normalize_address(address);
            }
        }
    }
});
