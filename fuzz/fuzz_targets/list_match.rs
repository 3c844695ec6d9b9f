//! The LIST wildcard matcher, exponential and recursive until issue 19: the first byte
//! splits the expanded input into a mailbox name (up to 255 octets) and a pattern of up
//! to 1,024 octets, the longest the session passes to it (`MAX_LIST_PATTERN`; the
//! unit tests cover 60,000 `*`). Also checks it against a slow but obviously right matcher on
//! short inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_protocol::testing::parsers;

/// Reference matcher: dynamic programming over (pattern, name) prefixes.
fn reference(p: &[char], n: &[char]) -> bool {
    let mut m = vec![vec![false; n.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=n.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                '%' => m[i - 1][j] || (j > 0 && n[j - 1] != '/' && m[i][j - 1]),
                c => j > 0 && n[j - 1] == c && m[i - 1][j - 1],
            };
        }
    }
    m[p.len()][n.len()]
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let input = understudy_fuzz::expand(rest, 1024 + 255);
    let name_len = usize::from(split).min(input.len());
    let (name, pattern) = input.split_at(name_len);
    let name = String::from_utf8_lossy(name);
    let pattern = String::from_utf8_lossy(pattern);
    let got = parsers::list_matches(&pattern, &name);
    if pattern.len() <= 64 && !pattern.to_ascii_lowercase().starts_with("inbox") {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        assert_eq!(got, reference(&p, &n), "{pattern:?} vs {name:?}");
    }
});
