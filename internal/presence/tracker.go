package presence

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Options configures a Tracker.
type Options struct {
	// Grace is how long a member's (and a channel's) last connection on
	// this node must stay gone before it counts as gone: a reconnect
	// within it is no leave. Default 5s.
	Grace time.Duration
	// Refresh is how often this node rewrites its counts, so that they
	// do not expire, and sweeps other nodes' expired ones. It must be
	// well below the store's TTL. Default 5s.
	Refresh time.Duration
	// Timeout bounds each call to the store. Default 3s.
	Timeout time.Duration
	// OnTransitions receives the deployment's transitions this node
	// decided, in order: from the tracker's goroutine, and from callers
	// of Snapshot (it must be safe for concurrent use).
	OnTransitions func([]Transition)
	// OnOrphans receives webhook events other nodes decided and did not
	// send in time (see Store.Orphans), from the tracker's goroutine.
	OnOrphans func([]Transition)
	Logger    *zap.Logger
}

type key struct{ channel, sub string }

// Tracker counts this node's connections per channel and sub and writes
// them to the store from one goroutine, coalescing changes: a burst of
// subscribes costs one store call per channel and sub, not one per
// connection. Join and Leave never wait on the store.
type Tracker struct {
	store Store
	opts  Options

	mu      sync.Mutex
	local   map[key]int         // this node's connections
	pending map[key]struct{}    // counts to write
	grace   map[key]*time.Timer // counts that dropped to 0, written when it ends
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	failing bool // the store failed last time (logged once until it works)

	snaps *snapshots
}

// NewTracker starts a tracker writing to store. Close stops it.
func NewTracker(store Store, opts Options) *Tracker {
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Second
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.OnTransitions == nil {
		opts.OnTransitions = func([]Transition) {}
	}
	if opts.OnOrphans == nil {
		opts.OnOrphans = func([]Transition) {}
	}
	t := &Tracker{
		store: store, opts: opts,
		local: make(map[key]int), pending: make(map[key]struct{}), grace: make(map[key]*time.Timer),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		snaps: newSnapshots(),
	}
	t.wg.Add(1)
	go t.run()
	return t
}

// Join counts a connection of sub ("" for none) to channel.
func (t *Tracker) Join(channel, sub string) {
	k := key{channel, sub}
	t.mu.Lock()
	t.local[k]++
	if tm := t.grace[k]; tm != nil {
		// back within the grace: the store never saw it leave
		tm.Stop()
		delete(t.grace, k)
	}
	t.pending[k] = struct{}{}
	t.mu.Unlock()
	t.poke()
}

// Leave counts a connection of sub to channel gone. The last one is
// written after the grace, if none came back meanwhile.
func (t *Tracker) Leave(channel, sub string) {
	k := key{channel, sub}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.local[k] <= 0 {
		return
	}
	if t.local[k]--; t.local[k] > 0 {
		t.pending[k] = struct{}{}
		t.poke()
		return
	}
	if t.grace[k] != nil {
		return
	}
	t.grace[k] = time.AfterFunc(t.opts.Grace, func() {
		t.mu.Lock()
		if t.grace[k] != nil && t.local[k] == 0 {
			delete(t.grace, k)
			t.pending[k] = struct{}{}
		}
		t.mu.Unlock()
		t.poke()
	})
}

func (t *Tracker) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Close stops the tracker. Its counts are left to expire in the store
// (the node is going away; a reload that keeps it does not close it).
func (t *Tracker) Close() {
	close(t.done)
	t.wg.Wait()
	t.mu.Lock()
	for _, tm := range t.grace {
		tm.Stop()
	}
	t.mu.Unlock()
}

func (t *Tracker) run() {
	defer t.wg.Done()
	tick := time.NewTicker(t.opts.Refresh)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-t.wake:
			t.flush(false)
		case <-tick.C:
			t.flush(true)
			t.sweep()
		}
	}
}

// flush writes the pending counts, or with all every count this node
// has (a refresh), channel by channel.
func (t *Tracker) flush(all bool) {
	t.mu.Lock()
	byChannel := make(map[string][]Count)
	for k := range t.pending {
		n := t.local[k]
		switch _, grace := t.grace[k]; {
		case grace:
			// gone within the grace: the store keeps the last
			// connection until it ends
			n = 1
		case n == 0:
			delete(t.local, k)
		}
		byChannel[k.channel] = append(byChannel[k.channel], Count{Sub: k.sub, N: n})
	}
	clear(t.pending)
	if all {
		for k, n := range t.local {
			if _, grace := t.grace[k]; n > 0 || grace {
				// within the grace the store keeps the last connection
				byChannel[k.channel] = append(byChannel[k.channel], Count{Sub: k.sub, N: max(n, 1)})
			}
		}
	}
	t.mu.Unlock()
	for ch, counts := range byChannel {
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
		trans, err := t.store.Set(ctx, ch, dedupe(counts))
		cancel()
		t.report(trans, err)
		if err != nil {
			// written again at the next refresh, which sends every count
			continue
		}
	}
}

// dedupe keeps the last count of each sub.
func dedupe(counts []Count) []Count {
	if len(counts) < 2 {
		return counts
	}
	last := make(map[string]int, len(counts))
	for i, c := range counts {
		last[c.Sub] = i
	}
	out := counts[:0]
	for i, c := range counts {
		if last[c.Sub] == i {
			out = append(out, c)
		}
	}
	return out
}

func (t *Tracker) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
	defer cancel()
	trans, err := t.store.Sweep(ctx)
	t.report(trans, err)
	if err != nil {
		return
	}
	orphans, err := t.store.Orphans(ctx)
	if len(orphans) > 0 {
		t.opts.OnOrphans(orphans)
	}
	t.report(nil, err)
}

// Snapshot returns the channel's presence from the store, announcing
// what it found expired. Concurrent requests for one channel share
// reads of the store, each answered by a read that started after it
// came, and the node runs a bounded number of reads at once (see
// snapshots). The Snapshot is shared and must not be modified.
func (t *Tracker) Snapshot(ctx context.Context, channel string) (Snapshot, error) {
	return t.snaps.get(ctx, channel, t.opts.Timeout, func(ctx context.Context) (Snapshot, error) {
		snap, trans, err := t.store.Get(ctx, channel)
		if len(trans) > 0 {
			t.opts.OnTransitions(trans)
		}
		return snap, err
	})
}

// report hands transitions on and logs a store failure once until the
// store works again.
func (t *Tracker) report(trans []Transition, err error) {
	if len(trans) > 0 {
		t.opts.OnTransitions(trans)
	}
	t.mu.Lock()
	was := t.failing
	t.failing = err != nil
	t.mu.Unlock()
	switch {
	case err != nil && !was:
		t.opts.Logger.Warn("presence: writing to the store failed; retrying at each refresh", zap.Error(err))
	case err == nil && was:
		t.opts.Logger.Info("presence: the store works again")
	}
}
