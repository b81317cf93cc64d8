#!/bin/sh
# notify.sh <user> <text>: a backend sends a user a notification. It
# PUBLISHes to the Redis channel realtime:user:<user>, the private channel
# that only <user>'s tickets cover; every Caddy node delivers it to the
# pages that user has open.
#
#   REDIS_URL  Redis to publish to (default redis://127.0.0.1:6379)
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 <user> <text>" >&2
	exit 2
fi
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

# PUBLISH answers with the number of Redis subscribers: 1 per Caddy node
# where <user> has a page open, 0 when nobody listens (then the message is
# gone; use XADD, see README.md, to keep it for a page that comes back).
nodes=$(redis-cli -u "$REDIS_URL" PUBLISH "realtime:user:$1" "$2")
echo "notified $1 on $nodes node(s)"
