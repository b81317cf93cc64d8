package broker

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pub/sub runs in sessions: one session is one go-redis PubSub. The
// reader (pubsubSession) owns the session: it opens it, reads every
// reply, and on any error closes it; the worker opens a new one after a
// backoff. The writer (reconcile) makes the session's subscriptions match
// the channels in use: it sends the SUBSCRIBEs and UNSUBSCRIBEs, in
// order, so the hub's Unsubscribe never waits on the network.
//
// A channel's first subscribe confirmation makes it ready (Subscribe
// returns); every later confirmation means its subscription was made
// again (a new session, or go-redis reconnecting the connection on its
// own), so messages may have been lost meanwhile: the reader calls
// Handler.Gap and starts a new epoch, before it delivers any message of
// the new subscription. The writer never SUBSCRIBEs a channel twice in a
// session, so a repeated confirmation is always a resubscription.

// subscribeBatch is how many channels one (UN)SUBSCRIBE command names at
// most.
const subscribeBatch = 512

// psLink is one pub/sub connection and its sessions: the classic link
// (SUBSCRIBE, every channel in use), or with a Redis Cluster the sharded
// link of one hash slot (SSUBSCRIBE, the slot's channels in use, on the
// master owning the slot: go-redis routes the connection by the slot of
// its channels, on reconnect too).
type psLink struct {
	worker

	// guarded by Redis.mu: the current session, nil between sessions
	ps           *redis.PubSub
	keys         map[string]bool // channels SUBSCRIBEd on ps
	live         map[string]bool // channels whose SUBSCRIBE ps confirmed
	unsubPending map[string]int  // UNSUBSCRIBEs sent on ps, not yet answered
	// the channels whose use changed since reconcile last ran: it looks
	// at these only, so that a subscribe costs the same however many
	// channels are in use
	dirty map[string]struct{}
}

// markLocked records that the use of channel name changed, for the
// writer of l. r.mu is held.
func (l *psLink) markLocked(name string) {
	if l.dirty == nil {
		l.dirty = make(map[string]struct{})
	}
	l.dirty[name] = struct{}{}
}

// startLink starts the reader and the writer of l.
func (r *Redis) startLink(ctx context.Context, l *psLink) {
	r.wg.Add(2)
	go r.supervise(ctx, &l.worker, "redis sharded pub/sub connection", func(ctx context.Context, _ bool, up func()) error {
		return r.pubsubSession(ctx, l, up)
	})
	go r.runOnWake(ctx, l.wake, func(ctx context.Context) { r.reconcile(ctx, l) })
}

// pubsubSession opens a session of l and reads its replies until it
// fails.
func (r *Redis) pubsubSession(ctx context.Context, l *psLink, up func()) error {
	ps, first, err := r.openSession(ctx, l)
	if err != nil {
		return err
	}
	defer func() {
		r.mu.Lock()
		if l.ps == ps {
			l.ps, l.keys, l.live, l.unsubPending = nil, nil, nil, nil
		}
		r.mu.Unlock()
		_ = ps.Close()
	}()
	if err := r.connectSession(ctx, l, ps, first); err != nil {
		return err
	}
	signal(l.wake)
	return r.receive(ctx, l, ps, up)
}

// openSession makes a new go-redis PubSub the session of l. A sharded
// link records the channels of its slot as subscribed, and returns their
// keys to be SSUBSCRIBEd first: the first SSUBSCRIBE routes the
// connection to the slot's master. With no channel left it is retired.
func (r *Redis) openSession(ctx context.Context, l *psLink) (ps *redis.PubSub, first []string, err error) {
	if l.sharded {
		ps = r.cluster.SSubscribe(ctx) // connects on the first SSUBSCRIBE
	} else {
		ps = r.uc.Subscribe(ctx) // connects on first use
	}
	r.mu.Lock()
	if r.closed || l.dead {
		r.mu.Unlock()
		_ = ps.Close()
		return nil, nil, errors.New("closed")
	}
	l.ps = ps
	l.keys = make(map[string]bool)
	l.live = make(map[string]bool)
	l.unsubPending = make(map[string]int)
	l.dirty = nil
	if !l.sharded {
		// the writer subscribes them all
		for name := range r.chans {
			l.markLocked(name)
		}
	} else {
		for name := range r.bySlot[l.slot] {
			l.keys[name] = true
			first = append(first, r.key(name))
		}
		if len(first) == 0 {
			r.retireLinkLocked(l)
		}
	}
	r.mu.Unlock()
	return ps, first, nil
}

// connectSession connects ps: a classic link sends a PING, whose PONG
// marks the session up; a sharded link SSUBSCRIBEs the channels of its
// slot, once it has made sure of the slot's master.
func (r *Redis) connectSession(ctx context.Context, l *psLink, ps *redis.PubSub, first []string) error {
	if !l.sharded {
		return r.timed(ctx, func(ctx context.Context) error { return ps.Ping(ctx) })
	}
	if len(first) == 0 {
		return errIdle
	}
	if err := r.confirmMaster(ctx, first[0]); err != nil {
		return err
	}
	for batch := range slices.Chunk(first, subscribeBatch) {
		if err := r.timed(ctx, func(ctx context.Context) error { return ps.SSubscribe(ctx, batch...) }); err != nil {
			return err
		}
	}
	return nil
}

// receive reads the replies of ps until it fails: a connection silent
// for HealthCheck is pinged, and given up if it stays silent for another.
// The first reply calls up.
func (r *Redis) receive(ctx context.Context, l *psLink, ps *redis.PubSub, up func()) error {
	connected, pinged := false, false
	for {
		msg, err := ps.ReceiveTimeout(ctx, r.opts.HealthCheck)
		if err != nil {
			if !isTimeout(err) || ctx.Err() != nil {
				return err
			}
			if pinged {
				return errors.New("pub/sub connection: no answer to ping")
			}
			pinged = true
			if err := r.timed(ctx, func(ctx context.Context) error { return ps.Ping(ctx) }); err != nil {
				return err
			}
			continue
		}
		pinged = false
		if !connected {
			connected = true
			up()
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.onMessage(m)
		case *redis.Subscription:
			if err := r.onSubscription(l, ps, m); err != nil {
				return err
			}
		}
	}
}

func (r *Redis) onSubscription(l *psLink, ps *redis.PubSub, s *redis.Subscription) error {
	name, ok := r.channelOf(s.Channel)
	if !ok {
		return nil
	}
	switch s.Kind {
	case "unsubscribe", "sunsubscribe":
		return r.onUnsubscribed(l, ps, name)
	case "subscribe", "ssubscribe":
		r.onSubscribed(l, ps, name)
	}
	return nil
}

// onUnsubscribed accounts for an unsubscribe confirmation of the session
// ps. One that l did not ask for, of a sharded subscription, means that
// the slot moved to another master (Redis drops the sharded
// subscriptions of a slot it loses): the session ends, and the next one
// subscribes where the slot is now.
func (r *Redis) onUnsubscribed(l *psLink, ps *redis.PubSub, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.ps != ps {
		return nil
	}
	switch n := l.unsubPending[name]; {
	case n > 1:
		l.unsubPending[name] = n - 1
	case n == 1:
		delete(l.unsubPending, name)
	case l.sharded && l.keys[name]:
		return errors.New("sharded subscription of " + name + " dropped by redis (slot moved)")
	}
	return nil
}

// onSubscribed records a subscribe confirmation of the session ps and
// hands it to the channel, unless it answers a SUBSCRIBE sent before an
// UNSUBSCRIBE still on its way.
func (r *Redis) onSubscribed(l *psLink, ps *redis.PubSub, name string) {
	r.mu.Lock()
	if l.ps != ps || l.unsubPending[name] > 0 {
		r.mu.Unlock()
		return
	}
	l.live[name] = true
	c := r.chans[name]
	r.mu.Unlock()
	if c != nil {
		r.confirm(c, l.sharded)
	}
}

// confirm records that c's subscription on the classic or a sharded link
// is confirmed. The first confirmation of both makes c ready and starts
// its first epoch; a later one is a resubscription, reported with a gap
// and a new epoch.
func (r *Redis) confirm(c *redisChan, sharded bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() {
		return
	}
	ready := &c.psReady
	if sharded {
		ready = &c.spsReady
	}
	was := *ready
	*ready = true
	switch {
	case !was:
		if !c.live && c.psReady && c.spsReady {
			c.live = true
			c.epoch, c.seq = newEpoch(), 0
			close(c.ready)
		}
	case c.live: // else nothing was delivered yet
		c.epoch, c.seq = newEpoch(), 0
		r.h.Gap(c.name, "gap", formatNodeID(c.epoch, 0))
	}
}

func (r *Redis) onMessage(pm *redis.Message) {
	name, ok := r.channelOf(pm.Channel)
	if !ok {
		return
	}
	now := time.Now()
	c := r.lookup(name)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() || !c.live {
		return
	}
	c.seq++
	r.h.Deliver(&Message{
		Channel:  name,
		ID:       formatNodeID(c.epoch, c.seq),
		Data:     []byte(pm.Payload),
		Source:   SourcePubSub,
		Received: now,
		Arrival:  nextArrival(),
	})
}

// reconcile is the writer of l: it sends the SUBSCRIBEs and UNSUBSCRIBEs
// that make the session's subscriptions match the channels in use. It
// runs whenever l is woken, and looks at the channels whose use changed
// since it last ran.
func (r *Redis) reconcile(ctx context.Context, l *psLink) {
	r.mu.Lock()
	ps := l.ps
	inUse := r.linkChansLocked(l)
	if ps == nil || (len(inUse) == 0 && r.retireLinkLocked(l)) {
		r.mu.Unlock()
		return
	}
	var subs, unsubs []string
	for name := range l.dirty {
		switch used := inUse[name] != nil; {
		case !used && l.keys[name]:
			unsubs = append(unsubs, r.key(name))
			delete(l.keys, name)
			delete(l.live, name)
			l.unsubPending[name]++
		case used && !l.keys[name]:
			subs = append(subs, r.key(name))
			l.keys[name] = true
		}
	}
	l.dirty = nil
	r.mu.Unlock()
	unsubscribe, subscribe := ps.Unsubscribe, ps.Subscribe
	if l.sharded {
		unsubscribe, subscribe = ps.SUnsubscribe, ps.SSubscribe
	}
	// errors are the reader's business: it sees the broken connection
	for batch := range slices.Chunk(unsubs, subscribeBatch) {
		_ = r.timed(ctx, func(ctx context.Context) error { return unsubscribe(ctx, batch...) })
	}
	for batch := range slices.Chunk(subs, subscribeBatch) {
		_ = r.timed(ctx, func(ctx context.Context) error { return subscribe(ctx, batch...) })
	}
}
