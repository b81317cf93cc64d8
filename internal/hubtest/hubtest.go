// Package hubtest sets up what the transports' tests serve: a real hub
// fed by the embedded broker, with a replay cache, so that a transport is
// tested against the subscriptions, resumes and fan-out it gets in
// production rather than against a fake. It is imported by tests only.
package hubtest

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/replay"
)

// Wait bounds every wait for an event: a test that would hang fails
// instead.
const Wait = 5 * time.Second

// Hub is a hub with its broker and replay cache, closed when the test
// ends.
type Hub struct {
	*hub.Hub
	Cache *replay.Cache
	// Observed records what the hub reports.
	Observed *Observer
}

// New returns a hub configured by opts, whose Replay (when nil) is a
// small cache and whose Linger (when zero) is a minute, so that a client
// that left can resume, as with the module's replay ttl. Its Observer is
// h.Observed: opts.Observer must be nil.
func New(t testing.TB, opts hub.Options) *Hub {
	t.Helper()
	if opts.Observer != nil {
		t.Fatal("hubtest.New: the hub's observer is Hub.Observed")
	}
	if opts.Replay == nil {
		cache, err := replay.New(replay.Options{Size: 16, MaxBytes: 8 << 20}) // small: quick to set up
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cache.Close) // after the hub's: cleanups run last first
		opts.Replay = cache
	}
	if opts.Linger == 0 {
		opts.Linger = time.Minute
	}
	obs := &Observer{}
	opts.Observer = obs
	h := hub.New(opts)
	b := broker.NewMemory(h)
	h.SetBroker(b)
	t.Cleanup(func() {
		h.Close()
		_ = b.Close()
	})
	return &Hub{Hub: h, Cache: opts.Replay, Observed: obs}
}

// Session subscribes channels for transport from the client's cursor
// ("" for none), as the module does for a request. The caller closes it.
func (h *Hub) Session(ctx context.Context, channels []string, transport, cursor string) (*hub.Session, error) {
	from, err := hub.ParseFrom(cursor, channels)
	if err != nil {
		return nil, err
	}
	return h.Subscribe(ctx, channels, hub.Client{Transport: transport}, from)
}

// History publishes data to channel while no client is subscribed (the
// channel lingers, so its messages are there to resume from) and returns
// the channel's position before them and their ids.
func (h *Hub) History(t testing.TB, channel string, data ...string) (start string, ids []string) {
	t.Helper()
	// subscribing makes the channel live at the broker, so that its
	// messages are numbered in one epoch (unsubscribed, each would get a
	// throwaway one) and the channel lingers with it once this session
	// closes
	warm, err := h.Session(context.Background(), []string{channel}, "hubtest", "")
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	start = h.LastID(channel)
	for _, d := range data {
		ids = append(ids, h.Publish(t, channel, "", d))
	}
	return start, ids
}

// Publish publishes one message, as the HTTP API does, and returns its
// id. (The hub's own Publish is h.Hub.Publish.)
func (h *Hub) Publish(t testing.TB, channel, event, data string) string {
	t.Helper()
	id, err := h.Hub.Publish(context.Background(), channel, event, []byte(data), broker.SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Observer is a hub.Observer that records deliveries as
// "transport/id/n": a transport's tests check that what it wrote is
// counted, once, under its name.
type Observer struct {
	mu         sync.Mutex
	deliveries []string
}

var _ hub.Observer = (*Observer)(nil)

func (o *Observer) Delivered(transport string, e *hub.Envelope, n int) {
	o.mu.Lock()
	o.deliveries = append(o.deliveries, fmt.Sprintf("%s/%s/%d", transport, e.Msg.ID, n))
	o.mu.Unlock()
}

// Deliveries returns the deliveries recorded so far, in order.
func (o *Observer) Deliveries() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.deliveries...)
}

func (*Observer) MessageReceived(broker.Source) {}
func (*Observer) SlowConsumer()                 {}
func (*Observer) Reset(string)                  {}
func (*Observer) Resumed(string)                {}
func (*Observer) Refused(string)                {}

// CheckGoroutines fails the test if goroutines started from now on are
// still running once it is over: a transport must not leave any behind
// (a writer, a reader, a timer's). Call it first, so that its check runs
// after every other cleanup. It polls, as exiting goroutines take a
// moment.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	baseline := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(Wait)
		for runtime.NumGoroutine() > baseline {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines left over, %d before:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// Recv waits for a value from c, failing the test after Wait.
func Recv[T any](t testing.TB, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(Wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
