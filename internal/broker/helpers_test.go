package broker

import (
	"sync"
	"testing"
	"time"
)

// event is one call to a Handler: a message, a gap (Msg nil), or a
// control command (Control set).
type event struct {
	Msg     *Message
	Channel string
	Reason  string
	Control []byte
}

// recorder is a Handler that queues every call for the test to read.
// It never blocks: a full queue fails the test.
type recorder struct {
	t  testing.TB
	ch chan event

	mu       sync.Mutex
	overflow bool
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, ch: make(chan event, 1<<16)}
}

func (r *recorder) Deliver(m *Message) {
	r.put(event{Msg: m, Channel: m.Channel})
}

func (r *recorder) Gap(channel, reason, _ string) {
	r.put(event{Channel: channel, Reason: reason})
}

func (r *recorder) Control(payload []byte) {
	r.put(event{Control: payload})
}

func (r *recorder) put(e event) {
	select {
	case r.ch <- e:
	default:
		r.mu.Lock()
		r.overflow = true
		r.mu.Unlock()
	}
}

// next returns the next call, failing the test after d.
func (r *recorder) next(d time.Duration) event {
	r.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case e := <-r.ch:
		return e
	case <-t.C:
		r.t.Fatalf("no handler call within %v", d)
	}
	return event{}
}

// nextOf returns the next call for channel, skipping calls for others.
func (r *recorder) nextOf(channel string, d time.Duration) event {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			r.t.Fatalf("no handler call for %q within %v", channel, d)
		}
		if e := r.next(left); e.Channel == channel {
			return e
		}
	}
}

// none fails the test if a call comes within d.
func (r *recorder) none(d time.Duration) {
	r.t.Helper()
	select {
	case e := <-r.ch:
		if e.Msg != nil {
			r.t.Fatalf("unexpected message on %q: %q", e.Channel, e.Msg.Data)
		}
		r.t.Fatalf("unexpected gap on %q: %s", e.Channel, e.Reason)
	case <-time.After(d):
	}
}
