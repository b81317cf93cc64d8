package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// A node keeps at most IdleChannels channels without a subscriber: past
// it, the one idle the longest is unsubscribed, and a client resuming on
// it gets the reset signal ("expired"), not a history with a hole.
func TestIdleChannelsBounded(t *testing.T) {
	cache, err := replay.New(replay.Options{Size: 16, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	h := newTestHub(t, Options{Replay: cache, Linger: time.Hour, IdleChannels: 3})
	ctx := context.Background()

	subscribe(t, h, "a").Close()
	idA, err := h.Publish(ctx, "a", "", []byte("1"), broker.SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"b", "c", "d", "e"} {
		subscribe(t, h, c).Close()
	}
	if n := h.IdleChannels(); n != 3 {
		t.Fatalf("%d idle channels, want the bound, 3", n)
	}
	for _, c := range []string{"a", "b"} {
		if h.lookup(c) != nil {
			t.Errorf("channel %s, among the longest idle, is still kept", c)
		}
	}
	for _, c := range []string{"c", "d", "e"} {
		if h.lookup(c) == nil {
			t.Errorf("channel %s, among the newest idle, was dropped", c)
		}
	}
	// a message to a dropped channel no longer reaches the node's cache
	if _, err := h.Publish(ctx, "a", "", []byte("2"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}

	from, err := ParseFrom(idA, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := h.Subscribe(ctx, []string{"a"}, Client{Transport: "test"}, from)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	replayed := ss.TakeReplay()
	if len(replayed) != 1 || replayed[0].Msg.Event != eventReset {
		t.Fatalf("resuming on a dropped channel replayed %v, want the reset signal", envIDs(replayed))
	}
	var data struct{ Reason string }
	if err := json.Unmarshal(replayed[0].Msg.Data, &data); err != nil || data.Reason != "expired" {
		t.Fatalf("reset data %s, want reason expired", replayed[0].Msg.Data)
	}
}

// A channel subscribed again leaves the idle list: it does not count
// against the bound, and is not the one dropped.
func TestIdleChannelSubscribedAgain(t *testing.T) {
	h := newTestHub(t, Options{Linger: time.Hour, IdleChannels: 2})
	subscribe(t, h, "a").Close()
	subscribe(t, h, "b").Close()
	back := subscribe(t, h, "a")
	if n := h.IdleChannels(); n != 1 {
		t.Fatalf("%d idle channels after a came back, want 1", n)
	}
	subscribe(t, h, "c").Close()
	subscribe(t, h, "d").Close() // three idle now: b goes, the longest idle
	if h.lookup("b") != nil || h.lookup("a") == nil {
		t.Fatalf("b kept %v, a kept %v: want b dropped and a (subscribed) kept", h.lookup("b") != nil, h.lookup("a") != nil)
	}
	back.Close()
	if n := h.IdleChannels(); n != 2 {
		t.Fatalf("%d idle channels, want 2", n)
	}
}

func (h *Hub) lookup(name string) *channel {
	sh := h.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.channels[name]
}

func envIDs(envs []*Envelope) string {
	var ids []string
	for _, e := range envs {
		ids = append(ids, e.Msg.Event+"@"+e.Msg.ID)
	}
	return fmt.Sprint(ids)
}

// BenchmarkChurn is one subscribe and close of a fresh channel with many
// channels idle already: its cost must not grow with how many there are.
func BenchmarkChurn(b *testing.B) {
	for _, idle := range []int{100, 10000} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			h := newTestHub(b, Options{Linger: time.Hour, IdleChannels: idle})
			ctx := context.Background()
			n := 0
			churn := func() {
				ch := fmt.Sprintf("c%d", n)
				n++
				ss, err := h.Subscribe(ctx, []string{ch}, Client{Transport: "test"}, From{})
				if err != nil {
					b.Fatal(err)
				}
				ss.Close()
			}
			for range idle {
				churn()
			}
			b.ResetTimer()
			for b.Loop() {
				churn()
			}
		})
	}
}

// Subscribers of one channel come and go in any order: a message reaches
// exactly those still there, before and after the list is compacted.
func TestChannelMembersComeAndGo(t *testing.T) {
	h := newTestHub(t, Options{})
	ctx := context.Background()
	var subs []*Session
	for range 40 {
		subs = append(subs, subscribe(t, h, "c"))
	}
	// close three in four (past half: compacted), in a scattered order
	open := map[int]bool{}
	for i := range subs {
		open[i] = true
	}
	for i := range subs {
		if j := (i * 7) % len(subs); j%4 != 0 {
			subs[j].Close()
			delete(open, j)
		}
	}
	// and some join after the compaction
	for range 5 {
		subs = append(subs, subscribe(t, h, "c"))
		open[len(subs)-1] = true
	}
	if _, err := h.Publish(ctx, "c", "", []byte("x"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	for i := range subs {
		if !open[i] {
			continue
		}
		var buf []*Envelope
		if e := next(t, subs[i], &buf); string(e.Msg.Data) != "x" {
			t.Fatalf("subscriber %d got %q", i, e.Msg.Data)
		}
	}
	c := h.lookup("c")
	c.subMu.Lock()
	n, idx := len(*c.subs.Load()), len(c.index)
	c.subMu.Unlock()
	if idx != len(open) || n > 2*len(open) {
		t.Fatalf("%d members listed, %d indexed, for %d subscribers", n, idx, len(open))
	}
}

// BenchmarkJoinOneChannel is one more subscriber of a channel that has
// many already, and one leaving: its cost must not grow with them (a
// reconnect storm of one channel's subscribers would be quadratic).
func BenchmarkJoinOneChannel(b *testing.B) {
	for _, held := range []int{100, 10000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			h := newTestHub(b, Options{})
			ctx := context.Background()
			join := func() *Session {
				ss, err := h.Subscribe(ctx, []string{"c"}, Client{Transport: "test"}, From{})
				if err != nil {
					b.Fatal(err)
				}
				return ss
			}
			for range held {
				defer join().Close()
			}
			b.ResetTimer()
			for b.Loop() {
				join().Close()
			}
		})
	}
}
