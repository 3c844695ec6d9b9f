#!/usr/bin/env bash
# IMAP benchmark: the release server with 20 users (known password) holding a few hundred
# messages each (delivered over SMTP), then a mixed load from a second process (Python
# multiprocessing + imaplib: login, select, fetch, store, append, expunge, logout) for
# 20 s at 10 and at 50 clients; prints operations/s per command. If Dovecot is installed
# (Debian dovecot-imapd) and we are root, the same load runs against a throwaway Dovecot
# with the same users and messages, so the figures stand side by side. DOVECOT=0 skips it.
# TLS=1 makes the clients use implicit TLS (993) instead of plain IMAP on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
source benches/dovecot.sh
trap 'stop_dovecot; cleanup' EXIT
USERS="${USERS:-20}" MESSAGES="${MESSAGES:-300}" SECONDS_EACH="${SECONDS_EACH:-20}"
CLIENTS="${CLIENTS:-10 50}" DOVECOT="${DOVECOT:-1}" TLS="${TLS:-0}"
write_config
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
for i in $(seq 1 "$USERS"); do
  echo 'Bench1password' | admin user add "user$i@bench.example" --password-stdin > /dev/null
done
start_server
echo "understudy: $USERS users x $MESSAGES messages"
python3 benches/imap_load.py fill-smtp "$PORT_smtp" "$USERS" "$MESSAGES"
if [ "$TLS" = 1 ]; then U_ADDR="127.0.0.1:$PORT_imaps" CA="$PWD/certs-dev/ca.crt"; else U_ADDR="127.0.0.1:$PORT_imap" CA=""; fi

if [ "$DOVECOT" = 1 ] && have_dovecot; then
  start_dovecot "$USERS"
  python3 benches/imap_load.py fill-maildir "$DOVECOT_HOME" "$USERS" "$MESSAGES"
  own_dovecot_mail
  echo "dovecot: $(dovecot --version), same users and messages (written into Maildirs), fsync always, argon2id $DOVECOT_ARGON2"
  if [ "$TLS" = 1 ]; then D_ADDR="127.0.0.1:$DOVECOT_IMAPS"; else D_ADDR="127.0.0.1:$DOVECOT_IMAP"; fi
else
  D_ADDR=""
fi

python3 benches/imap_load.py warm "$U_ADDR" "$USERS" $CA
[ -z "$D_ADDR" ] || python3 benches/imap_load.py warm "$D_ADDR" "$USERS" $CA
for c in $CLIENTS; do
  python3 benches/imap_load.py load understudy "$U_ADDR" "$USERS" "$c" "$SECONDS_EACH" $CA
  [ -z "$D_ADDR" ] || python3 benches/imap_load.py load dovecot "$D_ADDR" "$USERS" "$c" "$SECONDS_EACH" $CA
done
echo "understudy server: $(grep -E '^(VmRSS|VmHWM)' /proc/$SERVER_PID/status | tr -s ' \t' ' ' | paste -sd, -)"
