package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// recordSink takes what the hub writes directly; full makes it refuse,
// as a socket that cannot take more.
type recordSink struct {
	got  []*Envelope
	full bool
}

func (k *recordSink) WriteNow(e *Envelope) bool {
	if k.full {
		return false
	}
	k.got = append(k.got, e)
	return true
}

// recordObserver records the deliveries the hub reports, as
// "transport/id/n" (also sent to delivered, when set, to wait for), and
// its resets and resumes.
type recordObserver struct {
	nopObserver
	delivered  chan string
	mu         sync.Mutex
	deliveries []string
	resets     []string
	resumes    []string
}

func (o *recordObserver) Delivered(transport string, e *Envelope, n int) {
	d := fmt.Sprintf("%s/%s/%d", transport, e.Msg.ID, n)
	o.mu.Lock()
	o.deliveries = append(o.deliveries, d)
	o.mu.Unlock()
	if o.delivered != nil {
		o.delivered <- d
	}
}

func (o *recordObserver) Reset(reason string) {
	o.mu.Lock()
	o.resets = append(o.resets, reason)
	o.mu.Unlock()
}

func (o *recordObserver) Resumed(from string) {
	o.mu.Lock()
	o.resumes = append(o.resumes, from)
	o.mu.Unlock()
}

func (o *recordObserver) got() (deliveries, resets, resumes []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.deliveries...), append([]string(nil), o.resets...), append([]string(nil), o.resumes...)
}

func TestSubscriberSinkAndRunner(t *testing.T) {
	s := newSubscriber(nil, []string{"c"}, Client{Transport: "sse"}, 16)
	runs := make(chan []*Envelope, 4)
	var running atomic.Int32
	var k recordSink
	s.setRunner(func() {
		if running.Add(1) != 1 {
			t.Error("two runs at once")
		}
		var got []*Envelope
		for {
			got = s.drain(got)
			s.takeSignals()
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
	var tl tally
	s.push(e("1"), true, &tl)
	s.push(e("2"), true, &tl)
	if len(k.got) != 2 {
		t.Fatalf("armed sink wrote %d messages, want 2", len(k.got))
	}
	// the sink's writes are counted for the lane, by transport
	obs := &recordObserver{}
	tl.flush(obs, e("2"))
	if got, _, _ := obs.got(); len(got) != 1 || got[0] != "sse/2/2" {
		t.Fatalf("the lane's tally reported %v, want sse/2/2", got)
	}
	// not allowed to write directly (the lane is behind): queued, and a
	// run starts and drains it
	s.push(e("3"), false, &tl)
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
	s.push(e("4"), true, &tl)
	select {
	case got := <-runs:
		if len(got) != 0 {
			t.Fatalf("run drained %v; the sink holds message 4, nothing is queued", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no run after the sink could not finish a write")
	}
	// a signal starts a run too
	s.signal(SignalHeartbeat)
	select {
	case <-runs:
	case <-time.After(5 * time.Second):
		t.Fatal("no run for a signal")
	}
}

// The fan-out writes through a sink only what the session is to send,
// having moved the session's position past it first.
func TestSinkWritesOnlyWhatTheSessionSends(t *testing.T) {
	s := newSubscriber(nil, []string{"a"}, Client{Transport: "ws"}, 16)
	ss := newSession(s, []replay.Position{{Channel: "a", ID: "100-1"}}, nil)
	var k recordSink
	if !s.idle(&k) {
		t.Fatal("idle with nothing to do did not arm the sink")
	}
	var tl tally
	for _, id := range []string{"100-0", "100-1", "100-2", "101-0"} {
		s.push(NewEnvelope(&broker.Message{Channel: "a", ID: id}), true, &tl)
	}
	var got []string
	for _, e := range k.got {
		got = append(got, e.Msg.ID)
	}
	if fmt.Sprint(got) != "[100-2 101-0]" {
		t.Fatalf("sink wrote %v, want [100-2 101-0]: the client has the others", got)
	}
	if cur := ss.Cursor(); cur != "101-0" {
		t.Fatalf("cursor %q after the sink's writes, want 101-0", cur)
	}
	obs := &recordObserver{}
	tl.flush(obs, k.got[1])
	if d, _, _ := obs.got(); fmt.Sprint(d) != "[ws/101-0/2]" {
		t.Fatalf("tally reported %v, want the two writes", d)
	}
}

// A lane's tally adds up writes by transport, and a flush reports each
// count once, through the observer, and starts again from zero.
func TestTallyFlush(t *testing.T) {
	obs := &recordObserver{}
	var tl tally
	e := NewEnvelope(&broker.Message{Channel: "c", ID: "1"})
	for range 3 {
		tl.add("sse")
	}
	tl.add("ws")
	tl.flush(obs, e)
	if d, _, _ := obs.got(); fmt.Sprint(d) != "[sse/1/3 ws/1/1]" {
		t.Fatalf("after the first flush: %v", d)
	}
	tl.flush(obs, e)
	tl.add("ws")
	e2 := NewEnvelope(&broker.Message{Channel: "c", ID: "2"})
	tl.flush(obs, e2)
	if d, _, _ := obs.got(); fmt.Sprint(d) != "[sse/1/3 ws/1/1 ws/2/1]" {
		t.Fatalf("a flush reported a count twice, or lost one: %v", d)
	}
}

// Every message written reaches the hub's observer under the session's
// transport: those the fan-out writes through the sink (counted by the
// lane) and those the session's goroutine writes (Session.Delivered).
func TestDeliveriesAreCountedByTransport(t *testing.T) {
	obs := &recordObserver{delivered: make(chan string, 4)}
	h := newTestHub(t, Options{Observer: obs})
	from, err := ParseFrom("", []string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := h.Subscribe(t.Context(), []string{"c"}, Client{Transport: "sse"}, from)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	sink := &chanSink{got: make(chan *Envelope, 4)}
	var queued atomic.Int32
	// the session goes idle at once, its sink armed; a step runs only
	// when something is queued or signalled
	wait := ss.Run(sink, func() error { return nil }, func() (bool, error) {
		queued.Add(int32(len(ss.Next(nil))))
		return ss.TakeSignals()&SignalGone != 0, nil
	}, func(error) {})
	defer func() {
		ss.Signal(SignalGone)
		if err := wait(); err != nil {
			t.Error(err)
		}
	}()

	id, err := h.Publish(t.Context(), "c", "", []byte("x"), broker.SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-sink.got:
		if e.Msg.ID != id {
			t.Fatalf("sink got %s, want %s", e.Msg.ID, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fan-out did not write to the idle session's sink")
	}
	if got := recvString(t, obs.delivered); got != "sse/"+id+"/1" {
		t.Fatalf("the lane reported %s, want sse/%s/1", got, id)
	}
	ss.Delivered(NewEnvelope(&broker.Message{Channel: "c", ID: "by-hand"}))
	if got := recvString(t, obs.delivered); got != "sse/by-hand/1" {
		t.Fatalf("the session reported %s, want sse/by-hand/1", got)
	}
	if n := queued.Load(); n != 0 {
		t.Fatalf("%d messages were queued: the sink should have written them", n)
	}
}

func recvString(t *testing.T, c <-chan string) string {
	t.Helper()
	select {
	case s := <-c:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reported within 5s")
		return ""
	}
}

// chanSink hands what the fan-out writes to the test.
type chanSink struct{ got chan *Envelope }

func (k *chanSink) WriteNow(e *Envelope) bool {
	k.got <- e
	return true
}
