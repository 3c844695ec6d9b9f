# Sourced by the benchmark scripts after lib.sh: a throwaway Dovecot (Debian's
# dovecot-imapd/dovecot-pop3d) on loopback ports for side-by-side figures. Config, users
# (passwd-file, ARGON2ID hashes like Understudy's, with Dovecot's auth cache on like
# Understudy's credential cache), Maildirs and logs all live under $WORK/dovecot; no
# systemd. Long-lived login processes (service_count = 0), one per core.
# Needs root (Dovecot drops privileges to the mail user `nobody`).

have_dovecot() { command -v dovecot > /dev/null && [ "$(id -u)" = 0 ]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_dovecot USERS: sets DOVECOT_IMAP, DOVECOT_IMAPS, DOVECOT_POP3S and DOVECOT_HOME (users' homes).
start_dovecot() {
  local users=$1 d="$WORK/dovecot"
  mkdir -p "$d/run" "$d/state" "$d/home"
  chmod 755 "$WORK" "$d"
  DOVECOT_IMAP=$(free_port) DOVECOT_IMAPS=$(free_port) DOVECOT_POP3S=$(free_port)
  DOVECOT_HOME="$d/home"
  # Understudy's argon2id parameters (19 MiB, t=2, p=1) when Debian's `argon2` tool is
  # there; otherwise doveadm's defaults (64 MiB, t=3), which make each login ~3x dearer.
  # DOVECOT_PLAIN=1: plain-text passwords, to see Dovecot's IMAP work without hashing.
  local hash
  if [ "${DOVECOT_PLAIN:-0}" = 1 ]; then
    hash="{PLAIN}Bench1password"
  elif command -v argon2 > /dev/null; then
    hash="{ARGON2ID}$(printf %s Bench1password | argon2 benchsaltbenchsalt -id -t 2 -k 19456 -p 1 -e)"
  else
    hash=$(doveadm pw -s ARGON2ID -p Bench1password)
  fi
  DOVECOT_ARGON2=$(echo "$hash" | grep -o 'm=[0-9]*,t=[0-9]*,p=[0-9]*' || echo "none (PLAIN)")
  : > "$d/passwd"
  for i in $(seq 1 "$users"); do echo "user$i@bench.example:$hash" >> "$d/passwd"; done
  cat > "$d/dovecot.conf" <<CONF
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$PWD/certs-dev/server.crt
ssl_key = <$PWD/certs-dev/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 10M
auth_cache_ttl = 300 s
passdb {
  driver = passwd-file
  args = $d/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$d/home/%d/%n
}
mail_location = maildir:~/Maildir
mail_fsync = always
pop3_uidl_format = %g
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DOVECOT_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $DOVECOT_IMAPS
  }
  service_count = 0
  process_min_avail = $(nproc)
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $DOVECOT_POP3S
  }
  service_count = 0
  process_min_avail = $(nproc)
}
service imap {
  process_limit = 4096
}
service anvil {
  client_limit = 10000
}
mail_max_userip_connections = 1000
CONF
  dovecot -c "$d/dovecot.conf"
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $DOVECOT_IMAP), 1)" 2>/dev/null && break
    sleep 0.1
  done
  DOVECOT_CONF="$d/dovecot.conf"
}

# Gives the filled Maildirs to the mail user; call after filling $DOVECOT_HOME.
own_dovecot_mail() { chown -R nobody:nogroup "$DOVECOT_HOME"; }

stop_dovecot() {
  if [ -n "${DOVECOT_CONF:-}" ]; then doveadm -c "$DOVECOT_CONF" stop 2>/dev/null || true; DOVECOT_CONF=""; fi
}
