package broker

import (
	"context"
	"maps"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Stream readers share out the channels of a slot (of the one slot of a
// single server) by readerSize at most: a change of a reader's channel
// set sends a new XREAD naming its channels, which costs Redis and this
// node in proportion to their number, so a subscribe must not touch a
// reader of every channel in use. A new channel goes to a reader of its
// slot with room, or to a new reader when every one is full; a reader
// left with no channel is retired, except the primary reader of a single
// server and one reader with room per slot, kept as a spare so that a
// client subscribing and leaving again does not dial a connection each
// time.
const (
	readerSize = 256
	// maxReaders bounds the readers of a single server: the pool of its
	// readerClient (1<<14 readers hold 4M channels).
	maxReaders = 1 << 14
)

// newReaderLocked starts a stream reader of the channels of w.slot, with
// room for readerSize of them. r.mu is held.
func (r *Redis) newReaderLocked(ctx context.Context, w worker) *streamReader {
	w.wake = make(chan struct{}, 1)
	sr := &streamReader{worker: w, chans: make(map[string]*redisChan)}
	r.readers[sr] = struct{}{}
	r.setRoomLocked(sr, true)
	r.startReader(ctx, sr)
	return sr
}

// setRoomLocked records whether sr has room for another channel. r.mu is
// held.
func (r *Redis) setRoomLocked(sr *streamReader, room bool) {
	set := r.roomy[sr.slot]
	switch {
	case room && set == nil:
		r.roomy[sr.slot] = map[*streamReader]struct{}{sr: {}}
	case room:
		set[sr] = struct{}{}
	default:
		delete(set, sr)
		if len(set) == 0 {
			delete(r.roomy, sr.slot)
		}
	}
}

// placeLocked gives c to a stream reader of its slot with room, started
// if there is none, and returns it. r.mu is held.
func (r *Redis) placeLocked(c *redisChan) *streamReader {
	var sr *streamReader
	for sr = range r.roomy[c.slot] {
		break
	}
	if sr == nil {
		ctx, cancel := context.WithCancel(context.Background())
		sr = r.newReaderLocked(ctx, worker{sharded: r.cluster != nil, slot: c.slot, cancel: cancel})
	}
	sr.chans[c.name] = c
	c.reader = sr
	if len(sr.chans) >= readerSize {
		r.setRoomLocked(sr, false)
	}
	r.changedLocked(sr)
	return sr
}

// unplaceLocked takes c from its stream reader and returns that reader,
// to wake it; nil if c has none. r.mu is held.
func (r *Redis) unplaceLocked(c *redisChan) *streamReader {
	sr := c.reader
	if sr == nil || sr.chans[c.name] != c {
		return nil
	}
	delete(sr.chans, c.name)
	if !sr.dead {
		r.setRoomLocked(sr, true)
	}
	r.changedLocked(sr)
	return sr
}

// changedLocked records a change of sr's channel set: its blocked XREAD,
// if any, is stale, and the kicker interrupts it. r.mu is held.
func (r *Redis) changedLocked(sr *streamReader) {
	sr.gen++
	r.stale[sr] = struct{}{}
}

// retireReaderLocked stops sr when it has no channel left and is neither
// the primary reader nor its slot's spare (the one reader with room, in
// a slot that still has channels on this node), and forgets it. It
// reports whether sr is stopped. r.mu is held.
func (r *Redis) retireReaderLocked(sr *streamReader) bool {
	if sr.dead {
		return true
	}
	if sr.primary || len(sr.chans) > 0 {
		return false
	}
	slotEmpty := r.cluster != nil && len(r.bySlot[sr.slot]) == 0
	if !slotEmpty && len(r.roomy[sr.slot]) < 2 {
		return false
	}
	sr.dead = true
	sr.cancel()
	delete(r.readers, sr)
	delete(r.stale, sr)
	r.setRoomLocked(sr, false)
	return true
}

// readerChans returns the channels sr reads.
func (r *Redis) readerChans(sr *streamReader) []*redisChan {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Collect(maps.Values(sr.chans))
}

// kickStale is the kicker, run whenever a channel set changes: it
// interrupts the blocked XREAD of each stream reader whose channel set
// changed since the reader sent it. CLIENT UNBLOCK answers 0 when an
// XREAD has not reached Redis yet; it is retried then, shortly, until
// every reader is blocked on its current set or not blocked at all.
func (r *Redis) kickStale(ctx context.Context) {
	for delay := minUnblockRetry; r.unblockStale(ctx); delay = min(2*delay, maxUnblockRetry) {
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// unblockStale sends CLIENT UNBLOCK for every reader blocked on a stale
// channel set, to the server the reader is on, and forgets the readers
// that are not (a reader that is not blocked reads its current set before
// it blocks again). It reports whether some XREAD had not reached Redis
// yet.
func (r *Redis) unblockStale(ctx context.Context) (retry bool) {
	type target struct {
		id   int64
		node *redis.Client
	}
	var ts []target
	r.mu.Lock()
	for sr := range r.stale {
		if sr.blocking && sr.sentGen != sr.gen && sr.id != 0 && sr.node != nil {
			ts = append(ts, target{sr.id, sr.node})
		} else {
			delete(r.stale, sr)
		}
	}
	r.mu.Unlock()
	for _, t := range ts {
		var n int64
		err := r.timed(ctx, func(ctx context.Context) (err error) {
			n, err = t.node.ClientUnblock(ctx, t.id).Result()
			return err
		})
		if err == nil && n == 0 {
			retry = true
		}
	}
	return retry
}
