package hub

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
)

// recordSink takes what the hub writes directly; full makes it refuse,
// as a socket that cannot take more.
type recordSink struct {
	got  []*Envelope
	full bool
}

func (k *recordSink) WriteNow(e *Envelope, _ *Tally) bool {
	if k.full {
		return false
	}
	k.got = append(k.got, e)
	return true
}

func TestSubscriberSinkAndRunner(t *testing.T) {
	s := newSubscriber([]string{"c"}, 16)
	runs := make(chan []*Envelope, 4)
	var running atomic.Int32
	var k recordSink
	s.setRunner(func() {
		if running.Add(1) != 1 {
			t.Error("two runs at once")
		}
		var got []*Envelope
		for {
			got = s.Drain(got)
			s.TakeSignals()
			running.Add(-1)
			if s.idle(&k) {
				runs <- got
				return
			}
			running.Add(1)
		}
	})
	e := func(id string) *Envelope { return NewEnvelope(&broker.Message{Channel: "c", ID: id}) }

	// the caller is the first run; nothing queued: it goes idle, armed
	if !s.idle(&k) {
		t.Fatal("Idle with nothing to do did not end the run")
	}
	s.push(e("1"), true, &Tally{})
	s.push(e("2"), true, &Tally{})
	if len(k.got) != 2 {
		t.Fatalf("armed sink wrote %d messages, want 2", len(k.got))
	}
	// not allowed to write directly (the lane is behind): queued, and a
	// run starts and drains it
	s.push(e("3"), false, &Tally{})
	select {
	case got := <-runs:
		if len(got) != 1 || got[0].Msg.ID != "3" {
			t.Fatalf("run drained %v, want message 3", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no run for a queued message")
	}
	// the run re-armed the sink; a socket that cannot take a message
	// hands it to a run (the sink keeps the rest)
	k.full = true
	s.push(e("4"), true, &Tally{})
	select {
	case got := <-runs:
		if len(got) != 0 {
			t.Fatalf("run drained %v; the sink holds message 4, nothing is queued", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no run after the sink could not finish a write")
	}
	// a signal starts a run too
	s.Signal(SignalHeartbeat)
	select {
	case <-runs:
	case <-time.After(5 * time.Second):
		t.Fatal("no run for a signal")
	}
}

type countObserver struct{ got map[string]int }

func (o *countObserver) Delivered(transport string, _ *Envelope, n int) { o.got[transport] += n }

// A lane's tally adds up writes by observer and transport, and a flush
// reports each count once and starts again from zero.
func TestTallyFlush(t *testing.T) {
	a, b := &countObserver{got: map[string]int{}}, &countObserver{got: map[string]int{}}
	var tl Tally
	e := NewEnvelope(&broker.Message{Channel: "c", ID: "1"})
	for range 3 {
		tl.Add(a, "sse")
	}
	tl.Add(a, "ws")
	tl.Add(b, "sse")
	tl.flush(e)
	if a.got["sse"] != 3 || a.got["ws"] != 1 || b.got["sse"] != 1 {
		t.Fatalf("after the first flush: a %v, b %v", a.got, b.got)
	}
	tl.flush(e)
	tl.Add(b, "sse")
	tl.flush(e)
	if a.got["sse"] != 3 || a.got["ws"] != 1 || b.got["sse"] != 2 {
		t.Fatalf("a flush reported a count twice: a %v, b %v", a.got, b.got)
	}
}
