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

// Signals wake a subscriber's goroutine for something other than a
// message; a transport may define its own from SignalTransport up.
const (
	// SignalHeartbeat: the stream has been idle for a heartbeat interval.
	SignalHeartbeat uint32 = 1 << iota
	// SignalShutdown: the server is shutting down or reloading.
	SignalShutdown
	// SignalGone: the client left.
	SignalGone
	// SignalTransport is the first signal free for transports.
	SignalTransport
)

// Subscriber is one client connection's subscription to one or more
// channels. The hub pushes envelopes into its bounded queue without ever
// waiting; the connection's own goroutine drains it. An idle subscriber
// costs a few words and two small channels.
//
// While the connection's goroutine waits with nothing queued, it may arm
// a Sink: the hub then writes each message to the connection itself,
// without waking the goroutine, as long as the socket takes it at once.
// That is the common case, and it saves a goroutine wake-up, a channel
// hand-off and a scheduler round trip per subscriber per message.
type Subscriber struct {
	Channels []string

	lane uint32 // the hub's fan-out lane that serves this subscriber

	mu    sync.Mutex
	queue []*Envelope
	max   int
	err   error
	sink  Sink // armed: the hub may write to the connection
	// session is the connection's session (see NewSession), beside the
	// fields a delivery reads first
	session Session
	run     func()        // see ServeWrites
	running bool          // run is going on some goroutine
	notify  chan struct{} // capacity 1: "the queue or a signal is pending"
	done    chan struct{} // closed when the subscriber is dropped
	signals atomic.Uint32
}

// Sink is a connection the hub writes messages to itself while its
// goroutine is idle. WriteNow is called with the subscriber locked, one
// message at a time, in order, never alongside the goroutine's own
// writes.
type Sink interface {
	// WriteNow sends e without waiting and reports whether all of it
	// went out; if not, the sink keeps the rest and the subscriber's
	// goroutine is woken to send it. It counts what it writes in t.
	WriteNow(e *Envelope, t *Tally) bool
}

// Tally counts what a fan-out lane writes through sinks, by observer and
// transport, for the lane to report in batches: with every lane updating
// the same metrics on every write, the cores would take turns owning
// their cache lines.
type Tally struct {
	entries []tallyEntry
}

type tallyEntry struct {
	obs       DeliveryObserver
	transport string
	n         int
}

// Add counts one write of the message being fanned out.
func (t *Tally) Add(obs DeliveryObserver, transport string) {
	for i := range t.entries {
		if en := &t.entries[i]; en.transport == transport && en.obs == obs {
			en.n++
			return
		}
	}
	t.entries = append(t.entries, tallyEntry{obs: obs, transport: transport, n: 1})
}

// flush reports the writes of e counted since the last flush.
func (t *Tally) flush(e *Envelope) {
	for i := range t.entries {
		if en := &t.entries[i]; en.n > 0 {
			en.obs.Delivered(en.transport, e, en.n)
			en.n = 0
		}
	}
}

func newSubscriber(channels []string, max int) *Subscriber {
	return &Subscriber{
		Channels: channels,
		max:      max,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// push delivers e: written by the armed sink when direct is allowed and
// the socket takes it (counted in t), queued otherwise. It never blocks;
// a full queue drops the subscriber.
func (s *Subscriber) push(e *Envelope, direct bool, t *Tally) (dropped bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if s.sink != nil {
		if direct && s.sink.WriteNow(e, t) {
			s.mu.Unlock()
			return false
		}
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

// wakeLocked signals Ready, or starts the runner if none is running.
func (s *Subscriber) wakeLocked() {
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

// ServeWrites runs the writing side of a connection that has no writer
// goroutine while it is idle. start writes what goes first, on the
// calling goroutine. From then on, whenever there is something to write
// (a message queued, a signal, a sink's unfinished write, the subscriber
// dropped), a goroutine is started that calls step until nothing is left,
// arms sink (when not nil) and ends. When start fails or a step reports
// the end, finish runs once with the error, and no goroutine is started
// again. ServeWrites returns at once; wait blocks until finish has run
// and returns its error. The caller typically reads the connection
// meanwhile, and makes the writer end (fail, Signal) when reading does.
func (s *Subscriber) ServeWrites(sink Sink, start func() error, step func() (end bool, err error), finish func(error)) (wait func() error) {
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
// something to do and no run is going on, instead of signalling Ready.
// The caller counts as a running run until its first idle.
func (s *Subscriber) setRunner(run func()) {
	s.mu.Lock()
	s.run = run
	s.running = true
	s.mu.Unlock()
}

// idle ends a run, arming k (when not nil), if nothing is left to do;
// otherwise it reports false and the run goes on.
func (s *Subscriber) idle(k Sink) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || len(s.queue) > 0 || s.signals.Load() != 0 {
		return false
	}
	s.sink = k
	s.running = false
	return true
}

func (s *Subscriber) failLocked(err error) {
	if s.err == nil {
		s.err = err
		s.queue = nil
		s.sink = nil
		close(s.done)
		s.wakeLocked()
	}
}

func (s *Subscriber) fail(err error) {
	s.mu.Lock()
	s.failLocked(err)
	s.mu.Unlock()
}

// Arm lets the hub write to the connection through k until the
// subscriber's goroutine next drains the queue. It does nothing when
// messages are queued (the goroutine is woken for them) or the
// subscriber was dropped.
func (s *Subscriber) Arm(k Sink) {
	s.mu.Lock()
	if s.err == nil && len(s.queue) == 0 {
		s.sink = k
	}
	s.mu.Unlock()
}

// Signal sets signal bits and wakes the subscriber's goroutine.
func (s *Subscriber) Signal(bits uint32) {
	s.signals.Or(bits)
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
}

// TakeSignals returns the signals set since the last call, and clears
// them.
func (s *Subscriber) TakeSignals() uint32 { return s.signals.Swap(0) }

// Ready is signalled when the queue may hold envelopes, a Signal was
// sent, a sink left work unfinished, or the subscriber was dropped.
func (s *Subscriber) Ready() <-chan struct{} { return s.notify }

// Done is closed when the hub dropped the subscriber; Err says why.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// Err is why the subscriber was dropped, or nil.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Drain disarms the sink, moves every queued envelope to buf (which it
// returns, grown as needed) and empties the queue. The caller reuses buf
// between calls, so a steady stream allocates nothing. From Drain until
// the next Arm, the caller alone writes to the connection.
func (s *Subscriber) Drain(buf []*Envelope) []*Envelope {
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
