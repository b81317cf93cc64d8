package broker

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
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

func (r *Redis) runPubSub() {
	defer r.wg.Done()
	attempt := 0
	for {
		err := r.pubsubSession(&attempt)
		if r.ctx.Err() != nil {
			return
		}
		r.setHealth(partPubSub, false, err)
		if !sleepCtx(r.ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

func (r *Redis) pubsubSession(attempt *int) error {
	ps := r.client.Subscribe(r.ctx) // connects on first use
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = ps.Close()
		return errors.New("closed")
	}
	r.ps = ps
	r.psKeys = make(map[string]bool)
	r.psLive = make(map[string]bool)
	r.unsubPending = make(map[string]int)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.ps == ps {
			r.ps, r.psKeys, r.psLive, r.unsubPending = nil, nil, nil, nil
		}
		r.mu.Unlock()
		_ = ps.Close()
	}()

	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	err := ps.Ping(ctx) // connects; the PONG marks the session healthy
	cancel()
	if err != nil {
		return err
	}
	signal(r.psWake)

	up := false
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(r.ctx, r.opts.HealthCheck)
		if err != nil {
			if !isTimeout(err) || r.ctx.Err() != nil {
				return err
			}
			if pinged {
				return errors.New("pub/sub connection: no answer to ping")
			}
			pinged = true
			ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
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
			r.setHealth(partPubSub, true, nil)
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.onMessage(m)
		case *redis.Subscription:
			r.onSubscription(ps, m)
		}
	}
}

func (r *Redis) onSubscription(ps *redis.PubSub, s *redis.Subscription) {
	name, ok := r.channelOf(s.Channel)
	if !ok {
		return
	}
	r.mu.Lock()
	if r.ps != ps {
		r.mu.Unlock()
		return
	}
	switch s.Kind {
	case "unsubscribe":
		if n := r.unsubPending[name]; n > 1 {
			r.unsubPending[name] = n - 1
		} else {
			delete(r.unsubPending, name)
		}
		r.mu.Unlock()
		return
	case "subscribe":
	default:
		r.mu.Unlock()
		return
	}
	if r.unsubPending[name] > 0 {
		// answers a SUBSCRIBE sent before an UNSUBSCRIBE still on its way
		r.mu.Unlock()
		return
	}
	r.psLive[name] = true
	c := r.chans[name]
	r.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() {
		return
	}
	c.epoch = NewEpoch()
	c.seq = 0
	if !c.psReady {
		c.psReady = true
		close(c.ready)
		return
	}
	r.h.Gap(name, "gap", FormatNodeID(c.epoch, 0))
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
	if c.gone.Load() || !c.psReady {
		return
	}
	c.seq++
	r.h.Deliver(&Message{
		Channel:  name,
		ID:       FormatNodeID(c.epoch, c.seq),
		Data:     []byte(pm.Payload),
		Source:   SourcePubSub,
		Received: now,
	})
}

// runPubSubWriter sends the SUBSCRIBEs and UNSUBSCRIBEs that make the
// session's subscriptions match the channels in use.
func (r *Redis) runPubSubWriter() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.psWake:
		}
		r.reconcile()
	}
}

func (r *Redis) reconcile() {
	r.mu.Lock()
	ps := r.ps
	if ps == nil {
		r.mu.Unlock()
		return
	}
	var subs, unsubs []string
	for name := range r.psKeys {
		if r.chans[name] == nil {
			unsubs = append(unsubs, r.key(name))
			delete(r.psKeys, name)
			delete(r.psLive, name)
			r.unsubPending[name]++
		}
	}
	for name := range r.chans {
		if !r.psKeys[name] {
			subs = append(subs, r.key(name))
			r.psKeys[name] = true
		}
	}
	r.mu.Unlock()
	// errors are the reader's business: it sees the broken connection
	for len(unsubs) > 0 {
		n := min(len(unsubs), subscribeBatch)
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
		_ = ps.Unsubscribe(ctx, unsubs[:n]...)
		cancel()
		unsubs = unsubs[n:]
	}
	for len(subs) > 0 {
		n := min(len(subs), subscribeBatch)
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
		_ = ps.Subscribe(ctx, subs[:n]...)
		cancel()
		subs = subs[n:]
	}
}
