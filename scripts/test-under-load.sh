#!/usr/bin/env bash
# Runs `make test` RUNS times in a row (default 10) with one busy loop per
# core beside it, the way a CI machine shared with other work is loaded.
# Stops at the first failure; the busy loops are stopped by their PIDs
# when it ends, and each is bounded by `timeout` in any case.
set -euo pipefail
runs="${1:-10}"
cd "$(dirname "$0")/.."

hogs=()
stop_hogs() { [ "${#hogs[@]}" -gt 0 ] && kill "${hogs[@]}" 2>/dev/null; true; }
trap stop_hogs EXIT
for _ in $(seq "$(nproc)"); do
	timeout 3h sh -c 'while :; do :; done' &
	hogs+=($!)
done
echo "busy loops: ${hogs[*]}"

for i in $(seq "$runs"); do
	start=$(date +%s)
	if make --no-print-directory test >"/tmp/realtime-test-run-$i.log" 2>&1; then
		echo "run $i of $runs: passed in $(($(date +%s) - start)) s"
	else
		echo "run $i of $runs: FAILED after $(($(date +%s) - start)) s; log: /tmp/realtime-test-run-$i.log"
		grep -E '^\s*--- FAIL|_test\.go:[0-9]+:|^not ok|^FAIL' "/tmp/realtime-test-run-$i.log" | head -30
		exit 1
	fi
done
echo "$runs of $runs runs passed"
