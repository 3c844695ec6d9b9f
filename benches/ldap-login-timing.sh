#!/usr/bin/env bash
# Failed logins on a `login = "bind"` domain, timed per case, over IMAP LOGIN (imaps)
# and the users' page (/me/login): an unknown address, a known user's wrong password,
# a deactivated user (with the directory's right password) and a user made by hand that
# the directory does not know. A throwaway slapd (Debian slapd, ldap-utils) on a
# loopback port with StartTLS; search-then-bind with a service account. N (default 30)
# logins per case, interleaved in a shuffled order each round, the login alone timed.
# Prints median and p90 per case, each case's difference from the unknown address, and
# the binds slapd logged and the argon2 runs the server counted per case. Throttles set
# out of the way. UNDERSTUDY_BIN=path runs that binary instead of building release.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-30}"
source benches/lib.sh
SLAPD_PID=""
stop_slapd() { if [ -n "$SLAPD_PID" ]; then kill "$SLAPD_PID" 2>/dev/null; wait "$SLAPD_PID" 2>/dev/null || true; fi; cleanup; }
trap stop_slapd EXIT
LDAP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/slapd/db"
cat > "$WORK/slapd/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $WORK/slapd/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile $PWD/certs-dev/server.crt
TLSCertificateKeyFile $PWD/certs-dev/server.key
database mdb
maxsize 10485760
suffix "dc=bench,dc=example"
rootdn "cn=admin,dc=bench,dc=example"
rootpw Admin1secret
directory $WORK/slapd/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
CONF
/usr/sbin/slapd -d 256 -h "ldap://127.0.0.1:$LDAP_PORT/" -f "$WORK/slapd/slapd.conf" 2> "$WORK/slapd/log" &
SLAPD_PID=$!
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$LDAP_PORT") 2>/dev/null && break
  sleep 0.05
done
person() {
  printf 'dn: uid=%s,ou=people,dc=bench,dc=example\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nmail: %s@bench.example\nuserPassword: Bench1password\n%s\n' "$1" "$1" "$1" "$1" "$1" "$2"
}
{
  printf 'dn: dc=bench,dc=example\nobjectClass: dcObject\nobjectClass: organization\no: Bench\ndc: bench\n\n'
  printf 'dn: ou=people,dc=bench,dc=example\nobjectClass: organizationalUnit\nou: people\n\n'
  printf 'dn: cn=understudy,dc=bench,dc=example\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: understudy\nuserPassword: Service1secret\n\n'
  person known ""
  person gone "employeeType: disabled"
} > "$WORK/slapd/users.ldif"
LDAPTLS_CACERT="$PWD/certs-dev/ca.crt" ldapadd -ZZ -x -H "ldap://127.0.0.1:$LDAP_PORT" \
  -D "cn=admin,dc=bench,dc=example" -w Admin1secret -f "$WORK/slapd/users.ldif" > /dev/null
printf 'Service1secret\n' > "$WORK/ldap-password"
chmod 600 "$WORK/ldap-password"
write_config
cat >> "$WORK/understudy.toml" <<CONF
[web]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[auth]
max_failures = 1000000
lockout_secs = 1
failure_delay_ms = 0
[[ldap]]
domain = "bench.example"
url = "ldap://127.0.0.1:$LDAP_PORT"
ca_file = "$PWD/certs-dev/ca.crt"
bind_dn = "cn=understudy,dc=bench,dc=example"
bind_password_file = "$WORK/ldap-password"
base_dn = "ou=people,dc=bench,dc=example"
preset = "openldap"
disabled_attribute = "employeeType"
disabled_value = "disabled"
sync_interval_secs = 3600
login = "bind"
CONF
admin domain add bench.example > /dev/null
admin ldap sync > /dev/null
echo 'Bench1password' | admin user add local@bench.example --password-stdin > /dev/null
start_server
echo "binary: $BIN"
echo "load before: $(cat /proc/loadavg), $(nproc) cores"
python3 benches/ldap_login_timing.py "$PORT_web" "$PORT_imaps" "$PORT_metrics" certs-dev/ca.crt "$N" "$WORK/slapd/log"
echo "load after: $(cat /proc/loadavg)"
