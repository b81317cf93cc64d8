package integration_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
)

// TestRedisSentinelFailover: the `redis` line names a Sentinel. When the
// master dies, the module follows the Sentinel to the promoted replica:
// clients that stay connected get what backends publish there, by XADD
// and, once the module has subscribed again, by PUBLISH.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	rs := testredis.StartSentinel(t)
	c := harness.StartCaddy(t, `
{
}
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		redis `+rs.URL()+`
		publish_key k
	}
}
`)
	s := cursorSSE(t, c, "channel=orders", nil)
	if _, err := rs.Master.Do("XADD", "realtime:orders", "*", "data", "before"); err != nil {
		t.Fatal(err)
	}
	if ev := s.next(t); ev.Data != "before" {
		t.Fatalf("got %q, want the message published before the failover", ev.Data)
	}

	start := time.Now()
	rs.Failover(t)
	t.Logf("failover took %v", time.Since(start))
	id, err := rs.Replica.Do("XADD", "realtime:orders", "*", "data", "after")
	if err != nil {
		t.Fatal(err)
	}
	// the stream reader reconnects through the Sentinel and reads on from
	// its last id: the message published meanwhile is not lost. The
	// pub/sub subscription was interrupted too, and whatever was
	// PUBLISHed meanwhile is lost to Redis itself: the client may be told
	// so (a gap signal) first, depending on which of the two connections
	// comes back first.
	ev := nextMessage(t, s, 30*time.Second)
	t.Logf("first stream message after %v", time.Since(start))
	if ev.Data != "after" || ev.ID != fmt.Sprint(id) {
		t.Fatalf("after the failover got %q (id %s), want %q (id %v)", ev.Data, ev.ID, "after", id)
	}

	// pub/sub is live only: publish once the module subscribed again
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := rs.Replica.Do("PUBSUB", "NUMSUB", "realtime:orders")
		if err == nil && fmt.Sprint(n) == "[realtime:orders 1]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the module did not subscribe on the new master within 30s (NUMSUB %v, %v)", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("resubscribed after %v", time.Since(start))
	if _, err := rs.Replica.Do("PUBLISH", "realtime:orders", "live"); err != nil {
		t.Fatal(err)
	}
	if ev := nextMessage(t, s, 10*time.Second); ev.Data != "live" {
		t.Fatalf("got %q (event %q), want the message published on the new master", ev.Data, ev.Event)
	}
	if s.gaps == 0 {
		t.Fatal("the pub/sub subscription was interrupted, but the client was not told it may have missed messages (no gap signal)")
	}
}
