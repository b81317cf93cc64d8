package broker

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The stream reader tails the streams of every channel in use with one
// blocking XREAD on a connection of its own. Each channel remembers the
// last id read, so a new XREAD (after a change of the channel set, or a
// reconnect) goes on where the previous one stopped. A change of the set
// interrupts the blocked XREAD with CLIENT UNBLOCK from another
// connection (runKicker).

func (r *Redis) runStreams() {
	defer r.wg.Done()
	attempt := 0
	first := true
	for {
		err := r.streamSession(&attempt, first)
		if r.ctx.Err() != nil {
			return
		}
		first = false
		r.setHealth(partStream, false, err)
		if !sleepCtx(r.ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

func (r *Redis) streamSession(attempt *int, first bool) error {
	conn := r.client.EphemeralConn()
	defer conn.Close()
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	id, err := conn.ClientID(ctx).Result()
	cancel()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.readerID = id
	r.readerBlocking = false
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.readerID = 0
		r.readerBlocking = false
		r.mu.Unlock()
	}()
	*attempt = 0
	r.setHealth(partStream, true, nil)
	if !first {
		r.mu.RLock()
		chans := make([]*redisChan, 0, len(r.chans))
		for _, c := range r.chans {
			chans = append(chans, c)
		}
		r.mu.RUnlock()
		if err := r.checkLost(conn, chans); err != nil {
			return err
		}
	}

	return r.tail(conn, streamTail{
		ctx:  r.ctx,
		wake: r.streamWake,
		snapshot: func() ([]string, bool) {
			return r.snapshot(), false
		},
		unblocked: func() {
			r.mu.Lock()
			r.readerBlocking = false
			r.mu.Unlock()
		},
	})
}

// streamTail is what one blocking XREAD loop reads for: all the channels
// of a single server, or the channels of one hash slot of a cluster.
type streamTail struct {
	ctx  context.Context
	wake <-chan struct{} // the channel set changed
	// snapshot returns the XREAD STREAMS arguments and records that the
	// reader is about to block on them; idle ends the loop (errIdle).
	snapshot func() (args []string, idle bool)
	// unblocked records that the reader no longer blocks in XREAD.
	unblocked func()
}

// tail reads the streams of t with blocking XREADs on conn, delivering
// every entry, until t.ctx ends, the reader goes idle, or Redis fails.
// An idle reader pings conn every HealthCheck to notice a dead server.
func (r *Redis) tail(conn *redis.Conn, t streamTail) error {
	block := 2 * r.opts.HealthCheck
	for {
		select {
		case <-t.wake:
		default:
		}
		keys, idle := t.snapshot()
		if idle {
			return errIdle
		}
		if len(keys) == 0 {
			timer := time.NewTimer(r.opts.HealthCheck)
			select {
			case <-t.ctx.Done():
				timer.Stop()
				return t.ctx.Err()
			case <-t.wake:
				timer.Stop()
				continue
			case <-timer.C:
			}
			ctx, cancel := context.WithTimeout(t.ctx, r.opts.Timeout)
			err := conn.Ping(ctx).Err()
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		res, err := conn.XRead(t.ctx, &redis.XReadArgs{Streams: keys, Count: streamCount, Block: block}).Result()
		t.unblocked()
		switch {
		case errors.Is(err, redis.Nil):
			continue // timed out, or CLIENT UNBLOCK
		case err != nil:
			if t.ctx.Err() != nil {
				return t.ctx.Err()
			}
			var rerr redis.Error
			if errors.As(err, &rerr) && r.dropNonStreams(keys[:len(keys)/2]) {
				continue
			}
			return err // in a cluster: MOVED after a failover or resharding too
		}
		now := time.Now()
		for _, st := range inAddedOrder(res) {
			name, ok := r.channelOf(st.Stream)
			if !ok {
				continue
			}
			r.mu.RLock()
			c := r.chans[name]
			r.mu.RUnlock()
			if c != nil {
				r.deliverStream(c, st.Messages, now)
			}
		}
	}
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
		ams, _, _ := ParseStreamID(a.Messages[0].ID)
		bms, _, _ := ParseStreamID(b.Messages[0].ID)
		return cmp.Compare(ams, bms)
	})
	return out
}

// snapshot returns the XREAD STREAMS arguments (keys, then ids) of the
// channels in use, and records that the reader is about to block on them.
// It never holds r.mu and a c.mu together (see redisChan.gone).
func (r *Redis) snapshot() []string {
	r.mu.RLock()
	gen := r.streamGen
	chans := make([]*redisChan, 0, len(r.chans))
	for _, c := range r.chans {
		chans = append(chans, c)
	}
	r.mu.RUnlock()
	args := xreadArgs(chans)
	r.mu.Lock()
	r.readerGen = gen
	r.readerBlocking = len(args) > 0
	r.mu.Unlock()
	return args
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

// checkLost runs after a reconnect: a stream that lost entries after the
// last id read (trimmed meanwhile, or gone with a restarted server) gets
// Handler.Gap before the reader catches up with what remains.
func (r *Redis) checkLost(conn *redis.Conn, chans []*redisChan) error {
	for _, c := range chans {
		c.mu.Lock()
		last, skip := c.lastID, c.noStream || c.gone.Load()
		c.mu.Unlock()
		if skip || last == "0-0" {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
		info, err := conn.XInfoStream(ctx, c.key).Result()
		cancel()
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
func (r *Redis) dropNonStreams(keys []string) bool {
	found := false
	for _, key := range keys {
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
		typ, err := r.uc.Type(ctx, key).Result()
		cancel()
		if err != nil || typ == "stream" || typ == "none" {
			continue
		}
		name, _ := r.channelOf(key)
		r.mu.RLock()
		c := r.chans[name]
		r.mu.RUnlock()
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

// runKicker interrupts the reader's blocked XREAD when the channel set
// changed since the reader sent it. CLIENT UNBLOCK answers 0 when the
// reader's XREAD has not reached Redis yet; it is retried then, shortly,
// until the reader is blocked on the current set or not blocked at all.
func (r *Redis) runKicker() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		}
		delay := 200 * time.Microsecond
		for {
			r.mu.RLock()
			stale := r.readerBlocking && r.readerGen != r.streamGen
			id := r.readerID
			r.mu.RUnlock()
			if !stale || id == 0 {
				break
			}
			ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
			n, err := r.client.ClientUnblock(ctx, id).Result()
			cancel()
			if err != nil || n == 1 {
				break
			}
			if !sleepCtx(r.ctx, delay) {
				return
			}
			delay = min(2*delay, 20*time.Millisecond)
		}
	}
}
