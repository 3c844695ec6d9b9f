# The webmail setup of docs/operations.md ("Webmail"), run as the page gives it:
# contrib/roundcube/setup-debian.sh on the installed package, inside debian/ci-systemd.sh's
# namespaces so that its `systemctl enable --now php8.2-fpm nginx` acts on that systemd
# (and nginx's ports are those of its private network), then a Roundcube login with curl
# over HTTPS through nginx that lists a message read from Understudy over IMAP with TLS.
# The files the script writes on the machine (nginx's site, Roundcube's settings, plugin
# and database, PHP-FPM's php.ini, the page's certificate paths, the servers' logs) are
# put back as they were, and the test's domain and user removed.
# Sourced by debian/ci-systemd.sh while the unit runs: uses its `inside`, `fail`, `work`
# and `page`.

webmail_paths=(
  /etc/ssl/webmail.crt /etc/ssl/webmail.key /etc/ssl/understudy-ca.pem
  /etc/roundcube/config.inc.php /etc/roundcube/understudy.inc.php /etc/roundcube/understudy-site.inc.php
  /etc/nginx/sites-available/understudy-webmail /etc/nginx/sites-enabled/understudy-webmail
  /etc/php/8.2/fpm/php.ini /var/lib/roundcube/plugins/understudy /var/lib/roundcube/db
  /var/log/nginx/access.log /var/log/nginx/error.log /var/log/php8.2-fpm.log /var/log/roundcube
)
webmail_saved=()
for p in "${webmail_paths[@]}"; do
  if [ -e "$p" ] || [ -L "$p" ]; then webmail_saved+=("${p#/}"); fi
done
tar -C / -cpf "$work/webmail-before.tar" -T /dev/null "${webmail_saved[@]}"
as_service() { inside runuser -u understudy -- understudy --config /etc/understudy/understudy.toml "$@"; }
# The test's domain and user go too: /var/lib/understudy outlives the package.
webmail_forget() {
  as_service user remove anna@example.com --yes > /dev/null 2>&1 || true
  as_service domain remove example.com > /dev/null 2>&1 || true
}
visible=
webmail_restore() {
  [ -z "$visible" ] || rm -rf "$visible"
  webmail_forget
  inside systemctl disable --now --quiet nginx php8.2-fpm 2> /dev/null || true
  rm -rf "${webmail_paths[@]}"
  tar -C / -xpf "$work/webmail-before.tar"
}
# Put back however this ends; then the rest of ci-systemd.sh's own clean-up.
trap 'webmail_restore; cleanup' EXIT

# The page's command, its continuation lines joined.
setup=$(awk '/^ *contrib\/roundcube\/setup-debian.sh/ { on = 1 }
  on { line = line $0; if ($0 !~ /\\$/) { print line; exit } sub(/\\$/, "", line) }' "$page" \
  | tr -s ' ' | sed 's/^ //')
case "$setup" in
  "contrib/roundcube/setup-debian.sh --server-name webmail.example.com --certificate /etc/ssl/webmail.crt --private-key /etc/ssl/webmail.key "*) ;;
  *) fail "$page: the webmail setup is '$setup'; this script makes the certificate it names" ;;
esac
echo "webmail: $page: $setup"

# What the page has the admin do first: a certificate for the webmail's name where the
# command names it, and one for Understudy's `hostname` in its [tls] (Roundcube verifies
# it; it is self-signed here, so Roundcube gets it with the page's `--ca-file`, in a
# place PHP-FPM's www-data may read).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=webmail.example.com \
  -addext subjectAltName=DNS:webmail.example.com \
  -keyout /etc/ssl/webmail.key -out /etc/ssl/webmail.crt 2> /dev/null
hostname=$(sed -n 's/^hostname = "\(.*\)"/\1/p' /etc/understudy/understudy.toml)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$hostname" \
  -addext "subjectAltName=DNS:$hostname" \
  -keyout /etc/understudy/tls/privkey.pem -out /etc/understudy/tls/fullchain.pem 2> /dev/null
install -m 644 /etc/understudy/tls/fullchain.pem /etc/ssl/understudy-ca.pem
inside systemctl reload understudy
for _ in $(seq 1 100); do
  inside openssl s_client -connect 127.0.0.1:993 -verify_hostname "$hostname" \
    -CAfile /etc/ssl/understudy-ca.pem < /dev/null 2>&1 | grep -q 'Verify return code: 0' && break
  sleep 0.1
done
webmail_forget
as_service domain add example.com --engagement manual > /dev/null
as_service user add anna@example.com --name Anna --password-stdin <<< 'Webmail1pass' > /dev/null
inside sh -c "printf 'From: someone@example.net\r\nTo: anna@example.com\r\nSubject: read in the webmail\r\n\r\nHello Anna.\r\n' > /tmp/hello.eml"
inside curl -sS smtp://127.0.0.1:25 --mail-from someone@example.net --mail-rcpt anna@example.com \
  --upload-file /tmp/hello.eml || fail "the test message was not accepted"

# PHP-FPM's socket directory, which a boot makes from tmpfiles.d (masked here: that
# would act on the machine), in the namespaces' own /run.
inside install -d -o www-data -g www-data -m 755 /run/php
# The command as written, plus the CA of the self-signed certificate above. Its
# `systemctl enable` leaves the machine's SysV links (/etc/rc?.d) alone.
# Run from a copy of contrib/ in a directory both sides see: a checkout under /tmp (where
# CI may clone) is hidden inside by the namespaces' private /tmp.
visible=$(mktemp -d /var/cache/understudy-ci.XXXXXX)
cp -r contrib "$visible/"
out=$(inside env SYSTEMCTL_SKIP_SYSV=1 bash -c "cd '$visible' && $setup --ca-file /etc/ssl/understudy-ca.pem" 2>&1) \
  || {
    echo "$out" >&2
    inside systemctl status --no-pager nginx php8.2-fpm >&2 || true
    fail "$setup"
  }
echo "webmail:   $(tail -2 <<< "$out" | head -1)"
for unit in nginx php8.2-fpm; do
  [ "$(inside systemctl is-active "$unit")" = active ] || fail "$setup: $unit is not active"
done

# A login as a browser does it: the form's token and the session cookie, over HTTPS
# with the webmail's certificate verified; then INBOX's list as Roundcube's page asks.
web() {
  inside curl -sS --max-time 120 --cacert /etc/ssl/webmail.crt \
    --resolve webmail.example.com:443:127.0.0.1 -b /tmp/webmail.jar -c /tmp/webmail.jar "$@"
}
login=$(web https://webmail.example.com/) || fail "no login page over https"
token=$(sed -n 's/.*name="_token" value="\([^"]*\)".*/\1/p' <<< "$login" | head -1)
[ -n "$token" ] || fail "no login form: $(head -c 400 <<< "$login")"
mail=$(web -L --data-urlencode "_token=$token" -d _task=login -d _action=login -d _timezone=UTC \
  -d _url= --data-urlencode _user=anna@example.com --data-urlencode _pass=Webmail1pass \
  'https://webmail.example.com/?_task=login') || fail "the login request failed"
request=$(sed -n 's/.*"request_token":"\([^"]*\)".*/\1/p' <<< "$mail" | head -1)
grep -q '_task=mail' <<< "$mail" && [ -n "$request" ] \
  || { inside journalctl -u understudy --no-pager -n 20 >&2; fail "the Roundcube login failed"; }
list=$(web -H "X-Roundcube-Request: $request" -H 'X-Requested-With: XMLHttpRequest' \
  'https://webmail.example.com/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1') \
  || fail "no message list"
grep -q 'read in the webmail' <<< "$list" || fail "INBOX's list lacks the test message: $list"
echo "webmail:   logged in over https as anna@example.com, INBOX lists 'read in the webmail'"

webmail_restore
trap cleanup EXIT
echo "webmail: ok; nginx and php8.2-fpm stopped, the files setup-debian.sh wrote put back"
