#!/usr/bin/env bash
# Roundcube on top of Understudy, on Debian 12, in one command: Debian's Roundcube
# packages served by nginx and PHP-FPM (no Apache), configured from Understudy's own
# configuration by `understudy webmail print-config roundcube`.
#
#   sudo contrib/roundcube/setup-debian.sh --server-name webmail.example.com \
#       [--config /etc/understudy/understudy.toml] [--certificate CRT --private-key KEY] \
#       [--ca-file CA.pem] [--connect 127.0.0.1] [--product-name NAME] [--login-hint TEXT]
#
# Run it on the Understudy machine (Roundcube then connects to 127.0.0.1) or on a
# webmail machine that has the `understudy` binary and a copy of the config. It is safe
# to run again: it rewrites only the files it owns. Afterwards add the webmail host's
# address to Understudy's `auth.webmail_hosts` (127.0.0.1 and ::1 when on the same
# machine) so one user's failed logins do not lock every webmail user out, and restart
# Understudy ([auth] is read at start).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=/etc/understudy/understudy.toml
server_name=
certificate=
private_key=
print_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --server-name) server_name=$2; shift 2 ;;
    --certificate) certificate=$2; shift 2 ;;
    --private-key) private_key=$2; shift 2 ;;
    --ca-file|--connect|--imap-port|--smtp-port|--product-name|--login-hint)
      print_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "$0: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$server_name" ] || { echo "$0: --server-name is required (the webmail's host name)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
understudy=$(command -v understudy || echo /usr/local/bin/understudy)
[ -x "$understudy" ] || { echo "$0: the understudy binary is not on PATH" >&2; exit 1; }

# The settings first: a configuration Understudy cannot describe stops here, before
# anything is installed.
settings=$(mktemp)
trap 'rm -f "$settings"' EXIT
"$understudy" --config "$config" webmail print-config roundcube "${print_args[@]}" > "$settings"

# Debian's packages; the database is SQLite in /var/lib/roundcube/db, created by
# Roundcube itself on first use (no dbconfig questions).
export DEBIAN_FRONTEND=noninteractive
echo "roundcube-core roundcube/dbconfig-install boolean false" | debconf-set-selections
apt-get install -y --no-install-recommends roundcube-core roundcube-sqlite3 php8.2-fpm nginx

install -d -o www-data -g www-data -m 0750 /var/lib/roundcube/db
# The plugin: the login hint, and the user's own address named to IMAP.
rm -rf /var/lib/roundcube/plugins/understudy
cp -r "$here/understudy" /var/lib/roundcube/plugins/understudy
install -o root -g www-data -m 0640 "$settings" /etc/roundcube/understudy.inc.php
# Local edits live in understudy-site.inc.php, written once and kept on reruns.
[ -e /etc/roundcube/understudy-site.inc.php ] || cat > /etc/roundcube/understudy-site.inc.php <<'EOF2'
<?php
// Written once by Understudy's contrib/roundcube/setup-debian.sh; edit freely.
$config['db_dsnw'] = 'sqlite:////var/lib/roundcube/db/roundcube.sqlite?mode=0640';
// nginx passes the browser's address as REMOTE_ADDR: no proxy to believe.
$config['proxy_whitelist'] = [];
EOF2
# Included last, so they win over Debian's settings above them (imap_host, plugins...).
grep -q "understudy.inc.php" /etc/roundcube/config.inc.php || cat >> /etc/roundcube/config.inc.php <<'EOF'

// Understudy (contrib/roundcube/setup-debian.sh): generated settings, then local edits.
include '/etc/roundcube/understudy.inc.php';
include '/etc/roundcube/understudy-site.inc.php';
EOF

# nginx: HTTPS only, PHP-FPM for Roundcube's one entry point; Debian's public_html holds
# nothing else that PHP should run.
if [ -z "$certificate" ]; then
  certificate=/etc/ssl/certs/ssl-cert-snakeoil.pem
  private_key=/etc/ssl/private/ssl-cert-snakeoil.key
  echo "note: no --certificate given; nginx uses the snakeoil certificate until you set one" >&2
  [ -e "$certificate" ] || apt-get install -y --no-install-recommends ssl-cert
fi
cat > /etc/nginx/sites-available/understudy-webmail <<EOF
# Written by Understudy's contrib/roundcube/setup-debian.sh.
server {
    listen 80;
    listen [::]:80;
    server_name $server_name;
    return 301 https://\$host\$request_uri;
}
server {
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name $server_name;
    ssl_certificate $certificate;
    ssl_certificate_key $private_key;
    root /var/lib/roundcube/public_html;
    index index.php;
    client_max_body_size 30m;
    add_header X-Frame-Options sameorigin;
    location ~ /\. { deny all; }
    location = /index.php {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }
    location ~ \.php\$ { deny all; }
    location / { try_files \$uri \$uri/ =404; }
}
EOF
ln -sfn ../sites-available/understudy-webmail /etc/nginx/sites-enabled/understudy-webmail
# Attachments up to the server's message size.
sed -i 's/^upload_max_filesize = .*/upload_max_filesize = 25M/; s/^post_max_size = .*/post_max_size = 30M/' \
  /etc/php/8.2/fpm/php.ini
nginx -t
if [ -d /run/systemd/system ]; then
  systemctl enable --now php8.2-fpm nginx
  systemctl reload php8.2-fpm nginx
else
  echo "note: systemd is not running here: start php-fpm8.2 and nginx yourself" >&2
fi
echo "Roundcube is at https://$server_name/"
echo "Next: add this host to auth.webmail_hosts in $config (127.0.0.1 and ::1 when on the same machine), then restart Understudy ([auth] is read at start)."
