#!/usr/bin/env bash
# Roundcube's message-list request on a big INBOX: fills one INBOX with COUNT (default
# 10,000) messages over SMTP, runs Roundcube (Debian's packages, under `php -S` via
# contrib/roundcube/php-server.sh, settings from `understudy webmail print-config
# roundcube`) twice: as configured (server-side SORT), and with SORT hidden from it
# (`imap_disabled_caps`, bench only: Roundcube then fetches every message's date and
# sorts itself). Logs in once per run, then times REQUESTS list requests sorted by
# date, printing per request the wall time and the time spent in Understudy
# (`understudy_session_busy_seconds_total` from its metrics).
# Needs roundcube-core, roundcube-sqlite3, php8.2-cli (the test packages in .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-10000}"
REQUESTS="${REQUESTS:-20}"
source benches/lib.sh
write_config
METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >> "$WORK/understudy.toml" <<CONF
[auth]
webmail_hosts = ["127.0.0.1"]
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
CONF
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add "big@bench.example" --password-stdin > /dev/null
start_server
python3 benches/webmail_list.py fill "$PORT_smtp" big@bench.example "$COUNT"
RC_PIDS=()
stop_roundcube() { for p in "${RC_PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap 'stop_roundcube; cleanup' EXIT
for mode in sort nosort; do
  admin webmail print-config roundcube --connect 127.0.0.1 --imap-port "$PORT_imaps" \
    --smtp-port "$PORT_submissions" --ca-file certs-dev/ca.crt > "$WORK/settings-$mode.php"
  if [ "$mode" = nosort ]; then
    echo "<?php \$config['imap_disabled_caps'] = ['SORT', 'ESORT', 'SORT=DISPLAY'];" > "$WORK/extra-$mode.php"
  else
    echo "<?php" > "$WORK/extra-$mode.php"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  setsid contrib/roundcube/php-server.sh "$WORK/rc-$mode" "127.0.0.1:$port" \
    "$WORK/settings-$mode.php" "$WORK/extra-$mode.php" > "$WORK/php-$mode.log" 2>&1 &
  RC_PIDS+=($!)
  python3 benches/webmail_list.py list "http://127.0.0.1:$port/" big@bench.example Bench1password \
    "http://127.0.0.1:$METRICS_PORT/metrics" "$REQUESTS" "$mode"
done
