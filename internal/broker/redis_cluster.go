package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Redis Cluster. Several URLs are the seed nodes of a cluster, served by
// a go-redis ClusterClient; Subscribe, Publish and History run through
// it (each of their commands touches one key, so one slot).
//
// Pub/sub: a backend may PUBLISH (broadcast to every node of the
// cluster, so the one classic SUBSCRIBE connection, on any node, gets
// it) or SPUBLISH (sharded: only the master owning the channel's slot
// delivers it, to SSUBSCRIBEs made on that master). An SSUBSCRIBE cannot
// name channels of different slots (CROSSSLOT), and go-redis resubscribes
// every channel of a connection in one command on reconnect, so each
// hash slot in use has a sharded link of its own (a psLink with sharded
// set), routed by go-redis to the slot's master, on reconnect too. A
// channel is ready when both its SUBSCRIBE and its SSUBSCRIBE are
// confirmed; a later confirmation of either is a resubscription and
// reported with Handler.Gap. Both kinds of message share the channel's
// node-assigned ids.
//
// Streams: XREAD cannot name keys of different slots either (CROSSSLOT,
// even on one master), so each hash slot in use has a stream reader of
// its own (slotReader), with a blocking XREAD on a connection to the
// slot's master, interrupted with CLIENT UNBLOCK on that master when the
// slot's channel set changes, and resuming from each channel's last id.
//
// Links and readers of a slot are made on the first Subscribe of a
// channel in the slot and retired when the slot has no channel left.
// A prefix with a hash tag ("{rt}:") puts every channel in one slot: one
// sharded link and one reader per node, all on one master.

// slotReader tails the streams of the channels of one hash slot.
type slotReader struct {
	slot   int
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // the slot's channel set changed

	// guarded by Redis.mu
	dead      bool
	gen       uint64        // bumped on each change of the slot's channel set
	readerGen uint64        // gen of the current XREAD
	blocking  bool          // in (or about to send) XREAD
	id        int64         // CLIENT ID of the connection, 0 if none
	master    *redis.Client // the node the connection is on
}

func newClusterClient(urls []string) (*redis.ClusterClient, error) {
	var first *redis.Options
	addrs := make([]string, 0, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("invalid redis url: %w", err)
		}
		if u.Query().Has("master_name") {
			return nil, errors.New("a redis cluster url cannot name sentinels (master_name)")
		}
		o, err := redis.ParseURL(s)
		if err != nil {
			return nil, fmt.Errorf("invalid redis url: %w", err)
		}
		if o.DB != 0 {
			return nil, errors.New("a redis cluster has no database but 0")
		}
		if i == 0 {
			first = o
		} else if (o.TLSConfig != nil) != (first.TLSConfig != nil) {
			return nil, errors.New("redis cluster urls mix redis:// and rediss://")
		}
		addrs = append(addrs, o.Addr)
	}
	co := &redis.ClusterOptions{
		Addrs:                    addrs,
		ClientName:               first.ClientName,
		Protocol:                 first.Protocol,
		Username:                 first.Username,
		Password:                 first.Password,
		TLSConfig:                first.TLSConfig,
		DialTimeout:              first.DialTimeout,
		ReadTimeout:              first.ReadTimeout,
		WriteTimeout:             first.WriteTimeout,
		PoolSize:                 first.PoolSize,
		MinIdleConns:             first.MinIdleConns,
		MaxIdleConns:             first.MaxIdleConns,
		ConnMaxIdleTime:          first.ConnMaxIdleTime,
		ConnMaxLifetime:          first.ConnMaxLifetime,
		MaxRetries:               first.MaxRetries,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: noMaintNotifications(),
	}
	if co.DialTimeout == 0 {
		co.DialTimeout = 2 * time.Second
	}
	return redis.NewClusterClient(co), nil
}

// keySlot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag (the part between the first "{" and the next
// "}", when not empty), modulo 16384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

// addToSlotLocked records c in its slot and returns the slot's sharded
// link and stream reader, started if new. r.mu is held.
func (r *Redis) addToSlotLocked(c *redisChan) (*psLink, *slotReader) {
	set := r.bySlot[c.slot]
	if set == nil {
		set = make(map[string]*redisChan)
		r.bySlot[c.slot] = set
	}
	set[c.name] = c
	l := r.slotLinks[c.slot]
	if l == nil {
		ctx, cancel := context.WithCancel(r.ctx)
		l = &psLink{sharded: true, slot: c.slot, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
		r.slotLinks[c.slot] = l
		r.wg.Add(2)
		go r.runPubSub(l)
		go r.runPubSubWriter(l)
	}
	sr := r.slotReaders[c.slot]
	if sr == nil {
		ctx, cancel := context.WithCancel(r.ctx)
		sr = &slotReader{slot: c.slot, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
		r.slotReaders[c.slot] = sr
		r.wg.Add(1)
		go r.runSlotReader(sr)
	}
	sr.gen++
	return l, sr
}

// removeFromSlotLocked forgets c in its slot and returns the slot's link
// and reader, to wake them. r.mu is held.
func (r *Redis) removeFromSlotLocked(c *redisChan) (*psLink, *slotReader) {
	if set := r.bySlot[c.slot]; set[c.name] == c {
		delete(set, c.name)
		if len(set) == 0 {
			delete(r.bySlot, c.slot)
		}
	}
	sr := r.slotReaders[c.slot]
	if sr != nil {
		sr.gen++
	}
	return r.slotLinks[c.slot], sr
}

// retireLinkLocked stops a sharded link whose slot has no channel left.
// r.mu is held.
func (r *Redis) retireLinkLocked(l *psLink) bool {
	if len(r.bySlot[l.slot]) > 0 && !l.dead {
		return false
	}
	l.dead = true
	if r.slotLinks[l.slot] == l {
		delete(r.slotLinks, l.slot)
	}
	l.cancel()
	return true
}

// retireReaderLocked stops a reader whose slot has no channel left. r.mu
// is held.
func (r *Redis) retireReaderLocked(sr *slotReader) {
	sr.dead = true
	if r.slotReaders[sr.slot] == sr {
		delete(r.slotReaders, sr.slot)
	}
	sr.cancel()
}

func (r *Redis) runSlotReader(sr *slotReader) {
	defer r.wg.Done()
	attempt := 0
	first := true
	for {
		err := r.slotStreamSession(sr, &attempt, first)
		if sr.ctx.Err() != nil {
			return
		}
		first = false
		r.log.Warn("redis stream reader", zap.Int("slot", sr.slot), zap.Error(err))
		r.cluster.ReloadState(sr.ctx)
		if !sleepCtx(sr.ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

func (r *Redis) slotChans(slot int) []*redisChan {
	r.mu.RLock()
	defer r.mu.RUnlock()
	chans := make([]*redisChan, 0, len(r.bySlot[slot]))
	for _, c := range r.bySlot[slot] {
		chans = append(chans, c)
	}
	return chans
}

// confirmMaster checks that the node go-redis's map of the cluster names
// as the master of key's slot answers as a master. Right after a failover
// the map may still name the old master, now a replica: a sharded
// subscription there gets the shard's messages only once the cluster has
// converged, and messages published meanwhile would be lost after the
// gap signal, silently. The caller retries after a backoff, by when the
// map is reloaded.
func (r *Redis) confirmMaster(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	master, err := r.cluster.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	role, err := master.Do(ctx, "ROLE").Slice()
	if err != nil {
		return err
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%s, named master of the slot, answers as %v (failover in progress)", master.Options().Addr, role)
	}
	return nil
}

func (r *Redis) slotStreamSession(sr *slotReader, attempt *int, first bool) error {
	r.mu.Lock()
	key := ""
	for _, c := range r.bySlot[sr.slot] {
		key = c.key
		break
	}
	if key == "" {
		r.retireReaderLocked(sr)
		r.mu.Unlock()
		return errIdle
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(sr.ctx, r.opts.Timeout)
	master, err := r.cluster.MasterForKey(ctx, key)
	if err != nil {
		cancel()
		return err
	}
	conn := master.EphemeralConn()
	defer conn.Close()
	id, err := conn.ClientID(ctx).Result()
	cancel()
	if err != nil {
		return err
	}
	r.mu.Lock()
	sr.id, sr.master, sr.blocking = id, master, false
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		sr.id, sr.master, sr.blocking = 0, nil, false
		r.mu.Unlock()
	}()
	*attempt = 0
	if !first {
		if err := r.checkLost(conn, r.slotChans(sr.slot)); err != nil {
			return err
		}
	}

	return r.tail(conn, streamTail{
		ctx:      sr.ctx,
		wake:     sr.wake,
		snapshot: func() ([]string, bool) { return r.snapshotSlot(sr) },
		unblocked: func() {
			r.mu.Lock()
			sr.blocking = false
			r.mu.Unlock()
		},
	})
}

// snapshotSlot is snapshot for the channels of one slot; idle means the
// slot has no channel left and the reader is retired.
func (r *Redis) snapshotSlot(sr *slotReader) (args []string, idle bool) {
	r.mu.Lock()
	set := r.bySlot[sr.slot]
	if len(set) == 0 {
		r.retireReaderLocked(sr)
		r.mu.Unlock()
		return nil, true
	}
	gen := sr.gen
	chans := make([]*redisChan, 0, len(set))
	for _, c := range set {
		chans = append(chans, c)
	}
	r.mu.Unlock()
	args = xreadArgs(chans)
	r.mu.Lock()
	sr.readerGen = gen
	sr.blocking = len(args) > 0
	r.mu.Unlock()
	return args, false
}

// runClusterKicker interrupts the blocked XREAD of each slot reader
// whose channel set changed since it sent it (see runKicker).
func (r *Redis) runClusterKicker() {
	defer r.wg.Done()
	type target struct {
		id     int64
		master *redis.Client
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		}
		delay := 200 * time.Microsecond
		for {
			var ts []target
			r.mu.RLock()
			for _, sr := range r.slotReaders {
				if sr.blocking && sr.readerGen != sr.gen && sr.id != 0 && sr.master != nil {
					ts = append(ts, target{sr.id, sr.master})
				}
			}
			r.mu.RUnlock()
			retry := false
			for _, t := range ts {
				ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
				n, err := t.master.ClientUnblock(ctx, t.id).Result()
				cancel()
				if err == nil && n == 0 {
					retry = true // the XREAD has not reached Redis yet
				}
			}
			if !retry {
				break
			}
			if !sleepCtx(r.ctx, delay) {
				return
			}
			delay = min(2*delay, 20*time.Millisecond)
		}
	}
}

// runClusterHealth pings every master of the cluster: the "stream" part
// of Healthy with a cluster.
func (r *Redis) runClusterHealth() {
	defer r.wg.Done()
	attempt := 0
	for {
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
		err := r.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
		cancel()
		if r.ctx.Err() != nil {
			return
		}
		r.setHealth(partStream, err == nil, err)
		wait := r.opts.HealthCheck
		if err != nil {
			wait = min(wait, backoff(attempt))
			attempt++
		} else {
			attempt = 0
		}
		if !sleepCtx(r.ctx, wait) {
			return
		}
	}
}
