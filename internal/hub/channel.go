package hub

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/rules"
)

// The channel registry: which channels this node has subscribed at the
// broker, who subscribes each, and how long one stays after its last
// subscriber left (Options.Linger), for a client that comes back to find
// what it missed.
//
// Channels without a subscriber are also bounded in number
// (Options.IdleChannels): a client that subscribes to ever-new names
// would otherwise keep each one subscribed at the broker for the whole
// linger time. Past the bound, the channel idle the longest goes first,
// and its replay is forgotten, so that a client resuming on it is told
// (the reset signal) rather than given a history with a hole in it. Every
// step is O(1): nothing scans the channels.

type shard struct {
	mu       sync.RWMutex
	channels map[string]*channel
}

type channel struct {
	name  string
	rule  *rules.Rule   // nil without Options.Rules
	ready chan struct{} // closed once the broker confirmed the subscription
	err   error         // the broker's answer; valid after ready is closed

	subs   atomic.Pointer[[]member] // copy-on-write
	lastID atomic.Pointer[string]   // id of the newest message seen
	// start is the position the broker subscription started from (set
	// before ready is closed); first is the first message since.
	start string
	first atomic.Pointer[broker.Message]

	// guarded by the shard's mu
	refs   int
	linger *time.Timer
	subMu  sync.Mutex // serialises writers of subs; guards index and left
	// index is each subscriber's position in *subs; left counts the
	// members marked gone there
	index map[*subscriber]int
	left  int

	idle *list.Element // in Hub.idle while lingering; guarded by Hub.idleMu
}

// idleChannels is the hub's list of channels without a subscriber, the
// longest idle first. Lock order: a shard's mu, then idleMu.
type idleChannels struct {
	idleMu sync.Mutex
	idle   list.List // of *channel
}

// markIdle puts c at the end of the idle list and returns the channel to
// drop when that makes too many, or nil. The caller holds c's shard lock.
func (h *Hub) markIdle(c *channel) (evict *channel) {
	h.idleMu.Lock()
	defer h.idleMu.Unlock()
	c.idle = h.idle.PushBack(c)
	if max := h.opts.IdleChannels; max > 0 && h.idle.Len() > max {
		oldest := h.idle.Front()
		evict = oldest.Value.(*channel)
		h.idle.Remove(oldest)
		evict.idle = nil
	}
	return evict
}

// unmarkIdle takes c off the idle list. The caller holds c's shard lock.
func (h *Hub) unmarkIdle(c *channel) {
	h.idleMu.Lock()
	if c.idle != nil {
		h.idle.Remove(c.idle)
		c.idle = nil
	}
	h.idleMu.Unlock()
}

// IdleChannels reports how many channels are kept without a subscriber.
func (h *Hub) IdleChannels() int {
	h.idleMu.Lock()
	defer h.idleMu.Unlock()
	return h.idle.Len()
}

// LastID returns the id of the newest message this node has seen on
// channel, or "" if none since the channel became active.
func (h *Hub) LastID(name string) string {
	sh := h.shard(name)
	sh.mu.RLock()
	c := sh.channels[name]
	sh.mu.RUnlock()
	if c == nil {
		return ""
	}
	if p := c.lastID.Load(); p != nil {
		return *p
	}
	return ""
}

// Start returns the position channel's subscription on this node started
// from (what LastID said before the first message), and the first
// message received since, or nil. A client at that position has missed
// exactly the first message and every one after it.
func (h *Hub) Start(name string) (string, *broker.Message) {
	sh := h.shard(name)
	sh.mu.RLock()
	c := sh.channels[name]
	sh.mu.RUnlock()
	if c == nil {
		return "", nil
	}
	select {
	case <-c.ready:
	default:
		return "", nil
	}
	return c.start, c.first.Load()
}

// acquire adds s to the channel name, subscribing it at the broker if
// s is its first user, and returns the channel's position when s joined:
// every message after it reaches s live, none before it does.
func (h *Hub) acquire(ctx context.Context, name string, s *subscriber) (string, error) {
	sh := h.shard(name)
	sh.mu.Lock()
	c := sh.channels[name]
	creator := c == nil
	if creator {
		c = &channel{name: name, ready: make(chan struct{})}
		if h.opts.Rules != nil {
			c.rule = h.opts.Rules.Match(name)
		}
		sh.channels[name] = c
	}
	c.refs++
	if c.linger != nil {
		c.linger.Stop()
		c.linger = nil
		h.unmarkIdle(c)
	}
	at := c.addSub(s)
	sh.mu.Unlock()
	start := func() string {
		if at != nil {
			return *at
		}
		// no message yet when s joined: what the broker's subscription
		// started from (messages delivered since are all queued for s)
		return c.start
	}

	if creator {
		last, err := h.broker.Subscribe(ctx, name)
		if err == nil && last != "" {
			c.lastID.CompareAndSwap(nil, &last)
		}
		c.start = last
		c.err = err
		close(c.ready)
		if err != nil {
			h.release(name, s)
			return "", err
		}
		h.countJoin(c, s)
		return start(), nil
	}
	select {
	case <-c.ready:
	case <-ctx.Done():
		h.release(name, s)
		return "", ctx.Err()
	}
	if c.err != nil {
		h.release(name, s)
		return "", c.err
	}
	h.countJoin(c, s)
	return start(), nil
}

// countJoin counts s in the presence of c, if c's rule tracks it. The
// subscriber remembers it, so that releaseLocked counts the Leave of
// exactly the channels counted. A subscriber's acquires and releases
// come from one goroutine at a time (Subscribe, then Close).
func (h *Hub) countJoin(c *channel, s *subscriber) {
	if h.opts.Presence == nil || c.rule == nil || !c.rule.Tracks() {
		return
	}
	if s.counted == nil {
		s.counted = make(map[string]bool, 1)
	}
	s.counted[c.name] = true
	h.opts.Presence.Join(c.name, s.sub)
}

// countLeave undoes countJoin.
func (h *Hub) countLeave(name string, s *subscriber) {
	if s.counted[name] {
		delete(s.counted, name)
		h.opts.Presence.Leave(name, s.sub)
	}
}

func (h *Hub) release(name string, s *subscriber) {
	if evict := h.releaseLocked(name, s); evict != nil {
		h.drop(evict)
	}
}

// releaseLocked removes s from channel name, under the channel's shard
// lock. It returns the idle channel to drop to make room, if any: that
// one is in another shard, whose lock is taken after this one's is let
// go.
func (h *Hub) releaseLocked(name string, s *subscriber) (evict *channel) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.channels[name]
	if c == nil || !c.removeSub(s) {
		return nil
	}
	h.countLeave(name, s)
	c.refs--
	if c.refs > 0 {
		return nil
	}
	failed := false
	select {
	case <-c.ready:
		failed = c.err != nil
	default:
	}
	linger := h.opts.Linger
	if c.rule != nil {
		linger = c.rule.ReplayTTL
	}
	if failed || linger <= 0 {
		delete(sh.channels, name)
		if !failed {
			h.broker.Unsubscribe(name)
		}
		return nil
	}
	c.linger = time.AfterFunc(linger, func() { h.expire(name, c) })
	return h.markIdle(c)
}

// drop unsubscribes the idle channel c to make room for a newer one, and
// forgets its replay: the node no longer receives its messages, so what
// it holds of them would have a hole.
func (h *Hub) drop(c *channel) {
	sh := h.shard(c.name)
	sh.mu.Lock()
	h.idleMu.Lock()
	again := c.idle != nil // idle again, now the newest
	h.idleMu.Unlock()
	if sh.channels[c.name] != c || c.refs > 0 || again {
		sh.mu.Unlock()
		return // subscribed again meanwhile
	}
	c.linger.Stop()
	delete(sh.channels, c.name)
	h.broker.Unsubscribe(c.name)
	sh.mu.Unlock()
	if h.opts.Replay != nil {
		h.opts.Replay.Forget(c.name)
	}
}

// expire unsubscribes a channel whose linger time ran out unused.
func (h *Hub) expire(name string, c *channel) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.channels[name] != c || c.refs > 0 {
		return
	}
	h.unmarkIdle(c)
	delete(sh.channels, name)
	h.broker.Unsubscribe(name)
}

// addSub adds s to the channel's subscribers. The fan-out reads the list
// without a lock, so it is never changed under a reader: a subscriber is
// appended past the end every reader knows (in place while the array has
// room, which amortises the copies), and one that leaves is marked gone
// and dropped when the list is compacted. Both cost O(1) amortised, so
// that ten thousand subscribers of one channel connecting or leaving at
// once cost ten thousand steps, not fifty million.
//
// It returns the channel's newest id as s joined (nil: none yet): deliver
// stores a message's id and reads the list under the same lock, so every
// message after that id is queued for s, and none up to it.
func (c *channel) addSub(s *subscriber) *string {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	var cur []member
	if p := c.subs.Load(); p != nil {
		cur = *p
	}
	next := append(cur, member{s: s, lane: s.lane})
	if c.index == nil {
		c.index = make(map[*subscriber]int)
	}
	c.index[s] = len(next) - 1
	c.subs.Store(&next)
	return c.lastID.Load()
}

// removeSub marks s gone from the channel's subscribers, and compacts
// the list once half of it is gone. It reports whether s was there.
func (c *channel) removeSub(s *subscriber) bool {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	i, ok := c.index[s]
	if !ok {
		return false
	}
	delete(c.index, s)
	cur := *c.subs.Load()
	atomic.StoreUint32(&cur[i].gone, 1)
	if c.left++; 2*c.left < len(cur) {
		return true
	}
	// a new array: readers of the old one keep it as it was
	next := make([]member, 0, len(c.index))
	for j := range cur {
		if !cur[j].left() {
			c.index[cur[j].s] = len(next)
			next = append(next, member{s: cur[j].s, lane: cur[j].lane})
		}
	}
	c.left = 0
	c.subs.Store(&next)
	return true
}
