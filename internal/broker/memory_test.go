package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryPublishDelivers(t *testing.T) {
	rec := newRecorder(t)
	b := NewMemory(rec)
	defer b.Close()
	ctx := context.Background()
	last, err := b.Subscribe(ctx, "news")
	if _, seq, ok := parseNodeID(last); err != nil || !ok || seq != 0 {
		t.Fatalf("Subscribe = %q, %v; want the start of an epoch", last, err)
	}
	payloads := [][]byte{[]byte("hello"), {0, 0xff, '\n', '\r'}, []byte("multi\nline\r\n"), []byte("ünïcødé ✓"), {}}
	var epoch string
	for i, p := range payloads {
		src := []Source{SourceHTTP, SourceWS}[i%2]
		id, err := b.Publish(ctx, "news", "ev", p, src)
		if err != nil {
			t.Fatal(err)
		}
		e := rec.next(time.Second) // synchronous: already there
		m := e.Msg
		if m == nil || m.ID != id || !bytes.Equal(m.Data, p) || m.Event != "ev" || m.Source != src || m.Channel != "news" || m.Received.IsZero() {
			t.Fatalf("delivered %+v for id %q payload %q", m, id, p)
		}
		ep, seq, ok := parseNodeID(id)
		if !ok || seq != uint64(i)+1 {
			t.Fatalf("id %q: seq %d ok %v", id, seq, ok)
		}
		if i > 0 && ep != epoch {
			t.Fatalf("epoch changed: %q then %q", epoch, ep)
		}
		epoch = ep
	}

	// the message is a copy: the publisher may reuse its buffer
	buf := []byte("abc")
	if _, err := b.Publish(ctx, "news", "", buf, SourceHTTP); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'x'
	if m := rec.next(time.Second).Msg; string(m.Data) != "abc" {
		t.Fatalf("delivered data changed with the publisher's buffer: %q", m.Data)
	}

	// a new subscription starts a new epoch
	b.Unsubscribe("news")
	if _, err := b.Subscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	id, _ := b.Publish(ctx, "news", "", []byte("x"), SourceHTTP)
	rec.next(time.Second)
	if ep, seq, _ := parseNodeID(id); ep == epoch || seq != 1 {
		t.Fatalf("after resubscribing: id %q (old epoch %q)", id, epoch)
	}

	if _, err := b.History(ctx, "news", id, 10); !errors.Is(err, errNoHistory) {
		t.Fatalf("History: %v", err)
	}
	if !b.Healthy() {
		t.Fatal("not healthy")
	}
}

func TestMemoryUnsubscribedAndClosed(t *testing.T) {
	rec := newRecorder(t)
	b := NewMemory(rec)
	ctx := context.Background()
	id, err := b.Publish(ctx, "nobody", "", []byte("x"), SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := parseNodeID(id); !ok {
		t.Fatalf("id %q", id)
	}
	rec.next(time.Second)
	_ = b.Close()
	if b.Healthy() {
		t.Fatal("healthy after Close")
	}
	if _, err := b.Publish(ctx, "x", "", nil, SourceHTTP); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := b.Subscribe(ctx, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// orderChecker checks that each channel's ids come in sequence.
type orderChecker struct {
	mu   sync.Mutex
	last map[string]uint64
	err  error
	n    int
}

func (o *orderChecker) Deliver(m *Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, seq, ok := parseNodeID(m.ID)
	if !ok || seq != o.last[m.Channel]+1 {
		o.err = fmt.Errorf("channel %s: id %s after seq %d", m.Channel, m.ID, o.last[m.Channel])
	}
	o.last[m.Channel] = seq
	o.n++
}

func (o *orderChecker) Gap(string, string, string) {}

func (o *orderChecker) Control([]byte) {}

func TestMemoryConcurrentPublishInOrder(t *testing.T) {
	oc := &orderChecker{last: map[string]uint64{}}
	b := NewMemory(oc)
	defer b.Close()
	ctx := context.Background()
	for _, ch := range []string{"a", "b"} {
		if _, err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := b.Publish(ctx, []string{"a", "b"}[i%2], "", []byte("x"), SourceWS); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if oc.err != nil {
		t.Fatal(oc.err)
	}
	if oc.n != 1600 {
		t.Fatalf("%d deliveries, want 1600", oc.n)
	}
}

type nopHandler struct{}

func (nopHandler) Deliver(*Message)           {}
func (nopHandler) Gap(string, string, string) {}

func (nopHandler) Control([]byte) {}

func BenchmarkMemoryPublish(b *testing.B) {
	br := NewMemory(nopHandler{})
	defer br.Close()
	ctx := context.Background()
	if _, err := br.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := br.Publish(ctx, "bench", "", data, SourceHTTP); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryPublishParallel(b *testing.B) {
	br := NewMemory(nopHandler{})
	defer br.Close()
	ctx := context.Background()
	for i := 0; i < 64; i++ {
		if _, err := br.Subscribe(ctx, fmt.Sprint("bench", i)); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := br.Publish(ctx, fmt.Sprint("bench", i%64), "", data, SourceHTTP); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// hubLike takes a lock in Deliver that its owner also holds while calling
// Unsubscribe, as the hub does: the broker must not deadlock.
type hubLike struct {
	mu sync.RWMutex
	n  atomic.Int64
}

func (h *hubLike) Deliver(*Message) {
	h.mu.RLock()
	h.n.Add(1)
	h.mu.RUnlock()
}

func (h *hubLike) Gap(string, string, string) {
	h.mu.RLock()
	h.mu.RUnlock()
}

// churn publishes to channel from one goroutine while another
// unsubscribes and subscribes it again under the handler's lock.
func churn(t *testing.T, b Broker, h *hubLike, channel string, publish func(i int)) {
	t.Helper()
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			publish(i)
		}
	}()
	stop := time.After(10 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		case <-stop:
			t.Fatal("deadlock: publishing did not finish")
		default:
		}
		h.mu.Lock()
		b.Unsubscribe(channel)
		h.mu.Unlock()
		if _, err := b.Subscribe(ctx, channel); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMemoryUnsubscribeUnderHandlerLock(t *testing.T) {
	h := &hubLike{}
	b := NewMemory(h)
	defer b.Close()
	if _, err := b.Subscribe(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	churn(t, b, h, "c", func(int) {
		_, _ = b.Publish(context.Background(), "c", "", []byte("x"), SourceHTTP)
	})
}

func (h *hubLike) Control([]byte) {}
