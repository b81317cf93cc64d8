#!/bin/sh
# Build this repository's Caddy (cmd/caddy) against golang.org/x/net
# v0.60.0 with http2-direct-write.patch applied, to measure the patch in
# the product:
#
#   bench/upstream/build-caddy.sh                 # writes bin/caddy-h2patch
#   REALTIME_CADDY_BIN=$PWD/bin/caddy-h2patch BENCH_ONLY=hub,nchan \
#     BENCH_LOADS=sseh2tls:10000:2 go run ./bench
#
# and the same with bin/caddy, alternating, for the baseline. The repo's
# go.mod is left alone: the build uses a copy of it (-modfile) with a
# replace pointing at a patched copy of x/net under $H2EXP (default
# /tmp/h2exp-caddy). An experiment, not a way to ship Caddy.
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${H2EXP:-/tmp/h2exp-caddy}
out=${1:-$root/bin/caddy-h2patch}
want=$(cd "$root" && go list -m -f '{{.Version}}' golang.org/x/net)
if [ "$want" != v0.60.0 ]; then
	echo "go.mod requires golang.org/x/net $want; the patch is against v0.60.0" >&2
	exit 1
fi
mkdir -p "$work"
rm -rf "$work/xnet"
src=$(cd "$root" && go mod download -json golang.org/x/net@v0.60.0 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
cp -r "$src" "$work/xnet" && chmod -R u+w "$work/xnet"
(cd "$work/xnet" && patch -s -p1 < "$here/http2-direct-write.patch")
cp "$root/go.mod" "$work/caddy.mod"
cp "$root/go.sum" "$work/caddy.sum"
echo "replace golang.org/x/net => $work/xnet" >> "$work/caddy.mod"
cd "$root"
go build -modfile="$work/caddy.mod" -o "$out" ./cmd/caddy
echo "$out: Caddy with the patched golang.org/x/net/http2"
