#!/usr/bin/env bash
# Drain benchmark (issue 6): queues COUNT messages of 10 KB for a domain's relay host
# while delivery is off (the primary is "down"), then restarts with delivery on and
# times the drain into Postfix's smtp-sink (which exits after COUNT messages). Beside
# it, in the same run, smtp-source sends the same number of messages straight to a
# sink: the ceiling. Prints both rates and their ratio. Monitoring is off for the domain:
# with nothing listening while the queue fills, probes would engage an outage (after
# three minutes) and the drain would wait for the primary to be seen back.
#
#   bash benches/drain.sh                 # COUNT=100000, release build
#   COUNT=5000 UNDERSTUDY_BIN=target/debug/understudy bash benches/drain.sh
#   MODE=both COUNT=10000 bash benches/drain.sh   # with a mailbox copy of each message
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/understudy/target}"
count="${COUNT:-100000}"
sessions="${SESSIONS:-20}"
# relay: queue only; both: also a mailbox copy per message (the product's default mode,
# where the runner checks that the user has not deleted the copy before redelivering).
mode="${MODE:-relay}"
if [ -n "${UNDERSTUDY_BIN:-}" ]; then
  bin="$UNDERSTUDY_BIN"
else
  cargo build --release -q --bin understudy
  bin="$CARGO_TARGET_DIR/release/understudy"
fi
sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u root)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mx_port=$(free_port)
primary_port=$(free_port)
ceiling_port=$(free_port)

write_config() {
  cat > "$work/understudy.toml" <<EOF
hostname = "bench.local"
data_dir = "$work/data"
[listen]
smtp = ["127.0.0.1:$mx_port"]
[limits]
max_connections_per_ip = 200
[log]
level = "warn"
[delivery]
enabled = $1
max_connections_per_host = $sessions
max_in_flight = $((sessions * 4))
retry_initial_secs = 1
retry_max_secs = 2
EOF
}

# Starts the server and waits for its "ready" line. PERF=file records a profile of the
# drain (perf record -g) into that file.
start_server() {
  if [ -n "${PERF:-}" ] && [ "${1:-}" = drain ]; then
    perf record -g -o "$PERF" -- "$bin" --config "$work/understudy.toml" serve > "$work/server.out" 2>> "$work/server.log" &
  else
    "$bin" --config "$work/understudy.toml" serve > "$work/server.out" 2>> "$work/server.log" &
  fi
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 1 600); do
    grep -q '^ready$' "$work/server.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start:"; cat "$work/server.log"; exit 1
}

# CPU seconds (user + system) the server used so far.
server_cpu() {
  local pid="$server_pid"
  [ -n "${PERF:-}" ] && pid=$(pgrep -P "$server_pid" | head -1)
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$pid/stat"
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
}

write_config false
"$bin" --config "$work/understudy.toml" domain add bench.test --mode "$mode" \
  --relay-host "127.0.0.1:$primary_port" --relay-tls disabled --monitoring false > /dev/null
"$bin" --config "$work/understudy.toml" user add user@bench.test --random-password > /dev/null

echo "queueing $count messages of 10 KB ($sessions sessions, delivery off, mode $mode)..."
start_server
t0=$(date +%s.%N)
smtp-source -s "$sessions" -m "$count" -l 10240 -f sender@outside.test -t user@bench.test \
  "127.0.0.1:$mx_port"
t1=$(date +%s.%N)
stop_server
echo "queued in $(echo "$t1 - $t0" | bc -l | xargs printf '%.1f') s"

# The primary comes back: a sink that exits after COUNT messages.
smtp-sink "${sink_user[@]}" -M "$count" "127.0.0.1:$primary_port" 256 &
sink_pid=$!
pids+=("$sink_pid")
write_config true
t0=$(date +%s.%N)
start_server drain
wait "$sink_pid"
t1=$(date +%s.%N)
drain_cpu=$(server_cpu)
stop_server
drain=$(echo "$t1 - $t0" | bc -l)
drain_rate=$(echo "$count / $drain" | bc -l)

# Ceiling: smtp-source straight into a sink, same messages, same sessions.
smtp-sink "${sink_user[@]}" "127.0.0.1:$ceiling_port" 256 &
sink_pid=$!
pids+=("$sink_pid")
sleep 0.2
t0=$(date +%s.%N)
smtp-source -s "$sessions" -m "$count" -l 10240 -f sender@outside.test -t user@bench.test \
  "127.0.0.1:$ceiling_port"
t1=$(date +%s.%N)
kill "$sink_pid"
ceiling=$(echo "$t1 - $t0" | bc -l)
ceiling_rate=$(echo "$count / $ceiling" | bc -l)

printf 'drain:   %d messages in %.1f s = %.0f messages/s (binary %s; server CPU %s s)\n' "$count" "$drain" "$drain_rate" "$bin" "$drain_cpu"
printf 'ceiling: %d messages in %.1f s = %.0f messages/s (smtp-source -> smtp-sink)\n' "$count" "$ceiling" "$ceiling_rate"
printf 'load:    %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'ratio:   %.0f%% of the ceiling (goal: at least 70%%)\n' "$(echo "100 * $drain_rate / $ceiling_rate" | bc -l)"
