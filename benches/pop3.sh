#!/usr/bin/env bash
# POP3 benchmark: 20 users x 50 messages, 10 parallel Python poplib clients over TLS each
# logging in, listing and downloading a whole maildrop (leave on server), repeatedly.
# Prints sessions/s and messages/s. If Dovecot is installed (Debian dovecot-pop3d) and we
# are root, the same load then runs against a throwaway Dovecot with the same users and
# messages (see benches/dovecot.sh); DOVECOT=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
source benches/dovecot.sh
trap 'stop_dovecot; cleanup' EXIT
USERS="${USERS:-20}" MESSAGES="${MESSAGES:-50}" CLIENTS="${CLIENTS:-10}" ROUNDS="${ROUNDS:-5}"
DOVECOT="${DOVECOT:-1}"
write_config
admin domain add bench.example > /dev/null
for i in $(seq 1 "$USERS"); do
  echo 'Bench1password' | admin user add "user$i@bench.example" --password-stdin > /dev/null
done
start_server
python3 benches/pop3_load.py fill "$PORT_smtp" "$USERS" "$MESSAGES"
python3 benches/pop3_load.py load "$PORT_pop3s" "$USERS" "$CLIENTS" "$ROUNDS" "$PWD/certs-dev/ca.crt"
if [ "$DOVECOT" = 1 ] && have_dovecot; then
  start_dovecot "$USERS"
  python3 benches/pop3_load.py fill-maildir "$DOVECOT_HOME" "$USERS" "$MESSAGES"
  own_dovecot_mail
  echo "dovecot: $(dovecot --version), argon2id $DOVECOT_ARGON2"
  python3 benches/pop3_load.py load "$DOVECOT_POP3S" "$USERS" "$CLIENTS" "$ROUNDS" "$PWD/certs-dev/ca.crt" dovecot
fi
