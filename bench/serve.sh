#!/usr/bin/env bash
# bench/serve.sh: the master's binary server against nginx (sendfile on) on
# the same 200 MB file over loopback, in one run, side by side:
#   single-stream MB/s, aggregate MB/s with 64 concurrent downloads,
#   server CPU-seconds per GB served, peak RSS with 64 and 500 downloads,
#   and the time to register 2 GB of binaries cold and warm (restart) beside
#   `openssl dgst -sha256` over the same files.
#
#   bash bench/serve.sh      (SIZE_MB=200 REG_FILES=10 DUR=6 by default; ~2-3 minutes)
#
# Both servers run on this machine with the load client (bench/loadclient),
# so they share its cores; figures are comparable to each other, not to a
# network. Peak RSS is VmHWM (reset through /proc/PID/clear_refs before each
# run), summed over nginx's master and worker processes. CPU is utime+stime
# from /proc/PID/stat. The master runs with MAX_CONCURRENT_DOWNLOADS=1000 so
# the 500-way run is not refused (its default cap is 256).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

SIZE_MB=${SIZE_MB:-200}
REG_FILES=${REG_FILES:-10}
DUR=${DUR:-6}
work=$(mktemp -d "${TMPDIR:-/tmp}/sutra-bench-serve.XXXXXX")
master_pid="" nginx_pid=""
stop_pid() { # stop one process we started, by its pid
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { stop_pid "$master_pid"; stop_pid "$nginx_pid"; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx (Debian package)..."
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light >/dev/null \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v openssl >/dev/null || { echo "bench/serve.sh needs openssl" >&2; exit 1; }

echo "building sutra-master and bench/loadclient..."
go build -trimpath -o "$work/sutra-master" ./cmd/sutra-master
go build -trimpath -o "$work/loadclient" ./bench/loadclient

plat=$(go env GOOS)
case $(go env GOARCH) in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; 386) arch=x86 ;; *) arch=$(go env GOARCH) ;; esac
name="storage-server-9.9.9-$plat-$arch"
mkdir -p "$work/binaries" "$work/data" "$work/nginx/tmp"
chmod 755 "$work" "$work/binaries" # nginx workers run as an unprivileged user when started as root
echo "creating a ${SIZE_MB} MB binary..."
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$work/binaries/$name"
touch -d '1 hour ago' "$work/binaries/$name"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# --- start both servers ---
mport=$(free_port); gport=$(free_port)
MAX_CONCURRENT_DOWNLOADS=1000 BINARIES_DIR="$work/binaries" SUTRA_DATA_DIR="$work/data" HTTP_PORT=$mport GRPC_PORT=$gport \
  BIND_ADDRESS=127.0.0.1 "$work/sutra-master" >"$work/master.log" 2>&1 &
master_pid=$!
wait_http "http://127.0.0.1:$mport/api/binaries/latest/$plat/$arch"

nport=$(free_port)
cat > "$work/nginx/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$nport;
    location /binaries/ { alias $work/binaries/; }
  }
}
CONF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
wait_http "http://127.0.0.1:$nport/binaries/$name"

# --- measurement helpers ---
CLK_TCK=$(getconf CLK_TCK)
pids_of() { # the server's processes: nginx's master and its workers
  if [ "$1" = nginx ]; then echo "$nginx_pid" $(ps -o pid= --ppid "$nginx_pid"); else echo "$master_pid"; fi
}
cpu_ticks() { local t=0 p; for p in $(pids_of "$1"); do t=$((t + $(awk '{sub(/^.*\) /,""); print $12+$13}' /proc/$p/stat))); done; echo $t; }
reset_hwm() { local p; for p in $(pids_of "$1"); do echo 5 > /proc/$p/clear_refs 2>/dev/null || true; done; }
hwm_kb() { local t=0 p; for p in $(pids_of "$1"); do t=$((t + $(awk '/VmHWM/ {print $2}' /proc/$p/status))); done; echo $t; }
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

declare -A R
run_load() { # server url clients -> sets R[server.clients.*]
  local srv=$1 url=$2 c=$3 before after out
  reset_hwm "$srv"
  before=$(cpu_ticks "$srv")
  out=$("$work/loadclient" -url "$url" -c "$c" -d "${DUR}s")
  after=$(cpu_ticks "$srv")
  R[$srv.$c.mbps]=$(json "$out" mb_per_s)
  R[$srv.$c.gb]=$(json "$out" bytes)
  R[$srv.$c.cpu]=$(python3 -c "print(($after-$before)/$CLK_TCK)")
  R[$srv.$c.rss]=$(hwm_kb "$srv")
  R[$srv.$c.refused]=$(json "$out" refused_503)
  R[$srv.$c.failed]=$(json "$out" failed)
}

for srv in sutra nginx; do
  if [ $srv = sutra ]; then url="http://127.0.0.1:$mport/binaries/$name"; else url="http://127.0.0.1:$nport/binaries/$name"; fi
  for c in 1 64 500; do
    echo "load: $srv, $c concurrent download(s), ${DUR}s..."
    run_load $srv "$url" $c
  done
done
stop_pid "$nginx_pid"; nginx_pid=""
stop_pid "$master_pid"; master_pid=""

# --- registration of 2 GB: cold, warm, and openssl over the same files ---
echo "creating $REG_FILES x ${SIZE_MB} MB binaries for the registration run..."
mkdir -p "$work/reg" "$work/regdata"
arches=(x86_64 aarch64 arm x86); plats=(linux darwin windows)
i=0
for p in "${plats[@]}"; do for a in "${arches[@]}"; do
  [ $i -lt "$REG_FILES" ] || break 2
  { printf 'file %d\n' $i; cat "$work/binaries/$name"; } > "$work/reg/storage-server-1.0.$i-$p-$a"
  i=$((i + 1))
done; done
touch -d '1 hour ago' "$work/reg"/*
reg_mb=$(du -sm "$work/reg" | cut -f1)
t0=$(date +%s.%N); openssl dgst -sha256 "$work/reg"/* >/dev/null; t1=$(date +%s.%N)
openssl_s=$(python3 -c "print($t1-$t0)")
ncpu=$(nproc)
t0=$(date +%s.%N); ls "$work/reg"/* | xargs -P "$ncpu" -n 1 openssl dgst -sha256 >/dev/null; t1=$(date +%s.%N)
openssl_par_s=$(python3 -c "print($t1-$t0)")

register() { # -> scan time in ms from the master's log
  local log=$work/reg-$1.log port
  port=$(free_port)
  BINARIES_DIR="$work/reg" SUTRA_DATA_DIR="$work/regdata" HTTP_PORT=$port GRPC_PORT=$(free_port) BIND_ADDRESS=127.0.0.1 \
    "$work/sutra-master" >"$log" 2>&1 &
  master_pid=$!
  wait_http "http://127.0.0.1:$port/api/binaries" >/dev/null
  # The API serves while start-up hashing runs; "Auto-registered" comes when it is done.
  for _ in $(seq 1 600); do grep -q 'Auto-registered' "$log" && break; sleep 0.1; done
  stop_pid "$master_pid"; master_pid=""
  if grep -q 'msg="start-up hashing done"' "$log"; then
    grep -o 'msg="start-up hashing done".*' "$log" | sed -E 's/.*took_ms=([0-9]+).*/\1/'
  else
    grep -o 'msg="binaries registered".*' "$log" | sed -E 's/.*took_ms=([0-9]+).*/\1/'
  fi
}
cold_ms=$(register cold)
warm_ms=$(register warm)

# --- report ---
mbps() { printf '%8.0f' "$1"; }
cpu_per_gb() { python3 -c "b=${R[$1.gb]}; print('%8.2f' % (${R[$1.cpu]}/(b/1e9)) if b else '     n/a')"; }
mb() { printf '%8.1f' "$(python3 -c "print($1/1024)")"; }
echo
echo "Binary serving, ${SIZE_MB} MB file over loopback, ${DUR}s per run, $(nproc) cores shared with the load client"
printf '%-42s %12s %12s\n' "" "sutra-master" "nginx"
printf '%-42s %12s %12s\n' "single stream, MB/s" "$(mbps "${R[sutra.1.mbps]}")" "$(mbps "${R[nginx.1.mbps]}")"
printf '%-42s %12s %12s\n' "64 concurrent downloads, aggregate MB/s" "$(mbps "${R[sutra.64.mbps]}")" "$(mbps "${R[nginx.64.mbps]}")"
printf '%-42s %12s %12s\n' "500 concurrent downloads, aggregate MB/s" "$(mbps "${R[sutra.500.mbps]}")" "$(mbps "${R[nginx.500.mbps]}")"
printf '%-42s %12s %12s\n' "server CPU-s per GB, single stream" "$(cpu_per_gb sutra.1)" "$(cpu_per_gb nginx.1)"
printf '%-42s %12s %12s\n' "server CPU-s per GB, 64 concurrent" "$(cpu_per_gb sutra.64)" "$(cpu_per_gb nginx.64)"
printf '%-42s %12s %12s\n' "peak RSS MB, 64 concurrent" "$(mb "${R[sutra.64.rss]}")" "$(mb "${R[nginx.64.rss]}")"
printf '%-42s %12s %12s\n' "peak RSS MB, 500 concurrent" "$(mb "${R[sutra.500.rss]}")" "$(mb "${R[nginx.500.rss]}")"
printf '%-42s %12s %12s\n' "refused (503) / failed, 500 concurrent" "${R[sutra.500.refused]}/${R[sutra.500.failed]}" "${R[nginx.500.refused]}/${R[nginx.500.failed]}"
echo
echo "Registration of $REG_FILES files, $reg_mb MB (page cache warm for all)"
printf '%-42s %12s %12s\n' "" "time" "MB/s"
rate() { python3 -c "print('%12.0f' % ($reg_mb/$1) if $1 > 0 else '         inf')"; }
printf '%-42s %10.0fms %s\n' "openssl dgst -sha256, one process" "$(python3 -c "print($openssl_s*1000)")" "$(rate "$openssl_s")"
printf '%-42s %10.0fms %s\n' "openssl dgst -sha256, $ncpu in parallel" "$(python3 -c "print($openssl_par_s*1000)")" "$(rate "$openssl_par_s")"
printf '%-42s %10sms %s\n' "sutra-master cold (hash all)" "$cold_ms" "$(rate "$(python3 -c "print($cold_ms/1000)")")"
printf '%-42s %10sms %12s\n' "sutra-master warm restart (checksum cache)" "$warm_ms" "-"
