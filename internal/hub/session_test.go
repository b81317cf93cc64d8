package hub

import (
	"testing"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// A client that resumes on a node whose stream reader lags behind the
// node it came from is at a position the lagging node delivers live
// again: those stream-fed messages are dropped, later ones go out.
func TestSessionDropsStreamMessagesAtOrBeforePosition(t *testing.T) {
	tests := []struct {
		name      string
		positions []replay.Position
		live      []*broker.Message
		want      []string
	}{
		{
			name:      "one channel",
			positions: []replay.Position{{Channel: "a", ID: "100-1"}},
			live: []*broker.Message{
				{Channel: "a", ID: "100-0"}, {Channel: "a", ID: "100-1"},
				{Channel: "a", ID: "100-2"}, {Channel: "a", ID: "101-0"},
			},
			want: []string{"100-2", "101-0"},
		},
		{
			name:      "several channels",
			positions: []replay.Position{{Channel: "a", ID: "100-1"}, {Channel: "b", ID: "50-0"}},
			live: []*broker.Message{
				{Channel: "b", ID: "40-0"}, {Channel: "a", ID: "99-0"},
				{Channel: "b", ID: "60-0"}, {Channel: "a", ID: "100-1"}, {Channel: "a", ID: "200-0"},
			},
			want: []string{"60-0", "200-0"},
		},
		{
			name:      "node-assigned position",
			positions: []replay.Position{{Channel: "a", ID: "p.abc.3"}},
			live:      []*broker.Message{{Channel: "a", ID: "1-0"}, {Channel: "a", ID: "p.abc.4"}},
			want:      []string{"1-0", "p.abc.4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chans []string
			for _, p := range tc.positions {
				chans = append(chans, p.Channel)
			}
			s := newSubscriber(nil, chans, Client{Transport: "test"}, 64)
			for _, m := range tc.live {
				s.push(NewEnvelope(m), false, nil) // queued: no sink, no tally
			}
			ss := newSession(s, tc.positions, nil)
			var got []string
			for _, e := range ss.Next(nil) {
				ss.Advance(e)
				got = append(got, e.Msg.ID)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}
