#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) and prints its executions; exits non-zero
# on the first crash (libFuzzer leaves the input under fuzz/artifacts/TARGET/).
#   fuzz/run-all.sh 300            # the six protocol targets, 5 minutes each
#   FUZZ_ROOT=1 fuzz/run-all.sh 60 # also config_parse and csv_import (links RocksDB)
# Generated corpora go to $FUZZ_TARGET_DIR/corpus/TARGET; the committed seeds in
# fuzz/seeds/TARGET are read, never written.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/understudy/target-fuzz}"
targets=(imap_session imap_extended list_match pop3_session smtp_session mime_walk)
features=()
if [ "${FUZZ_ROOT:-0}" = 1 ]; then
  targets+=(config_parse csv_import)
  features=(--features root)
fi
# Inputs up to the real limits: a command line is 64 KiB and a literal after login is
# the target's 64 KiB (imap_session: two control bytes, a line and a literal); list_match
# gets a pattern up to the 1 KiB the session allows and a 255-octet name; mime_walk messages up to 1 MiB.
max_len() {
  case "$1" in
    imap_session) echo $((2 + 2 * 65536)) ;;
    imap_extended) echo 65536 ;;
    list_match) echo $((1 + 1024 + 255)) ;;
    mime_walk) echo 1048576 ;;
    *) echo 65536 ;;
  esac
}
dict() {
  case "$1" in
    imap_session | imap_extended) echo imap ;;
    list_match) echo list ;;
    pop3_session) echo pop3 ;;
    smtp_session) echo smtp ;;
    mime_walk) echo mime ;;
    *) echo "" ;;
  esac
}
for t in "${targets[@]}"; do
  d=$(dict "$t")
  dict_arg=()
  [ -n "$d" ] && dict_arg=(-dict="dict/$d.dict")
  mkdir -p "$target_dir/corpus/$t"
  log="$target_dir/fuzz-$t.log"
  if ! cargo +nightly fuzz run --target-dir "$target_dir" "${features[@]}" "$t" \
      "$target_dir/corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len="$(max_len "$t")" -len_control=0 "${dict_arg[@]}" -print_final_stats=1 > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (log $log)"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t ${secs}s executions=$execs crashes=0"
done
