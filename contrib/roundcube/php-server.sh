#!/usr/bin/env bash
# Roundcube from Debian's packages under PHP's built-in server, on loopback, for the
# browser tests, the bench and trying it out: lays out an instance in DIR (Debian's
# code, this checkout's plugin, DIR/config), then runs `php -S ADDR` in the foreground.
#
#   contrib/roundcube/php-server.sh DIR 127.0.0.1:8080 SETTINGS.php [EXTRA.php]
#
# SETTINGS.php is `understudy webmail print-config roundcube ...`'s output; EXTRA.php,
# if given, is included after it (tests: logs, a fixed des_key). Needs the packages
# roundcube-core, roundcube-sqlite3 and php8.2-cli.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DIR ADDR:PORT SETTINGS.php [EXTRA.php]" >&2
  exit 2
fi
dir=$(realpath -m "$1")
addr=$2
settings=$(realpath "$3")
extra=${4:+$(realpath "$4")}
here=$(cd "$(dirname "$0")" && pwd)
share=/usr/share/roundcube
[ -d "$share/program" ] || { echo "$0: Roundcube not installed ($share missing)" >&2; exit 1; }

mkdir -p "$dir"/{config,logs,temp,plugins,public_html/program}
ln -sfn "$share/index.php" "$dir/index.php"
ln -sfn "$share/program" "$dir/program"
ln -sfn "$share/SQL" "$dir/SQL"
ln -sfn "$share/skins" "$dir/skins"
for p in "$share"/plugins/*; do ln -sfn "$p" "$dir/plugins/$(basename "$p")"; done
ln -sfn "$here/understudy" "$dir/plugins/understudy"
# The public entry point sets INSTALL_PATH to its parent, so it is a copy, not a link.
cp /var/lib/roundcube/public_html/index.php "$dir/public_html/index.php"
ln -sfn ../skins "$dir/public_html/skins"
ln -sfn ../plugins "$dir/public_html/plugins"
ln -sfn ../../program/js "$dir/public_html/program/js"
ln -sfn ../../program/resources "$dir/public_html/program/resources"
ln -sfn /etc/roundcube/defaults.inc.php "$dir/config/defaults.inc.php"
ln -sfn /etc/roundcube/mimetypes.php "$dir/config/mimetypes.php"
des_key=$(head -c 18 /dev/urandom | base64)
{
  echo "<?php"
  echo "\$config = [];"
  echo "include '$settings';"
  echo "\$config['db_dsnw'] = 'sqlite:///$dir/roundcube.sqlite?mode=0640';"
  echo "\$config['log_dir'] = '$dir/logs/';"
  echo "\$config['temp_dir'] = '$dir/temp/';"
  echo "\$config['des_key'] = '$des_key';"
  echo "\$config['skin'] = 'elastic';"
  echo "\$config['enable_spellcheck'] = false;"
  [ -n "$extra" ] && echo "include '$extra';"
} > "$dir/config/config.inc.php"
cd "$dir/public_html"
# Several workers: the browser loads the list, the preview and refreshes at once.
exec env ROUNDCUBE_CONFIG_DIR="$dir/config" PHP_CLI_SERVER_WORKERS="${PHP_CLI_SERVER_WORKERS:-4}" php -S "$addr" -t "$dir/public_html"
