# Baseline for benches/smtp.sh: a stock Postfix that fsyncs its queue, receiving the same
# load over SMTP on this machine in the same run, so the "1.5x Postfix" goal is checked
# against a measured figure rather than one quoted from elsewhere.
#
# Sourced by smtp.sh inside a subshell (`set -e` on), after its `rate` and `run_users`
# helpers and SESSIONS/MESSAGES/USERS/per_user are defined. The subshell gets its own EXIT
# trap (stop Postfix, remove its directory) without replacing lib.sh's.
#
# The instance is private: its own config, queue and data directories under a temp
# directory (same file system as the Understudy data directory: mktemp -d honours TMPDIR
# the same way lib.sh does), every command gets `-c DIR` so /etc/postfix is never read as
# configuration, no chroot, no TLS, listening on 127.0.0.1 only. Mail for bench.example is
# accepted by smtpd, written to the queue by cleanup (which fsyncs the queue file before
# smtpd answers 250: stock behaviour, nothing here turns it off) and then handed to the
# discard transport. Only the SMTP transactions are timed, but the queue manager and
# discard deliveries run meanwhile on the same 2 cores, as they would on a relay.
#
# If Postfix cannot be set up or started, prints one line saying why and returns 0.

pf_skip() { echo "postfix (fsyncing queue): skipped: $*"; exit 0; }

command -v postfix > /dev/null || pf_skip "postfix command not found (package postfix)"
[ "$(id -u)" = 0 ] || pf_skip "needs root (Postfix's master runs as root and drops to mail_owner)"
id postfix > /dev/null 2>&1 || pf_skip "no user postfix (mail_owner)"
getent group postdrop > /dev/null || pf_skip "no group postdrop (setgid_group)"

PF=$(mktemp -d)
# Daemons run as user postfix and open files by absolute path (maillog_file): the tree
# must be traversable.
chmod 755 "$PF"
# The queue directory is root's (755, as postfix-files says; the postfix command chdirs
# into it first); its subdirectories and the data directory are left to `postfix start`
# (post-install create-missing), which gives them the owners and modes postfix-files lists.
mkdir "$PF/conf" "$PF/queue"
pf_started=""
pf_cleanup() {
  if [ -n "$pf_started" ]; then
    postfix -c "$PF/conf" stop > /dev/null 2>&1 || true
    # `stop` escalates to SIGKILL after 5 s; make sure no master survives the directory.
    if [ -s "$PF/queue/pid/master.pid" ]; then
      kill -9 "$(tr -d ' ' < "$PF/queue/pid/master.pid")" 2> /dev/null || true
    fi
  fi
  rm -rf "$PF"
}
trap pf_cleanup EXIT

# Installation paths come from the package's compiled-in defaults; only the meta files
# (postfix-files lists the queue directories and their owners for create-missing) are
# copied, so that even those are read from the private directory.
meta=$(postconf -dh meta_directory)
cp "$meta/postfix-files" "$meta/dynamicmaps.cf" "$PF/conf/" \
  || pf_skip "cannot copy $meta/postfix-files and dynamicmaps.cf"
mkdir -p "$PF/conf/postfix-files.d" "$PF/conf/dynamicmaps.cf.d"

pf_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cat > "$PF/conf/main.cf" <<CONF
# Written by benches/postfix-baseline.sh; removed with the instance.
compatibility_level = 3.6
config_directory = $PF/conf
meta_directory = $PF/conf
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = $(postconf -dh command_directory)
daemon_directory = $(postconf -dh daemon_directory)
shlib_directory = $(postconf -dh shlib_directory)
mail_owner = postfix
setgid_group = postdrop
# Logs go to a file (via postlogd) so the deliveries can be counted, and the system log
# stays quiet. syslog_name tells this instance apart should anything reach syslog.
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
syslog_name = postfix-baseline
myhostname = postfix-baseline.localdomain
mydomain = localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# bench.example is a local domain whose every recipient exists (no local_recipient_maps
# lookup), and every delivery, including any bounce to sender@example.net, is discarded:
# nothing leaves the machine.
mydestination = bench.example
local_recipient_maps =
alias_maps =
alias_database =
local_transport = discard:
default_transport = discard:
relay_transport = discard:
biff = no
# The load generator opens many sessions from one address.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
smtpd_tls_security_level = none
smtp_tls_security_level = none
CONF

# The package's master.cf, minus TLS and pipe services, with chroot off everywhere (a
# chroot would need copies of /etc files inside the queue directory) and smtpd only on
# the bench port.
cat > "$PF/conf/master.cf" <<CONF
127.0.0.1:$pf_port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF

# Postfix commands print their errors only to a terminal (otherwise to syslog, or to
# maillog_file once it is configured): run `postfix start` on a pseudo-terminal when
# script(1) is there, so that a failure can be explained in one line.
pf_start() {
  if command -v script > /dev/null; then
    script -qec "postfix -c '$PF/conf' start" /dev/null < /dev/null 2>&1 | tr -d '\r'
  else
    postfix -c "$PF/conf" start 2>&1
  fi
}
pf_why() { # output of the failed command
  local why
  why=$({ echo "$1"; cat "$PF/maillog" 2> /dev/null; } | grep -E 'fatal:|error:|panic:' \
    | grep -v -E '(startup|integrity check) failed' | tail -n 1) || true
  [ -n "$why" ] || why=$(echo "$1" | tail -n 1)
  echo "${why#*: }"
}
# `postfix start` runs `postfix check` (which creates the missing queue directories and
# checks the configuration) before starting master.
pf_started=1
if ! out=$(pf_start); then
  pf_skip "postfix start failed: $(pf_why "$out")"
fi
for _ in $(seq 1 100); do
  (exec 3<> "/dev/tcp/127.0.0.1/$pf_port") 2> /dev/null && break
  sleep 0.1
done
(exec 3<> "/dev/tcp/127.0.0.1/$pf_port") 2> /dev/null \
  || pf_skip "postfix started but nothing listens on 127.0.0.1:$pf_port"

# Deliveries by the discard transport, one log line per recipient; each message has one.
pf_count() { # pattern: matching lines in the log so far
  local n
  n=$(grep -c -- "$1" "$PF/maillog" 2> /dev/null) || true
  echo "${n:-0}"
}
pf_delivered() { pf_count 'postfix-baseline/discard\[.*status=sent'; }
pf_queue_empty() { postqueue -c "$PF/conf" -p 2> /dev/null | grep -q '^Mail queue is empty'; }

# Times only the SMTP transactions (each 250 comes after cleanup's fsync), like the
# Understudy lines; then waits, with a deadline, for the queue to drain and prints how
# many of the messages were actually accepted and delivered, so the figure is honest.
pf_measure() { # label, run_users flags...
  local label=$1; shift
  local before want start got=0
  before=$(pf_delivered)
  want=$((per_user * USERS))
  PORT_smtp=$pf_port rate "$label" run_users "$@"
  # Deadline, not a fixed sleep: the queue usually drains as fast as smtpd fills it.
  start=$(date +%s.%N)
  local deadline=$((SECONDS + 120)) drained=no
  while :; do
    got=$(($(pf_delivered) - before))
    if [ "$got" -ge "$want" ] && pf_queue_empty; then drained=yes; break; fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.1
  done
  python3 -c "import sys; t=float(sys.argv[5])-float(sys.argv[4]); print(f'  postfix: {sys.argv[1]} of {sys.argv[2]} messages queued and delivered (discarded); ' + (f'queue empty {t:.1f}s after the last 250' if sys.argv[3] == 'yes' else f'queue NOT empty {t:.0f}s after the last 250'))" \
    "$got" "$want" "$drained" "$start" "$(date +%s.%N)"
  local rejected
  rejected=$(pf_count 'postfix-baseline/smtpd\[.*reject:')
  [ "$rejected" = 0 ] || echo "  postfix: $rejected rejections in its log so far, e.g. $(grep -m1 'reject:' "$PF/maillog")"
}

pf_measure "postfix (fsyncing queue), reusing connections ($SESSIONS sessions)" -d
pf_measure "postfix (fsyncing queue), one connection per message"
