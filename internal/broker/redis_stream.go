package broker

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A stream reader tails the streams of its channels (up to readerSize of
// one slot: XREAD cannot name keys of different slots of a Redis
// Cluster) with one blocking XREAD on a connection of its own. Each
// channel remembers the last id read, so a new XREAD (after a change of
// the channel set, or a reconnect) goes on where the previous one
// stopped. A change of the set interrupts the blocked XREAD with CLIENT
// UNBLOCK from another connection (kickStale).
type streamReader struct {
	worker

	// guarded by Redis.mu
	chans    map[string]*redisChan // the channels it reads, by name
	gen      uint64                // bumped on each change of chans
	sentGen  uint64                // gen of the channel set of the current XREAD
	blocking bool                  // in (or about to send) XREAD
	id       int64                 // CLIENT ID of the connection, 0 if none
	node     *redis.Client         // the server the connection is on, nil if none
}

// streamCount is XREAD's COUNT, per stream and call.
const streamCount = 1000

// Kicker retries: CLIENT UNBLOCK finds no blocked XREAD while the
// reader's XREAD is still on its way to Redis, a short window. The first
// retry comes soon, and the retries back off up to a few milliseconds.
const (
	minUnblockRetry = 200 * time.Microsecond
	maxUnblockRetry = 20 * time.Millisecond
)

// startReader starts the sessions of sr.
func (r *Redis) startReader(ctx context.Context, sr *streamReader) {
	r.wg.Add(1)
	go r.supervise(ctx, &sr.worker, "redis stream reader", func(ctx context.Context, resumed bool, up func()) error {
		return r.streamSession(ctx, sr, resumed, up)
	})
}

// streamSession reads sr's streams on a new connection. After a reconnect
// it first reports the entries lost meanwhile (checkLost).
func (r *Redis) streamSession(ctx context.Context, sr *streamReader, resumed bool, up func()) error {
	conn, err := r.dialReader(ctx, sr)
	if err != nil {
		return err
	}
	defer func() {
		r.mu.Lock()
		sr.id, sr.node, sr.blocking = 0, nil, false
		r.mu.Unlock()
		_ = conn.Close()
	}()
	up()
	if resumed {
		if err := r.checkLost(ctx, conn, r.readerChans(sr)); err != nil {
			return err
		}
	}
	return r.tail(ctx, conn, sr)
}

// dialReader opens a connection to the server of sr's channels and
// records its CLIENT ID, for the kicker. A sharded reader connects to the
// master of its slot, or is retired when the slot has no channel left.
func (r *Redis) dialReader(ctx context.Context, sr *streamReader) (*redis.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	node := r.readerClient
	if sr.sharded {
		key := r.slotKey(sr)
		if key == "" {
			return nil, errIdle
		}
		var err error
		if node, err = r.cluster.MasterForKey(ctx, key); err != nil {
			return nil, err
		}
	}
	conn := node.EphemeralConn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	r.mu.Lock()
	sr.id, sr.node, sr.blocking = id, node, false
	r.mu.Unlock()
	return conn, nil
}

// slotKey returns the key of a channel of sr's slot, which names the
// slot's master; "" when the slot has none left and sr is retired.
func (r *Redis) slotKey(sr *streamReader) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range sr.chans {
		return c.key
	}
	for _, c := range r.bySlot[sr.slot] {
		return c.key
	}
	r.retireReaderLocked(sr)
	return ""
}

// tail reads the streams of sr with blocking XREADs on conn, delivering
// every entry, until ctx ends, the reader is retired, or Redis fails.
func (r *Redis) tail(ctx context.Context, conn *redis.Conn, sr *streamReader) error {
	block := 2 * r.opts.HealthCheck
	for {
		select {
		case <-sr.wake:
		default:
		}
		keys, idle := r.snapshot(sr)
		if idle {
			return errIdle
		}
		if len(keys) == 0 {
			if err := r.waitIdle(ctx, conn, sr.wake); err != nil {
				return err
			}
			continue
		}
		res, err := conn.XRead(ctx, &redis.XReadArgs{Streams: keys, Count: streamCount, Block: block}).Result()
		r.mu.Lock()
		sr.blocking = false
		r.mu.Unlock()
		if err != nil {
			if err := r.readFailed(ctx, err, keys); err != nil {
				return err
			}
			continue
		}
		now := time.Now()
		for _, st := range inAddedOrder(res) {
			if name, ok := r.channelOf(st.Stream); ok {
				if c := r.lookup(name); c != nil {
					r.deliverStream(c, st.Messages, now)
				}
			}
		}
	}
}

// waitIdle waits while the reader has no stream to read, until its
// channel set changes; every HealthCheck it pings conn, to notice a dead
// server.
func (r *Redis) waitIdle(ctx context.Context, conn *redis.Conn, wake <-chan struct{}) error {
	timer := time.NewTimer(r.opts.HealthCheck)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
		return nil
	case <-timer.C:
	}
	return r.timed(ctx, func(ctx context.Context) error { return conn.Ping(ctx).Err() })
}

// readFailed returns nil when the reader can go on after XREAD failed
// with err (the XREAD timed out or was unblocked, or some keys hold no
// stream and are no longer read), else the error that ends the session.
func (r *Redis) readFailed(ctx context.Context, err error, keys []string) error {
	switch {
	case errors.Is(err, redis.Nil):
		return nil // timed out, or CLIENT UNBLOCK
	case ctx.Err() != nil:
		return ctx.Err()
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && r.dropNonStreams(ctx, keys[:len(keys)/2]) {
		return nil
	}
	return err // in a cluster: MOVED after a failover or resharding too
}

// inAddedOrder returns an XREAD reply's entries in the order Redis added
// them: a reply lists its streams one after the other, so a subscriber of
// several channels would otherwise see one channel's batch before the
// other's. Entries of different streams in the same millisecond cannot be
// ordered and keep the reply's order.
func inAddedOrder(res []redis.XStream) []redis.XStream {
	if len(res) < 2 {
		return res
	}
	var out []redis.XStream
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, redis.XStream{Stream: st.Stream, Messages: []redis.XMessage{m}})
		}
	}
	slices.SortStableFunc(out, func(a, b redis.XStream) int {
		ams, _, _ := parseStreamID(a.Messages[0].ID)
		bms, _, _ := parseStreamID(b.Messages[0].ID)
		return cmp.Compare(ams, bms)
	})
	return out
}

// snapshot returns the XREAD STREAMS arguments (keys, then ids) of sr's
// channels, and records that sr is about to block on them; idle means
// that sr is retired. It never holds r.mu and a c.mu together (see
// redisChan.gone).
func (r *Redis) snapshot(sr *streamReader) (args []string, idle bool) {
	r.mu.Lock()
	if len(sr.chans) == 0 && r.retireReaderLocked(sr) {
		r.mu.Unlock()
		return nil, true
	}
	// blocking from now on: a change of the set made while the XREAD is
	// on its way has the kicker retry until the XREAD is there to unblock
	sr.sentGen = sr.gen
	sr.blocking = len(sr.chans) > 0
	chans := slices.Collect(maps.Values(sr.chans))
	r.mu.Unlock()
	args = xreadArgs(chans)
	if len(args) == 0 {
		r.mu.Lock()
		sr.blocking = false
		r.mu.Unlock()
	}
	return args, false
}

// xreadArgs returns the XREAD STREAMS arguments of chans: the keys of
// those fed by a stream, then the id each has read up to.
func xreadArgs(chans []*redisChan) []string {
	keys := make([]string, 0, 2*len(chans))
	ids := make([]string, 0, len(chans))
	for _, c := range chans {
		c.mu.Lock()
		if !c.noStream {
			keys = append(keys, c.key)
			ids = append(ids, c.lastID)
		}
		c.mu.Unlock()
	}
	return append(keys, ids...)
}

func (r *Redis) deliverStream(c *redisChan, xs []redis.XMessage, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() {
		return
	}
	for _, x := range xs {
		if CompareStreamIDs(x.ID, c.lastID) <= 0 {
			continue // read for an earlier subscription of the name
		}
		c.lastID = x.ID
		m := streamMessage(c.name, x, now)
		m.Arrival = nextArrival()
		if len(c.pending) > 0 || c.inflight > 0 {
			c.pending = append(c.pending, m)
			continue
		}
		if src, ok := c.self[x.ID]; ok {
			m.Source = src
			delete(c.self, x.ID)
		}
		r.h.Deliver(m)
	}
	r.drain(c)
}

// drain delivers the channel's parked stream messages whose source is
// known. c.mu is held.
func (r *Redis) drain(c *redisChan) {
	if c.gone.Load() {
		c.pending, c.self = nil, nil
		return
	}
	for len(c.pending) > 0 {
		m := c.pending[0]
		if src, ok := c.self[m.ID]; ok {
			m.Source = src
			delete(c.self, m.ID)
		} else if c.inflight > 0 {
			return // may be the id of a Publish still waiting for its reply
		}
		c.pending[0] = nil
		c.pending = c.pending[1:]
		r.h.Deliver(m)
	}
	c.pending = nil
	if len(c.self) > 0 && c.inflight == 0 {
		for id := range c.self {
			if CompareStreamIDs(id, c.lastID) <= 0 {
				delete(c.self, id) // read before it was recorded, or skipped
			}
		}
	}
}

// checkLost runs after a reconnect: a stream that lost entries after the
// last id read (trimmed meanwhile, or gone with a restarted server) gets
// Handler.Gap before the reader catches up with what remains.
func (r *Redis) checkLost(ctx context.Context, conn *redis.Conn, chans []*redisChan) error {
	for _, c := range chans {
		c.mu.Lock()
		last, skip := c.lastID, c.noStream || c.gone.Load()
		c.mu.Unlock()
		if skip || last == "0-0" {
			continue
		}
		var info *redis.XInfoStream
		err := r.timed(ctx, func(ctx context.Context) (err error) {
			info, err = conn.XInfoStream(ctx, c.key).Result()
			return err
		})
		lost := false
		switch {
		case err == nil:
			lost = trimmedAfter(info, last)
		case isNoSuchKey(err):
			lost = true
		case isWrongType(err):
			continue
		default:
			return err
		}
		if lost {
			c.mu.Lock()
			if !c.gone.Load() {
				r.h.Gap(c.name, "gap", last)
			}
			c.mu.Unlock()
		}
	}
	return nil
}

// dropNonStreams stops reading the keys that hold something else than a
// stream (XREAD fails for all keys then). It reports whether it found
// any.
func (r *Redis) dropNonStreams(ctx context.Context, keys []string) bool {
	found := false
	for _, key := range keys {
		var typ string
		err := r.timed(ctx, func(ctx context.Context) (err error) {
			typ, err = r.uc.Type(ctx, key).Result()
			return err
		})
		if err != nil || typ == "stream" || typ == "none" {
			continue
		}
		name, _ := r.channelOf(key)
		c := r.lookup(name)
		if c == nil {
			continue
		}
		c.mu.Lock()
		c.noStream = true
		c.mu.Unlock()
		found = true
		r.log.Warn("channel key is not a stream; its pub/sub messages only are delivered",
			zap.String("channel", name), zap.String("type", typ))
	}
	return found
}
