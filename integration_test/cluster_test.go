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

// TestRedisClusterFailover: a cluster whose masters have replicas. When
// the replica of the master holding a channel's slot takes over, by
// CLUSTER FAILOVER or because the master crashed, the module follows: the
// stream reader reads on from its last id on the new master, and the
// sharded subscription moves there.
func TestRedisClusterFailover(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "manual"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testClusterFailover(t, crash)
		})
	}
}

func testClusterFailover(t *testing.T, crash bool) {
	cl := testredis.StartClusterWithReplicas(t, 3, 1)
	c := harness.StartCaddy(t, `
{
}
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		redis `+strings.Join(cl.URLs(), " ")+`
		publish_key k
	}
}
`)
	backend := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer backend.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const key = "realtime:orders"

	// the master of the key's slot, and its replica
	mc, err := backend.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var master, replica *testredis.Server
	for _, s := range cl.Servers {
		if s.Addr() == mc.Options().Addr {
			master = s
		}
	}
	if master == nil {
		t.Fatalf("no server at %s", mc.Options().Addr)
	}
	for _, s := range cl.Servers {
		if s == master || s.Role() != "slave" {
			continue
		}
		if info, _ := s.Do("INFO", "replication"); strings.Contains(fmt.Sprint(info), fmt.Sprintf("master_port:%d\r", master.Port)) {
			replica = s
		}
	}
	if replica == nil {
		t.Fatalf("no replica of %s", master.Addr())
	}

	s := cursorSSE(t, c, "channel=orders", nil)
	if err := backend.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"data", "before"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if ev := s.next(t); ev.Data != "before" {
		t.Fatalf("got %q, want the message published before the failover", ev.Data)
	}

	start := time.Now()
	if crash {
		master.Kill()
	} else if _, err := replica.Do("CLUSTER", "FAILOVER"); err != nil {
		t.Fatal(err)
	}
	for replica.Role() != "master" || (!crash && master.Role() != "slave") {
		if ctx.Err() != nil {
			t.Fatal("the replica did not take over")
		}
		time.Sleep(50 * time.Millisecond) // polling roles: no event to await
	}
	t.Logf("failover took %v", time.Since(start))
	// the backend writes to the new master itself: go-redis' cluster
	// client can take a minute to give up on a crashed node
	v, err := replica.Do("XADD", key, "*", "data", "after")
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprint(v)
	// a crash drops the sharded subscription: pub/sub messages may have
	// been lost, and the client is told so first
	ev := nextMessage(t, s, 30*time.Second)
	if ev.Data != "after" || ev.ID != id {
		t.Fatalf("after the failover got %q (id %s), want %q (id %s)", ev.Data, ev.ID, "after", id)
	}
	t.Logf("first stream message after %v", time.Since(start))

	// sharded pub/sub is live only: publish once the module subscribed
	// again, on the slot's new master (the module subscribes only where
	// the master answers as one, not on the old master while the cluster
	// converges).
	subscribed := func() bool {
		v, err := replica.Do("PUBSUB", "SHARDNUMSUB", key)
		return err == nil && fmt.Sprint(v) == fmt.Sprintf("[%s 1]", key)
	}
	for !subscribed() {
		if ctx.Err() != nil {
			t.Fatal("the module did not subscribe again in the slot's shard")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("sharded subscription back after %v", time.Since(start))
	if _, err := replica.Do("SPUBLISH", key, "sharded after"); err != nil {
		t.Fatal(err)
	}
	if ev := nextMessage(t, s, 10*time.Second); ev.Data != "sharded after" {
		t.Fatalf("got %q (event %q), want the message SPUBLISHed on the new master", ev.Data, ev.Event)
	}
	if s.gaps == 0 {
		t.Fatal("the sharded subscription was dropped, but the client was not told it may have missed messages (no gap signal)")
	}
}
