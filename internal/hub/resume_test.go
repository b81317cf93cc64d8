package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// A resume over several channels replays their messages in the order the
// node received them. The entries of one XREAD reply share a Received
// time and come channel by channel from the cache: their arrival order
// decides.
func TestSortByReceived(t *testing.T) {
	batch := time.Now()
	later := batch.Add(time.Millisecond)
	msgs := []*broker.Message{ // as the cache returns them: channel a, then b
		{Channel: "a", ID: "2-0", Received: batch, Arrival: 12},
		{Channel: "a", ID: "3-0", Received: later, Arrival: 13},
		{Channel: "b", ID: "1-0", Received: batch, Arrival: 11},
		{Channel: "b", ID: "2-1", Received: batch, Arrival: 14},
	}
	var envs []*Envelope
	for _, m := range msgs {
		envs = append(envs, NewEnvelope(m))
	}
	sortByReceived(envs)
	var got []string
	for _, e := range envs {
		got = append(got, e.Msg.Channel+e.Msg.ID)
	}
	want := []string{"b1-0", "a2-0", "b2-1", "a3-0"} // b2-1 arrived before a3-0 was received
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

// A client's cursor that cannot be an id at all (too long, not printable
// ASCII) is refused; one that merely is no id of ours is not, so that
// the client gets the reset signal and carries on.
func TestParseFrom(t *testing.T) {
	for _, tc := range []struct {
		name, cursor string
		bad          bool
	}{
		{"none", "", false},
		{"stream id", "1700000000000-0", false},
		{"node id", "p.abc.3", false},
		{"no id of ours", "not-an-id", false},
		{"longest", strings.Repeat("x", replay.MaxCursorLen), false},
		{"too long", strings.Repeat("x", replay.MaxCursorLen+1), true},
		{"space", "1-0 2", true},
		{"newline", "1-0\n", true},
		{"control", "1-0\x00", true},
		{"DEL", "1-0\x7f", true},
		{"not ASCII", "é", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFrom(tc.cursor, []string{"a", "b"})
			if tc.bad != errors.Is(err, ErrBadCursor) || !tc.bad && err != nil {
				t.Fatalf("ParseFrom(%.20q) = %v, want bad %v", tc.cursor, err, tc.bad)
			}
		})
	}
}

// A cursor that is no id of ours cannot be placed: every channel gets
// the reset signal, and the session starts at the newest positions.
func TestUnplaceableCursorResetsEveryChannel(t *testing.T) {
	obs := &recordObserver{}
	h := newTestHub(t, Options{Observer: obs})
	channels := []string{"a", "b"}
	from, err := ParseFrom("not-an-id", channels)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := h.Subscribe(context.Background(), channels, Client{Transport: "test"}, from)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	replayed := ss.TakeReplay()
	if len(replayed) != 2 {
		t.Fatalf("replay of %d messages, want a reset per channel", len(replayed))
	}
	for i, e := range replayed {
		var data struct{ Channel, Reason string }
		if err := json.Unmarshal(e.Msg.Data, &data); err != nil || e.Msg.Event != eventReset ||
			e.Msg.Channel != channels[i] || data.Channel != channels[i] || data.Reason != "unknown-id" {
			t.Fatalf("replayed %s %q %s, want the reset of %s for unknown-id", e.Msg.Channel, e.Msg.Event, e.Msg.Data, channels[i])
		}
	}
	want := replay.EncodeCursor([]replay.Position{{Channel: "a", ID: h.LastID("a")}, {Channel: "b", ID: h.LastID("b")}})
	if cur := ss.Cursor(); cur != want || h.LastID("a") == "" {
		t.Fatalf("cursor %q, want the newest positions %q", cur, want)
	}
	if _, resets, _ := obs.got(); fmt.Sprint(resets) != "[unknown-id unknown-id]" {
		t.Fatalf("observer got resets %v", resets)
	}
	if len(ss.TakeReplay()) != 0 {
		t.Fatal("the replay was handed out twice")
	}
}

// A client at a position of one channel resumes it from the replay
// cache; one that adds a channel (a bare id for several) resumes the
// channel the id belongs to and starts the new one at its newest
// position.
func TestResumeFromCache(t *testing.T) {
	cache, err := replay.New(replay.Options{Size: 16, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	obs := &recordObserver{}
	h := newTestHub(t, Options{Replay: cache, Linger: time.Minute, Observer: obs})
	ctx := context.Background()
	subscribe(t, h, "a", "b").Close() // the channels linger, as for a client that left
	var ids []string
	for _, d := range []string{"1", "2", "3"} {
		id, err := h.Publish(ctx, "a", "", []byte(d), broker.SourceHTTP)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	lastB := h.LastID("b")

	for _, tc := range []struct {
		name       string
		channels   []string
		wantCursor string
	}{
		{"one channel", []string{"a"}, ids[2]},
		{"a channel added", []string{"a", "b"}, replay.EncodeCursor([]replay.Position{{Channel: "a", ID: ids[2]}, {Channel: "b", ID: lastB}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, err := ParseFrom(ids[0], tc.channels)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := h.Subscribe(ctx, tc.channels, Client{Transport: "test"}, from)
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			var got []string
			for _, e := range ss.TakeReplay() {
				got = append(got, e.Msg.ID)
				ss.Advance(e)
			}
			if fmt.Sprint(got) != fmt.Sprint(ids[1:]) {
				t.Fatalf("replayed %v, want %v", got, ids[1:])
			}
			if cur := ss.Cursor(); cur != tc.wantCursor {
				t.Fatalf("cursor %q after the replay, want %q", cur, tc.wantCursor)
			}
		})
	}
	if _, resets, resumes := obs.got(); len(resets) != 0 || fmt.Sprint(resumes) != "[cache cache]" {
		t.Fatalf("observer got resets %v and resumes %v, want two resumes from the cache", resets, resumes)
	}
}
