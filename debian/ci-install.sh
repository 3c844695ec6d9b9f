#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` from the binary the test suite has just
# built (no second build: PROFILE=dev by default, PROFILE=release after a release
# build), installs it with dpkg on this machine and checks what an admin relies on:
# the service user, the modes of the data, backup and config directories, the docs at
# the path the unit names, `systemd-analyze verify` clean, and `check-config` passing
# on the installed default configuration, run as the service user, and `serve` starting
# on it as the unit would run it, and the docs' systemctl/journalctl commands
# against the unit under systemd (debian/ci-systemd.sh). Then purges it and checks that the mail directory
# stays. Run by .ci/run as root on a throwaway machine.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-dev}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/understudy/target}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fail() {
  echo "deb: FAILED: $*" >&2
  exit 1
}

# The same version installed by an earlier run: start from nothing.
if dpkg-query -W -f='${Status}' understudy 2> /dev/null | grep -q "install ok installed"; then
  dpkg --purge understudy > /dev/null
fi

# cargo-deb warns that the dev profile is meant for testing, which is what this is.
# operations.md's `cargo deb` and `dpkg -i`, word for word but for the flags that make
# it package the tested binary (tests/suite/docs_walk.rs, package_commands_are_what_ci_runs).
deb="$out/understudy.deb"
cargo deb --no-build --fast ${DEB_FLAGS:-} --profile "$profile" --output "$deb" -- --locked 2>&1 \
  | grep -v -e "^warning: dev profile is not supported" -e "To enable debug symbols set" || true
[ -s "$deb" ] || fail "cargo deb wrote no package"
echo "deb: built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
dpkg-deb --contents "$deb" | awk '{print "deb:   " $1, $2, $6}'

dpkg -i "$deb"

mode() { stat -c '%a %U:%G' "$1"; }
expect_mode() {
  local got
  got=$(mode "$1") || fail "$1 is missing"
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
  echo "deb: $1 $got"
}

getent passwd understudy > /dev/null || fail "no understudy user"
shell=$(getent passwd understudy | cut -d: -f7)
uid=$(id -u understudy)
[ "$shell" = /usr/sbin/nologin ] || fail "the understudy user has shell $shell"
[ "$uid" -lt 1000 ] || fail "the understudy user is not a system user (uid $uid)"
echo "deb: user understudy uid $uid shell $shell"
[ -x /usr/bin/understudy ] || fail "no /usr/bin/understudy"
expect_mode /var/lib/understudy "700 understudy:understudy"
expect_mode /var/backups/understudy "700 understudy:understudy"
expect_mode /etc/understudy "750 root:understudy"
expect_mode /etc/understudy/understudy.toml "640 root:understudy"
expect_mode /etc/understudy/tls/privkey.pem "600 understudy:understudy"
expect_mode /etc/understudy/tls/fullchain.pem "644 root:root"
grep -q '^/etc/understudy/understudy.toml$' /var/lib/dpkg/info/understudy.conffiles \
  || fail "the configuration is not a conffile (an upgrade would overwrite the admin's edits)"

unit=$(dpkg -L understudy | grep '/systemd/system/understudy.service$') || fail "no unit installed"
docs=$(sed -n 's#^Documentation=file://##p' "$unit")
[ -s "$docs" ] || fail "the unit names $docs, which is not installed"
echo "deb: unit $unit, docs $docs"
exec_start=$(sed -n 's#^ExecStart=\([^ ]*\).*#\1#p' "$unit")
[ -x "$exec_start" ] || fail "the unit starts $exec_start, which is not installed"

verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
echo "deb: systemd-analyze verify $unit: clean"

# As the service reads it: its own user, the installed default configuration.
check=$(runuser -u understudy -- /usr/bin/understudy --config /etc/understudy/understudy.toml check-config 2>&1) \
  || fail "check-config on the installed default: $check"
echo "deb: check-config as understudy: $check"

# The installed default starts as the unit runs it: the service user with only
# CAP_NET_BIND_SERVICE, until it says ready; SIGTERM ends it cleanly. Skipped when
# something on this machine already holds one of its ports.
ports="25 110 143 465 587 993 995 9187"
busy=$(ss -Hltn | awk '{print $4}' | sed 's/.*://' | grep -x -F -f <(tr ' ' '\n' <<< "$ports") || true)
if [ -n "$busy" ]; then
  echo "deb: start as the service user skipped: port(s) $(echo $busy) in use here"
else
  log="$out/serve.log"
  setpriv --reuid understudy --regid understudy --init-groups \
    --inh-caps +net_bind_service --ambient-caps +net_bind_service \
    /usr/bin/understudy --config /etc/understudy/understudy.toml serve > "$out/serve.out" 2> "$log" &
  pid=$!
  for _ in $(seq 1 300); do
    grep -qx ready "$out/serve.out" 2> /dev/null && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  grep -qx ready "$out/serve.out" || { cat "$log" >&2; fail "the installed default did not start"; }
  kill -TERM "$pid"
  wait "$pid" || { cat "$log" >&2; fail "serve did not exit cleanly on SIGTERM"; }
  echo "deb: serve as understudy on the installed default: $(grep -c '^listening' "$out/serve.out") listeners, ready, clean stop"
fi

# The page's systemctl and journalctl commands against the installed unit under a real
# systemd in its own namespaces (debian/ci-systemd.sh).
debian/ci-systemd.sh

# Removing the package keeps the mail; purging removes the configuration.
dpkg --purge understudy > /dev/null
[ ! -e /usr/bin/understudy ] || fail "the binary stayed after purge"
[ ! -e /etc/understudy/understudy.toml ] || fail "the configuration stayed after purge"
[ -d /var/lib/understudy ] || fail "purge removed the data directory"
getent passwd understudy > /dev/null || fail "purge removed the user who owns the mail"
echo "deb: purged; /var/lib/understudy and the understudy user stay"
echo "deb: ok"
