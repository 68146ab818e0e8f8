#!/bin/sh
# sutra-agent and sutra-master packages: after removal, forget the unit.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
