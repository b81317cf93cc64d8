#!/usr/bin/env bash
# Installs what the tests need when it is missing, from Debian's packages:
# redis-server and redis-cli (the Go tests start their own servers on
# random loopback ports), Chromium, Node.js and npm (the browser client's
# tests). Safe to run repeatedly; does nothing when all is present. A
# fresh machine needs about a minute and a half and ~400 MB for Chromium.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
[ -x "${REALTIME_CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)

if [ "${#need_apt[@]}" -gt 0 ]; then
	echo "installing: ${need_apt[*]}"
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# the package may start a system redis on 6379; the tests never use it:
# they start their own redis-server on random loopback ports.
redis-server --version
