package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// TestRedisClusterTwoNodes: a real 3-master Redis Cluster and two Caddy
// nodes whose `redis` line lists the cluster's nodes. Backends PUBLISH,
// SPUBLISH and XADD as usual; both nodes deliver everything, and a client
// resumes a stream-fed channel on the other node.
func TestRedisClusterTwoNodes(t *testing.T) {
	cl := testredis.StartCluster(t, 3)
	site := `
{
}
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		redis ` + strings.Join(cl.URLs(), " ") + `
		publish_key k
	}
}
`
	a := harness.StartCaddy(t, site)
	b := harness.StartCaddy(t, site)
	backend := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer backend.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// channels whose keys live on different masters
	channels := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"}
	for _, ch := range channels {
		sa := cursorSSE(t, a, "channel="+ch, nil)
		sb := cursorSSE(t, b, "channel="+ch, nil)
		if err := backend.Publish(ctx, "realtime:"+ch, "pub "+ch).Err(); err != nil {
			t.Fatal(err)
		}
		if err := backend.SPublish(ctx, "realtime:"+ch, "spub "+ch).Err(); err != nil {
			t.Fatal(err)
		}
		id, err := backend.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:" + ch, Values: []any{"data", "xadd " + ch}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*cursorStream{sa, sb} {
			got := map[string]string{}
			for i := 0; i < 3; i++ {
				ev := s.next(t)
				got[ev.Data] = ev.ID
			}
			for _, want := range []string{"pub ", "spub ", "xadd "} {
				if _, ok := got[want+ch]; !ok {
					t.Fatalf("%s: got %v, missing %q", ch, got, want+ch)
				}
			}
			if got["xadd "+ch] != id {
				t.Fatalf("%s: stream id %s delivered as %s", ch, id, got["xadd "+ch])
			}
		}
		sa.close()
		sb.close()
	}

	// cross-node resume of a stream-fed channel
	s := cursorSSE(t, a, "channel=orders", nil)
	first := cursorPost(t, a, "orders", "first")
	if ev := s.next(t); ev.ID != first {
		t.Fatalf("first message id %s, published as %s", ev.ID, first)
	}
	s.close()
	for i := 0; i < 3; i++ {
		if err := backend.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:orders", Values: []any{"data", fmt.Sprint("missed ", i)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r := cursorSSE(t, b, "channel=orders", http.Header{"Last-Event-Id": {first}})
	cursorExpect(t, r, "missed 0", "missed 1", "missed 2")
}
