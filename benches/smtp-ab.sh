#!/usr/bin/env bash
# A/B of SMTP receiver builds by server CPU per message, the figure that survives a noisy
# VM better than messages/s: for each round and each binary given, a fresh server (domain
# in an outage, 20 users, delivery mode `both`) takes RUNS loads of 20 smtp-source
# sessions x PER_SESSION messages of 10 KB (`-d`, reusing connections; FLAGS=" " for one
# connection per message), and each load prints messages/s, the server's user+system CPU
# per message (/proc/PID/stat) and how idle the machine was. Interleave the builds and
# compare the spread, not one run.
#
# VERIFY=1 runs inbound SPF/DKIM/DMARC on every message (`verify_inbound = "headers"`,
# loopback not trusted) against static test records for the sender's domain (SPF pass
# for 127.0.0.1, DMARC p=reject; smtp-source signs nothing, so DKIM is `none`): the CPU
# the checks cost, without DNS latency. Compare a run with and without it.
#
#   bash benches/smtp-ab.sh OLD_BINARY NEW_BINARY      # ROUNDS=2 RUNS=2 PER_SESSION=1000
#   VERIFY=1 bash benches/smtp-ab.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
command -v smtp-source > /dev/null || PATH="$PATH:/usr/sbin"
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]"; exit 2; }
ROUNDS="${ROUNDS:-2}" RUNS="${RUNS:-2}" PER_SESSION="${PER_SESSION:-1000}"

one_server() { # binary
  (
    UNDERSTUDY_BIN=$1
    source benches/lib.sh
    write_config
    if [ "${VERIFY:-0}" = 1 ]; then
      cat > "$WORK/dns.toml" <<'DNS'
[txt]
"example.net" = "v=spf1 ip4:127.0.0.1 -all"
"_dmarc.example.net" = "v=DMARC1; p=reject"
DNS
      printf '[smtp]\nverify_inbound = "headers"\ntrusted_relays = []\ntest_dns_records = "%s"\n' \
        "$WORK/dns.toml" >> "$WORK/understudy.toml"
    fi
    admin domain add bench.example --relay-host 127.0.0.1:9 --monitoring false > /dev/null
    admin outage start bench.example > /dev/null
    for i in $(seq 1 20); do admin user add "user$i@bench.example" > /dev/null; done
    start_server
    cpu() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
    idle() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
    cores=$(nproc)
    hz=$(getconf CLK_TCK)
    for _ in $(seq 1 "$RUNS"); do
      c0=$(cpu) i0=$(idle) start=$(date +%s.%N)
      pids=()
      for i in $(seq 1 20); do
        # shellcheck disable=SC2086 # FLAGS is a list of flags, or a blank for none
        smtp-source ${FLAGS--d} -s 1 -m "$PER_SESSION" -l 10240 -f sender@example.net \
          -t "user$i@bench.example" "127.0.0.1:$PORT_smtp" &
        pids+=($!)
      done
      wait "${pids[@]}"
      end=$(date +%s.%N) c1=$(cpu) i1=$(idle)
      python3 -c "import sys
n, t = 20 * $PER_SESSION, $end - $start
print(f'$(basename "$1")${VERIFY:+ (verify)}: {n / t:.0f} messages/s, server CPU {($c1 - $c0) / $hz / n * 1e6:.0f} us/message, machine idle {($i1 - $i0) / $hz / t / $cores * 100:.0f}%')"
    done
  )
}

for _ in $(seq 1 "$ROUNDS"); do
  for binary in "$@"; do one_server "$binary"; done
done
