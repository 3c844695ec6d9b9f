#!/usr/bin/env bash
# IMAP memory benchmark: opens CONNECTIONS (default 5,000) concurrent authenticated IMAP
# sessions, each with INBOX selected and in IDLE, from one Python asyncio process over
# plain IMAP on loopback (LOGIN allowed there by [auth] plaintext_networks), then prints
# the release server's RSS from /proc/<pid>/status. Goal: under 100 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS="${CONNECTIONS:-5000}" USERS="${USERS:-20}" MESSAGES="${MESSAGES:-20}"
# Both the server (started below, inherits it) and the client need a descriptor each.
ulimit -n "$(( CONNECTIONS * 2 + 1000 ))"
source benches/lib.sh
write_config
sed -i "s/^max_connections_per_ip = .*/max_connections_per_ip = $(( CONNECTIONS + 100 ))\nmax_connections = $(( CONNECTIONS + 200 ))/" "$WORK/understudy.toml"
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
for i in $(seq 1 "$USERS"); do
  echo 'Bench1password' | admin user add "user$i@bench.example" --password-stdin > /dev/null
done
start_server
python3 benches/imap_load.py fill-smtp "$PORT_smtp" "$USERS" "$MESSAGES"
python3 benches/imap_load.py idle "$PORT_imap" "$USERS" "$CONNECTIONS" "$SERVER_PID"
