#!/usr/bin/env bash
# Failed console logins, timed per case: on the administrators' page (/login) an
# unknown name, a wrong password, a TOTP administrator's wrong password, and the right
# password without the code; on the users' page (/me/login) an unknown address, a wrong
# password, a deactivated user (with the right password) and a user with no password.
# N (default 50) logins per case, the cases interleaved in a shuffled order each round,
# each on a kept-alive connection, the POST alone timed. Prints median and p90 per case
# and each case's difference from the unknown name; the throttles are set out of the way
# (the figures are the login's work, not the lock-out).
# UNDERSTUDY_BIN=path runs that binary (e.g. the debug one) instead of building release.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-50}"
source benches/lib.sh
write_config
cat >> "$WORK/understudy.toml" <<CONF
[web]
listen = "127.0.0.1:0"
max_failures = 1000000
lockout_secs = 1
[auth]
max_failures = 1000000
lockout_secs = 1
failure_delay_ms = 0
CONF
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add known@bench.example --password-stdin > /dev/null
echo 'Bench1password' | admin user add gone@bench.example --password-stdin > /dev/null
admin user deactivate gone@bench.example > /dev/null
admin user add nopass@bench.example > /dev/null
echo 'Bench1password' | admin admin add root --password-stdin > /dev/null
echo 'Bench1password' | admin admin add tot --totp --password-stdin > /dev/null
start_server
echo "binary: $BIN"
echo "load before: $(cat /proc/loadavg), $(nproc) cores"
python3 benches/console_login_timing.py "$PORT_web" certs-dev/ca.crt "$N"
echo "load after: $(cat /proc/loadavg)"
