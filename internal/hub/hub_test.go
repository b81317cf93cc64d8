package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/ssetest"
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

// next waits (bounded) for the next envelope of s.
func next(t *testing.T, s *Subscriber, buf *[]*Envelope) *Envelope {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for len(*buf) == 0 {
		select {
		case <-s.Ready():
			*buf = s.Drain(*buf)
		case <-s.Done():
			t.Fatalf("subscriber dropped: %v", s.Err())
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
	var subs []*Subscriber
	for i := 0; i < 10; i++ {
		s, err := h.Subscribe(ctx, []string{"news"})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Unsubscribe(s)
		subs = append(subs, s)
	}
	other, err := h.Subscribe(ctx, []string{"other"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(other)

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
		if got := other.Drain(nil); len(got) > 0 {
			t.Fatalf("subscriber of another channel got %v", got[0].Msg)
		}
	default:
	}
}

func TestMultiChannelSubscription(t *testing.T) {
	h := newTestHub(t, Options{})
	ctx := context.Background()
	s, err := h.Subscribe(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(s)
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
	slow, err := h.Subscribe(ctx, []string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(slow)
	fast, err := h.Subscribe(ctx, []string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(fast)

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
	s, err := h.Subscribe(ctx, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish(ctx, "x", "", []byte("1"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	if h.LastID("x") == "" {
		t.Fatal("LastID empty after a message")
	}
	h.Unsubscribe(s)
	h.Unsubscribe(s) // twice is fine
	if h.LastID("x") != "" {
		t.Fatal("channel still registered after its last subscriber left")
	}
	h.Close()
	_ = b.Close()
}

func TestLingerKeepsChannel(t *testing.T) {
	h := newTestHub(t, Options{Linger: time.Hour})
	ctx := context.Background()
	s, err := h.Subscribe(ctx, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	h.Unsubscribe(s)
	if _, err := h.Publish(ctx, "x", "", []byte("while away"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	if h.LastID("x") == "" {
		t.Fatal("lingering channel did not keep receiving")
	}
}

func TestGapSendsReset(t *testing.T) {
	h := newTestHub(t, Options{})
	s, err := h.Subscribe(context.Background(), []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(s)
	h.Gap("x", "gap", "")
	var buf []*Envelope
	e := next(t, s, &buf)
	if e.Msg.Event != EventReset {
		t.Fatalf("event %q, want %q", e.Msg.Event, EventReset)
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
				s, err := h.Subscribe(ctx, []string{ch})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := h.Publish(ctx, ch, "", []byte("x"), broker.SourceHTTP); err != nil {
					t.Error(err)
				}
				h.Unsubscribe(s)
			}
		}(g)
	}
	wg.Wait()
}

func TestEnvelopeEncodings(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		wantEvent string // event the plain SSE form carries
		wantB64   bool
	}{
		{"text", "hello", "", false},
		{"multiline", "a\nb\n", "", false},
		{"unicode", "héllo ✓ 𝄞", "", false},
		{"json", `{"a":[1,2]}`, "", false},
		{"carriage return", "a\r\nb", EventEncoded, false},
		{"binary", "\xff\xfe\x00", EventEncoded, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &broker.Message{Channel: "c", ID: "1-0", Data: []byte(tc.data)}
			e := NewEnvelope(m)
			var j struct {
				Channel, ID, Event, Data, Encoding string
			}
			if err := json.Unmarshal(e.JSON(), &j); err != nil {
				t.Fatalf("JSON form %s: %v", e.JSON(), err)
			}
			if j.Channel != "c" || j.ID != "1-0" || j.Event != "message" {
				t.Fatalf("JSON form %s", e.JSON())
			}
			if tc.wantB64 != (j.Encoding == "base64") {
				t.Fatalf("encoding %q, want base64=%v", j.Encoding, tc.wantB64)
			}
			if !tc.wantB64 && j.Data != tc.data {
				t.Fatalf("JSON data %q, want %q", j.Data, tc.data)
			}
			ev, err := ssetest.NewParser(strings.NewReader(string(e.SSE()))).Next()
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantEvent == "" {
				if ev.Data != tc.data || ev.ID != "1-0" {
					t.Fatalf("SSE gave %+v, want data %q", ev, tc.data)
				}
			} else if ev.Event != tc.wantEvent || ev.Data != string(e.JSON()) {
				t.Fatalf("SSE gave %+v, want event %s with the JSON form", ev, tc.wantEvent)
			}
		})
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
	subs := make([]*Subscriber, 10000)
	for i := range subs {
		s, err := h.Subscribe(ctx, []string{"bench"})
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = s
	}
	members := *h.shard("bench").channels["bench"].subs.Load()
	m := &broker.Message{Channel: "bench", ID: "1-0", Data: make([]byte, 200)}
	bufs := make([][]*Envelope, len(subs))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := NewEnvelope(m)
		// what every lane does for this message, one after the other
		// (no subscriber has a sink armed: each message is queued)
		for l := range h.lanes {
			h.fanOut(uint32(l), e, members, false, &Tally{})
		}
		_ = e.SSE()
		if i%64 == 63 {
			b.StopTimer()
			for j, s := range subs {
				bufs[j] = s.Drain(bufs[j][:0])
			}
			b.StartTimer()
		}
	}
}
