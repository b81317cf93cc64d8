package broker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// closeWait bounds how long Close waits for the goroutines: Close returns
// within a few seconds whatever the state of Redis.
const closeWait = 5 * time.Second

// health parts: both must be up for the broker to be healthy. The pub/sub
// part is the classic pub/sub connection; the stream part is the stream
// reader's connection with a single server, and every master answering a
// PING with a Redis Cluster.
const (
	partPubSub = iota
	partStream
	numParts
)

// Redis is the broker shared by the nodes of a cluster through Redis:
// PUBLISH to the channel's key, and XADD to its stream.
//
// One pub/sub connection carries the SUBSCRIBEs of every channel in use
// on this node; one more connection tails the streams of those channels
// with a blocking XREAD, interrupted with CLIENT UNBLOCK when the set of
// channels changes. Both reconnect with capped, jittered backoff. A
// pub/sub subscription that was interrupted is reported with Handler.Gap
// once it is confirmed again; streams resume from the last id seen.
//
// With a Redis Cluster (several URLs) the classic SUBSCRIBE connection
// is joined by one SSUBSCRIBE connection and one XREAD connection per
// hash slot in use, on the slot's master (see redis_cluster.go). Each of
// these connections is owned by a worker (see redis_worker.go), the same
// code for both: a single server is served as a cluster of one slot,
// whose stream reader reads every channel.
type Redis struct {
	opts RedisOptions
	h    Handler
	log  *zap.Logger
	// uc runs the commands of Subscribe, Publish and History: client, or
	// cluster with a Redis Cluster (then client is nil).
	uc      redis.UniversalClient
	client  *redis.Client
	cluster *redis.ClusterClient

	// cancel stops the goroutines that run as long as the broker; the
	// workers of a cluster's slots have cancel functions of their own.
	cancel context.CancelFunc
	done   chan struct{} // closed by Close: Subscribe stops waiting
	wg     sync.WaitGroup
	once   sync.Once
	kick   chan struct{} // interrupt the stream readers' stale XREADs

	mu     sync.RWMutex
	chans  map[string]*redisChan // by channel name
	closed bool
	link   *psLink // the classic pub/sub link (SUBSCRIBE)
	// the stream readers (see redis_readers.go): every reader running,
	// those with room for another channel by hash slot, and those whose
	// channel set changed since their XREAD was sent, for the kicker
	readers map[*streamReader]struct{}
	roomy   map[int]map[*streamReader]struct{}
	stale   map[*streamReader]struct{}
	// readerClient gives each stream reader of a single server a
	// connection of its own, outside the pool of client, whose commands
	// the blocked XREADs would otherwise starve
	readerClient *redis.Client
	// Redis Cluster only: the channels in use by hash slot, and the
	// sharded pub/sub link (SSUBSCRIBE) of each slot in use
	bySlot    map[int]map[string]*redisChan
	slotLinks map[int]*psLink

	hmu     sync.Mutex
	parts   [numParts]bool
	up      atomic.Bool
	upOnce  chan struct{} // closed when first healthy
	upFirst bool
}

// redisChan is one channel in use on this node. A new one is made on
// each Subscribe, so a late reply for an earlier subscription of the same
// name finds it gone.
type redisChan struct {
	name  string
	key   string
	ready chan struct{} // closed when the pub/sub subscriptions are confirmed
	// slot is the hash slot of key with a Redis Cluster; with a single
	// server it is 0.
	slot   int
	reader *streamReader // the stream reader serving it; guarded by Redis.mu

	mu sync.Mutex // serialises the channel's deliveries; guards below
	// pub/sub
	psReady  bool // the SUBSCRIBE was confirmed
	spsReady bool // the SSUBSCRIBE was confirmed (always true without a cluster)
	live     bool // ready is closed: messages are delivered
	epoch    string
	seq      uint64
	// stream
	lastID   string // last stream id read ("0-0": none)
	noStream bool   // the key holds something else than a stream
	inflight int    // Publish calls of this node waiting for XADD
	self     map[string]Source
	pending  []*Message // read, waiting for an inflight Publish to resolve
	// gone is set without c.mu: Unsubscribe runs under the hub's locks,
	// which Handler calls made under c.mu take.
	gone atomic.Bool
}

// NewRedis connects to Redis and starts the broker's goroutines. It
// fails only for a bad configuration: if Redis cannot be reached it
// waits up to opts.Timeout, logs it, and keeps reconnecting in the
// background (Healthy stays false meanwhile).
func NewRedis(opts RedisOptions, h Handler, logger *zap.Logger) (*Redis, error) {
	opts.setDefaults()
	if logger == nil {
		logger = zap.NewNop()
	}
	r := &Redis{
		opts:    opts,
		h:       h,
		log:     logger,
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		chans:   make(map[string]*redisChan),
		readers: make(map[*streamReader]struct{}),
		roomy:   make(map[int]map[*streamReader]struct{}),
		stale:   make(map[*streamReader]struct{}),
		upOnce:  make(chan struct{}),
	}
	if len(opts.URLs) > 1 {
		cluster, err := newClusterClient(opts.URLs)
		if err != nil {
			return nil, err
		}
		r.uc, r.cluster = cluster, cluster
		r.bySlot = make(map[int]map[string]*redisChan)
		r.slotLinks = make(map[int]*psLink)
	} else {
		client, err := newClient(opts.URLs, 0)
		if err != nil {
			return nil, err
		}
		readerClient, err := newClient(opts.URLs, maxReaders)
		if err != nil {
			return nil, err
		}
		r.uc, r.client, r.readerClient = client, client, readerClient
	}
	r.start()

	t := time.NewTimer(opts.Timeout)
	defer t.Stop()
	select {
	case <-r.upOnce:
	case <-t.C:
		logger.Warn("redis not reachable yet, reconnecting in the background",
			zap.Strings("servers", redactURLs(opts.URLs)))
	}
	return r, nil
}

// start starts the goroutines that run as long as the broker: the
// classic pub/sub link, the kicker, and the primary stream reader of a
// single server or the health check of a cluster (whose stream readers
// start with the first channel of their slot).
func (r *Redis) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.link = &psLink{worker: worker{primary: true, part: partPubSub, cancel: cancel, wake: make(chan struct{}, 1)}}
	r.startLink(ctx, r.link)
	r.wg.Add(2)
	go r.runOnWake(ctx, r.kick, r.kickStale)
	go r.runControl(ctx)
	if r.cluster != nil {
		r.wg.Add(1)
		go r.runClusterHealth(ctx)
		return
	}
	r.mu.Lock()
	r.newReaderLocked(ctx, worker{primary: true, part: partStream, cancel: cancel})
	r.mu.Unlock()
}

func (r *Redis) key(channel string) string { return r.opts.Prefix + channel }

func (r *Redis) channelOf(key string) (string, bool) {
	return strings.CutPrefix(key, r.opts.Prefix)
}

// lookup returns the channel in use by that name, nil if none.
func (r *Redis) lookup(name string) *redisChan {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.chans[name]
}

// Subscribe reads the channel's stream position, starts tailing the
// stream from it, subscribes to the channel's pub/sub key and waits until
// Redis confirms that subscription. It returns the stream's last id, ""
// when there is no stream.
func (r *Redis) Subscribe(ctx context.Context, channel string) (string, error) {
	if !r.Healthy() {
		return "", fmt.Errorf("subscribing to %s: %w", channel, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	key := r.key(channel)
	c := &redisChan{name: channel, key: key, ready: make(chan struct{}), lastID: "0-0"}
	if r.cluster == nil {
		c.spsReady = true
	} else {
		c.slot = keySlot(key)
	}
	last, err := r.probeStream(ctx, c)
	if err != nil {
		return "", err
	}
	old, err := r.add(c)
	if err != nil {
		return "", err
	}
	if old != nil {
		// the hub subscribes once per channel; a second caller shares
		return r.awaitReady(ctx, old)
	}
	if _, err := r.awaitReady(ctx, c); err != nil {
		r.remove(c)
		return "", err
	}
	if last == "" {
		// no stream: the position is the start of the pub/sub epoch
		c.mu.Lock()
		last = formatNodeID(c.epoch, 0)
		c.mu.Unlock()
	}
	return last, nil
}

// probeStream reads the position of c's stream, where the stream reader
// starts, and returns its last id ("" when there is no stream). A key
// that holds something else than a stream is not read.
func (r *Redis) probeStream(ctx context.Context, c *redisChan) (string, error) {
	info, err := r.uc.XInfoStream(ctx, c.key).Result()
	switch {
	case err == nil:
		c.lastID = info.LastGeneratedID
		return info.LastGeneratedID, nil
	case isNoSuchKey(err):
		return "", nil
	case isWrongType(err):
		c.noStream = true
		r.log.Warn("channel key is not a stream; its pub/sub messages only are delivered",
			zap.String("channel", c.name))
		return "", nil
	}
	return "", fmt.Errorf("subscribing to %s: %w", c.name, unavailable(err))
}

// add makes c the channel in use by its name and wakes the workers that
// serve it. When the name is in use already it returns that channel
// instead, and changes nothing.
func (r *Redis) add(c *redisChan) (old *redisChan, err error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("subscribing to %s: %w", c.name, ErrUnavailable)
	}
	if old := r.chans[c.name]; old != nil {
		r.mu.Unlock()
		return old, nil
	}
	ws := r.addLocked(c)
	r.mu.Unlock()
	wake(ws)
	signal(r.kick)
	return nil, nil
}

// addLocked records c as in use and returns the workers that serve it:
// the classic link, the sharded link of its slot with a Redis Cluster,
// and its stream reader. A subscription of the name still live on a link
// (its UNSUBSCRIBE was not sent yet) is taken over. r.mu is held.
func (r *Redis) addLocked(c *redisChan) []*worker {
	r.chans[c.name] = c
	c.psReady = r.link.live[c.name]
	r.link.markLocked(c.name)
	ws := []*worker{&r.link.worker}
	if r.cluster != nil {
		sl := r.addToSlotLocked(c)
		c.spsReady = sl.live[c.name]
		sl.markLocked(c.name)
		ws = append(ws, &sl.worker)
	}
	ws = append(ws, &r.placeLocked(c).worker)
	if c.psReady && c.spsReady {
		c.live = true
		c.epoch = newEpoch()
		close(c.ready)
	}
	return ws
}

func (r *Redis) awaitReady(ctx context.Context, c *redisChan) (string, error) {
	select {
	case <-c.ready:
		c.mu.Lock()
		last := c.lastID
		c.mu.Unlock()
		if last == "0-0" {
			last = ""
		}
		return last, nil
	case <-ctx.Done():
		return "", fmt.Errorf("subscribing to %s: %w: %w", c.name, ErrUnavailable, ctx.Err())
	case <-r.done:
		return "", fmt.Errorf("subscribing to %s: %w", c.name, ErrUnavailable)
	}
}

// Unsubscribe stops delivery of channel at once; the UNSUBSCRIBE is sent
// in the background.
func (r *Redis) Unsubscribe(channel string) {
	if c := r.lookup(channel); c != nil {
		r.remove(c)
	}
}

// remove stops delivery of c, unless its name is in use by another
// subscription by now, and wakes the workers that served it.
func (r *Redis) remove(c *redisChan) {
	r.mu.Lock()
	if r.chans[c.name] != c {
		r.mu.Unlock()
		return
	}
	delete(r.chans, c.name)
	r.link.markLocked(c.name)
	ws := []*worker{&r.link.worker}
	if r.cluster != nil {
		if sl := r.removeFromSlotLocked(c); sl != nil {
			sl.markLocked(c.name)
			ws = append(ws, &sl.worker)
		}
	}
	if sr := r.unplaceLocked(c); sr != nil {
		ws = append(ws, &sr.worker)
	}
	r.mu.Unlock()
	c.gone.Store(true)
	wake(ws)
	signal(r.kick)
}

// Client is the broker's Redis client, for other users of the same
// server (tickets): a ClusterClient with a Redis Cluster.
func (r *Redis) Client() redis.UniversalClient { return r.uc }

// Healthy reports whether both the pub/sub and the stream connection are
// up.
func (r *Redis) Healthy() bool { return r.up.Load() }

// Close stops every goroutine of the broker and closes its connections.
// It returns within a few seconds whatever the state of Redis.
func (r *Redis) Close() error {
	var err error
	r.once.Do(func() { err = r.shutdown() })
	return err
}

// shutdown is Close, run once.
func (r *Redis) shutdown() error {
	r.cancel()
	r.hmu.Lock()
	close(r.done) // setHealth does nothing from now on
	r.up.Store(false)
	r.hmu.Unlock()
	for _, ps := range r.stopWorkers() {
		if ps != nil {
			_ = ps.Close()
		}
	}
	// closes every connection, the readers' blocked XREADs included
	err := r.uc.Close()
	if r.readerClient != nil {
		_ = r.readerClient.Close()
	}
	stopped := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(stopped)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		err = fmt.Errorf("redis broker goroutines did not stop within %v", closeWait)
	}
	return err
}

// stopWorkers marks the broker closed, so that no channel or worker is
// added any more, stops the workers of a cluster's slots and forgets
// every channel. It returns the pub/sub sessions, to be closed.
func (r *Redis) stopWorkers() []*redis.PubSub {
	r.mu.Lock()
	r.closed = true
	pss := []*redis.PubSub{r.link.ps}
	for _, l := range r.slotLinks {
		l.cancel()
		pss = append(pss, l.ps)
	}
	for sr := range r.readers {
		sr.cancel()
	}
	chans := r.chans
	r.chans = make(map[string]*redisChan)
	r.mu.Unlock()
	for _, c := range chans {
		c.gone.Store(true)
	}
	return pss
}

// setHealth records the state of one part and reports a change of the
// whole.
func (r *Redis) setHealth(part int, ok bool, cause error) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	select {
	case <-r.done:
		return
	default:
	}
	r.parts[part] = ok
	up := true
	for _, p := range r.parts {
		up = up && p
	}
	if up == r.up.Load() {
		return
	}
	r.up.Store(up)
	if up {
		r.log.Info("redis up")
		if !r.upFirst {
			r.upFirst = true
			close(r.upOnce)
		}
	} else {
		r.log.Warn("redis down", zap.Error(cause))
	}
	if r.opts.OnHealth != nil {
		r.opts.OnHealth(up)
	}
}

var _ Broker = (*Redis)(nil)
