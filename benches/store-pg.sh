#!/usr/bin/env bash
# The store benchmark (benches/store.sh: synced deliveries of 10 KB messages, each to
# one INBOX plus a relay queue entry sharing the body) on PostgreSQL 15 beside RocksDB,
# with 1, 8 and 32 concurrent writers. Starts a throwaway PostgreSQL (initdb as the
# postgres user when run as root, 127.0.0.1 only, default settings with fsync on,
# removed on exit). Prints one line per run; wal_syncs and disk figures are RocksDB's.
#   benches/store-pg.sh                    # release build
#   STORE_BENCH=path COUNT=1000 benches/store-pg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ -n "${STORE_BENCH:-}" ]; then
  bin="$STORE_BENCH"
else
  export CARGO_TARGET_DIR="${RELEASE_TARGET_DIR:-$HOME/.cache/understudy/target-release}"
  cargo build --release -q -p understudy-storage --bin store-bench
  bin="$CARGO_TARGET_DIR/release/store-bench"
fi
count="${COUNT:-4000}"
work=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
started=""
cleanup() {
  if [ -n "$started" ]; then as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -m fast stop > /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$work/pg" && chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-instructions > /dev/null
as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start > /dev/null
started=1
df -h "$work" | tail -1 | awk '{print "filesystem: " $1 " (" $NF ")"}'
for writers in 1 8 32; do
  "$bin" --dir "$work/db-$writers" --count "$count" --writers "$writers" --size 10240 --users 64
  as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE b$writers" postgres
  "$bin" --postgres "host=127.0.0.1 port=$port user=postgres dbname=b$writers" \
    --count "$count" --writers "$writers" --size 10240 --users 64
done
