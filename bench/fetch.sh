#!/usr/bin/env bash
# bench/fetch.sh: time `sutra-agent fetch` of a 200 MB storage-server from a
# master on loopback against the baseline `curl -o f && openssl dgst -sha256 f`
# on the same file, in one run, and measure the agent's peak RSS.
#
#   bash bench/fetch.sh            (SIZE_MB=200 ROUNDS=3 by default)
#
# The server is cmd/sutra-master when it exists and answers on loopback
# (BINARIES_DIR / HTTP_PORT / GRPC_PORT, as in the design document), else
# bench/fileserver, a stand-in serving the same routes with http.ServeContent.
# The agent also fsyncs the file before its atomic rename; curl does not.
#
# Then the same fetch with release signatures on (issue 13): the file is
# signed with a throwaway key (sutra release sign), the master serves
# FILE.minisig, and the agent, configured with [security]
# release_public_keys, verifies the signature before the file is made
# executable. Goal: verification adds < 5 % to the fetch time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

SIZE_MB=${SIZE_MB:-200}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/sutra-bench-fetch.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

for tool in curl openssl; do
  command -v $tool >/dev/null || { echo "bench/fetch.sh needs $tool" >&2; exit 1; }
done

echo "building sutra-agent, sutra and the server..."
go build -trimpath -o "$work/sutra-agent" ./cmd/sutra-agent
go build -trimpath -o "$work/sutra" ./cmd/sutra
plat=$(go env GOOS)
case $(go env GOARCH) in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; 386) arch=x86 ;; *) arch=$(go env GOARCH) ;; esac
mkdir -p "$work/binaries"
bin="$work/binaries/storage-server-9.9.9-$plat-$arch"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$bin"

url=""
if [ -f cmd/sutra-master/main.go ] && go build -trimpath -o "$work/sutra-master" ./cmd/sutra-master 2>/dev/null; then
  port=$((20000 + RANDOM % 20000))
  BINARIES_DIR="$work/binaries" HTTP_PORT=$port GRPC_PORT=$((port + 1)) \
    "$work/sutra-master" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/api/binaries/latest/$plat/$arch" >/dev/null 2>&1; then
      url="http://127.0.0.1:$port"; server="cmd/sutra-master"; break
    fi
    sleep 0.2
  done
  if [ -z "$url" ]; then
    echo "cmd/sutra-master did not serve the binary on :$port (see below); using bench/fileserver" >&2
    tail -5 "$work/server.log" >&2 || true
    kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
  fi
fi
if [ -z "$url" ]; then
  go build -trimpath -o "$work/fileserver" ./bench/fileserver
  "$work/fileserver" -dir "$work/binaries" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    url=$(head -1 "$work/server.log" 2>/dev/null || true)
    [ -n "$url" ] && curl -fsS "$url/api/binaries" >/dev/null 2>&1 && break
    url=""; sleep 0.1
  done
  [ -n "$url" ] || { echo "fileserver did not start" >&2; cat "$work/server.log" >&2; exit 1; }
  server="bench/fileserver (stand-in: cmd/sutra-master not available)"
fi
cat "$bin" >/dev/null # both sides read the source from the page cache

cat > "$work/agent-config.toml" <<CFG
[agent]
agent_id = "bench"
master_host = "127.0.0.1:7000"
cache_dir = "$work/cache"
agent_data_dir = "$work/agent"
[storage]
master_binary_url = "$url"
data_path = "$work/nodes"
[logging]
level = "warn"
CFG

now() { date +%s.%N; }
have_time=0; [ -x /usr/bin/time ] && /usr/bin/time -v true 2>/dev/null && have_time=1

echo
echo "file:   $SIZE_MB MB storage-server-9.9.9-$plat-$arch"
echo "server: $server at $url"
echo "CPU:    $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo
printf '%-6s %-28s %-28s %-8s %-10s\n' round "curl+openssl s (MB/s)" "sutra-agent fetch s (MB/s)" ratio "agent RSS"
best_base=999999; best_agent=999999; max_rss=0
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$work/cache" "$work/curl.bin"
  t0=$(now)
  curl -sS -o "$work/curl.bin" "$url/binaries/storage-server-9.9.9-$plat-$arch"
  base_sum=$(openssl dgst -sha256 -r "$work/curl.bin" | cut -d' ' -f1)
  t1=$(now)
  rm -f "$work/curl.bin"
  t2=$(now)
  if [ "$have_time" = 1 ]; then
    path=$(/usr/bin/time -v -o "$work/time.txt" "$work/sutra-agent" fetch --config "$work/agent-config.toml")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  else
    path=$("$work/sutra-agent" fetch --config "$work/agent-config.toml"); rss=0
  fi
  t3=$(now)
  agent_sum=$(openssl dgst -sha256 -r "$path" | cut -d' ' -f1)
  [ "$agent_sum" = "$base_sum" ] || { echo "checksum differs: agent $agent_sum, curl $base_sum" >&2; exit 1; }
  base=$(echo "$t1 - $t0" | bc -l); agent=$(echo "$t3 - $t2" | bc -l)
  printf '%-6s %-28s %-28s %-8s %-10s\n' "$r" \
    "$(printf '%.3f (%.0f)' "$base" "$(echo "$SIZE_MB / $base" | bc -l)")" \
    "$(printf '%.3f (%.0f)' "$agent" "$(echo "$SIZE_MB / $agent" | bc -l)")" \
    "$(printf '%.2fx' "$(echo "$base / $agent" | bc -l)")" "$((rss / 1024)) MB"
  best_base=$(echo "if ($base < $best_base) $base else $best_base" | bc -l)
  best_agent=$(echo "if ($agent < $best_agent) $agent else $best_agent" | bc -l)
  [ "$rss" -gt "$max_rss" ] && max_rss=$rss
done
echo
printf 'best of %d: baseline %.3f s, agent %.3f s -> agent speed = %.2fx the baseline (goal >= 0.90x)\n' \
  "$ROUNDS" "$best_base" "$best_agent" "$(echo "$best_base / $best_agent" | bc -l)"
echo "agent peak RSS (VmHWM): $((max_rss / 1024)) MB (goal <= 30 MB)"

# Signatures on: the master must serve FILE.minisig (bench/fileserver does not).
if [ "$server" != "cmd/sutra-master" ]; then
  echo "signed fetch: skipped (needs cmd/sutra-master to serve the .minisig)"
  exit 0
fi
"$work/sutra" release keygen --out "$work/key" --no-password >/dev/null
"$work/sutra" release sign --key "$work/key/sutra-release.key" "$bin" >/dev/null
pub=$(tail -1 "$work/key/sutra-release.pub")
for _ in $(seq 1 100); do
  curl -fsS "$url/api/binaries/latest/$plat/$arch" 2>/dev/null | grep -q '"signature"' && break
  sleep 0.1
done
curl -fsS "$url/api/binaries/latest/$plat/$arch" | grep -q '"signature"' || { echo "the master does not offer the signature" >&2; exit 1; }
{ cat "$work/agent-config.toml"; printf '[security]\nrelease_public_keys = ["%s"]\n' "$pub"; } > "$work/agent-config-signed.toml"
grep -q release_public_keys "$work/agent-config-signed.toml" || { echo "could not write the signed config" >&2; exit 1; }

echo
printf '%-6s %-28s %-28s %-10s\n' round "fetch, unsigned s (MB/s)" "fetch + verify s (MB/s)" "overhead"
best_plain=999999; best_signed=999999
for r in $(seq 1 "$ROUNDS"); do
  # Alternate the two so drift in the machine's load hits both alike.
  rm -rf "$work/cache" "$work/agent"
  t0=$(now); "$work/sutra-agent" fetch --config "$work/agent-config.toml" >/dev/null; t1=$(now)
  rm -rf "$work/cache" "$work/agent"
  t2=$(now); "$work/sutra-agent" fetch --config "$work/agent-config-signed.toml" >"$work/signed.out" 2>"$work/signed.err" || {
    echo "signed fetch failed:" >&2; cat "$work/signed.err" >&2; exit 1; }; t3=$(now)
  ls "$work/cache"/*/*/*.minisig >/dev/null 2>&1 || {
    echo "the signed fetch kept no .minisig in the cache: was the signature verified?" >&2; exit 1; }
  plain=$(echo "$t1 - $t0" | bc -l); signed=$(echo "$t3 - $t2" | bc -l)
  printf '%-6s %-28s %-28s %-10s\n' "$r" \
    "$(printf '%.3f (%.0f)' "$plain" "$(echo "$SIZE_MB / $plain" | bc -l)")" \
    "$(printf '%.3f (%.0f)' "$signed" "$(echo "$SIZE_MB / $signed" | bc -l)")" \
    "$(printf '%+.1f %%' "$(echo "($signed - $plain) * 100 / $plain" | bc -l)")"
  best_plain=$(echo "if ($plain < $best_plain) $plain else $best_plain" | bc -l)
  best_signed=$(echo "if ($signed < $best_signed) $signed else $best_signed" | bc -l)
done
echo
printf 'best of %d: unsigned %.3f s, signed %.3f s -> verification adds %+.1f %% (goal < 5 %%)\n' \
  "$ROUNDS" "$best_plain" "$best_signed" "$(echo "($best_signed - $best_plain) * 100 / $best_plain" | bc -l)"
