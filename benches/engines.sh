#!/usr/bin/env bash
# The store engines side by side, in one run and with the same load generators (issue 17):
#   rocksdb      one node, the embedded default
#   postgres     one node on a throwaway PostgreSQL 15
#   postgres x2  two nodes (own ports and data_dir) on the same PostgreSQL, the load
#                split evenly between them
# For each: SMTP ingest as in benches/smtp.sh (Postfix's smtp-source, MESSAGES of 10 KB
# over SESSIONS sessions reusing connections, USERS recipients, delivery mode `both` with
# the domain in an outage engaged by hand, so every message is stored in an INBOX and
# queued, synced before 250), then the IMAP mix of benches/imap.sh (benches/imap_load.py
# load: login, select, 5 x fetch + store, fetch 1:*, append, store, expunge, logout) on
# the mailboxes the ingest filled, at each of CLIENTS for SECONDS_EACH. Prints the
# machine, the load average before and after each configuration, and a table at the end.
# PostgreSQL: initdb as the postgres user when run as root, 127.0.0.1 only, default
# settings (fsync on, synchronous_commit on), a fresh database per configuration,
# removed on exit.
#   benches/engines.sh                          # release build of this checkout
#   UNDERSTUDY_BIN=path benches/engines.sh      # another build (say which in figures)
#   MESSAGES=4000 CLIENTS=10 SECONDS_EACH=10 benches/engines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v smtp-source > /dev/null || PATH="$PATH:/usr/sbin"
MESSAGES="${MESSAGES:-10000}" SESSIONS="${SESSIONS:-20}" USERS="${USERS:-20}"
CLIENTS="${CLIENTS:-10 50}" SECONDS_EACH="${SECONDS_EACH:-15}"
CONFIGS="${CONFIGS:-rocksdb postgres postgres-x2}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
source benches/lib.sh
PIDS=() PG_STARTED=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_nodes() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup_engines() {
  stop_nodes
  if [ -n "$PG_STARTED" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop > /dev/null || true; fi
  cleanup
}
trap cleanup_engines EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "build: $BIN ($("$BIN" --version 2>/dev/null || echo unknown))"
echo "load: MESSAGES=$MESSAGES SESSIONS=$SESSIONS USERS=$USERS CLIENTS='$CLIENTS' SECONDS_EACH=$SECONDS_EACH"

mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg" && chmod 755 "$WORK"
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --no-instructions > /dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start > /dev/null
PG_STARTED=1
echo "postgresql: $("$PG_BIN/postgres" --version), port $PG_PORT"

# node_config DIR [STORE_SECTION]: a bench config whose data_dir is DIR/data.
node_config() {
  local dir=$1 store=${2:-}
  mkdir -p "$dir"
  cat > "$dir/understudy.toml" <<CONF
hostname = "localhost"
data_dir = "$dir/data"
[tls]
certificate = "$PWD/certs-dev/server.crt"
private_key = "$PWD/certs-dev/server.key"
[listen]
imap = ["127.0.0.1:0"]
smtp = ["127.0.0.1:0"]
[limits]
max_connections_per_ip = 1000
max_connections_per_user = 0
[auth]
plaintext_networks = ["127.0.0.0/8"]
[log]
level = "warn"
$store
CONF
}

# start_node DIR: starts the server of DIR/understudy.toml; sets NODE_SMTP, NODE_IMAP.
start_node() {
  local dir=$1
  "$BIN" --config "$dir/understudy.toml" serve > "$dir/stdout" 2> "$dir/stderr" &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    grep -q '^ready$' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^ready$' "$dir/stdout" || { echo "server in $dir did not start"; cat "$dir/stderr"; exit 1; }
  NODE_SMTP=$(awk '$1=="listening" && $2=="smtp" {n=split($3,a,":"); print a[n]}' "$dir/stdout")
  NODE_IMAP=$(awk '$1=="listening" && $2=="imap" {n=split($3,a,":"); print a[n]}' "$dir/stdout")
}

declare -A SMTP_RATE IMAP_RATE IMAP_ERRORS
run_config() {
  local name=$1 dir="$WORK/$1" store="" nodes=1
  case "$name" in
    rocksdb) ;;
    postgres | postgres-x2)
      local db="bench_${name//-/_}"
      as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE $db" postgres
      store="[store]
backend = \"postgres\"
url = \"host=127.0.0.1 port=$PG_PORT user=postgres dbname=$db\"
tls = \"off\"
pool_size = 8"
      [ "$name" = postgres-x2 ] && nodes=2
      ;;
    *) echo "unknown configuration $name"; exit 1 ;;
  esac
  echo
  echo "== $name ($nodes node(s)); load average before: $(loadavg)"
  node_config "$dir/a" "$store"
  local cfg="$dir/a/understudy.toml"
  "$BIN" --config "$cfg" domain add bench.example --relay-host 127.0.0.1:9 --monitoring false > /dev/null
  "$BIN" --config "$cfg" outage start bench.example > /dev/null
  for i in $(seq 1 "$USERS"); do
    echo 'Bench1password' | "$BIN" --config "$cfg" user add "user$i@bench.example" --password-stdin > /dev/null
  done
  local smtp_ports=() imap_addrs=()
  start_node "$dir/a"
  smtp_ports+=("$NODE_SMTP") imap_addrs+=("127.0.0.1:$NODE_IMAP")
  if [ "$nodes" = 2 ]; then
    node_config "$dir/b" "$store"
    start_node "$dir/b"
    smtp_ports+=("$NODE_SMTP") imap_addrs+=("127.0.0.1:$NODE_IMAP")
  fi

  # SMTP ingest: one smtp-source per user, users spread over the nodes in turn.
  local per_user=$((MESSAGES / USERS)) per_sessions=$((SESSIONS / USERS > 0 ? SESSIONS / USERS : 1))
  local pids=() start end i
  start=$(date +%s.%N)
  for i in $(seq 1 "$USERS"); do
    smtp-source -d -s "$per_sessions" -m "$per_user" -l 10240 -f sender@example.net \
      -t "user$i@bench.example" "127.0.0.1:${smtp_ports[$(((i - 1) % nodes))]}" > /dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  local sent=$((per_user * USERS))
  SMTP_RATE[$name]=$(python3 -c "import sys; print(round(int(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2]))))" "$sent" "$start" "$end")
  echo "$name: smtp ingest: $sent messages in $(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$start" "$end")s = ${SMTP_RATE[$name]} messages/s; load average $(loadavg)"
  # Every 250 means a stored message: check the count the IMAP load then works on.
  python3 - "${imap_addrs[0]}" "$USERS" "$per_user" <<'PY'
import imaplib, sys
host, port = sys.argv[1].rsplit(":", 1)
users, per_user = int(sys.argv[2]), int(sys.argv[3])
for u in (1, users):
    m = imaplib.IMAP4(host, int(port), timeout=60)
    m.login(f"user{u}@bench.example", "Bench1password")
    n = int(m.select("INBOX", readonly=True)[1][0])
    m.logout()
    assert n == per_user, f"user{u} has {n} messages, {per_user} were acknowledged"
PY

  local addrs
  addrs=$(IFS=,; echo "${imap_addrs[*]}")
  python3 benches/imap_load.py warm "$addrs" "$USERS"
  local c out
  for c in $CLIENTS; do
    out=$(python3 benches/imap_load.py load "$name" "$addrs" "$USERS" "$c" "$SECONDS_EACH")
    echo "$out"
    IMAP_RATE[$name/$c]=$(sed -n 's/.*commands\/s=\([0-9]*\).*/\1/p' <<< "$out" | head -1)
    IMAP_ERRORS[$name/$c]=$(sed -n 's/.* errors=\([0-9]*\) .*/\1/p' <<< "$out" | head -1)
    echo "$name: load average after $c clients: $(loadavg)"
  done
  local pid
  for pid in "${PIDS[@]}"; do
    echo "$name: server $pid: $(grep -E '^VmHWM' "/proc/$pid/status" | tr -s ' \t' ' ')"
  done
  stop_nodes
}

for name in $CONFIGS; do run_config "$name"; done

echo
header="| configuration | SMTP ingest, messages/s |"
rule="|---|---|"
for c in $CLIENTS; do header+=" IMAP mix, $c clients: commands/s (errors) |"; rule+="---|"; done
echo "$header"
echo "$rule"
for name in $CONFIGS; do
  row="| $name | ${SMTP_RATE[$name]} |"
  for c in $CLIENTS; do row+=" ${IMAP_RATE[$name/$c]} (${IMAP_ERRORS[$name/$c]}) |"; done
  echo "$row"
done
