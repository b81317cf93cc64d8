package broker

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
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
// its own (a sharded streamReader), with a blocking XREAD on a connection
// to the slot's master, interrupted with CLIENT UNBLOCK on that master
// when the slot's channel set changes, and resuming from each channel's
// last id.
//
// Links and readers of a slot are made on the first Subscribe of a
// channel in the slot and retired when the slot has no channel left.
// A prefix with a hash tag ("{rt}:") puts every channel in one slot: one
// sharded link and one reader per node, all on one master.

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
// link. The slot's first channel starts its link. r.mu is held.
func (r *Redis) addToSlotLocked(c *redisChan) *psLink {
	set := r.bySlot[c.slot]
	if set == nil {
		set = make(map[string]*redisChan)
		r.bySlot[c.slot] = set
	}
	set[c.name] = c
	l := r.slotLinks[c.slot]
	if l == nil {
		ctx, w := newSlotWorker(c.slot)
		l = &psLink{worker: w}
		r.slotLinks[c.slot] = l
		r.startLink(ctx, l)
	}
	return l
}

// newSlotWorker returns a sharded worker of slot and the context its
// goroutines run with, which its cancel (or Close) ends.
func newSlotWorker(slot int) (context.Context, worker) {
	ctx, cancel := context.WithCancel(context.Background())
	return ctx, worker{sharded: true, slot: slot, cancel: cancel, wake: make(chan struct{}, 1)}
}

// removeFromSlotLocked forgets c in its slot and returns the slot's
// sharded link, to wake it. r.mu is held.
func (r *Redis) removeFromSlotLocked(c *redisChan) *psLink {
	if set := r.bySlot[c.slot]; set[c.name] == c {
		delete(set, c.name)
		if len(set) == 0 {
			delete(r.bySlot, c.slot)
		}
	}
	return r.slotLinks[c.slot]
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

// runClusterHealth pings every master of the cluster: the stream part of
// Healthy with a cluster, whose stream readers come and go with slots.
func (r *Redis) runClusterHealth(ctx context.Context) {
	defer r.wg.Done()
	attempt := 0
	for {
		err := r.timed(ctx, func(ctx context.Context) error {
			return r.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
				return c.Ping(ctx).Err()
			})
		})
		if ctx.Err() != nil {
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
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}
