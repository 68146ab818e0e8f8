#!/bin/sh
# sutra-agent package: after install or upgrade.
# deb: $1 = configure, $2 = previously installed version (empty on a fresh
# install). rpm: $1 = 1 on install, 2 on upgrade.
set -e
upgrade=false
case "$1" in
  configure) [ -n "${2:-}" ] && upgrade=true ;;
  [2-9]) upgrade=true ;;
esac
install -d -m 0755 /var/lib/sutra /var/lib/sutra/agent /var/lib/sutra/nodes /var/cache/sutra
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ "$upgrade" = true ]; then
    # KillMode=process: the storage nodes keep running; the new agent re-adopts them.
    systemctl try-restart sutra-agent.service || true
  else
    systemctl enable sutra-agent.service >/dev/null 2>&1 || true
    echo "sutra-agent: set master_host in /etc/sutra/agent-config.toml, then: systemctl start sutra-agent"
  fi
fi
exit 0
