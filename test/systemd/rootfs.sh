#!/usr/bin/env bash
# Prepares (once) and prints the path of a Debian bookworm root filesystem that
# boots systemd under systemd-nspawn, for the real-systemd integration test
# (agent/service/systemd_integration_test.go, gated by SUTRA_SYSTEMD_IT=1).
#
#   test/systemd/rootfs.sh            -> prints the rootfs dir on stdout
#
# The rootfs is cached under $SUTRA_IT_CACHE (default /var/cache/sutra-it) and
# reused by later runs; delete the directory to rebuild it. Needs root, the
# Debian mirror ($SUTRA_IT_MIRROR, default http://deb.debian.org/debian) and
# installs debootstrap + systemd-container with apt-get when they are missing.
set -euo pipefail

cache=${SUTRA_IT_CACHE:-/var/cache/sutra-it}
mirror=${SUTRA_IT_MIRROR:-http://deb.debian.org/debian}
root="$cache/bookworm"

log() { echo "rootfs.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "needs root (debootstrap, systemd-nspawn)"
  exit 1
fi

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

if [ -f "$root/.sutra-it-ready" ]; then
  echo "$root"
  exit 0
fi

mkdir -p "$cache"
# A half-built tree from an interrupted run is useless: start over.
rm -rf "$root" "$root.partial"
start=$(date +%s)
log "debootstrap bookworm into $root (first run only)"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
  bookworm "$root.partial" "$mirror" >&2

# Boot quickly and quietly: no getty on the console, no network management
# (the container shares the host's network namespace), fixed machine id.
chroot "$root.partial" systemctl mask \
  console-getty.service getty@tty1.service systemd-networkd.service \
  systemd-resolved.service systemd-timesyncd.service apt-daily.timer \
  apt-daily-upgrade.timer >&2 2>/dev/null || true
echo sutra-it >"$root.partial/etc/hostname"
: >"$root.partial/etc/machine-id"
touch "$root.partial/.sutra-it-ready"
mv "$root.partial" "$root"
log "debootstrap took $(( $(date +%s) - start ))s"
echo "$root"
