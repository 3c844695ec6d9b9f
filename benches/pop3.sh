#!/usr/bin/env bash
# POP3 benchmark: 20 users x 50 messages, 10 parallel Python poplib clients over TLS each
# logging in, listing and downloading a whole maildrop (leave on server), repeatedly.
# Prints sessions/s and messages/s.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
USERS="${USERS:-20}" MESSAGES="${MESSAGES:-50}" CLIENTS="${CLIENTS:-10}" ROUNDS="${ROUNDS:-5}"
write_config
admin domain add bench.example > /dev/null
for i in $(seq 1 "$USERS"); do
  echo 'Bench1password' | admin user add "user$i@bench.example" --password-stdin > /dev/null
done
start_server
python3 benches/pop3_load.py fill "$PORT_smtp" "$USERS" "$MESSAGES"
python3 benches/pop3_load.py load "$PORT_pop3s" "$USERS" "$CLIENTS" "$ROUNDS" "$PWD/certs-dev/ca.crt"
