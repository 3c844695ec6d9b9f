#!/usr/bin/env bash
# Sequential APPEND latency on one connection (benches/imap_append.py), and the same
# against Dovecot when it is installed and we are root (DOVECOT=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
source benches/dovecot.sh
trap 'stop_dovecot; cleanup' EXIT
N="${N:-1000}" DOVECOT="${DOVECOT:-1}"
write_config
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add "user1@bench.example" --password-stdin > /dev/null
start_server
echo -n "understudy: "
python3 benches/imap_append.py 127.0.0.1 "$PORT_imap" user1@bench.example Bench1password "$N"
if [ "$DOVECOT" = 1 ] && have_dovecot; then
  start_dovecot 1
  # The user's home must exist and be the mail user's: with no mail filled in (as
  # imap.sh does), Dovecot could not create it under the root-owned home directory and
  # refused the first APPEND with NO.
  mkdir -p "$DOVECOT_HOME"
  own_dovecot_mail
  echo -n "dovecot $(dovecot --version): "
  python3 benches/imap_append.py 127.0.0.1 "$DOVECOT_IMAP" user1@bench.example Bench1password "$N"
fi
