package presence

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store of a deployment sharing one Redis (or Cluster).
// Each channel has, under the prefix (the channel in a hash tag, so that
// a Cluster keeps them in one slot):
//
//	<prefix>#presence:{<channel>}           hash: sub → connections, all nodes
//	<prefix>#presence:{<channel>}:n         connections, all nodes
//	<prefix>#presence:{<channel>}:nodes     sorted set: node → when its counts expire (ms)
//	<prefix>#presence:{<channel>}:node:<id> hash: sub → connections on node <id>
//
// and <prefix>#presence is a sorted set of the channels by when their
// counts expire, for the sweeper. '#' cannot occur in a channel name, so
// no key collides with a channel's stream. An update costs one script
// call, O(1) in the members of the channel, plus O(members) of each
// expired node it sweeps.
type Redis struct {
	rdb    redis.UniversalClient
	prefix string
	node   string
	ttl    time.Duration
}

// NewRedis returns the store of node (an id unique in the deployment)
// on rdb; a node's counts expire ttl after its last update.
func NewRedis(rdb redis.UniversalClient, prefix, node string, ttl time.Duration) *Redis {
	return &Redis{rdb: rdb, prefix: prefix, node: node, ttl: ttl}
}

func (r *Redis) base(channel string) string { return r.prefix + "#presence:{" + channel + "}" }
func (r *Redis) sweepKey() string           { return r.prefix + "#presence" }

// update applies this node's counts and sweeps expired nodes' in one
// step. It returns, after the transitions, when the channel's counts
// expire next (0: no node has any).
//
// KEYS: subs, total, nodes. ARGV: node key base, now (ms), ttl (ms),
// node, then sub/count pairs.
var update = redis.NewScript(`
local out = {}
local function apply(sub, before, after)
  if after <= 0 then redis.call('HDEL', KEYS[1], sub) else redis.call('HSET', KEYS[1], sub, after) end
  local tb = tonumber(redis.call('GET', KEYS[2]) or '0')
  local ta = tb + after - before
  if ta <= 0 then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ta) end
  if tb <= 0 and ta > 0 then table.insert(out, 'channel_occupied'); table.insert(out, '') end
  if sub ~= '' then
    if before <= 0 and after > 0 then table.insert(out, 'member_added'); table.insert(out, sub) end
    if before > 0 and after <= 0 then table.insert(out, 'member_removed'); table.insert(out, sub) end
  end
  if tb > 0 and ta <= 0 then table.insert(out, 'channel_vacated'); table.insert(out, '') end
end
local function add(sub, delta)
  if delta == 0 then return end
  local before = tonumber(redis.call('HGET', KEYS[1], sub) or '0')
  apply(sub, before, before + delta)
end
local now, ttl, me = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  if n ~= me then
    local h = ARGV[1] .. n
    local kv = redis.call('HGETALL', h)
    for i = 1, #kv, 2 do add(kv[i], -tonumber(kv[i+1])) end
    redis.call('DEL', h)
    redis.call('ZREM', KEYS[3], n)
  end
end
local mine = ARGV[1] .. me
for i = 5, #ARGV, 2 do
  local sub, n = ARGV[i], tonumber(ARGV[i+1])
  local old = tonumber(redis.call('HGET', mine, sub) or '0')
  if n > 0 then redis.call('HSET', mine, sub, n) else redis.call('HDEL', mine, sub) end
  add(sub, n - old)
end
if redis.call('EXISTS', mine) == 1 then
  redis.call('ZADD', KEYS[3], now + ttl, me)
  redis.call('PEXPIRE', mine, 2 * ttl)
else
  redis.call('ZREM', KEYS[3], me)
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  table.insert(out, '0')
else
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], tonumber(last[2]) - now + ttl) end
  table.insert(out, last[2])
end
return out
`)

// run calls the update script for channel with counts, and keeps the
// sweeper's index of the channel up to date.
func (r *Redis) run(ctx context.Context, channel string, counts []Count) ([]Transition, error) {
	base := r.base(channel)
	now := time.Now()
	args := make([]any, 0, 4+2*len(counts))
	args = append(args, base+":node:", now.UnixMilli(), r.ttl.Milliseconds(), r.node)
	for _, c := range counts {
		args = append(args, c.Sub, c.N)
	}
	res, err := update.Run(ctx, r.rdb, []string{base, base + ":n", base + ":nodes"}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("presence of %s: %w", channel, err)
	}
	if len(res) == 0 || len(res)%2 != 1 {
		return nil, fmt.Errorf("presence of %s: unexpected script answer %q", channel, res)
	}
	var out []Transition
	for i := 0; i+1 < len(res); i += 2 {
		if k := parseKind(res[i]); k != 0 {
			out = append(out, Transition{Kind: k, Channel: channel, Sub: res[i+1], At: now})
		}
	}
	// the sweeper looks at the channel once its counts may have expired
	next, _ := strconv.ParseInt(res[len(res)-1], 10, 64)
	if next == 0 {
		err = r.rdb.ZRem(ctx, r.sweepKey(), channel).Err()
	} else {
		err = r.rdb.ZAdd(ctx, r.sweepKey(), redis.Z{Score: float64(next), Member: channel}).Err()
	}
	if err != nil {
		return out, fmt.Errorf("presence sweep index: %w", err)
	}
	return out, nil
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, channel string, counts []Count) ([]Transition, error) {
	return r.run(ctx, channel, counts)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, channel string) (Snapshot, []Transition, error) {
	trans, err := r.run(ctx, channel, nil)
	if err != nil {
		return Snapshot{}, nil, err
	}
	base := r.base(channel)
	pipe := r.rdb.Pipeline()
	subs := pipe.HGetAll(ctx, base)
	total := pipe.Get(ctx, base+":n")
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return Snapshot{}, trans, fmt.Errorf("presence of %s: %w", channel, err)
	}
	snap := Snapshot{Channel: channel, Members: []Member{}}
	snap.Connections, _ = strconv.Atoi(total.Val())
	for sub, v := range subs.Val() {
		n, _ := strconv.Atoi(v)
		if sub != "" && n > 0 {
			snap.Members = append(snap.Members, Member{Sub: sub, Connections: n})
		}
	}
	sortMembers(snap.Members)
	return snap, trans, nil
}

// sweepBatch bounds the channels one Sweep looks at.
const sweepBatch = 100

// Sweep implements Store: the channels whose counts may have expired
// (no node refreshed them) get the update script without counts, which
// removes the expired ones.
func (r *Redis) Sweep(ctx context.Context) ([]Transition, error) {
	due, err := r.rdb.ZRangeByScore(ctx, r.sweepKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(time.Now().UnixMilli(), 10), Count: sweepBatch,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("presence sweep: %w", err)
	}
	var out []Transition
	for _, ch := range due {
		t, err := r.run(ctx, ch, nil)
		out = append(out, t...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
