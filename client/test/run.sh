#!/usr/bin/env bash
# Runs the client's tests: unit tests in Node, then browser tests in
# Debian's Chromium against a Caddy built from this repo. Installs what is
# missing (chromium, redis-server, node_modules) and never downloads a
# browser build of its own. Safe to run repeatedly.
#
#   client/test/run.sh                         build Caddy to a temp dir, run all
#   REALTIME_CADDY_BIN=bin/caddy client/test/run.sh   use that Caddy
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
client="$(dirname "$here")"
repo="$(dirname "$client")"

"$repo/scripts/ensure-deps.sh" >/dev/null

# every devDependency (playwright-core, typescript) installed at the
# version package.json pins, or npm ci installs them all afresh
if ! (cd "$client" && node -e '
	const fs = require("fs");
	const want = require("./package.json").devDependencies || {};
	for (const [name, version] of Object.entries(want)) {
		const file = "node_modules/" + name + "/package.json";
		if (!fs.existsSync(file) || JSON.parse(fs.readFileSync(file, "utf8")).version !== version) process.exit(1);
	}') 2>/dev/null; then
	# playwright-core downloads no browser; make sure nothing else tries
	(cd "$client" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

if [ -z "${REALTIME_CADDY_BIN:-}" ]; then
	REALTIME_CADDY_BIN="$(mktemp -d)/caddy"
	echo "building Caddy with the module: $REALTIME_CADDY_BIN"
	(cd "$repo" && go build -o "$REALTIME_CADDY_BIN" ./cmd/caddy)
fi
export REALTIME_CADDY_BIN

cd "$client"
exec node --test --test-timeout=300000 test/
