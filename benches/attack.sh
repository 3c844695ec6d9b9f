#!/usr/bin/env bash
# Attackers and honest users at once (issue 19): a failed-login flood from many loopback
# addresses, slow readers, pre-auth literals and LIST wildcard bombs, while honest probes
# time a fresh IMAP login, a NOOP on a logged-in session and an MX delivery once a second;
# prints their p50/p95/max and the server's RSS, first without and then with the attack.
#   benches/attack.sh                       # release build of this checkout, 30 s
#   UNDERSTUDY_BIN=path benches/attack.sh   # another build (say which in the figures)
#   SECONDS_UNDER=60 FLOOD_CONNS=600 ATTACKS="flood list" benches/attack.sh
# Traffic goes to 127.0.0.0/8 only; every loop stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SECONDS_UNDER="${SECONDS_UNDER:-30}"
write_config
cat >> "$WORK/understudy.toml" <<CONF
[auth]
plaintext_networks = ["127.0.0.0/8"]
CONF
admin domain add bench.example > /dev/null
for u in honest mallory; do
  echo 'Bench1password' | admin user add "$u@bench.example" --password-stdin > /dev/null
done
start_server
# The slow readers' mailbox: 20 messages of 1 MB.
python3 - "$PORT_smtp" <<'PY'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
body = ("x" * 998 + "\r\n") * 1000
for i in range(20):
    s.sendmail("fill@outside.example", ["mallory@bench.example"], f"Subject: big {i}\r\n\r\n{body}")
s.quit()
PY
echo "server: $BIN ($(nproc) cores, $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-))"
# The LIST bomb may pin the old server's threads for good: the cleanup kills it if
# SIGTERM is ignored.
python3 benches/attack_load.py "$PORT_imap" "$PORT_smtp" "$SERVER_PID" "$SECONDS_UNDER" || true
echo "server after: $(grep -E '^(VmRSS|VmHWM|Threads)' /proc/$SERVER_PID/status | tr -s ' \t' ' ' | paste -sd, -)"
kill -TERM "$SERVER_PID" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "server ignored SIGTERM for 10 s; killed"
  kill -KILL "$SERVER_PID" 2>/dev/null || true
fi
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
