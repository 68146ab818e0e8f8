#!/usr/bin/env bash
# Lays out storage-server and sutra-agent for every platform the grid
# distributes, named as the master's catalog expects, ready to drop into
# BINARIES_DIR:
#
#   {artifact}-{version}-{platform}-{arch}[.exe]
#   artifact: storage-server, sutra-agent
#   platform: linux, darwin, windows      arch: x86_64 (amd64), aarch64 (arm64)
#
# usage: packaging/dist-binaries.sh [VERSION [OUTDIR]]
#   VERSION  strict semantic version without "v" (default: $VERSION, else 0.1.0)
#   OUTDIR   default: dist/binaries
#   TARGETS  env, default "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64"
#   GO       env, default go
#
#   SUTRA_SIGNING_KEY  env: a release private key (sutra release keygen); when
#                      set, every binary gets NAME.minisig beside it (sutra
#                      release sign; password from SUTRA_RELEASE_PASSWORD,
#                      SUTRA_RELEASE_PASSWORD_FILE or the terminal, asked once)
#
# Each file is built to OUTDIR/.NAME.partial and renamed into place, so a
# master watching OUTDIR never registers a half-written binary. When signing,
# everything is built and signed in a hidden staging directory first, then
# each NAME.minisig is moved into place before its NAME, so the master never
# offers a binary of this release unsigned.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-${VERSION:-0.1.0}}
out=${2:-dist/binaries}
go=${GO:-go}
targets=${TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64}
module=github.com/sutragrid/sutra

semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'
if ! [[ $version =~ $semver ]]; then
  echo "dist-binaries: version \"$version\" is not a semantic version like 1.2.3 (no leading v)" >&2
  exit 2
fi
# Build metadata (+...) is not part of the catalog's file names.
if [[ $version == *+* ]]; then
  echo "dist-binaries: version \"$version\" has build metadata (+...), which binary names cannot carry" >&2
  exit 2
fi

mkdir -p "$out"
stage=$out
signing=
if [[ -n ${SUTRA_SIGNING_KEY:-} ]]; then
  if [[ ! -f $SUTRA_SIGNING_KEY ]]; then
    echo "dist-binaries: SUTRA_SIGNING_KEY=$SUTRA_SIGNING_KEY is not a file (a key made by sutra release keygen)" >&2
    exit 2
  fi
  signing=1
  stage=$(mktemp -d "$out/.dist-staging.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  "$go" build -o "$stage/.sutra" ./cmd/sutra
fi
built=()
for target in $targets; do
  goos=${target%/*}
  goarch=${target#*/}
  case "$goarch" in
    amd64) arch=x86_64 ;;
    arm64) arch=aarch64 ;;
    arm) arch=arm ;;
    386) arch=x86 ;;
    *) echo "dist-binaries: unsupported GOARCH $goarch" >&2; exit 2 ;;
  esac
  case "$goos" in
    linux|darwin) ext= ;;
    windows) ext=.exe ;;
    *) echo "dist-binaries: unsupported GOOS $goos" >&2; exit 2 ;;
  esac
  for artifact in storage-server sutra-agent; do
    name="$artifact-$version-$goos-$arch$ext"
    partial="$stage/.$name.partial"
    GOOS=$goos GOARCH=$goarch CGO_ENABLED=0 "$go" build -trimpath \
      -ldflags "-s -w -X $module/internal/version.Version=$version" \
      -o "$partial" "./cmd/$artifact" || { rm -f "$partial"; exit 1; }
    mv -f "$partial" "$stage/$name"
    built+=("$name")
    if [[ -z $signing ]]; then
      echo "$out/$name"
    fi
  done
done

if [[ -n $signing ]]; then
  pwargs=()
  if [[ -n ${SUTRA_RELEASE_PASSWORD_FILE:-} ]]; then
    pwargs=(--password-file "$SUTRA_RELEASE_PASSWORD_FILE")
  fi
  files=()
  for name in "${built[@]}"; do files+=("$stage/$name"); done
  "$stage/.sutra" release sign --key "$SUTRA_SIGNING_KEY" "${pwargs[@]}" "${files[@]}" >/dev/null
  for name in "${built[@]}"; do
    mv -f "$stage/$name.minisig" "$out/$name.minisig"
    mv -f "$stage/$name" "$out/$name"
    echo "$out/$name"
    echo "$out/$name.minisig"
  done
fi
