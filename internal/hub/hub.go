// Package hub keeps this node's subscriptions and fans each message out to
// the subscribers of its channel.
//
// The delivery path is built for many thousands of subscribers per node:
// channels are kept in sharded maps, each channel's subscriber list is a
// copy-on-write slice read without a lock, each message is wrapped once in
// an Envelope whose encodings are shared by all subscribers, and the
// fan-out runs on one lane goroutine per CPU, each serving a fixed part of
// every channel's subscribers (so each subscriber gets its messages in
// order). A lane writes a message straight to an idle connection when the
// socket takes it at once (see Sink), and otherwise pushes it into the
// subscriber's bounded queue, never waiting; the connection's goroutine
// then writes what is queued in one batch. A subscriber that falls too
// far behind is dropped (it can resume with its last id) rather than
// slowing the others.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/replay"
	"go.uber.org/zap"
)

// Observer receives the hub's events for metrics. Methods must be cheap
// and safe for concurrent use.
type Observer interface {
	MessageReceived(src broker.Source)
	// Delivered: e was written to n clients of transport, one by a
	// session's goroutine or a batch by a fan-out lane.
	Delivered(transport string, e *Envelope, n int)
	SlowConsumer()
	// Reset: a client was told it may have missed messages.
	Reset(reason string)
	// Resumed: a client's missed messages were read from "cache" (this
	// node's replay cache) or "redis" (a stream).
	Resumed(from string)
	// Refused: a message from Redis was not delivered, for reason
	// ("bad_request": its event name).
	Refused(reason string)
}

// Presence counts subscriptions per channel and sub (see package
// presence). Its methods must not block.
type Presence interface {
	Join(channel, sub string)
	Leave(channel, sub string)
}

type nopObserver struct{}

func (nopObserver) MessageReceived(broker.Source)    {}
func (nopObserver) Delivered(string, *Envelope, int) {}
func (nopObserver) SlowConsumer()                    {}
func (nopObserver) Reset(string)                     {}
func (nopObserver) Resumed(string)                   {}
func (nopObserver) Refused(string)                   {}

// Options configures a Hub.
type Options struct {
	// QueueSize is how many messages may wait for one subscriber before
	// it is dropped as a slow consumer. Default 512.
	QueueSize int
	// Linger is how long a channel stays subscribed at the broker after
	// its last local subscriber left, so that a client that reconnects
	// finds what it missed (the replay ttl). Zero unsubscribes at once.
	Linger time.Duration
	// IdleChannels bounds the channels kept without a subscriber (for
	// Linger); past it, the one idle the longest is dropped. Zero or
	// less: no bound.
	IdleChannels int
	// Rules, when set, give each channel's settings (the `channels`
	// rules); a channel's replay ttl is then its Linger.
	Rules *rules.Set
	// Presence, when set, counts the subscriptions of the channels
	// whose rule tracks them.
	Presence Presence
	// Replay, if set, keeps every message the hub receives so that
	// clients can resume.
	Replay   *replay.Cache
	Logger   *zap.Logger
	Observer Observer
}

const shardCount = 64

// Hub is the registry of this node's subscriptions. It implements
// broker.Handler: the broker hands it every message of the channels in
// use.
type Hub struct {
	id     string // tells this hub's control messages from other nodes'
	broker broker.Broker
	opts   Options
	seed   maphash.Seed
	shards [shardCount]shard

	lanes    []chan fanOutJob // at most 16: a lane set fits in a uint64 below
	lanesWG  sync.WaitGroup
	nextLane atomic.Uint32

	idleChannels
	badEvents badEvents

	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

// fanOutJob is one message for one lane to deliver to its part of subs.
type fanOutJob struct {
	e    *Envelope
	subs []member
}

// member is one subscriber of a channel, with its lane beside it: a lane
// scans the list without touching the other lanes' subscribers. gone
// (atomic) marks a subscriber that left, until the list is compacted
// (see channel.removeSub).
type member struct {
	s    *subscriber
	lane uint32
	gone uint32
}

// left reports whether m's subscriber left the channel.
func (m *member) left() bool { return atomic.LoadUint32(&m.gone) != 0 }

// laneQueue is how many messages may wait for a lane before the broker's
// reader waits for it.
const laneQueue = 1024

// New returns a hub; SetBroker must be called before Subscribe. The hub
// is created first because the broker needs it as its Handler.
func New(opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 512
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	h := &Hub{id: rand.Text(), opts: opts, seed: maphash.MakeSeed(), closed: make(chan struct{})}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]*channel)
	}
	h.lanes = make([]chan fanOutJob, min(max(runtime.GOMAXPROCS(0), 1), 16))
	for i := range h.lanes {
		h.lanes[i] = make(chan fanOutJob, laneQueue)
		h.lanesWG.Add(1)
		go h.runLane(uint32(i))
	}
	return h
}

// runLane delivers messages to the lane's part of each channel's
// subscribers, in order, until the hub closes.
func (h *Hub) runLane(lane uint32) {
	defer h.lanesWG.Done()
	jobs := h.lanes[lane]
	var t tally // the lane's own: its counts are reported in batches
	for {
		select {
		case j := <-jobs:
			// with more messages waiting, queue rather than write: the
			// subscribers' goroutines then send several in one write
			h.fanOut(lane, j.e, j.subs, len(jobs) == 0, &t)
		case <-h.closed:
			return
		}
	}
}

// fanOut delivers e to the subscribers of lane among subs, counting the
// writes in the lane's tally t.
func (h *Hub) fanOut(lane uint32, e *Envelope, subs []member, direct bool, t *tally) {
	pushed := 0
	for i := range subs {
		m := &subs[i]
		if m.lane != lane || m.left() {
			continue
		}
		if m.s.push(e, direct, t) {
			h.opts.Observer.SlowConsumer()
		}
		if pushed++; direct && pushed%yieldEvery == 0 {
			// writing to many thousands of sockets takes tens of
			// milliseconds: yield now and then, so that the runtime
			// does not preempt the lane by signal (it does past 10ms).
			// Not when queueing: that is quick, and a yield would put
			// the lane behind every subscriber goroutine it just woke.
			// The writes so far are reported first, so that metrics
			// time each batch when it went out.
			t.flush(h.opts.Observer, e)
			runtime.Gosched()
		}
	}
	t.flush(h.opts.Observer, e)
}

// yieldEvery is how many subscribers a lane serves between yields: a
// few milliseconds' worth of writes.
const yieldEvery = 256

// SetBroker sets the message bus the hub subscribes channels at.
func (h *Hub) SetBroker(b broker.Broker) { h.broker = b }

// SetPresence sets what counts the subscriptions of tracked channels
// (made after the broker, which it may use), before any Subscribe.
func (h *Hub) SetPresence(p Presence) { h.opts.Presence = p }

func (h *Hub) shard(name string) *shard {
	return &h.shards[maphash.String(h.seed, name)%shardCount]
}

// Client says who subscribes.
type Client struct {
	// Transport serves the subscription: "sse", "ws", "longpoll" (a
	// name for metrics and the admin API).
	Transport string
	// Sub is the subject of the client's ticket, "" without one: the
	// admin API disconnects by it.
	Sub string
}

// Subscribe registers a session of client for channels and returns once
// every channel is confirmed live at the broker: from then on, nothing
// published to them is missed. The session starts where from says (see
// ParseFrom), with the messages the client missed to send first. The
// caller must Close it.
func (h *Hub) Subscribe(ctx context.Context, channels []string, client Client, from From) (*Session, error) {
	s, err := h.subscribe(ctx, channels, client)
	if err != nil {
		return nil, err
	}
	return h.resume(ctx, s, from), nil
}

// subscribe registers a subscriber for channels at the broker.
func (h *Hub) subscribe(ctx context.Context, channels []string, client Client) (*subscriber, error) {
	s := newSubscriber(h, channels, client, h.opts.QueueSize)
	s.lane = h.nextLane.Add(1) % uint32(len(h.lanes)) // spread evenly
	s.starts = make([]string, len(channels))
	for i, name := range channels {
		start, err := h.acquire(ctx, name, s)
		s.starts[i] = start
		if err != nil {
			for _, prev := range channels[:i] {
				h.release(prev, s)
			}
			return nil, err
		}
	}
	return s, nil
}

// unsubscribe removes s from its channels. It is safe to call more than
// once.
func (h *Hub) unsubscribe(s *subscriber) {
	s.fail(ErrClosed)
	for _, name := range s.channels {
		h.release(name, s)
	}
}

// Deliver fans m out to the local subscribers of its channel. It waits
// only when the fan-out lanes are far behind; a subscriber whose queue is
// full is dropped.
func (h *Hub) Deliver(m *broker.Message) {
	h.opts.Observer.MessageReceived(m.Source)
	if m.Event != "" {
		if err := h.checkReceived(m); err != nil {
			h.refuseEvent(m, err)
			return
		}
	}
	if h.opts.Replay != nil {
		// before the fan-out: a subscriber that registered earlier and
		// reads the cache later finds the message in one or the other
		h.opts.Replay.Append(m)
	}
	h.deliver(NewEnvelope(m))
}

func (h *Hub) deliver(e *Envelope) {
	sh := h.shard(e.Msg.Channel)
	sh.mu.RLock()
	c := sh.channels[e.Msg.Channel]
	sh.mu.RUnlock()
	if c == nil {
		return
	}
	// the id and the list together, under the lock addSub takes: a
	// subscriber that joins gets exactly the messages after the id it
	// saw (uncontended but for joins and leaves: one lock per message,
	// not per subscriber)
	c.subMu.Lock()
	if e.Msg.ID != "" {
		id := e.Msg.ID
		c.lastID.Store(&id)
		c.first.CompareAndSwap(nil, e.Msg)
	}
	subs := c.subs.Load()
	c.subMu.Unlock()
	if subs == nil || len(*subs) == 0 {
		return
	}
	j := fanOutJob{e: e, subs: *subs}
	n := uint32(len(h.lanes))
	if len(*subs) <= 8 {
		// a small channel wakes only the lanes it uses
		var used uint64
		for i := range *subs {
			used |= 1 << (*subs)[i].lane
		}
		for l := range n {
			if used&(1<<l) != 0 {
				h.toLane(l, j)
			}
		}
		return
	}
	for l := range n {
		h.toLane(l, j)
	}
}

func (h *Hub) toLane(lane uint32, j fanOutJob) {
	select {
	case h.lanes[lane] <- j:
	case <-h.closed:
	}
}

// Gap tells the subscribers of channel that messages may have been lost,
// with the reset signal whose id is resumeID. A reset at a new position
// is kept in the replay cache too, so that a client resuming from before
// the gap is told about it in order.
func (h *Hub) Gap(channel, reason, resumeID string) {
	h.opts.Observer.Reset(reason)
	last := h.LastID(channel)
	if resumeID == "" {
		resumeID = last
	}
	m := resetMessage(channel, resumeID, reason)
	if h.opts.Replay != nil && resumeID != last {
		h.opts.Replay.Append(m)
	}
	h.deliver(NewEnvelope(m))
}

// resetMessage builds the reset signal of channel: event realtime.reset,
// data {"channel": ..., "reason": ...}, with id, a valid resume point.
func resetMessage(channel, id, reason string) *broker.Message {
	data, _ := json.Marshal(struct {
		Channel string `json:"channel"`
		Reason  string `json:"reason"`
	}{channel, reason})
	return &broker.Message{Channel: channel, ID: id, Event: eventReset, Data: data, Received: time.Now()}
}

// ID is the hub's id, unique in the deployment (a node's presence
// counts and control messages carry it).
func (h *Hub) ID() string { return h.id }

// Announce publishes one of the module's own events (realtime.join,
// realtime.leave) on channel, as an ordinary message with an id.
func (h *Hub) Announce(ctx context.Context, channel, event string, data []byte) (string, error) {
	return h.broker.Publish(ctx, channel, event, data, broker.SourceHTTP)
}

// Publish publishes a message through the broker and returns its id. An
// event name CheckEvent refuses is an error, before anything is sent.
func (h *Hub) Publish(ctx context.Context, channel, event string, data []byte, src broker.Source) (string, error) {
	if err := CheckEvent(event); err != nil {
		return "", err
	}
	return h.broker.Publish(ctx, channel, event, data, src)
}

// Close drops every subscriber, so their connections end; the broker is
// closed by its owner.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		close(h.closed)
		for i := range h.shards {
			sh := &h.shards[i]
			sh.mu.Lock()
			for _, c := range sh.channels {
				if c.linger != nil {
					c.linger.Stop()
				}
				if subs := c.subs.Load(); subs != nil {
					for i := range *subs {
						if m := &(*subs)[i]; !m.left() {
							m.s.fail(ErrHubClosed)
						}
					}
				}
			}
			sh.mu.Unlock()
		}
		h.lanesWG.Wait()
	})
}

var _ broker.Handler = (*Hub)(nil)
