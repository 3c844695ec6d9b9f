#!/usr/bin/env bash
# SMTP receiver benchmark: Postfix's smtp-source sends 10 KB messages over SESSIONS
# parallel sessions to the MX listener (delivery mode `both`: each message stored in an
# INBOX and queued for the primary, synced before 250), once reusing connections and
# once with one connection per message; then the same load against Postfix's smtp-sink
# (stores nothing: the ceiling on this machine) and against a private, stock Postfix that
# fsyncs its queue (benches/postfix-baseline.sh: the baseline the goal is stated against).
# Prints messages/s for each.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v smtp-source > /dev/null || PATH="$PATH:/usr/sbin"
source benches/lib.sh
SESSIONS="${SESSIONS:-20}" MESSAGES="${MESSAGES:-20000}" USERS="${USERS:-20}"
write_config
# The primary is unreachable and the domain is in an outage (engaged by hand), so every
# relay copy stays queued and the queue runner parks it, as during a real outage.
# Without `outage start` the runner would try port 9 for every message as it arrives:
# two more synced writes per message, about half the rate on the 2-core dev machine.
admin domain add bench.example --relay-host 127.0.0.1:9 --monitoring false > /dev/null
admin outage start bench.example > /dev/null
for i in $(seq 1 "$USERS"); do admin user add "user$i@bench.example" > /dev/null; done
start_server

rate() { # label, command...
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  python3 -c "import sys; n=int(sys.argv[1]); t=float(sys.argv[3])-float(sys.argv[2]); print(f'{sys.argv[4]}: {n} messages in {t:.1f}s = {n/t:.0f} messages/s')" \
    "$MESSAGES" "$start" "$end" "$label"
}

# -N prepends a sequence number to the recipient: spread over the users' aliases would
# need them to exist, so every message goes to user1..userN in turn via separate runs.
per_user=$((MESSAGES / USERS))
run_users() { # extra smtp-source flags
  local pids=()
  for i in $(seq 1 "$USERS"); do
    smtp-source "$@" -s "$((SESSIONS / USERS > 0 ? SESSIONS / USERS : 1))" -m "$per_user" -l 10240 \
      -f sender@example.net -t "user$i@bench.example" "127.0.0.1:$PORT_smtp" &
    pids+=($!)
  done
  # Only the sources: a bare `wait` would also wait for the server (a background job).
  wait "${pids[@]}"
}
rate "understudy, reusing connections ($SESSIONS sessions)" run_users -d
rate "understudy, one connection per message" run_users

sink_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
smtp-sink -u "$(id -un)" "127.0.0.1:$sink_port" 256 &
SINK=$!
sleep 0.5
rate "smtp-sink ceiling, reusing connections" smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -l 10240 \
  -f sender@example.net -t user1@bench.example "127.0.0.1:$sink_port"
rate "smtp-sink ceiling, one connection per message" smtp-source -s "$SESSIONS" -m "$MESSAGES" -l 10240 \
  -f sender@example.net -t user1@bench.example "127.0.0.1:$sink_port"
kill "$SINK"

# The goal is stated against a stock Postfix that fsyncs its queue: measure one here, in
# the same run and on the same disk. A subshell with `set -e`, so that its EXIT trap
# (stop that Postfix, remove its directory) does not replace lib.sh's and a failure
# inside still stops it; `set +e` around it only so its status can be reported. If
# Postfix cannot be started it prints why and the bench still succeeds.
set +e
(
  set -e
  source benches/postfix-baseline.sh
)
status=$?
set -e
[ "$status" = 0 ] || { echo "postfix baseline failed (exit status $status)"; exit "$status"; }
