package hub

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrSlowConsumer is why a subscriber whose queue overflowed was dropped.
// It can resume from its last id.
var ErrSlowConsumer = errors.New("slow consumer: too many undelivered messages")

// ErrHubClosed is why subscribers are dropped when the hub shuts down.
var ErrHubClosed = errors.New("hub closed")

// ErrClosed is why a session ends once it was closed.
var ErrClosed = errors.New("session closed")

// ErrDisconnected is why the hub ended a subscription the admin API
// disconnected: the transport tells the client not to come back on its
// own (realtime.closed, WebSocket close 4000).
var ErrDisconnected = errors.New("disconnected")

// subscriber is one client connection's subscription to one or more
// channels. The hub pushes envelopes into its bounded queue without ever
// waiting; the connection's own goroutine drains it. An idle subscriber
// costs a few words and two small channels.
//
// While the connection's goroutine waits with nothing queued, it may arm
// a Sink: the hub then writes each message to the connection itself,
// without waking the goroutine, as long as the socket takes it at once.
// That is the common case, and it saves a goroutine wake-up, a channel
// hand-off and a scheduler round trip per subscriber per message.
type subscriber struct {
	channels  []string
	transport string // labels its deliveries in metrics
	sub       string // the ticket's subject, or ""
	// starts holds each channel's position when the subscriber joined
	// it: a client without a position starts there
	starts []string
	hub    *Hub
	// counted holds the channels whose presence counts this subscriber
	// (see Hub.countJoin); nil without presence
	counted map[string]bool

	lane uint32 // the hub's fan-out lane that serves this subscriber

	mu    sync.Mutex
	queue []*Envelope
	max   int
	err   error
	sink  Sink // armed: the hub may write to the connection
	// session is the connection's session, beside the fields a delivery
	// reads first
	session Session
	run     func()        // see Session.Run
	running bool          // run is going on some goroutine
	notify  chan struct{} // capacity 1: "the queue or a signal is pending"
	done    chan struct{} // closed when the subscriber is dropped
	signals atomic.Uint32
}

// startOf is the position of channel when the subscriber joined it: a
// client without a position starts there, and gets every message after
// it live (a message that reached the node while the subscription was
// being set up is neither lost nor announced as already seen).
func (s *subscriber) startOf(channel string) string {
	for i, c := range s.channels {
		if c == channel && i < len(s.starts) {
			return s.starts[i]
		}
	}
	return s.hub.LastID(channel)
}

// Sink is a connection the hub writes messages to itself while its
// goroutine is idle. WriteNow is called with the subscriber locked, one
// message at a time, in order, never alongside the goroutine's own
// writes, and only for messages the session is to send.
type Sink interface {
	// WriteNow sends e's shared wire form without waiting and reports
	// whether all of it went out; if not, the sink keeps the rest and the
	// session's goroutine is woken to send it.
	WriteNow(e *Envelope) bool
}

// tally counts what a fan-out lane writes through sinks, by transport,
// for the lane to report in batches: with every lane updating the same
// metrics on every write, the cores would take turns owning their cache
// lines.
type tally struct {
	entries []tallyEntry
}

type tallyEntry struct {
	transport string
	n         int
}

// add counts one write of the message being fanned out.
func (t *tally) add(transport string) {
	for i := range t.entries {
		if en := &t.entries[i]; en.transport == transport {
			en.n++
			return
		}
	}
	t.entries = append(t.entries, tallyEntry{transport: transport, n: 1})
}

// flush reports the writes of e counted since the last flush.
func (t *tally) flush(obs Observer, e *Envelope) {
	for i := range t.entries {
		if en := &t.entries[i]; en.n > 0 {
			obs.Delivered(en.transport, e, en.n)
			en.n = 0
		}
	}
}

func newSubscriber(h *Hub, channels []string, client Client, max int) *subscriber {
	return &subscriber{
		hub:       h,
		channels:  channels,
		transport: client.Transport,
		sub:       client.Sub,
		max:       max,
		notify:    make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// push delivers e: written by the armed sink when direct is allowed and
// the socket takes it (counted in t), queued otherwise. It never blocks;
// a full queue drops the subscriber.
func (s *subscriber) push(e *Envelope, direct bool, t *tally) (dropped bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if s.sink != nil && direct {
		// the goroutine is idle, so the session is the lane's to update
		ss := &s.session
		if !ss.Accept(e) {
			s.mu.Unlock()
			return false
		}
		ss.Advance(e)
		done := s.sink.WriteNow(e)
		t.add(s.transport)
		if done {
			s.mu.Unlock()
			return false
		}
	}
	if s.sink != nil {
		// the goroutine takes over: what the sink could not finish, or
		// the queue (under load, it writes queued messages in batches)
		s.sink = nil
		if direct {
			s.wakeLocked()
			s.mu.Unlock()
			return false
		}
	}
	if len(s.queue) >= s.max {
		s.failLocked(ErrSlowConsumer)
		s.mu.Unlock()
		return true
	}
	s.queue = append(s.queue, e)
	s.wakeLocked()
	s.mu.Unlock()
	return false
}

// wakeLocked signals notify, or starts the runner if none is running.
func (s *subscriber) wakeLocked() {
	if s.run != nil {
		if !s.running {
			s.running = true
			go s.run()
		}
		return
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// serveWrites runs the writing side of a connection that has no writer
// goroutine while it is idle. start writes what goes first, on the
// calling goroutine. From then on, whenever there is something to write
// (a message queued, a signal, a sink's unfinished write, the subscriber
// dropped), a goroutine is started that calls step until nothing is left,
// arms sink (when not nil) and ends. When start fails or a step reports
// the end, finish runs once with the error, and no goroutine is started
// again. serveWrites returns at once; wait blocks until finish has run
// and returns its error. The caller typically reads the connection
// meanwhile, and makes the writer end (a signal) when reading does.
func (s *subscriber) serveWrites(sink Sink, start func() error, step func() (end bool, err error), finish func(error)) (wait func() error) {
	done := make(chan struct{})
	var result error
	end := func(err error) {
		finish(err)
		result = err
		close(done)
	}
	run := func() {
		for {
			if over, err := step(); over {
				end(err) // the runner stays marked running: no other starts
				return
			}
			if s.idle(sink) {
				return
			}
		}
	}
	s.setRunner(run) // the caller is the runner until it goes idle
	if err := start(); err != nil {
		end(err)
	} else if !s.idle(sink) {
		go run()
	}
	return func() error {
		<-done
		return result
	}
}

// setRunner makes s start run on a new goroutine whenever there is
// something to do and no run is going on, instead of signalling notify.
// The caller counts as a running run until its first idle.
func (s *subscriber) setRunner(run func()) {
	s.mu.Lock()
	s.run = run
	s.running = true
	s.mu.Unlock()
}

// idle ends a run, arming k (when not nil), if nothing is left to do;
// otherwise it reports false and the run goes on.
func (s *subscriber) idle(k Sink) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || len(s.queue) > 0 || s.signals.Load() != 0 {
		return false
	}
	s.sink = k
	s.running = false
	return true
}

func (s *subscriber) failLocked(err error) {
	if s.err == nil {
		s.err = err
		s.queue = nil
		s.sink = nil
		close(s.done)
		s.wakeLocked()
	}
}

func (s *subscriber) fail(err error) {
	s.mu.Lock()
	s.failLocked(err)
	s.mu.Unlock()
}

// signal sets signal bits and wakes the subscriber's goroutine.
func (s *subscriber) signal(bits uint32) {
	s.signals.Or(bits)
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
}

// takeSignals returns the signals set since the last call, and clears
// them.
func (s *subscriber) takeSignals() uint32 { return s.signals.Swap(0) }

func (s *subscriber) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// drain disarms the sink, moves every queued envelope to buf (which it
// returns, grown as needed) and empties the queue. The caller reuses buf
// between calls, so a steady stream allocates nothing. From drain until
// the sink is armed again, the caller alone writes to the connection.
func (s *subscriber) drain(buf []*Envelope) []*Envelope {
	s.mu.Lock()
	s.sink = nil
	buf = append(buf, s.queue...)
	clear(s.queue)
	s.queue = s.queue[:0]
	if cap(s.queue) > 64 {
		// a burst grew the queue; let the subscriber shrink again
		s.queue = nil
	}
	s.mu.Unlock()
	return buf
}
