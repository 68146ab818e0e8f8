#!/bin/sh
# sutra-master package: after install or upgrade.
# deb: $1 = configure, $2 = previously installed version (empty on a fresh
# install). rpm: $1 = 1 on install, 2 on upgrade.
set -e
upgrade=false
case "$1" in
  configure) [ -n "${2:-}" ] && upgrade=true ;;
  [2-9]) upgrade=true ;;
esac
if ! getent group sutra >/dev/null 2>&1; then
  groupadd --system sutra
fi
if ! getent passwd sutra >/dev/null 2>&1; then
  useradd --system --gid sutra --home-dir /var/lib/sutra-master --no-create-home \
    --shell /usr/sbin/nologin --comment "Sutra Grid master" sutra
fi
install -d -o sutra -g sutra -m 0775 /var/lib/sutra-master /var/lib/sutra-master/binaries
install -d -o sutra -g sutra -m 0750 /var/lib/sutra-master/data
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ "$upgrade" = true ]; then
    systemctl try-restart sutra-master.service || true
  else
    systemctl enable --now sutra-master.service >/dev/null 2>&1 || true
    echo "sutra-master: serving binaries from /var/lib/sutra-master/binaries (settings: /etc/sutra/master.env)"
  fi
fi
exit 0
