#!/bin/sh
# Reproduce the unpatched-vs-patched x/net/http2 SSE broadcast benchmark.
# Usage: sh run.sh [h2drive flags...]   (e.g. -n 5000 -m 40 -interval 250ms)
# Builds two servers from the same source: one against golang.org/x/net
# v0.60.0 from the module cache, one against a copy of it with
# ../http2-direct-write.patch applied (go.patched.mod's replace, rewritten to
# point at that copy). Everything generated goes under $H2EXP (default
# /tmp/h2exp-run), never into this directory.
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=${H2EXP:-/tmp/h2exp-run}
mkdir -p "$work/bin"
if [ ! -d "$work/xnet" ]; then
	src=$(cd "$here" && go mod download -json golang.org/x/net@v0.60.0 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	cp -r "$src" "$work/xnet" && chmod -R u+w "$work/xnet"
	(cd "$work/xnet" && patch -p1 < "$here/../http2-direct-write.patch")
fi
sed "s#=> ../xnet#=> $work/xnet#" "$here/go.patched.mod" > "$work/go.patched.mod"
cp "$here/go.patched.sum" "$work/go.patched.sum"
cd "$here"
go build -o "$work/bin/h2srv-unpatched" ./cmd/h2srv
go build -modfile="$work/go.patched.mod" -o "$work/bin/h2srv-patched" ./cmd/h2srv
go build -o "$work/bin/h2drive" ./cmd/h2drive
cd "$work"
exec nice -n 10 ./bin/h2drive "$@"
