//! Helpers shared by the fuzz targets.

/// Expands a short fuzz input into a long one, so that the inputs that matter at the
/// real limits (a 30,000-deep `(`, 60,000 `*`, a 64 KiB line) are a few bytes away from
/// any seed instead of out of reach of libFuzzer's mutations: `[n_hi, n_lo, k, unit (k
/// bytes), rest...]` is `unit` repeated `n` times followed by `rest`, cut at `max`. Input
/// shorter than its header is taken as it is.
pub fn expand(data: &[u8], max: usize) -> Vec<u8> {
    let [hi, lo, k, rest @ ..] = data else {
        return data.to_vec();
    };
    let (n, k) = (usize::from(*hi) << 8 | usize::from(*lo), usize::from(*k));
    if k == 0 || k > rest.len() {
        return data.to_vec();
    }
    let (unit, tail) = rest.split_at(k);
    let mut out = Vec::with_capacity(max.min(n * k + tail.len()));
    while out.len() < max && out.len() < n * k {
        out.extend_from_slice(unit);
    }
    out.extend_from_slice(tail);
    out.truncate(max);
    out
}
