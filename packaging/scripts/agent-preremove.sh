#!/bin/sh
# sutra-agent package: before removal (not before an upgrade).
# deb: $1 = remove | upgrade | deconfigure ...; rpm: $1 = 0 on removal, 1 on upgrade.
set -e
case "$1" in
  remove|purge|deconfigure|0)
    if [ -d /run/systemd/system ]; then
      # Stops the agent only (KillMode=process): storage nodes it started keep
      # running; stop them first with "sutra nodes stop" if they must go.
      systemctl stop sutra-agent.service || true
      systemctl disable sutra-agent.service >/dev/null 2>&1 || true
    fi
    # Left beside the executable by the agent's self-update.
    rm -f /usr/bin/sutra-agent.previous /usr/bin/sutra-agent.previous.tmp /usr/bin/sutra-agent.new
    ;;
esac
exit 0
