#!/usr/bin/env bash
# Checks that the module builds into Caddy the way users add plugins.
#
# It runs `xcaddy build --with github.com/caddy-realtime/realtime=.` when
# xcaddy can resolve the module path; where the module path cannot be
# looked up (unpublished, or no network beyond the Go proxy), it does what
# xcaddy does by hand: a fresh main module that imports Caddy's standard
# modules and this one, with a replace to this checkout, then
# `go mod tidy` and `go build`. Either way no replace directive or Go
# version of this repository gets in the way.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
caddy_version="$(cd "$repo" && go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/caddy"

if [ -z "${XCADDY:-}" ]; then
	GOBIN="$work/bin" go install github.com/caddyserver/xcaddy/cmd/xcaddy@latest
	XCADDY="$work/bin/xcaddy"
fi
if (cd "$repo" && "$XCADDY" build "$caddy_version" --with github.com/caddy-realtime/realtime=. --output "$out") >"$work/xcaddy.log" 2>&1; then
	echo "xcaddy build: ok"
else
	echo "xcaddy could not resolve the module path here (see below); building the way xcaddy does"
	grep -v '^go: \(added\|downloading\)' "$work/xcaddy.log" | tail -3
	mkdir -p "$work/build"
	cd "$work/build"
	cat >main.go <<'GO'
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-realtime/realtime"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() { caddycmd.Main() }
GO
	go mod init caddy >/dev/null 2>&1
	go mod edit -require "github.com/caddyserver/caddy/v2@$caddy_version" \
		-require github.com/caddy-realtime/realtime@v0.0.0-00010101000000-000000000000 \
		-replace "github.com/caddy-realtime/realtime=$repo"
	go mod tidy >/dev/null
	go build -o "$out" .
	echo "plugin build: ok"
fi
"$out" list-modules | grep -x 'http.handlers.realtime'
