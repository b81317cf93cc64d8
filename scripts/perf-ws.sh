#!/bin/bash
# perf-ws.sh: kernel and user profiles of Nchan (nginx) and the hub under
# the same WebSocket load, to compare where each spends its CPU.
#
# Runs `go run ./bench` with 10,000 WebSocket subscribers at 5 msg/s
# (Nchan, then the hub with Redis PUBLISH), and attaches `perf record -g`
# to each server's process for 6 s of its publishing round. Needs perf and
# the right to profile those processes (root, or perf_event_paranoid <= 1).
# Everything is bounded: the bench stops by itself, perf records 6 s.
#
#   scripts/perf-ws.sh            # writes /tmp/perf-nginx.data, /tmp/perf-hub.data
#   perf report -i /tmp/perf-hub.data --no-children --sort sym --stdio
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }
out=${PERF_OUT:-/tmp}
log=$(mktemp)
BENCH_ONLY=hub,nchan BENCH_LOADS="ws:10000:5" BENCH_SECS=10 timeout 300 go run ./bench >"$log" 2>&1 &
bench=$!
seen=0
for _ in $(seq 1 600); do
  sleep 0.5
  n=$(grep -c "connected 10000" "$log" || true)
  if [ "$n" -gt "$seen" ]; then
    seen=$n
    sleep 1 # publishing starts about 0.5 s after the subscribers are connected
    if [ "$n" -eq 1 ]; then
      pid=$(pgrep -n -f "nginx: worker"); name=nginx
    else
      pid=$(pgrep -n -f "caddy run --config .*hub-"); name=hub
    fi
    echo "perf record: $name (pid $pid)"
    perf record -g -p "$pid" -o "$out/perf-$name.data" -- sleep 6 >/dev/null 2>&1 || true
    [ "$n" -ge 2 ] && break
  fi
done
wait "$bench" || true
grep -E "msgs:" "$log" || true
rm -f "$log"
