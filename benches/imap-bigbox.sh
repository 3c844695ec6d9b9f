#!/usr/bin/env bash
# IMAP big-mailbox benchmark: fills one INBOX with COUNT (default 100,000) small messages
# over SMTP, then times SELECT and `UID FETCH 1:* (FLAGS)` (what Outlook sends on every
# sync), a STORE over all of them, SEARCH UNSEEN, a CHANGEDSINCE fetch, SORT and THREAD on two
# fresh connections (what a webmail sends per page), and prints the
# release server's RSS; then restarts the server and times SORT and THREAD once more. Plain IMAP on loopback (LOGIN allowed there by plaintext_networks).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-100000}"
source benches/lib.sh
write_config
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add "big@bench.example" --password-stdin > /dev/null
start_server
python3 benches/imap_bigbox.py "$PORT_smtp" "$PORT_imap" big@bench.example Bench1password "$COUNT" "$SERVER_PID"
# The first SORT after a server start, when no session has read the keys yet.
kill "$SERVER_PID"
wait "$SERVER_PID" || true
start_server
python3 benches/imap_bigbox.py after-restart "$PORT_imap" big@bench.example Bench1password
