#!/usr/bin/env bash
# Store benchmark: synced deliveries of 10 KB messages (each to one INBOX plus a relay
# queue entry sharing the body) with 1, 8 and 32 concurrent writers, and the bytes on
# disk per stored message. Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Release builds get their own target directory so they never wait on the debug one.
export CARGO_TARGET_DIR="${RELEASE_TARGET_DIR:-$HOME/.cache/understudy/target-release}"
cargo build --release -q -p understudy-storage --bin store-bench
bin="$CARGO_TARGET_DIR/release/store-bench"
count="${COUNT:-4000}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
df -h "$work" | tail -1 | awk '{print "filesystem: " $1 " (" $NF ")"}'
for writers in 1 8 32; do
  "$bin" --dir "$work/db-$writers" --count "$count" --writers "$writers" --size 10240 --users 64
done
