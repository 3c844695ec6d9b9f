#!/usr/bin/env bash
# Crash loop (docs/reliability.md): SMTP deliveries while the server is SIGKILLed
# KILLS times (default 20) and restarted; every message that got 250 must survive.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/understudy/target}"
cargo build -q --bin understudy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 benches/crash_loop.py "$CARGO_TARGET_DIR/debug/understudy" "$work" "${KILLS:-20}"
