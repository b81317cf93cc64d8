package presence

import (
	"context"
	"sync"
	"time"
)

// maxSnapshotReads bounds the presence reads that run at once on a node.
const maxSnapshotReads = 8

// snapshots bounds what the presence endpoint lets clients make the
// store do. Reading a channel's presence costs the store work in
// proportion to the channel's members (with Redis: a script and an
// HGETALL), and any client holding a ticket for the channel may ask.
// Requests for one channel share reads: a request is answered by the
// first read that starts after it arrived (never by an older answer, so
// a client that asks once it is subscribed sees every join before its
// subscription), which makes at most one read per channel run at a time
// with at most one more queued behind it, whatever the request rate; and
// at most maxSnapshotReads reads run at once on the node.
type snapshots struct {
	mu    sync.Mutex
	byCh  map[string]*channelReads // channels with a read running
	reads chan struct{}            // a slot per read running
}

// channelReads is the read of one channel that runs and the one queued
// behind it (nil if none), which serves everyone who asked meanwhile.
type channelReads struct {
	running, next *snapshot
}

// snapshot is one read of a channel's presence.
type snapshot struct {
	ready chan struct{} // closed when snap and err are set
	asked int           // requests it answers (under snapshots.mu)
	snap  Snapshot
	err   error
}

func newSnapshots() *snapshots {
	return &snapshots{byCh: make(map[string]*channelReads), reads: make(chan struct{}, maxSnapshotReads)}
}

// get returns channel's presence as read, within timeout, by read, in
// a read that starts after get is called. The returned Snapshot is
// shared: callers must not modify it.
func (s *snapshots) get(ctx context.Context, channel string, timeout time.Duration, read func(context.Context) (Snapshot, error)) (Snapshot, error) {
	s.mu.Lock()
	cr := s.byCh[channel]
	var sn *snapshot
	switch {
	case cr == nil:
		sn = &snapshot{ready: make(chan struct{})}
		s.byCh[channel] = &channelReads{running: sn}
		go s.run(channel, sn, timeout, read)
	case cr.next == nil:
		// the running read may have started before this request: wait
		// for the one after it
		sn = &snapshot{ready: make(chan struct{})}
		cr.next = sn
	default:
		sn = cr.next
	}
	sn.asked++
	s.mu.Unlock()
	select {
	case <-sn.ready:
		return sn.snap, sn.err
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	}
}

// run reads channel's presence into sn, then the next queued read, if
// any. It is not bound to one request: its answer serves everyone who
// waits for it.
func (s *snapshots) run(channel string, sn *snapshot, timeout time.Duration, read func(context.Context) (Snapshot, error)) {
	for sn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		select {
		case s.reads <- struct{}{}:
			sn.snap, sn.err = read(ctx)
			<-s.reads
		case <-ctx.Done():
			sn.err = ctx.Err()
		}
		cancel()
		close(sn.ready)

		s.mu.Lock()
		cr := s.byCh[channel]
		sn, cr.running, cr.next = cr.next, cr.next, nil
		if sn == nil {
			delete(s.byCh, channel)
		}
		s.mu.Unlock()
	}
}
