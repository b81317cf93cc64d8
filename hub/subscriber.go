package hub

import (
	"errors"
	"sync"
)

// ErrSlowConsumer is why a subscriber whose queue overflowed was dropped.
// It can resume from its last id.
var ErrSlowConsumer = errors.New("slow consumer: too many undelivered messages")

// ErrHubClosed is why subscribers are dropped when the hub shuts down.
var ErrHubClosed = errors.New("hub closed")

// Subscriber is one client connection's subscription to one or more
// channels. The hub pushes envelopes into its bounded queue without ever
// waiting; the connection's own goroutine drains it. An idle subscriber
// costs a few words and one small channel.
type Subscriber struct {
	Channels []string

	mu     sync.Mutex
	queue  []*Envelope
	max    int
	err    error
	notify chan struct{} // capacity 1: "the queue is not empty"
	done   chan struct{} // closed when the subscriber is dropped
}

func newSubscriber(channels []string, max int) *Subscriber {
	return &Subscriber{
		Channels: channels,
		max:      max,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// push queues e; it never blocks. A full queue drops the subscriber.
func (s *Subscriber) push(e *Envelope) (dropped bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if len(s.queue) >= s.max {
		s.failLocked(ErrSlowConsumer)
		s.mu.Unlock()
		return true
	}
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return false
}

func (s *Subscriber) failLocked(err error) {
	if s.err == nil {
		s.err = err
		s.queue = nil
		close(s.done)
	}
}

func (s *Subscriber) fail(err error) {
	s.mu.Lock()
	s.failLocked(err)
	s.mu.Unlock()
}

// Ready is signalled when the queue may hold envelopes.
func (s *Subscriber) Ready() <-chan struct{} { return s.notify }

// Done is closed when the hub dropped the subscriber; Err says why.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// Err is why the subscriber was dropped, or nil.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Drain moves every queued envelope to buf (which it returns, grown as
// needed) and empties the queue. The caller reuses buf between calls, so
// a steady stream allocates nothing.
func (s *Subscriber) Drain(buf []*Envelope) []*Envelope {
	s.mu.Lock()
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
