#!/bin/sh
# sutra-master package: before removal (not before an upgrade). The state in
# /var/lib/sutra-master and the sutra user are kept.
set -e
case "$1" in
  remove|purge|deconfigure|0)
    if [ -d /run/systemd/system ]; then
      systemctl stop sutra-master.service || true
      systemctl disable sutra-master.service >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
