package presence

import (
	"context"
	"encoding/json"
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
	notify func(channel string) Notify
}

// Notify says which transitions of a channel are lifecycle webhooks,
// kept in the channel's outbox until the app took them.
type Notify uint8

const (
	NotifyNone           Notify = iota
	NotifyChannel               // channel_occupied, channel_vacated
	NotifyChannelMembers        // and member_added, member_removed
)

// outboxClaim is how long an event of the outbox belongs to the node
// that decided (or claimed) it: past it, another node's sweeper claims
// and sends it. The sender renews it before each attempt.
const outboxClaim = 20 * time.Second

// NewRedis returns the store of node (an id unique in the deployment)
// on rdb; a node's counts expire ttl after its last update. notify (nil:
// none) says which channels' transitions go to the outbox.
func NewRedis(rdb redis.UniversalClient, prefix, node string, ttl time.Duration, notify func(string) Notify) *Redis {
	if notify == nil {
		notify = func(string) Notify { return NotifyNone }
	}
	return &Redis{rdb: rdb, prefix: prefix, node: node, ttl: ttl, notify: notify}
}

func (r *Redis) base(channel string) string { return r.prefix + "#presence:{" + channel + "}" }
func (r *Redis) sweepKey() string           { return r.prefix + "#presence" }
func (r *Redis) outboxKey() string          { return r.prefix + "#webhooks" }

// update applies this node's counts and sweeps expired nodes' in one
// step. It returns the transitions as (type, sub, outbox id) triples,
// then when the channel's counts expire next (0: no node has any). A
// transition that is a webhook of the channel is written to its outbox
// in the same step: it survives the node.
//
// KEYS: subs, total, nodes, outbox (sorted set: id → claimed until, ms),
// outbox data (hash: id → event), outbox sequence. ARGV: node key base,
// now (ms), ttl (ms), node, notify ("", "c", "cm"), claim (ms), then
// sub/count pairs.
var update = redis.NewScript(`
local out = {}
local now, ttl, me, notify, claim = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local function record(kind, sub)
  local id = ''
  if (notify == 'cm') or (notify == 'c' and sub == '') then
    id = me .. '.' .. redis.call('INCR', KEYS[6])
    redis.call('HSET', KEYS[5], id, cjson.encode({id = id, type = kind, sub = sub, ms = now}))
    redis.call('ZADD', KEYS[4], now + claim, id)
    for i = 4, 6 do redis.call('PEXPIRE', KEYS[i], 600000) end
  end
  table.insert(out, kind); table.insert(out, sub); table.insert(out, id)
end
local function apply(sub, before, after)
  if after <= 0 then redis.call('HDEL', KEYS[1], sub) else redis.call('HSET', KEYS[1], sub, after) end
  local tb = tonumber(redis.call('GET', KEYS[2]) or '0')
  local ta = tb + after - before
  if ta <= 0 then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ta) end
  if tb <= 0 and ta > 0 then record('channel_occupied', '') end
  if sub ~= '' then
    if before <= 0 and after > 0 then record('member_added', sub) end
    if before > 0 and after <= 0 then record('member_removed', sub) end
  end
  if tb > 0 and ta <= 0 then record('channel_vacated', '') end
end
local function add(sub, delta)
  if delta == 0 then return end
  local before = tonumber(redis.call('HGET', KEYS[1], sub) or '0')
  apply(sub, before, before + delta)
end
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
for i = 7, #ARGV, 2 do
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
	mode := ""
	switch r.notify(channel) {
	case NotifyChannel:
		mode = "c"
	case NotifyChannelMembers:
		mode = "cm"
	}
	args := make([]any, 0, 6+2*len(counts))
	args = append(args, base+":node:", now.UnixMilli(), r.ttl.Milliseconds(), r.node, mode, outboxClaim.Milliseconds())
	for _, c := range counts {
		args = append(args, c.Sub, c.N)
	}
	keys := []string{base, base + ":n", base + ":nodes", base + ":outbox", base + ":outbox:data", base + ":seq"}
	res, err := update.Run(ctx, r.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("presence of %s: %w", channel, err)
	}
	if len(res) == 0 || len(res)%3 != 1 {
		return nil, fmt.Errorf("presence of %s: unexpected script answer %q", channel, res)
	}
	var out []Transition
	queued := false
	for i := 0; i+2 < len(res); i += 3 {
		if k := parseKind(res[i]); k != 0 {
			out = append(out, Transition{Kind: k, Channel: channel, Sub: res[i+1], ID: res[i+2], At: now})
			queued = queued || res[i+2] != ""
		}
	}
	if queued {
		// the outbox's index: the sweepers look at this channel's
		// outbox once its events' claim may have lapsed
		due := float64(now.Add(outboxClaim).UnixMilli())
		if err := r.rdb.ZAddLT(ctx, r.outboxKey(), redis.Z{Score: due, Member: channel}).Err(); err != nil {
			return out, fmt.Errorf("webhook outbox index: %w", err)
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

// claim takes, for this node, the events of a channel's outbox whose
// claim lapsed (the node that had them did not confirm them in time),
// and returns them, then when the next claim lapses (0: none left).
//
// KEYS: outbox, outbox data. ARGV: now (ms), claim (ms).
var claim = redis.NewScript(`
local now, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    redis.call('ZADD', KEYS[1], now + claim, id)
    table.insert(out, v)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(out, nxt[2] or '0')
return out
`)

// outboxEvent is an event as the update script stores it.
type outboxEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Sub  string `json:"sub"`
	MS   int64  `json:"ms"`
}

// Orphans claims the outbox events other nodes decided and did not
// confirm in time (they crashed, or lost Redis), at most 100 channels'
// worth per call, for this node to send.
func (r *Redis) Orphans(ctx context.Context) ([]Transition, error) {
	now := time.Now()
	due, err := r.rdb.ZRangeByScore(ctx, r.outboxKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: sweepBatch,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("webhook outbox: %w", err)
	}
	var out []Transition
	for _, ch := range due {
		base := r.base(ch)
		res, err := claim.Run(ctx, r.rdb, []string{base + ":outbox", base + ":outbox:data"}, now.UnixMilli(), outboxClaim.Milliseconds()).StringSlice()
		if err != nil || len(res) == 0 {
			return out, fmt.Errorf("webhook outbox of %s: %v", ch, err)
		}
		for _, v := range res[:len(res)-1] {
			var e outboxEvent
			if json.Unmarshal([]byte(v), &e) == nil {
				if k := parseKind(e.Type); k != 0 {
					out = append(out, Transition{Kind: k, Channel: ch, Sub: e.Sub, ID: e.ID, At: time.UnixMilli(e.MS)})
				}
			}
		}
		if claimedHook != nil {
			claimedHook(ch)
		}
		if next, _ := strconv.ParseInt(res[len(res)-1], 10, 64); next == 0 {
			err = r.dropFromIndex(ctx, ch)
		} else {
			err = r.rdb.ZAdd(ctx, r.outboxKey(), redis.Z{Score: float64(next), Member: ch}).Err()
		}
		if err != nil {
			return out, fmt.Errorf("webhook outbox index: %w", err)
		}
	}
	return out, nil
}

// claimedHook, when set (by tests), runs between the claim of a
// channel's outbox and the update of its index entry.
var claimedHook func(channel string)

// dropFromIndex removes channel from the outbox index once its outbox
// was found empty. A node may add an event after that look and before
// the removal (its own index update, which comes after the event, then
// finds the entry still there and leaves it): so the outbox is looked at
// again after the removal, and the entry put back, due at once, if it
// holds anything. The index and the outbox lie in different hash slots
// (Redis Cluster), so one script cannot do both.
func (r *Redis) dropFromIndex(ctx context.Context, channel string) error {
	if err := r.rdb.ZRem(ctx, r.outboxKey(), channel).Err(); err != nil {
		return err
	}
	n, err := r.rdb.ZCard(ctx, r.base(channel)+":outbox").Result()
	if err != nil || n == 0 {
		return err
	}
	return r.rdb.ZAdd(ctx, r.outboxKey(), redis.Z{Score: float64(time.Now().UnixMilli()), Member: channel}).Err()
}

// Hold renews this node's claim on outbox events it is sending.
func (r *Redis) Hold(ctx context.Context, channel string, ids []string) error {
	until := float64(time.Now().Add(outboxClaim).UnixMilli())
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Score: until, Member: id}
	}
	return r.rdb.ZAddXX(ctx, r.base(channel)+":outbox", zs...).Err()
}

// Release removes outbox events the app took, refused, or that were
// given up on.
func (r *Redis) Release(ctx context.Context, channel string, ids []string) error {
	base := r.base(channel)
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	pipe := r.rdb.Pipeline()
	pipe.ZRem(ctx, base+":outbox", members...)
	pipe.HDel(ctx, base+":outbox:data", ids...)
	_, err := pipe.Exec(ctx)
	return err
}
