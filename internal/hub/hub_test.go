package hub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"go.uber.org/goleak"
)

func newTestHub(t testing.TB, opts Options) *Hub {
	t.Helper()
	h := New(opts)
	b := broker.NewMemory(h)
	h.SetBroker(b)
	t.Cleanup(func() {
		h.Close()
		_ = b.Close()
	})
	return h
}

// subscribe opens a session for channels, as a client without a cursor,
// closed when the test ends.
func subscribe(t testing.TB, h *Hub, channels ...string) *Session {
	t.Helper()
	from, err := ParseFrom("", channels)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := h.Subscribe(context.Background(), channels, Client{Transport: "test"}, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Close)
	return ss
}

// next waits (bounded) for the next envelope of ss.
func next(t *testing.T, ss *Session, buf *[]*Envelope) *Envelope {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for len(*buf) == 0 {
		select {
		case <-ss.Ready():
			*buf = ss.Next(*buf)
		case <-ss.Done():
			t.Fatalf("session dropped: %v", ss.Err())
		case <-deadline:
			t.Fatal("no message within 5s")
		}
	}
	e := (*buf)[0]
	*buf = (*buf)[1:]
	return e
}

func TestPublishReachesEverySubscriberOnce(t *testing.T) {
	h := newTestHub(t, Options{})
	ctx := context.Background()
	var subs []*Session
	for i := 0; i < 10; i++ {
		subs = append(subs, subscribe(t, h, "news"))
	}
	other := subscribe(t, h, "other")

	id, err := h.Publish(ctx, "news", "update", []byte("hello\nworld"), broker.SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	var first *Envelope
	for _, s := range subs {
		var buf []*Envelope
		e := next(t, s, &buf)
		if e.Msg.ID != id || string(e.Msg.Data) != "hello\nworld" || e.Msg.Event != "update" {
			t.Fatalf("got %+v, want id %s", e.Msg, id)
		}
		if first == nil {
			first = e
		} else if e != first {
			t.Fatal("subscribers got different envelopes: the message was copied per subscriber")
		}
	}
	select {
	case <-other.Ready():
		if got := other.Next(nil); len(got) > 0 {
			t.Fatalf("subscriber of another channel got %v", got[0].Msg)
		}
	default:
	}
}

func TestMultiChannelSubscription(t *testing.T) {
	h := newTestHub(t, Options{})
	ctx := context.Background()
	s := subscribe(t, h, "a", "b")
	for _, ch := range []string{"a", "b", "c", "a"} {
		if _, err := h.Publish(ctx, ch, "", []byte(ch), broker.SourceHTTP); err != nil {
			t.Fatal(err)
		}
	}
	var buf []*Envelope
	var got []string
	for i := 0; i < 3; i++ {
		got = append(got, next(t, s, &buf).Msg.Channel)
	}
	if strings.Join(got, ",") != "a,b,a" {
		t.Fatalf("got channels %v, want a,b,a", got)
	}
}

func TestSlowConsumerIsDroppedOthersUnaffected(t *testing.T) {
	h := newTestHub(t, Options{QueueSize: 8})
	ctx := context.Background()
	slow := subscribe(t, h, "c")
	fast := subscribe(t, h, "c")

	var buf []*Envelope
	for i := 0; i < 50; i++ {
		if _, err := h.Publish(ctx, "c", "", []byte(fmt.Sprint(i)), broker.SourceHTTP); err != nil {
			t.Fatal(err)
		}
		// the fast one keeps up, the slow one never reads
		e := next(t, fast, &buf)
		if string(e.Msg.Data) != fmt.Sprint(i) {
			t.Fatalf("fast subscriber got %q at %d", e.Msg.Data, i)
		}
	}
	select {
	case <-slow.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("slow subscriber not dropped")
	}
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Fatalf("slow subscriber dropped with %v", slow.Err())
	}
}

func TestUnsubscribeReleasesChannel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := New(Options{})
	b := broker.NewMemory(h)
	h.SetBroker(b)
	ctx := context.Background()
	from, _ := ParseFrom("", []string{"x"}) // no cursor: never an error
	s, err := h.Subscribe(ctx, []string{"x"}, Client{Transport: "test"}, from)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish(ctx, "x", "", []byte("1"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	if h.LastID("x") == "" {
		t.Fatal("LastID empty after a message")
	}
	s.Close()
	s.Close() // twice is fine
	if !errors.Is(s.Err(), ErrClosed) {
		t.Fatalf("closed session reports %v, want %v", s.Err(), ErrClosed)
	}
	if h.LastID("x") != "" {
		t.Fatal("channel still registered after its last subscriber left")
	}
	h.Close()
	_ = b.Close()
}

func TestLingerKeepsChannel(t *testing.T) {
	h := newTestHub(t, Options{Linger: time.Hour})
	ctx := context.Background()
	subscribe(t, h, "x").Close()
	if _, err := h.Publish(ctx, "x", "", []byte("while away"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	if h.LastID("x") == "" {
		t.Fatal("lingering channel did not keep receiving")
	}
}

func TestGapSendsReset(t *testing.T) {
	h := newTestHub(t, Options{})
	s := subscribe(t, h, "x")
	h.Gap("x", "gap", "")
	var buf []*Envelope
	e := next(t, s, &buf)
	if e.Msg.Event != eventReset {
		t.Fatalf("event %q, want %q", e.Msg.Event, eventReset)
	}
	var data struct{ Channel, Reason string }
	if err := json.Unmarshal(e.Msg.Data, &data); err != nil || data.Channel != "x" || data.Reason != "gap" {
		t.Fatalf("reset data %s (%v)", e.Msg.Data, err)
	}
}

func TestConcurrentSubscribePublish(t *testing.T) {
	h := newTestHub(t, Options{QueueSize: 10000})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				ch := fmt.Sprintf("c%d", i%5)
				from, _ := ParseFrom("", []string{ch})
				s, err := h.Subscribe(ctx, []string{ch}, Client{Transport: "test"}, from)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := h.Publish(ctx, ch, "", []byte("x"), broker.SourceHTTP); err != nil {
					t.Error(err)
				}
				s.Close()
			}
		}(g)
	}
	wg.Wait()
}

// The JSON form every transport can carry: the message's fields, its
// payload as text when it is UTF-8 and in base64 (marked so) otherwise.
// The SSE forms are tested in package sse, the WebSocket frame in ws.
func TestEnvelopeJSON(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantB64 bool
	}{
		{"text", "hello", false},
		{"multiline", "a\nb\n", false},
		{"unicode", "héllo ✓ 𝄞", false},
		{"json", `{"a":[1,2]}`, false},
		{"carriage return", "a\r\nb", false},
		{"binary", "\xff\xfe\x00", true},
	}
	type form struct {
		Channel, ID, Event, Data, Encoding string
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &broker.Message{Channel: "c", ID: "1-0", Data: []byte(tc.data)}
			e := NewEnvelope(m)
			var j form
			if err := json.Unmarshal(e.JSON(), &j); err != nil {
				t.Fatalf("JSON form %s: %v", e.JSON(), err)
			}
			if j.Channel != "c" || j.ID != "1-0" || j.Event != "message" {
				t.Fatalf("JSON form %s", e.JSON())
			}
			if tc.wantB64 != (j.Encoding == "base64") {
				t.Fatalf("encoding %q, want base64=%v", j.Encoding, tc.wantB64)
			}
			data := j.Data
			if tc.wantB64 {
				b, err := base64.StdEncoding.DecodeString(j.Data)
				if err != nil {
					t.Fatalf("base64 data %q: %v", j.Data, err)
				}
				data = string(b)
			}
			if data != tc.data {
				t.Fatalf("JSON data %q, want %q", data, tc.data)
			}
			// a multi-channel session's form carries its cursor as id
			var c form
			if err := json.Unmarshal(AppendJSON([]byte("x"), m, "c1.cursor")[1:], &c); err != nil {
				t.Fatal(err)
			}
			if want := (form{"c", "c1.cursor", "message", j.Data, j.Encoding}); c != want {
				t.Fatalf("AppendJSON with a cursor gave %+v, want %+v", c, want)
			}
		})
	}
}

// countedEncoding counts its computations: an encoding is computed once
// per envelope, whoever asks first, and shared.
var (
	encodeCalls     atomic.Int32
	countedEncoding = NewEncoding(func(e *Envelope) []byte {
		encodeCalls.Add(1)
		return append([]byte("framed:"), e.JSON()...) // built on another form
	})
)

func TestEncodingIsComputedOnceAndShared(t *testing.T) {
	e := NewEnvelope(&broker.Message{Channel: "c", ID: "1-0", Data: []byte("x")})
	encodeCalls.Store(0)
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = e.Encoded(countedEncoding)
		}()
	}
	wg.Wait()
	if n := encodeCalls.Load(); n != 1 {
		t.Fatalf("encoded %d times, want once", n)
	}
	want := "framed:" + string(e.JSON())
	for _, b := range got {
		if string(b) != want || &b[0] != &got[0][0] {
			t.Fatalf("got %q, want the one shared %q", b, want)
		}
	}
	other := NewEnvelope(e.Msg)
	if other.Encoded(countedEncoding); encodeCalls.Load() != 2 {
		t.Fatal("another envelope did not compute its own form")
	}
}

// BenchmarkFanOut10k measures delivering one message to 10,000
// subscribers of a channel: one envelope, one queue push per subscriber,
// no encoding or copy per subscriber.
func BenchmarkFanOut10k(b *testing.B) {
	h := New(Options{QueueSize: 1 << 20})
	br := broker.NewMemory(h)
	h.SetBroker(br)
	defer br.Close()
	defer h.Close()
	ctx := context.Background()
	subs := make([]*subscriber, 10000)
	for i := range subs {
		s, err := h.subscribe(ctx, []string{"bench"}, Client{Transport: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = s
	}
	members := *h.shard("bench").channels["bench"].subs.Load()
	m := &broker.Message{Channel: "bench", ID: "1-0", Data: make([]byte, 200)}
	bufs := make([][]*Envelope, len(subs))
	var t tally
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := NewEnvelope(m)
		// what every lane does for this message, one after the other
		// (no subscriber has a sink armed: each message is queued)
		for l := range h.lanes {
			h.fanOut(uint32(l), e, members, false, &t)
		}
		_ = e.JSON()
		if i%64 == 63 {
			b.StopTimer()
			for j, s := range subs {
				bufs[j] = s.drain(bufs[j][:0])
			}
			b.StartTimer()
		}
	}
}
