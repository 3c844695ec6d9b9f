#!/usr/bin/env bash
# The systemd commands of docs/operations.md, taken from the page in its order, run
# against the installed package's unit under a real systemd (issue 18). The CI machine
# is a container whose PID 1 is not systemd, so this boots /lib/systemd/systemd as PID 1
# of its own PID, mount, cgroup and network namespaces (`unshare`), with a one-target
# unit set: only journald, then whatever the page's commands start; every other unit a
# boot would pull in (tmpfiles, sysctl, modules-load, ...) is masked, because the file
# system and kernel are the machine's. /run, /tmp, /var/tmp, /var/log/journal and
# /etc/systemd/system are private tmpfs mounts, so `systemctl enable`, PrivateTmp and
# the journal leave nothing on the machine; the fresh network namespace means the unit's standard
# ports are always free. Each command the page gives is checked for what it promises
# (`systemctl status` says running, `reload` sends SIGHUP and the server logs the reload
# with the same pid, `journalctl -u understudy -f` shows the `ready` line, `stop` ends
# it cleanly); a systemctl or journalctl command on the page that this script has no
# check for fails it (tests/suite/docs_walk.rs checks the same from the page's side).
# Then the page's webmail setup against the running unit (debian/ci-webmail.sh).
# Run by debian/ci-install.sh as root, with the package installed.
set -euo pipefail
cd "$(dirname "$0")/.."

page=docs/operations.md
fail() {
  echo "systemd: FAILED: $*" >&2
  exit 1
}
[ -x /lib/systemd/systemd ] || fail "no /lib/systemd/systemd (apt-get install systemd)"
[ -x /usr/bin/understudy ] || fail "the package is not installed"

work=$(mktemp -d)
manager=
cleanup() {
  if [ -n "$manager" ] && kill -0 "$manager" 2> /dev/null; then
    # SIGKILL to a PID namespace's init ends everything in it.
    kill -KILL "$manager" 2> /dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/boot" << 'EOF'
#!/bin/sh
# PID 1 of fresh namespaces: private mounts for what systemd writes, then systemd.
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
[ ! -d /var/log/journal ] || mount -t tmpfs -o mode=2755 tmpfs /var/log/journal
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# The unit's default dependencies pull in sysinit.target and the rest of a boot:
# systemd-tmpfiles-setup would empty the machine's /var/tmp entries and more,
# systemd-sysctl and -modules-load would change the shared kernel. Masked, all but
# journald: the unit then starts with only what it names itself.
for unit in /lib/systemd/system/*.target.wants/*; do
  case "${unit##*/}" in systemd-journald*) continue ;; esac
  ln -sfn /dev/null "/etc/systemd/system/${unit##*/}"
done
mkdir -p /run/systemd/system
cat > /run/systemd/system/ci.target << 'UNIT'
[Unit]
Description=CI: journald only; the commands under test start the rest
Wants=systemd-journald.service
UNIT
ip link set lo up
export container=understudy-ci
exec /lib/systemd/systemd --system --unit=ci.target --log-target=kmsg
EOF
chmod +x "$work/boot"
unshare --fork --kill-child --pid --mount --mount-proc --cgroup --net "$work/boot" < /dev/null > "$work/boot.log" 2>&1 &
outer=$!
for _ in $(seq 1 100); do
  manager=$(pgrep -P "$outer" -x systemd || true)
  [ -n "$manager" ] && break
  sleep 0.1
done
[ -n "$manager" ] || { cat "$work/boot.log" >&2; fail "systemd did not start in its namespace"; }

# Inside the manager's namespaces: its systemctl socket, its journal, its loopback.
inside() { nsenter -t "$manager" -m -p -n -- "$@"; }
state=
for _ in $(seq 1 200); do
  state=$(inside systemctl is-system-running 2> /dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.1
done
case "$state" in
  running | degraded) ;;
  *) cat "$work/boot.log" >&2; fail "systemd in its namespace is '$state'" ;;
esac
echo "systemd: $(inside systemctl --version | head -1) is PID 1 of its own namespaces ($state)"
pulled=$(inside systemctl list-dependencies --plain --no-pager understudy.service | sed 's/^ *//' | sort -u)
for unit in systemd-tmpfiles-setup.service systemd-sysctl.service systemd-modules-load.service; do
  state=$(inside systemctl is-enabled "$unit" 2> /dev/null || true)
  [ "$state" = masked ] || fail "$unit is $state, not masked: it would act on the machine"
done
echo "systemd: the unit's dependencies here: $(echo $pulled)"

main_pid() { inside systemctl show -p MainPID --value understudy; }
journal() { inside journalctl -u understudy --no-pager -o cat "$@"; }
expect_active() {
  local got
  got=$(inside systemctl is-active understudy || true)
  [ "$got" = "$1" ] || { journal -n 40 >&2 || true; fail "after '$2' the unit is $got, not $1"; }
}

# The page's systemd commands, in order: command blocks and inline `...` mentions.
mapfile -t commands < <(grep -oE '(systemctl|journalctl) [a-z -]*understudy( -f)?' "$page")
[ "${#commands[@]}" -ge 4 ] || fail "found only ${#commands[@]} systemd commands in $page"
for command in "${commands[@]}"; do
  echo "systemd: $page: $command"
  case "$command" in
    "systemctl enable --now understudy")
      # Type=notify: returns once the server said READY=1.
      inside $command
      expect_active active "$command"
      [ "$(inside systemctl is-enabled understudy)" = enabled ] || fail "$command: not enabled"
      echo "systemd:   active, enabled, main pid $(main_pid)"
      ;;
    "systemctl start understudy")
      inside $command
      expect_active active "$command"
      echo "systemd:   active, main pid $(main_pid)"
      ;;
    "systemctl status understudy")
      status=$(inside $command) || fail "$command exited $?: $status"
      grep -q 'Active: active (running)' <<< "$status" || fail "$command: $status"
      grep -q 'Status\|Main PID' <<< "$status" || fail "$command: $status"
      echo "systemd:   $(grep -m1 'Active:' <<< "$status" | sed 's/^ *//')"
      ;;
    "journalctl -u understudy -f")
      # Follows until interrupted, as on the page: read it until the ready line.
      inside $command --no-pager -o cat > "$work/follow" 2>&1 &
      follow=$!
      for _ in $(seq 1 100); do
        grep -qx ready "$work/follow" && break
        sleep 0.1
      done
      kill "$follow" 2> /dev/null || true
      wait "$follow" 2> /dev/null || true
      grep -qx ready "$work/follow" || { cat "$work/follow" >&2; fail "$command: no ready line"; }
      echo "systemd:   $(wc -l < "$work/follow") lines, among them: $(grep -m1 -x ready "$work/follow"), $(grep -m1 'listening' "$work/follow")"
      ;;
    "systemctl reload understudy")
      before=$(main_pid)
      reloads=$(journal | grep -c 'configuration reloaded' || true)
      inside $command
      for _ in $(seq 1 100); do
        [ "$(journal | grep -c 'configuration reloaded' || true)" -gt "$reloads" ] && break
        sleep 0.1
      done
      [ "$(journal | grep -c 'configuration reloaded' || true)" -gt "$reloads" ] \
        || { journal -n 20 >&2; fail "$command: the server did not log a reload"; }
      [ "$(main_pid)" = "$before" ] || fail "$command: the main pid changed ($before, $(main_pid))"
      expect_active active "$command"
      echo "systemd:   same pid $before, logged: $(journal | grep 'configuration reloaded' | tail -1)"
      ;;
    "systemctl restart understudy")
      before=$(main_pid)
      inside $command
      expect_active active "$command"
      [ "$(main_pid)" != "$before" ] || fail "$command: the same pid $before"
      echo "systemd:   active, main pid $before -> $(main_pid)"
      ;;
    "systemctl stop understudy")
      inside $command
      expect_active inactive "$command"
      result=$(inside systemctl show -p Result --value understudy)
      [ "$result" = success ] || { journal -n 40 >&2; fail "$command: result $result"; }
      echo "systemd:   inactive, result $result"
      ;;
    *)
      fail "$page names '$command', which this script does not run (add a check for it)"
      ;;
  esac
done

# What the page says about admin commands under the unit: they reach the running
# server through its socket, as the service user.
inside systemctl start understudy
expect_active active "systemctl start understudy"
list=$(inside runuser -u understudy -- understudy --config /etc/understudy/understudy.toml user list) \
  || fail "user list as the service user against the unit's server: $list"
echo "systemd: user list as understudy through the unit's socket: ok"
# The page's webmail setup on this server: contrib/roundcube/setup-debian.sh in these
# namespaces, a Roundcube login over HTTPS, everything it wrote put back.
. debian/ci-webmail.sh
inside systemctl stop understudy
expect_active inactive "systemctl stop understudy"
inside systemctl disable --quiet understudy
echo "systemd: ok (${#commands[@]} commands from $page)"
