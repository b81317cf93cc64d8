package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// RedisOptions configure NewRedis. The zero value of every field but URLs
// means its default.
type RedisOptions struct {
	// URLs of the Redis server: one redis:// or rediss:// URL
	// (redis://[user:password@]host:port[/db][?options], the options of
	// go-redis ParseURL). A URL with a master_name query parameter names
	// Sentinels instead: redis://sentinel1:26379?master_name=mymaster
	// &addr=sentinel2:26379 (go-redis ParseFailoverURL). Several URLs
	// are the nodes of a Redis Cluster (the seed addresses); credentials
	// and TLS come from the first one.
	URLs []string
	// Prefix of every channel and stream key, default "realtime:".
	Prefix string
	// StreamMaxLen caps each channel's stream, as XADD MAXLEN ~ n,
	// default 1000.
	StreamMaxLen int64
	// StreamTTL is set with EXPIRE on a stream after each Publish,
	// default 10m; negative: no EXPIRE.
	StreamTTL time.Duration
	// Timeout bounds each operation the hub waits for (Subscribe,
	// Publish, History), default 3s.
	Timeout time.Duration
	// HealthCheck is how long an idle connection may stay silent before
	// it is pinged; a connection that does not answer for two periods is
	// replaced. Default 5s.
	HealthCheck time.Duration
	// OnHealth, when set, is called with each change of Healthy, in
	// order, from the broker's goroutines; it must not block.
	OnHealth func(up bool)
}

// DefaultPrefix is put in front of a channel's name to make its Redis
// channel and stream key.
const DefaultPrefix = "realtime:"

func (o *RedisOptions) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.StreamMaxLen <= 0 {
		o.StreamMaxLen = 1000
	}
	if o.StreamTTL == 0 {
		o.StreamTTL = 10 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.HealthCheck <= 0 {
		o.HealthCheck = 5 * time.Second
	}
}

const (
	streamCount    = 1000 // XREAD COUNT per stream and call
	maxBackoff     = 5 * time.Second
	minBackoff     = 50 * time.Millisecond
	subscribeBatch = 512 // channels per SUBSCRIBE command
)

// health parts: both connections must be up for the broker to be healthy
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
// hash slot in use, on the slot's master (see redis_cluster.go).
type Redis struct {
	opts RedisOptions
	h    Handler
	log  *zap.Logger
	// uc runs the commands of Subscribe, Publish and History: client, or
	// cluster with a Redis Cluster (then client is nil).
	uc      redis.UniversalClient
	client  *redis.Client
	cluster *redis.ClusterClient

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	psWake     chan struct{} // reconcile the pub/sub subscriptions
	streamWake chan struct{} // the stream reader has no channel and waits
	kick       chan struct{} // interrupt the stream reader's XREAD

	mu     sync.RWMutex
	chans  map[string]*redisChan // by channel name
	closed bool
	// the classic pub/sub link (SUBSCRIBE)
	link *psLink
	// Redis Cluster only: the channels in use by hash slot, the sharded
	// pub/sub link (SSUBSCRIBE) and the stream reader of each slot in use
	bySlot      map[int]map[string]*redisChan
	slotLinks   map[int]*psLink
	slotReaders map[int]*slotReader
	// the stream reader
	streamGen      uint64 // bumped on each change of the channel set
	readerGen      uint64 // streamGen of the reader's current XREAD
	readerBlocking bool   // the reader is in (or about to send) XREAD
	readerID       int64  // CLIENT ID of the reader's connection, 0 if none

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

	slot int // hash slot of key (Redis Cluster)

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
	var (
		client  *redis.Client
		cluster *redis.ClusterClient
		err     error
	)
	if len(opts.URLs) > 1 {
		cluster, err = newClusterClient(opts.URLs)
	} else {
		client, err = newClient(opts.URLs)
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Redis{
		opts:       opts,
		h:          h,
		log:        logger,
		client:     client,
		cluster:    cluster,
		ctx:        ctx,
		cancel:     cancel,
		psWake:     make(chan struct{}, 1),
		streamWake: make(chan struct{}, 1),
		kick:       make(chan struct{}, 1),
		chans:      make(map[string]*redisChan),
		upOnce:     make(chan struct{}),
	}
	if cluster != nil {
		r.uc = cluster
		r.bySlot = make(map[int]map[string]*redisChan)
		r.slotLinks = make(map[int]*psLink)
		r.slotReaders = make(map[int]*slotReader)
	} else {
		r.uc = client
	}
	r.link = &psLink{ctx: ctx, cancel: cancel, wake: r.psWake}
	r.wg.Add(4)
	go r.runPubSub(r.link)
	go r.runPubSubWriter(r.link)
	if cluster != nil {
		go r.runClusterHealth()
		go r.runClusterKicker()
	} else {
		go r.runStreams()
		go r.runKicker()
	}

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

func newClient(urls []string) (*redis.Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("no redis url")
	}
	u, err := url.Parse(urls[0])
	if err != nil {
		return nil, fmt.Errorf("invalid redis url: %w", err)
	}
	var client *redis.Client
	if u.Query().Has("master_name") {
		fo, err := redis.ParseFailoverURL(urls[0])
		if err != nil {
			return nil, fmt.Errorf("invalid redis sentinel url: %w", err)
		}
		if fo.DialTimeout == 0 {
			fo.DialTimeout = 2 * time.Second
		}
		fo.ContextTimeoutEnabled = true
		client = redis.NewFailoverClient(fo)
	} else {
		o, err := redis.ParseURL(urls[0])
		if err != nil {
			return nil, fmt.Errorf("invalid redis url: %w", err)
		}
		if o.DialTimeout == 0 {
			o.DialTimeout = 2 * time.Second
		}
		o.ContextTimeoutEnabled = true
		o.MaintNotificationsConfig = noMaintNotifications()
		client = redis.NewClient(o)
	}
	return client, nil
}

// noMaintNotifications turns off the maintenance-notification handshake:
// its automatic fallback (for servers that do not know it) races between
// a client's pub/sub and command connections in go-redis v9.23.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// redactURLs drops passwords from urls, for logs.
func redactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, s := range urls {
		if u, err := url.Parse(s); err == nil {
			out[i] = u.Redacted()
		} else {
			out[i] = "(invalid url)"
		}
	}
	return out
}

func (r *Redis) key(channel string) string { return r.opts.Prefix + channel }

func (r *Redis) channelOf(key string) (string, bool) {
	return strings.CutPrefix(key, r.opts.Prefix)
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
	last := ""
	info, err := r.uc.XInfoStream(ctx, key).Result()
	switch {
	case err == nil:
		last = info.LastGeneratedID
		c.lastID = last
	case isNoSuchKey(err):
	case isWrongType(err):
		c.noStream = true
		r.log.Warn("channel key is not a stream; its pub/sub messages only are delivered",
			zap.String("channel", channel))
	default:
		return "", fmt.Errorf("subscribing to %s: %w", channel, unavailable(err))
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return "", fmt.Errorf("subscribing to %s: %w", channel, ErrUnavailable)
	}
	if old := r.chans[channel]; old != nil {
		// the hub subscribes once per channel; a second caller shares
		r.mu.Unlock()
		return r.awaitReady(ctx, old, channel)
	}
	r.chans[channel] = c
	// a previous subscription of this name still live on a connection
	// (its UNSUBSCRIBE was not sent yet) is taken over
	if r.link.live[channel] {
		c.psReady = true
	}
	var sl *psLink
	var sr *slotReader
	if r.cluster != nil {
		sl, sr = r.addToSlotLocked(c)
		if sl.live[channel] {
			c.spsReady = true
		}
	}
	if c.psReady && c.spsReady {
		c.live = true
		c.epoch = NewEpoch()
		close(c.ready)
	}
	r.streamGen++
	r.mu.Unlock()
	signal(r.psWake)
	if sl != nil {
		signal(sl.wake)
		signal(sr.wake)
	} else {
		signal(r.streamWake)
	}
	signal(r.kick)

	if _, err := r.awaitReady(ctx, c, channel); err != nil {
		r.remove(channel, c)
		return "", err
	}
	if last == "" {
		// no stream: the position is the start of the pub/sub epoch
		c.mu.Lock()
		last = FormatNodeID(c.epoch, 0)
		c.mu.Unlock()
	}
	return last, nil
}

// Client is the broker's Redis client, for other users of the same
// server (tickets): a ClusterClient with a Redis Cluster.
func (r *Redis) Client() redis.UniversalClient { return r.uc }

func (r *Redis) awaitReady(ctx context.Context, c *redisChan, channel string) (string, error) {
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
		return "", fmt.Errorf("subscribing to %s: %w: %w", channel, ErrUnavailable, ctx.Err())
	case <-r.ctx.Done():
		return "", fmt.Errorf("subscribing to %s: %w", channel, ErrUnavailable)
	}
}

// Unsubscribe stops delivery of channel at once; the UNSUBSCRIBE is sent
// in the background.
func (r *Redis) Unsubscribe(channel string) {
	r.mu.Lock()
	c := r.chans[channel]
	r.mu.Unlock()
	if c != nil {
		r.remove(channel, c)
	}
}

func (r *Redis) remove(channel string, c *redisChan) {
	r.mu.Lock()
	if r.chans[channel] != c {
		r.mu.Unlock()
		return
	}
	delete(r.chans, channel)
	r.streamGen++
	var sl *psLink
	var sr *slotReader
	if r.cluster != nil {
		sl, sr = r.removeFromSlotLocked(c)
	}
	r.mu.Unlock()
	c.gone.Store(true)
	signal(r.psWake)
	if sl != nil {
		signal(sl.wake)
	}
	if sr != nil {
		signal(sr.wake)
	}
	signal(r.kick)
}

// Publish appends the message to the channel's stream (XADD MAXLEN ~
// StreamMaxLen, then EXPIRE StreamTTL) and returns its stream id. This
// node's subscribers get it from the stream reader, with Source src.
func (r *Redis) Publish(ctx context.Context, channel, event string, data []byte, src Source) (string, error) {
	if !r.Healthy() {
		return "", fmt.Errorf("publishing to %s: %w", channel, ErrUnavailable)
	}
	r.mu.RLock()
	c := r.chans[channel]
	r.mu.RUnlock()
	if c != nil {
		c.mu.Lock()
		c.inflight++
		c.mu.Unlock()
	}
	id, err := r.xadd(ctx, channel, event, data)
	if c != nil {
		c.mu.Lock()
		c.inflight--
		if err == nil && !c.gone.Load() {
			if c.self == nil {
				c.self = make(map[string]Source)
			}
			c.self[id] = src
		}
		r.drain(c)
		c.mu.Unlock()
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

func (r *Redis) xadd(ctx context.Context, channel, event string, data []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	key := r.key(channel)
	values := []any{"data", data}
	if event != "" {
		values = append(values, "event", event)
	}
	pipe := r.uc.Pipeline()
	add := pipe.XAdd(ctx, &redis.XAddArgs{
		Stream: key,
		MaxLen: r.opts.StreamMaxLen,
		Approx: true,
		Values: values,
	})
	if r.opts.StreamTTL > 0 {
		pipe.Expire(ctx, key, r.opts.StreamTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if add.Err() == nil && add.Val() != "" {
			// stored; only the EXPIRE failed
			r.log.Warn("setting the stream ttl", zap.String("channel", channel), zap.Error(err))
			return add.Val(), nil
		}
		return "", fmt.Errorf("publishing to %s: %w", channel, unavailable(err))
	}
	return add.Val(), nil
}

// History returns up to limit messages of channel's stream after afterID
// (XRANGE key (afterID + COUNT limit), oldest first. afterID "" means
// from the start; a node-assigned id gets ErrNoHistory; an id after the
// stream's last one, or not an id, ErrUnknownID; an id older than what
// the stream retains (or a stream that expired), ErrTrimmed. limit <= 0
// means 1000.
func (r *Redis) History(ctx context.Context, channel, afterID string, limit int) ([]*Message, error) {
	if _, _, ok := ParseNodeID(afterID); ok {
		return nil, ErrNoHistory
	}
	if afterID == "" {
		afterID = "0-0"
	}
	if !IsStreamID(afterID) {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, ErrUnknownID)
	}
	if limit <= 0 {
		limit = 1000
	}
	if !r.Healthy() {
		return nil, fmt.Errorf("history of %s: %w", channel, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	key := r.key(channel)
	pipe := r.uc.TxPipeline()
	rng := pipe.XRangeN(ctx, key, "("+afterID, "+", int64(limit))
	inf := pipe.XInfoStream(ctx, key)
	_, _ = pipe.Exec(ctx)
	info, err := inf.Result()
	switch {
	case err == nil:
	case isNoSuchKey(err):
		if afterID == "0-0" {
			return nil, nil
		}
		return nil, fmt.Errorf("history of %s: %w", channel, ErrTrimmed)
	case isWrongType(err):
		return nil, fmt.Errorf("history of %s: %w", channel, ErrNoHistory)
	default:
		return nil, fmt.Errorf("history of %s: %w", channel, unavailable(err))
	}
	if CompareStreamIDs(afterID, info.LastGeneratedID) > 0 {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, ErrUnknownID)
	}
	if afterID != "0-0" && trimmedAfter(info, afterID) {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, ErrTrimmed)
	}
	xs, err := rng.Result()
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, ErrUnknownID)
		}
		return nil, fmt.Errorf("history of %s: %w", channel, unavailable(err))
	}
	msgs := make([]*Message, 0, len(xs))
	for _, x := range xs {
		m := streamMessage(channel, x, time.Time{})
		if ms, _, ok := ParseStreamID(x.ID); ok {
			m.Received = time.UnixMilli(int64(ms))
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// trimmedAfter reports whether an entry after id may have been deleted
// from the stream. XDEL raises max-deleted-entry-id (Redis 7); trimming
// (MAXLEN) removes the oldest entries, leaving no trace but the first
// entry and entries-added, so an id older than the first entry is taken
// as trimmed as soon as anything was removed: the entry that followed it
// may be gone. (An id that was itself the last one trimmed is reported
// too: nothing tells it apart.)
func trimmedAfter(info *redis.XInfoStream, id string) bool {
	if IsStreamID(info.MaxDeletedEntryID) && CompareStreamIDs(id, info.MaxDeletedEntryID) < 0 {
		return true
	}
	if info.EntriesAdded > 0 && info.EntriesAdded <= info.Length {
		return false // Redis 7: nothing was ever removed
	}
	if info.Length == 0 {
		return CompareStreamIDs(id, info.LastGeneratedID) < 0
	}
	return CompareStreamIDs(id, info.FirstEntry.ID) < 0
}

// Healthy reports whether both the pub/sub and the stream connection are
// up.
func (r *Redis) Healthy() bool { return r.up.Load() }

// Close stops every goroutine of the broker and closes its connections.
// It returns within a few seconds whatever the state of Redis.
func (r *Redis) Close() error {
	var err error
	r.once.Do(func() {
		r.cancel()
		r.hmu.Lock()
		r.up.Store(false) // setHealth does nothing once r.ctx is done
		r.hmu.Unlock()
		r.mu.Lock()
		r.closed = true
		pss := []*redis.PubSub{r.link.ps}
		for _, l := range r.slotLinks {
			pss = append(pss, l.ps)
		}
		chans := r.chans
		r.chans = make(map[string]*redisChan)
		r.mu.Unlock()
		for _, c := range chans {
			c.gone.Store(true)
		}
		for _, ps := range pss {
			if ps != nil {
				_ = ps.Close()
			}
		}
		// closes every connection, the reader's blocked XREAD included
		err = r.uc.Close()
		done := make(chan struct{})
		go func() {
			r.wg.Wait()
			close(done)
		}()
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			err = errors.New("redis broker goroutines did not stop within 5s")
		}
	})
	return err
}

// setHealth records the state of one connection and reports a change of
// the whole.
func (r *Redis) setHealth(part int, ok bool, cause error) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.ctx.Err() != nil {
		return
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

func streamMessage(channel string, x redis.XMessage, now time.Time) *Message {
	m := &Message{Channel: channel, ID: x.ID, Source: SourceStream, Received: now, Data: []byte{}}
	if v, ok := x.Values["data"]; ok {
		m.Data = toBytes(v)
	}
	if v, ok := x.Values["event"]; ok {
		m.Event = string(toBytes(v))
	}
	return m
}

func toBytes(v any) []byte {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []byte:
		return bytes.Clone(v)
	case nil:
		return []byte{}
	}
	return fmt.Append(nil, v)
}

// unavailable wraps err with ErrUnavailable unless Redis answered it (a
// server error such as WRONGTYPE is not an outage).
func unavailable(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func isNoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(strings.ToLower(err.Error()), "no such key")
}

func isWrongType(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// signal wakes the goroutine waiting on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// backoff returns the wait before reconnect attempt n (from 0): doubling
// from minBackoff, capped at maxBackoff, with jitter in [d/2, d).
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

var _ Broker = (*Redis)(nil)
