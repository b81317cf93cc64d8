package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// A subscriber without a cursor that asks to rewind gets the newest
// retained messages first, in order, then live ones; one with a cursor
// resumes from it instead; a message that reaches the node between the
// subscription and the rewind's read is sent once.
func TestRewind(t *testing.T) {
	cache, err := replay.New(replay.Options{Size: 16, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	h := newTestHub(t, Options{Replay: cache, Linger: time.Minute})
	ctx := context.Background()
	subscribe(t, h, "a").Close() // the channel lingers and keeps its log
	var ids []string
	publish := func(data string) string {
		t.Helper()
		id, err := h.Publish(ctx, "a", "", []byte(data), broker.SourceHTTP)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		return id
	}
	for i := 1; i <= 5; i++ {
		publish(fmt.Sprint(i))
	}

	open := func(cursor string, rewind int) *Session {
		t.Helper()
		from, err := ParseFrom(cursor, []string{"a"})
		if err != nil {
			t.Fatal(err)
		}
		from.Rewind([]int{rewind})
		ss, err := h.Subscribe(ctx, []string{"a"}, Client{Transport: "test"}, from)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ss.Close)
		return ss
	}
	data := func(envs []*Envelope) string {
		var out []string
		for _, e := range envs {
			out = append(out, string(e.Msg.Data))
		}
		return fmt.Sprint(out)
	}

	t.Run("last n then live", func(t *testing.T) {
		ss := open("", 3)
		if got := data(ss.TakeReplay()); got != "[3 4 5]" {
			t.Fatalf("rewound %s, want [3 4 5]", got)
		}
		if ss.Cursor() != ids[4] {
			t.Fatalf("cursor %q, want the last rewound id %q", ss.Cursor(), ids[4])
		}
		publish("6")
		var buf []*Envelope
		if e := next(t, ss, &buf); string(e.Msg.Data) != "6" {
			t.Fatalf("live %q, want 6", e.Msg.Data)
		}
	})
	t.Run("more than retained", func(t *testing.T) {
		ss := open("", 100)
		if got := data(ss.TakeReplay()); got != "[1 2 3 4 5 6]" {
			t.Fatalf("rewound %s", got)
		}
	})
	t.Run("cursor wins", func(t *testing.T) {
		ss := open(ids[3], 3)
		if got := data(ss.TakeReplay()); got != "[5 6]" {
			t.Fatalf("resumed %s, want [5 6] (after the cursor, not the rewind)", got)
		}
	})
	t.Run("published during the read", func(t *testing.T) {
		from, _ := ParseFrom("", []string{"a"})
		from.Rewind([]int{2})
		s, err := h.subscribe(ctx, []string{"a"}, Client{Transport: "test"}) // live from here
		if err != nil {
			t.Fatal(err)
		}
		publish("7") // queued live and in the cache the rewind reads
		ss := h.resume(ctx, s, from)
		defer ss.Close()
		if got := data(ss.TakeReplay()); got != "[6 7]" {
			t.Fatalf("rewound %s, want [6 7]", got)
		}
		publish("8")
		var buf []*Envelope
		if e := next(t, ss, &buf); string(e.Msg.Data) != "8" {
			t.Fatalf("after the rewind got %q, want 8 (7 was rewound already)", e.Msg.Data)
		}
	})
}

// A client without a position starts where it joined the channel: a
// message that reaches the node while its subscription is set up comes
// live, after a starting position before it (not one that says it was
// seen already, which a client resuming from it would miss).
func TestStartPositionBeforeLiveMessages(t *testing.T) {
	h := newTestHub(t, Options{Linger: time.Minute})
	ctx := context.Background()
	if _, err := h.Publish(ctx, "a", "", []byte("before"), broker.SourceHTTP); err != nil {
		t.Fatal(err)
	}
	s, err := h.subscribe(ctx, []string{"a"}, Client{Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	during, err := h.Publish(ctx, "a", "", []byte("during"), broker.SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	from, _ := ParseFrom("", []string{"a"})
	ss := h.resume(ctx, s, from)
	defer ss.Close()
	if ss.Cursor() == during {
		t.Fatalf("starting position %q is the message still to come", ss.Cursor())
	}
	var buf []*Envelope
	if e := next(t, ss, &buf); e.Msg.ID != during {
		t.Fatalf("first message %q, want %q", e.Msg.ID, during)
	}
}
