package broker

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"go.uber.org/zap"
)

// A worker owns one connection that serves a part of the channels in
// use: a pub/sub link (psLink) or a stream reader (streamReader). An
// unsharded worker serves every channel, for as long as the broker runs,
// and its connection is a part of Healthy: the classic pub/sub link, and
// the stream reader of a single server. A sharded worker serves the
// channels of one hash slot of a Redis Cluster, on the slot's master; it
// is started with the slot's first channel and retired, lazily, when the
// slot has none left. A single server is thus served as a cluster of one
// slot, whose stream reader reads every channel.
//
// A worker runs in sessions (supervise): a session opens a connection and
// uses it until it fails; the next one opens a new connection after a
// backoff.
type worker struct {
	sharded bool
	slot    int                // the hash slot of a sharded worker
	part    int                // the part of Healthy of an unsharded worker
	cancel  context.CancelFunc // ends the worker's goroutines (unsharded: all)
	wake    chan struct{}      // the worker's channel set changed

	dead bool // guarded by Redis.mu: retired
}

// errIdle ends the session of a sharded worker whose slot has no channel
// left.
var errIdle = errors.New("no channel left")

// A session is one connection of a worker: it connects, calls up, and
// uses the connection until it fails or ctx ends, and returns why.
// resumed is false for the worker's first session only.
type session func(ctx context.Context, resumed bool, up func()) error

// supervise runs the sessions of w until ctx ends. A session's up resets
// the backoff and, for an unsharded worker, marks its part of Healthy up.
// After a failed session an unsharded worker marks its part down; a
// sharded one logs the failure (as what) and has go-redis reload its map
// of the cluster, as the slot may have moved.
func (r *Redis) supervise(ctx context.Context, w *worker, what string, run session) {
	defer r.wg.Done()
	attempt := 0
	up := func() {
		attempt = 0
		if !w.sharded {
			r.setHealth(w.part, true, nil)
		}
	}
	for resumed := false; ; resumed = true {
		err := run(ctx, resumed, up)
		if ctx.Err() != nil {
			return
		}
		if w.sharded {
			if !errors.Is(err, errIdle) {
				r.log.Warn(what, zap.Int("slot", w.slot), zap.Error(err))
			}
			r.cluster.ReloadState(ctx)
		} else {
			r.setHealth(w.part, false, err)
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

// inUseLocked returns the channels w serves: those of its slot, or every
// channel in use. r.mu is held.
func (r *Redis) inUseLocked(w *worker) map[string]*redisChan {
	if w.sharded {
		return r.bySlot[w.slot]
	}
	return r.chans
}

// chansOf returns the channels w serves.
func (r *Redis) chansOf(w *worker) []*redisChan {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Collect(maps.Values(r.inUseLocked(w)))
}

// retireLocked stops w if it is sharded and its slot has no channel left
// (or w is stopped already), and removes it from workers, the slot's
// links or readers, so that the slot's next channel starts a new one. It
// reports whether w is stopped. r.mu is held.
func retireLocked[W slotWorker](r *Redis, workers map[int]W, w W) bool {
	b := w.base()
	if !b.sharded || (len(r.bySlot[b.slot]) > 0 && !b.dead) {
		return false
	}
	b.dead = true
	b.cancel()
	if workers[b.slot] == w {
		delete(workers, b.slot)
	}
	return true
}

// slotWorker is a psLink or a streamReader, as the workers of the slots
// of a cluster are kept.
type slotWorker interface {
	comparable
	base() *worker
}

func (w *worker) base() *worker { return w }

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
