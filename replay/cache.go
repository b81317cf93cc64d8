// Package replay keeps the recent messages of each channel on this node so
// a subscriber that reconnects gets every message it missed, in order,
// with no gap and no duplicate, or learns that it cannot (and gets the
// reset signal).
//
// A Cache holds one ordered log per channel, bounded by a number of
// messages and an age, and all logs together are bounded in memory through
// a ristretto cache that decides which channels to keep. Cursors (EncodeCursor,
// ParseCursor) carry a subscriber's position in several channels as one
// opaque SSE id.
package replay

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/dgraph-io/ristretto/v2"
)

// Errors of Cache.After. Each means the cache cannot answer exactly; the
// caller either asks the broker (stream ids) or sends the reset signal.
var (
	// ErrNoLog means the cache holds no history that can place the id:
	// the channel has no log, or the id is a stream id older than
	// anything this node has seen of the channel while nothing was lost
	// (the node started caching later). The caller asks the broker
	// (Redis XRANGE) for a stream id, or treats the id as unknown.
	ErrNoLog = errors.New("no replay history for this channel")
	// ErrEvicted means the channel's history was dropped to keep the
	// cache within its memory bound, and the id lies in the part that
	// was lost. Reset reason "expired"; a stream id may still be found
	// in Redis.
	ErrEvicted = errors.New("replay history of this channel was evicted")
	// ErrExpired means messages after the id were trimmed (the log's
	// size or age limit). Reset reason "expired"; a stream id may still
	// be found in Redis.
	ErrExpired = errors.New("messages after this id are no longer retained")
	// ErrUnknownID means the id cannot be placed: malformed, from an
	// epoch this log does not know (another node or subscription
	// session), or ahead of the newest message of its epoch. Reset
	// reason "unknown-id".
	ErrUnknownID = errors.New("unknown message id")
)

// Defaults of Options.
const (
	DefaultSize     = 1000
	DefaultTTL      = 10 * time.Minute
	DefaultMaxBytes = 256 << 20
)

// MaxSize is the most messages a channel's log can keep.
const MaxSize = 1 << 20

// Options bound a Cache. A zero field takes its default.
type Options struct {
	// Size is the number of messages kept per channel.
	Size int
	// TTL is how long a message is kept.
	TTL time.Duration
	// MaxBytes bounds the approximate memory of all logs together.
	MaxBytes int64
	// PerChannel, when set, gives the size and ttl of a channel's log
	// (the `channels` rules), in place of Size and TTL; a zero result
	// takes theirs. It is asked once when a channel's log is created.
	PerChannel func(channel string) (size int, ttl time.Duration)
}

const (
	numShards    = 64
	maxTombs     = 1 << 16 // channels remembered as lost, in all
	maxSizeLimit = MaxSize
	maxTTL       = 100 * 365 * 24 * time.Hour // so that 1.5×TTL fits a Duration
)

// Cache keeps the recent messages of many channels. Its methods are safe
// for concurrent use, except Close, which must come after every other
// call has returned.
type Cache struct {
	size       int
	ttl        int64 // nanoseconds
	perChannel func(string) (int, time.Duration)
	maxBytes   int64
	now        func() int64 // nanoseconds on a monotonic clock

	seed   maphash.Seed
	shards [numShards]shard
	rc     *ristretto.Cache[string, *chanLog]
	closed atomic.Bool
}

type shard struct {
	mu    sync.RWMutex
	logs  map[string]*chanLog
	tombs map[string]tomb
}

// tomb remembers that a channel's history was lost, for the channel's
// ttl.
type tomb struct {
	at, ttl int64
	err     error
}

// New returns a Cache bounded by opts. Close stops its goroutines.
func New(opts Options) (*Cache, error) {
	start := time.Now()
	return newCache(opts, func() int64 { return int64(time.Since(start)) })
}

// newCache is New with a clock (nanoseconds, never going back).
func newCache(opts Options, now func() int64) (*Cache, error) {
	switch {
	case opts.Size < 0 || opts.Size > maxSizeLimit:
		return nil, fmt.Errorf("replay size %d out of range 1..%d", opts.Size, maxSizeLimit)
	case opts.TTL < 0 || opts.TTL > maxTTL:
		return nil, fmt.Errorf("replay ttl %v out of range 0..%v", opts.TTL, maxTTL)
	case opts.MaxBytes < 0:
		return nil, fmt.Errorf("replay memory bound %d is negative", opts.MaxBytes)
	}
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	c := &Cache{
		size:       opts.Size,
		ttl:        int64(opts.TTL),
		maxBytes:   opts.MaxBytes,
		perChannel: opts.PerChannel,
		now:        now,
		seed:       maphash.MakeSeed(),
	}
	for i := range c.shards {
		c.shards[i].logs = make(map[string]*chanLog)
		c.shards[i].tombs = make(map[string]tomb)
	}
	// About ten counters per channel the bound can hold, a channel being
	// counted at 1 KiB.
	counters := min(max(opts.MaxBytes/1024*10, 1000), 1<<21)
	rc, err := ristretto.NewCache(&ristretto.Config[string, *chanLog]{
		NumCounters:        counters,
		MaxCost:            opts.MaxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true, // logOverhead counts it
		OnEvict:            func(it *ristretto.Item[*chanLog]) { c.drop(it.Value, false) },
		OnReject:           func(it *ristretto.Item[*chanLog]) { c.drop(it.Value, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	c.rc = rc
	return c, nil
}

// Close stops the goroutines of the cache. Afterwards Append does
// nothing and After answers ErrNoLog.
func (c *Cache) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.rc.Close()
}

func (c *Cache) shard(ch string) *shard {
	return &c.shards[maphash.String(c.seed, ch)%numShards]
}

// Append adds m to its channel's log. Calls for one channel come in the
// channel's order (the order of broker.Handler); calls for different
// channels may run concurrently. A message repeating the newest id of its
// channel is a duplicate delivery and is not added again.
func (c *Cache) Append(m *broker.Message) {
	if m == nil || m.Channel == "" || c.closed.Load() {
		return
	}
	sh := c.shard(m.Channel)
	for {
		sh.mu.RLock()
		l := sh.logs[m.Channel]
		sh.mu.RUnlock()
		if l == nil {
			l = c.create(sh, m.Channel)
		}
		l.mu.Lock()
		if l.dead {
			// Dropped meanwhile; the map no longer holds it.
			l.mu.Unlock()
			continue
		}
		now := c.now()
		l.trimTTL(now - l.ttl)
		if !l.push(m, now) {
			l.mu.Unlock()
			return
		}
		readmit := c.account(l, now)
		l.mu.Unlock()
		if readmit {
			c.readmit(l)
		}
		return
	}
}

// create returns the channel's log, making it if there is none. A new
// log of a channel whose history was lost remembers that.
func (c *Cache) create(sh *shard, ch string) *chanLog {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l := sh.logs[ch]; l != nil {
		return l
	}
	size, ttl := c.limits(ch)
	l := newLog(ch, size, ttl)
	if t, ok := sh.tombs[ch]; ok {
		if c.now()-t.at < t.ttl {
			l.lost = t.err
		}
		delete(sh.tombs, ch)
	}
	sh.logs[ch] = l
	return l
}

// limits returns the size and ttl (nanoseconds) of channel's log.
func (c *Cache) limits(channel string) (int, int64) {
	size, ttl := c.size, c.ttl
	if c.perChannel != nil {
		s, t := c.perChannel(channel)
		if s > 0 && s <= maxSizeLimit {
			size = s
		}
		if t > 0 && t <= maxTTL {
			ttl = int64(t)
		}
	}
	return size, ttl
}

// account tells ristretto about l's cost, under l.mu. Every call that
// can block (Del) is left to the caller, outside the lock: ristretto may
// be waiting on l.mu in an eviction callback. It reports whether l must
// be offered to ristretto again because the cache went over its bound.
//
// Costs are re-Set only when they moved by an eighth (at least 512
// bytes), so a steady channel costs no ristretto call (and no allocation)
// per message. The entry's ristretto TTL (1.5×TTL, refreshed every TTL/2)
// lets ristretto free logs of channels that went quiet: by the time it
// expires, every message of the log is older than TTL.
func (c *Cache) account(l *chanLog, now int64) (readmit bool) {
	switch l.state {
	case stUnsent:
		if c.rc.SetWithTTL(l.ch, l, l.bytes, time.Duration(l.ttl*3/2)) {
			l.state, l.reported, l.setAt = stPending, l.bytes, now
		}
		return false
	case stPending:
		// The Get also counts the channel as used for the admission policy.
		if v, ok := c.rc.Get(l.ch); !ok || v != l {
			return false
		}
		l.state = stAdmitted
	}
	diff := l.bytes - l.reported
	if diff < 0 {
		diff = -diff
	}
	if diff < max(l.reported/8, 512) && now-l.setAt < l.ttl/2 {
		return false
	}
	grew := l.bytes > l.reported
	c.rc.SetWithTTL(l.ch, l, l.bytes, time.Duration(l.ttl*3/2))
	l.reported, l.setAt = l.bytes, now
	// A cost update never makes ristretto evict: only adding a key does.
	// When growth took the cache over its bound, offer the log again as
	// a new key, so the policy evicts others or rejects this one.
	return grew && c.rc.RemainingCost() < 0
}

// readmit removes l's key from ristretto and sets it again as a new key.
func (c *Cache) readmit(l *chanLog) {
	c.rc.Del(l.ch)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	l.state = stUnsent
	c.account(l, c.now())
}

// drop is ristretto's eviction and rejection callback: the log leaves the
// cache and the channel is remembered as lost.
func (c *Cache) drop(l *chanLog, rejected bool) {
	if l == nil || c.closed.Load() {
		return
	}
	if rejected {
		if v, ok := c.rc.Get(l.ch); ok {
			// The key is in the cache, so this was a second Set of a key
			// not yet applied, not a refusal. If it holds another log, a
			// dead one (its Set was in flight when it was dropped), l
			// takes the key over: with the key present, the Set is an
			// update, applied at once.
			if v != l {
				l.mu.Lock()
				if !l.dead {
					c.rc.SetWithTTL(l.ch, l, l.bytes, time.Duration(l.ttl*3/2))
					l.state, l.reported, l.setAt = stPending, l.bytes, c.now()
				}
				l.mu.Unlock()
			}
			return
		}
	}
	sh := c.shard(l.ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	now := c.now()
	l.trimTTL(now - l.ttl)
	reason := ErrEvicted
	if l.n == 0 && l.anyDropped {
		reason = ErrExpired // everything in it had expired anyway
	}
	l.dead, l.deadErr = true, reason
	l.buf, l.epochs, l.head, l.n = nil, nil, 0, 0
	if sh.logs[l.ch] != l {
		return
	}
	delete(sh.logs, l.ch)
	c.bury(sh, l.ch, l.ttl, reason)
}

// Forget drops channel's log because the node stopped receiving the
// channel's messages: for the next ttl, a client resuming on it is
// answered ErrExpired, not given a history with a hole in it.
func (c *Cache) Forget(channel string) {
	sh := c.shard(channel)
	sh.mu.Lock()
	if l := sh.logs[channel]; l != nil {
		l.mu.Lock()
		l.dead, l.deadErr = true, ErrExpired
		l.buf, l.epochs, l.head, l.n = nil, nil, 0, 0
		l.mu.Unlock()
		delete(sh.logs, channel)
	}
	_, ttl := c.limits(channel)
	c.bury(sh, channel, ttl, ErrExpired)
	sh.mu.Unlock()
	c.rc.Del(channel)
}

// bury remembers channel as lost for reason, for ttl, keeping the
// tombstones of the shard bounded. The shard's mu is held.
func (c *Cache) bury(sh *shard, channel string, ttl int64, reason error) {
	now := c.now()
	if len(sh.tombs) >= maxTombs/numShards {
		for ch, t := range sh.tombs {
			if now-t.at >= t.ttl || len(sh.tombs) >= maxTombs/numShards*3/4 {
				delete(sh.tombs, ch)
			}
		}
	}
	sh.tombs[channel] = tomb{at: now, ttl: ttl, err: reason}
}

// lookup returns channel's log, or the error to answer without one.
func (c *Cache) lookup(channel string) (*chanLog, error) {
	if c.closed.Load() {
		return nil, ErrNoLog
	}
	sh := c.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if l := sh.logs[channel]; l != nil {
		return l, nil
	}
	if t, ok := sh.tombs[channel]; ok && c.now()-t.at < t.ttl {
		return nil, t.err
	}
	return nil, ErrNoLog
}

// After returns every retained message of channel after id, oldest
// first, or an error saying why it cannot answer exactly.
//
//   - id in the log: the messages after it (possibly none).
//   - A stream id not in the log is placed by its order (stream ids are
//     ordered in time): the messages after the last retained stream
//     message before it. One ahead of the newest gives none.
//   - "p.<epoch>.0" of an epoch the log holds from its first message:
//     everything retained of that epoch onwards.
//   - ErrExpired: messages after id were trimmed by size or age.
//   - ErrUnknownID: malformed id, node id of an epoch the log does not
//     know, or a seq ahead of its epoch's newest.
//   - ErrEvicted: the channel's history was dropped for memory (also for a
//     channel that has received messages since, when id lies before them).
//   - ErrNoLog: see its doc.
//
// In a channel fed both ways (stream and node ids), the messages of the
// other shape received between the message id designates and the next
// one of id's shape count as after id.
func (c *Cache) After(channel, id string) ([]*broker.Message, error) {
	p, ok := parseID(id)
	if !ok {
		return nil, ErrUnknownID
	}
	l, err := c.lookup(channel)
	if err != nil {
		return nil, err
	}
	c.rc.Get(channel) // a read counts as a use for the admission policy
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil, l.deadErr
	}
	l.trimTTL(c.now() - l.ttl)
	start, err := l.place(p)
	if err != nil {
		return nil, err
	}
	if start == l.n {
		return nil, nil
	}
	out := make([]*broker.Message, l.n-start)
	for i := range out {
		out[i] = l.at(start + i).m
	}
	return out, nil
}

// Last returns the id of channel's newest retained message, or "".
func (c *Cache) Last(channel string) string {
	l, err := c.lookup(channel)
	if err != nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return ""
	}
	l.trimTTL(c.now() - l.ttl)
	if l.n == 0 {
		return ""
	}
	return l.at(l.n - 1).m.ID
}

// Tail returns up to n of channel's newest retained messages, oldest
// first (nil when the cache holds none), for a subscriber that asks to
// rewind.
func (c *Cache) Tail(channel string, n int) []*broker.Message {
	l, err := c.lookup(channel)
	if err != nil || n <= 0 {
		return nil
	}
	c.rc.Get(channel) // a read counts as a use for the admission policy
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil
	}
	l.trimTTL(c.now() - l.ttl)
	n = min(n, l.n)
	if n == 0 {
		return nil
	}
	out := make([]*broker.Message, n)
	for i := range out {
		out[i] = l.at(l.n - n + i).m
	}
	return out
}

// Len returns how many messages of channel the cache holds.
func (c *Cache) Len(channel string) int {
	l, err := c.lookup(channel)
	if err != nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return 0
	}
	l.trimTTL(c.now() - l.ttl)
	return l.n
}
