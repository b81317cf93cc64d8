#!/bin/sh
# publish.sh: the dashboard's backend. Every INTERVAL seconds it reads the
# load average and memory use from /proc and PUBLISHes them as one JSON
# message to the Redis channel realtime:metrics, COUNT times, then exits.
#
#   REDIS_URL  Redis to publish to      (default redis://127.0.0.1:6379)
#   COUNT      messages to publish      (default 300)
#   INTERVAL   seconds between them     (default 1)
#   CHANNEL    hub channel name         (default metrics)
#
# It holds no client connection: the hub in Caddy delivers each message
# to every page subscribed to the channel.
set -eu

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
COUNT=${COUNT:-300}
INTERVAL=${INTERVAL:-1}
CHANNEL=${CHANNEL:-metrics}

seq=0
while [ "$seq" -lt "$COUNT" ]; do
	seq=$((seq + 1))
	read -r load1 load5 load15 _ </proc/loadavg
	mem=$(awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 }
		END { if (t > 0) printf "%.1f", 100 * (t - a) / t; else print 0 }' /proc/meminfo)
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	msg=$(printf '{"seq":%d,"time":"%s","load1":%s,"load5":%s,"load15":%s,"mem_used_pct":%s}' \
		"$seq" "$now" "$load1" "$load5" "$load15" "$mem")
	# PUBLISH answers with the number of Redis subscribers: 1 per Caddy
	# node that has a page watching the channel, 0 when nobody watches.
	nodes=$(redis-cli -u "$REDIS_URL" PUBLISH "realtime:$CHANNEL" "$msg")
	echo "published #$seq to $nodes node(s): $msg"
	if [ "$seq" -lt "$COUNT" ]; then sleep "$INTERVAL"; fi
done
