# Shared by the benchmark scripts: build the release binary, start a server on port 0
# in a temporary directory, and stop it on exit.
# UNDERSTUDY_BIN=path skips the build and runs that binary instead (say which in figures).
if [ -n "${UNDERSTUDY_BIN:-}" ]; then
  BIN="$UNDERSTUDY_BIN"
else
  export CARGO_TARGET_DIR="${RELEASE_TARGET_DIR:-$HOME/.cache/understudy/target-release}"
  cargo build --release -q --bin understudy
  BIN="$CARGO_TARGET_DIR/release/understudy"
fi
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

write_config() {
  cat > "$WORK/understudy.toml" <<CONF
hostname = "localhost"
data_dir = "$WORK/data"
[tls]
certificate = "$PWD/certs-dev/server.crt"
private_key = "$PWD/certs-dev/server.key"
[listen]
imap = ["127.0.0.1:0"]
imaps = ["127.0.0.1:0"]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
smtp = ["127.0.0.1:0"]
[limits]
max_connections_per_ip = 1000
# Load generators open many sessions per user.
max_connections_per_user = 0
[log]
level = "warn"
CONF
}

admin() { "$BIN" --config "$WORK/understudy.toml" "$@"; }

# Starts the server and sets PORT_<service> variables from its "listening" lines.
start_server() {
  "$BIN" --config "$WORK/understudy.toml" serve > "$WORK/stdout" 2> "$WORK/stderr" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    grep -q '^ready$' "$WORK/stdout" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^ready$' "$WORK/stdout" || { echo "server did not start"; cat "$WORK/stderr"; exit 1; }
  while read -r _ service addr; do
    eval "PORT_${service}=${addr##*:}"
  done < <(grep '^listening ' "$WORK/stdout")
}
