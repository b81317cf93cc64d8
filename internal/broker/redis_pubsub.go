package broker

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Pub/sub runs in sessions: one session is one go-redis PubSub. The
// reader (runPubSub) owns the session: it opens it, reads every reply,
// and on any error closes it and opens a new one after a backoff. The
// writer (runPubSubWriter) makes the session's subscriptions match the
// channels in use: it sends the SUBSCRIBEs and UNSUBSCRIBEs, in order,
// so the hub's Unsubscribe never waits on the network.
//
// A channel's first subscribe confirmation makes it ready (Subscribe
// returns); every later confirmation means its subscription was made
// again (a new session, or go-redis reconnecting the connection on its
// own), so messages may have been lost meanwhile: the reader calls
// Handler.Gap and starts a new epoch, before it delivers any message of
// the new subscription. The writer never SUBSCRIBEs a channel twice in a
// session, so a repeated confirmation is always a resubscription.

// psLink is one pub/sub connection and its sessions: the classic link
// (SUBSCRIBE, every channel in use), or with a Redis Cluster the sharded
// link of one hash slot (SSUBSCRIBE, the slot's channels in use, on the
// master owning the slot: go-redis routes the connection by the slot of
// its channels, on reconnect too).
type psLink struct {
	sharded bool
	slot    int
	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{} // reconcile the subscriptions

	// guarded by Redis.mu
	dead bool // retired (a sharded link whose slot has no channel left)
	// the current session, nil between sessions
	ps           *redis.PubSub
	keys         map[string]bool // channels SUBSCRIBEd on ps
	live         map[string]bool // channels whose SUBSCRIBE ps confirmed
	unsubPending map[string]int  // UNSUBSCRIBEs sent on ps, not yet answered
}

// errIdle ends the session of a link or reader that has nothing to do.
var errIdle = errors.New("no channel left")

func (r *Redis) runPubSub(l *psLink) {
	defer r.wg.Done()
	attempt := 0
	for {
		err := r.pubsubSession(l, &attempt)
		if l.ctx.Err() != nil {
			return
		}
		if l.sharded {
			if err != errIdle {
				r.log.Warn("redis sharded pub/sub connection", zap.Int("slot", l.slot), zap.Error(err))
			}
			r.cluster.ReloadState(l.ctx)
		} else {
			r.setHealth(partPubSub, false, err)
		}
		if !sleepCtx(l.ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

func (r *Redis) pubsubSession(l *psLink, attempt *int) error {
	var ps *redis.PubSub
	if l.sharded {
		ps = r.cluster.SSubscribe(l.ctx) // connects on the first SSUBSCRIBE
	} else {
		ps = r.uc.Subscribe(l.ctx) // connects on first use
	}
	r.mu.Lock()
	if r.closed || l.dead {
		r.mu.Unlock()
		_ = ps.Close()
		return errors.New("closed")
	}
	l.ps = ps
	l.keys = make(map[string]bool)
	l.live = make(map[string]bool)
	l.unsubPending = make(map[string]int)
	var first []string
	if l.sharded {
		// the first SSUBSCRIBE routes the connection to the slot's master
		for name := range r.bySlot[l.slot] {
			l.keys[name] = true
			first = append(first, r.key(name))
		}
		if len(first) == 0 {
			r.retireLinkLocked(l)
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if l.ps == ps {
			l.ps, l.keys, l.live, l.unsubPending = nil, nil, nil, nil
		}
		r.mu.Unlock()
		_ = ps.Close()
	}()

	if l.sharded {
		if len(first) == 0 {
			return errIdle
		}
		if err := r.confirmMaster(l.ctx, first[0]); err != nil {
			return err
		}
		for len(first) > 0 {
			n := min(len(first), subscribeBatch)
			ctx, cancel := context.WithTimeout(l.ctx, r.opts.Timeout)
			err := ps.SSubscribe(ctx, first[:n]...)
			cancel()
			if err != nil {
				return err
			}
			first = first[n:]
		}
	} else {
		ctx, cancel := context.WithTimeout(l.ctx, r.opts.Timeout)
		err := ps.Ping(ctx) // connects; the PONG marks the session healthy
		cancel()
		if err != nil {
			return err
		}
	}
	signal(l.wake)

	up := false
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(l.ctx, r.opts.HealthCheck)
		if err != nil {
			if !isTimeout(err) || l.ctx.Err() != nil {
				return err
			}
			if pinged {
				return errors.New("pub/sub connection: no answer to ping")
			}
			pinged = true
			ctx, cancel := context.WithTimeout(l.ctx, r.opts.Timeout)
			err = ps.Ping(ctx)
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		pinged = false
		if !up {
			up = true
			*attempt = 0
			if !l.sharded {
				r.setHealth(partPubSub, true, nil)
			}
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
	r.mu.Lock()
	if l.ps != ps {
		r.mu.Unlock()
		return nil
	}
	switch s.Kind {
	case "unsubscribe", "sunsubscribe":
		if n := l.unsubPending[name]; n > 1 {
			l.unsubPending[name] = n - 1
		} else if n == 1 {
			delete(l.unsubPending, name)
		} else if l.sharded && l.keys[name] {
			// not asked for: the slot moved to another master (Redis
			// drops the sharded subscriptions of a slot it loses); a new
			// session subscribes where the slot is now
			r.mu.Unlock()
			return errors.New("sharded subscription of " + name + " dropped by redis (slot moved)")
		}
		r.mu.Unlock()
		return nil
	case "subscribe", "ssubscribe":
	default:
		r.mu.Unlock()
		return nil
	}
	if l.unsubPending[name] > 0 {
		// answers a SUBSCRIBE sent before an UNSUBSCRIBE still on its way
		r.mu.Unlock()
		return nil
	}
	l.live[name] = true
	c := r.chans[name]
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() {
		return nil
	}
	var was bool
	if l.sharded {
		was, c.spsReady = c.spsReady, true
	} else {
		was, c.psReady = c.psReady, true
	}
	if !was {
		if !c.live && c.psReady && c.spsReady {
			c.live = true
			c.epoch = NewEpoch()
			c.seq = 0
			close(c.ready)
		}
		return nil
	}
	if !c.live {
		return nil // nothing delivered yet
	}
	c.epoch = NewEpoch()
	c.seq = 0
	r.h.Gap(name, "gap", FormatNodeID(c.epoch, 0))
	return nil
}

func (r *Redis) onMessage(pm *redis.Message) {
	name, ok := r.channelOf(pm.Channel)
	if !ok {
		return
	}
	now := time.Now()
	r.mu.RLock()
	c := r.chans[name]
	r.mu.RUnlock()
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
		ID:       FormatNodeID(c.epoch, c.seq),
		Data:     []byte(pm.Payload),
		Source:   SourcePubSub,
		Received: now,
		Arrival:  nextArrival(),
	})
}

// runPubSubWriter sends the SUBSCRIBEs and UNSUBSCRIBEs that make the
// session's subscriptions match the channels in use.
func (r *Redis) runPubSubWriter(l *psLink) {
	defer r.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.wake:
		}
		r.reconcile(l)
	}
}

func (r *Redis) reconcile(l *psLink) {
	r.mu.Lock()
	ps := l.ps
	if ps == nil {
		r.mu.Unlock()
		return
	}
	inUse := r.chans
	if l.sharded {
		inUse = r.bySlot[l.slot]
		if len(inUse) == 0 && r.retireLinkLocked(l) {
			r.mu.Unlock()
			return
		}
	}
	var subs, unsubs []string
	for name := range l.keys {
		if inUse[name] == nil {
			unsubs = append(unsubs, r.key(name))
			delete(l.keys, name)
			delete(l.live, name)
			l.unsubPending[name]++
		}
	}
	for name := range inUse {
		if !l.keys[name] {
			subs = append(subs, r.key(name))
			l.keys[name] = true
		}
	}
	r.mu.Unlock()
	unsubscribe, subscribe := ps.Unsubscribe, ps.Subscribe
	if l.sharded {
		unsubscribe, subscribe = ps.SUnsubscribe, ps.SSubscribe
	}
	// errors are the reader's business: it sees the broken connection
	for len(unsubs) > 0 {
		n := min(len(unsubs), subscribeBatch)
		ctx, cancel := context.WithTimeout(l.ctx, r.opts.Timeout)
		_ = unsubscribe(ctx, unsubs[:n]...)
		cancel()
		unsubs = unsubs[n:]
	}
	for len(subs) > 0 {
		n := min(len(subs), subscribeBatch)
		ctx, cancel := context.WithTimeout(l.ctx, r.opts.Timeout)
		_ = subscribe(ctx, subs[:n]...)
		cancel()
		subs = subs[n:]
	}
}
