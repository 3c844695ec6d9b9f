#!/usr/bin/env bash
# Two nodes on one PostgreSQL (issue 17): how soon an IMAP IDLE session on node A hears
# of a message delivered through node B (the 250 to EXISTS, LISTEN/NOTIFY between the
# nodes), against a delivery through node A itself. Starts a throwaway PostgreSQL 15
# (initdb as the postgres user when run as root, 127.0.0.1 only, removed on exit).
#   benches/cluster-idle.sh                       # release build of this checkout
#   UNDERSTUDY_BIN=path benches/cluster-idle.sh   # another build (say which in figures)
#   ROUNDS=200 benches/cluster-idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-50}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
source benches/lib.sh
B_PID="" PG_STARTED=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup_cluster() {
  if [ -n "$B_PID" ]; then kill -TERM "$B_PID" 2>/dev/null; wait "$B_PID" 2>/dev/null || true; fi
  if [ -n "$PG_STARTED" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop > /dev/null || true; fi
  cleanup
}
trap cleanup_cluster EXIT
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg" && chmod 755 "$WORK"
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --no-instructions > /dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" start > /dev/null
PG_STARTED=1
STORE="[store]
backend = \"postgres\"
url = \"host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres\"
tls = \"off\"
pool_size = 8"

write_config
echo "$STORE" >> "$WORK/understudy.toml"
admin domain add bench.example > /dev/null
echo 'Bench1password' | admin user add "anna@bench.example" --password-stdin > /dev/null
start_server
A_SMTP=$PORT_smtp A_IMAPS=$PORT_imaps
# Node B: its own data directory and ports, the same store.
sed -e "s|^data_dir = .*|data_dir = \"$WORK/data-b\"|" "$WORK/understudy.toml" > "$WORK/b.toml"
"$BIN" --config "$WORK/b.toml" serve > "$WORK/b.stdout" 2> "$WORK/b.stderr" &
B_PID=$!
for _ in $(seq 1 600); do grep -q '^ready$' "$WORK/b.stdout" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready$' "$WORK/b.stdout" || { echo "node B did not start"; cat "$WORK/b.stderr"; exit 1; }
B_SMTP=$(awk '$1=="listening" && $2=="smtp" {n=split($3,a,":"); print a[n]}' "$WORK/b.stdout")

python3 - "$A_IMAPS" "$A_SMTP" "$B_SMTP" "$ROUNDS" "$PWD/certs-dev/ca.crt" <<'PY'
import imaplib, smtplib, ssl, statistics, sys, time
imaps, smtp_a, smtp_b, rounds, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ssl.create_default_context(cafile=ca), timeout=30)
m.login("anna@bench.example", "Bench1password")
m.select("INBOX")
def measure(port, rounds):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    out = []
    for i in range(rounds):
        tag = m._new_tag().decode()
        m.send(f"{tag} IDLE\r\n".encode())
        assert m.readline().startswith(b"+")
        s.sendmail("bench@outside.example", ["anna@bench.example"], f"Subject: {i}\r\n\r\nx\r\n".encode())
        acked = time.perf_counter()
        line = m.readline()
        heard = time.perf_counter()
        assert b"EXISTS" in line, line
        out.append((heard - acked) * 1000)
        m.send(b"DONE\r\n")
        while not m.readline().decode().startswith(tag):
            pass
    s.quit()
    return out
for name, port in (("same node (A -> A)", smtp_a), ("other node (B -> A)", smtp_b)):
    ms = sorted(measure(port, rounds))
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{name}: {rounds} deliveries, 250 to EXISTS p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms")
PY
