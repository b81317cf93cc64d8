package realtime

import (
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
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
	var envs []*hub.Envelope
	for _, m := range msgs {
		envs = append(envs, hub.NewEnvelope(m))
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
