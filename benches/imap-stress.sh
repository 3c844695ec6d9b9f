#!/usr/bin/env bash
# The suite's concurrency stress test, bigger: SESSIONS sessions (default 50) on one
# shared INBOX doing random APPEND/FETCH/STORE/EXPUNGE/COPY/MOVE, bodies repeated on
# purpose, each keeping its own model of the mailbox from untagged responses, compared
# with each other and with a fresh SELECT at PHASES checkpoints (tests/suite/imap_stress.py).
# Prints commands/s and the error count, which must be 0.
# UNDERSTUDY_BIN=target/debug/understudy runs a debug build instead of release.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SESSIONS="${SESSIONS:-50}" OPS="${OPS:-200}" PHASES="${PHASES:-5}" SEED="${SEED:-1}"
write_config
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add "stress@bench.example" --password-stdin > /dev/null
start_server
python3 tests/suite/imap_stress.py 127.0.0.1 "$PORT_imap" stress@bench.example Bench1password \
  "$SESSIONS" "$OPS" "$PHASES" "$SEED"
