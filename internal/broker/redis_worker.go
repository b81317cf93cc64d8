package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// A worker owns one connection that serves a part of the channels in
// use: a pub/sub link (psLink) or a stream reader (streamReader). A
// primary worker runs for as long as the broker and its connection is a
// part of Healthy: the classic pub/sub link, and the first stream reader
// of a single server. The others come and go with the channels they
// serve: the sharded workers of a Redis Cluster, which serve the channels
// of one hash slot on the slot's master, and the further stream readers
// that take the channels a full reader has no room for (see
// redis_readers.go). They are retired, lazily, when they have nothing
// left to serve. A single server is thus served as a cluster of one slot.
//
// A worker runs in sessions (supervise): a session opens a connection and
// uses it until it fails; the next one opens a new connection after a
// backoff.
type worker struct {
	primary bool
	part    int                // the part of Healthy of a primary worker
	sharded bool               // serves one slot of a Redis Cluster
	slot    int                // the hash slot of the channels it serves (0: single server)
	cancel  context.CancelFunc // ends the worker's goroutines (primary: all)
	wake    chan struct{}      // the worker's channel set changed

	dead bool // guarded by Redis.mu: retired
}

// errIdle ends the session of a worker that has no channel left to serve.
var errIdle = errors.New("no channel left")

// A session is one connection of a worker: it connects, calls up, and
// uses the connection until it fails or ctx ends, and returns why.
// resumed is false for the worker's first session only.
type session func(ctx context.Context, resumed bool, up func()) error

// supervise runs the sessions of w until ctx ends. A session's up resets
// the backoff and, for a primary worker, marks its part of Healthy up.
// After a failed session a primary worker marks its part down; a sharded
// one logs the failure (as what) and has go-redis reload its map of the
// cluster, as the slot may have moved. A further reader of a single
// server stays quiet: the primary reader reports the server's health.
func (r *Redis) supervise(ctx context.Context, w *worker, what string, run session) {
	defer r.wg.Done()
	attempt := 0
	up := func() {
		attempt = 0
		if w.primary {
			r.setHealth(w.part, true, nil)
		}
	}
	for resumed := false; ; resumed = true {
		err := run(ctx, resumed, up)
		if ctx.Err() != nil {
			return
		}
		switch {
		case w.primary:
			r.setHealth(w.part, false, err)
		case w.sharded:
			if !errors.Is(err, errIdle) {
				r.log.Warn(what, zap.Int("slot", w.slot), zap.Error(err))
			}
			r.cluster.ReloadState(ctx)
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

// runOnWake calls fn each time ch is signalled, until ctx ends: the
// writer of a pub/sub link, and the kicker of the stream readers.
func (r *Redis) runOnWake(ctx context.Context, ch <-chan struct{}, fn func(ctx context.Context)) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		fn(ctx)
	}
}

// linkChansLocked returns the channels l subscribes: those of its slot,
// or every channel in use. r.mu is held.
func (r *Redis) linkChansLocked(l *psLink) map[string]*redisChan {
	if l.sharded {
		return r.bySlot[l.slot]
	}
	return r.chans
}

// retireLinkLocked stops l if it is sharded and its slot has no channel
// left (or l is stopped already), and forgets it, so that the slot's next
// channel starts a new one. It reports whether l is stopped. r.mu is
// held.
func (r *Redis) retireLinkLocked(l *psLink) bool {
	if !l.sharded || (len(r.bySlot[l.slot]) > 0 && !l.dead) {
		return false
	}
	l.dead = true
	l.cancel()
	if r.slotLinks[l.slot] == l {
		delete(r.slotLinks, l.slot)
	}
	return true
}

// wake wakes every worker of ws.
func wake(ws []*worker) {
	for _, w := range ws {
		signal(w.wake)
	}
}

// signal wakes the goroutine waiting on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// timed runs op, one command, with ctx bounded by the Timeout option.
func (r *Redis) timed(ctx context.Context, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return op(ctx)
}

// Reconnect backoff: doubling from minBackoff up to maxBackoff. The first
// attempts come quickly (a connection killed under a live server), and a
// server that stays down is tried every few seconds, not hammered.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// backoff returns the wait before reconnect attempt n (from 0): doubling
// from minBackoff, capped at maxBackoff, with jitter in [d/2, d), so that
// the nodes of a cluster do not all reconnect at once.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 0; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2)
}

// sleepCtx waits d or until ctx is done; false means ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
