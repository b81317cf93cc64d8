package broker

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

// testCluster is a 3-master Redis Cluster on loopback ports.
type testCluster struct {
	srvs    []*testredis.Server
	urls    []string
	backend *redis.ClusterClient // acts as the backends do
}

func startCluster(t *testing.T) *testCluster {
	t.Helper()
	c := testredis.StartCluster(t, 3)
	tc := &testCluster{srvs: c.Servers, urls: c.URLs()}
	tc.backend = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = tc.backend.Close() })
	return tc
}

// masterOf returns the index of the server owning key's slot.
func (tc *testCluster) masterOf(t *testing.T, key string) int {
	t.Helper()
	c, err := tc.backend.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range tc.srvs {
		if c.Options().Addr == s.Addr() {
			return i
		}
	}
	t.Fatalf("no server for %s", c.Options().Addr)
	return -1
}

// channelsOnEachMaster returns one channel name per master, so their keys
// (prefix + name) hash to slots owned by different masters.
func (tc *testCluster) channelsOnEachMaster(t *testing.T, prefix, base string) []string {
	t.Helper()
	out := make([]string, len(tc.srvs))
	found := 0
	for i := 0; found < len(out) && i < 1000; i++ {
		name := fmt.Sprint(base, i)
		if m := tc.masterOf(t, prefix+name); out[m] == "" {
			out[m] = name
			found++
		}
	}
	if found < len(out) {
		t.Fatal("no channel for some master")
	}
	return out
}

func newClusterBroker(t *testing.T, tc *testCluster, urls []string, opts RedisOptions) (*Redis, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	opts.URLs = urls
	if opts.HealthCheck == 0 {
		opts.HealthCheck = time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Second
	}
	b, err := NewRedis(opts, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	if !b.Healthy() {
		t.Fatal("not healthy after NewRedis")
	}
	if _, ok := b.Client().(*redis.ClusterClient); !ok {
		t.Fatalf("Client() is %T, want a ClusterClient", b.Client())
	}
	return b, rec
}

func TestKeySlot(t *testing.T) {
	// the example of the Redis Cluster specification
	if got := keySlot("123456789"); got != 0x31C3%16384 {
		t.Fatalf("keySlot = %d", got)
	}
}

func TestRedisCluster(t *testing.T) {
	tc := startCluster(t)
	ctx := context.Background()

	t.Run("keyslot", func(t *testing.T) {
		keys := []string{"foo", "", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{", "}{x}"}
		for i := 0; i < 50; i++ {
			keys = append(keys, fmt.Sprint("realtime:k", i, "{", i%3, "}"))
		}
		for _, key := range keys {
			v, err := tc.srvs[0].Do("CLUSTER", "KEYSLOT", key)
			if err != nil {
				t.Fatal(err)
			}
			if got := keySlot(key); int64(got) != v.(int64) {
				t.Fatalf("keySlot(%q) = %d, redis says %v", key, got, v)
			}
		}
	})

	// why each slot has its own XREAD: keys of two slots cannot share
	// one, even on one master
	t.Run("crossslot", func(t *testing.T) {
		k1 := "xs:a"
		m := tc.masterOf(t, k1)
		k2 := ""
		for i := 0; k2 == ""; i++ {
			if k := fmt.Sprint("xs:b", i); tc.masterOf(t, k) == m && keySlot(k) != keySlot(k1) {
				k2 = k
			}
		}
		_, err := tc.srvs[m].Do("XREAD", "STREAMS", k1, k2, "0", "0")
		if err == nil || !strings.HasPrefix(err.Error(), "CROSSSLOT") {
			t.Fatalf("XREAD of two slots: %v", err)
		}
	})

	t.Run("pubsub", func(t *testing.T) {
		opts := RedisOptions{Prefix: "ps:"}
		b1, rec1 := newClusterBroker(t, tc, tc.urls, opts)
		b2, rec2 := newClusterBroker(t, tc, tc.urls[1:], opts) // seeds: two of the nodes
		chans := tc.channelsOnEachMaster(t, opts.Prefix, "ch")
		for _, ch := range chans {
			for _, b := range []*Redis{b1, b2} {
				if last := subscribe(t, b, ch); !strings.HasSuffix(last, ".0") || IsStreamID(last) {
					t.Fatalf("lastID of %s: %q", ch, last)
				}
			}
		}
		seq := map[*recorder]map[string]uint64{rec1: {}, rec2: {}}
		expect := func(ch, payload string) {
			t.Helper()
			for _, rec := range []*recorder{rec1, rec2} {
				e := rec.next(wait)
				if e.Msg == nil || e.Channel != ch || !bytes.Equal(e.Msg.Data, []byte(payload)) || e.Msg.Source != SourcePubSub {
					t.Fatalf("%s: want %q, got %+v (gap %q)", ch, payload, e.Msg, e.Reason)
				}
				_, s, ok := parseNodeID(e.Msg.ID)
				if !ok || s != seq[rec][ch]+1 {
					t.Fatalf("%s: id %q after seq %d", ch, e.Msg.ID, seq[rec][ch])
				}
				seq[rec][ch] = s
			}
		}
		for i, ch := range chans {
			key := opts.Prefix + ch
			p := fmt.Sprintf("classic \x00\xff\n%d ✓", i)
			if err := tc.backend.Publish(ctx, key, p).Err(); err != nil {
				t.Fatal(err)
			}
			expect(ch, p)
			// PUBLISH on every node, the slot's master or not
			for j, s := range tc.srvs {
				p := fmt.Sprintf("on node %d", j)
				if _, err := s.Do("PUBLISH", key, p); err != nil {
					t.Fatal(err)
				}
				expect(ch, p)
			}
			p = fmt.Sprintf("sharded \r\n\x00%d 😀", i)
			n, err := tc.backend.SPublish(ctx, key, p).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Fatalf("SPUBLISH %s reached %d subscribers, want 2", key, n)
			}
			expect(ch, p)
		}
		rec1.none(50 * time.Millisecond)
		rec2.none(0)
		// unsubscribed channels are not delivered
		for _, ch := range chans {
			b1.Unsubscribe(ch)
		}
		for _, ch := range chans {
			if err := tc.backend.SPublish(ctx, opts.Prefix+ch, "late").Err(); err != nil {
				t.Fatal(err)
			}
			e := rec2.next(wait)
			if e.Msg == nil || string(e.Msg.Data) != "late" {
				t.Fatalf("got %+v", e)
			}
		}
		rec1.none(100 * time.Millisecond)
	})

	t.Run("streams", func(t *testing.T) {
		opts := RedisOptions{Prefix: "st:"}
		b1, rec1 := newClusterBroker(t, tc, tc.urls, opts)
		b2, rec2 := newClusterBroker(t, tc, tc.urls, opts)
		chans := tc.channelsOnEachMaster(t, opts.Prefix, "s")
		// a stream stored before the subscription: its last id is returned
		before, err := tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: opts.Prefix + chans[0], Values: []any{"data", "before"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chans {
			for _, b := range []*Redis{b1, b2} {
				last := subscribe(t, b, ch)
				if ch == chans[0] && last != before {
					t.Fatalf("lastID %q, want %q", last, before)
				}
				if ch != chans[0] && last == "" || ch != chans[0] && IsStreamID(last) {
					t.Fatalf("lastID of %s: %q", ch, last)
				}
			}
		}
		ids := map[string][]string{}
		for round := 0; round < 3; round++ {
			for i, ch := range chans {
				p := fmt.Sprintf("x\x00%d-%d\n", round, i)
				var id string
				if round == 1 {
					// through a broker: the same on the other node
					id, err = b1.Publish(ctx, ch, "ev", []byte(p), SourceHTTP)
				} else {
					id, err = tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: opts.Prefix + ch, Values: []any{"data", p}}).Result()
				}
				if err != nil {
					t.Fatal(err)
				}
				ids[ch] = append(ids[ch], id)
				for _, rec := range []*recorder{rec1, rec2} {
					e := rec.next(wait)
					if e.Msg == nil || e.Channel != ch || e.Msg.ID != id || string(e.Msg.Data) != p {
						t.Fatalf("round %d %s: want %s %q, got %+v (gap %q)", round, ch, id, p, e.Msg, e.Reason)
					}
					wantSrc := SourceStream
					if round == 1 && rec == rec1 {
						wantSrc = SourceHTTP
					}
					if e.Msg.Source != wantSrc || (round == 1) != (e.Msg.Event == "ev") {
						t.Fatalf("round %d %s: source %v event %q", round, ch, e.Msg.Source, e.Msg.Event)
					}
				}
			}
		}
		rec1.none(50 * time.Millisecond)
		rec2.none(0)
		// history, from either node
		for _, ch := range chans {
			for _, b := range []*Redis{b1, b2} {
				ms, err := b.History(ctx, ch, ids[ch][0], 10)
				if err != nil {
					t.Fatal(err)
				}
				if len(ms) != 2 || ms[0].ID != ids[ch][1] || ms[1].ID != ids[ch][2] || ms[0].Event != "ev" {
					t.Fatalf("history of %s: %+v", ch, ms)
				}
				if _, err := b.History(ctx, ch, "p.abc.1", 10); err != errNoHistory {
					t.Fatalf("history after a node id: %v", err)
				}
			}
		}
		ms, err := b2.History(ctx, chans[0], "", 10)
		if err != nil || len(ms) != 4 || ms[0].ID != before || string(ms[0].Data) != "before" {
			t.Fatalf("history from start: %v %+v", err, ms)
		}
		// after unsubscribing every channel of a slot, a new subscription
		// on that slot gets live messages again
		for _, ch := range chans {
			b1.Unsubscribe(ch)
		}
		for _, ch := range chans {
			subscribe(t, b1, ch)
			id, err := tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: opts.Prefix + ch, Values: []any{"data", "again"}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range []*recorder{rec1, rec2} {
				if e := rec.next(wait); e.Msg == nil || e.Msg.ID != id {
					t.Fatalf("%s: got %+v, want %s", ch, e.Msg, id)
				}
			}
		}
	})

	t.Run("readiness", func(t *testing.T) {
		opts := RedisOptions{Prefix: "rd:"}
		b, rec := newClusterBroker(t, tc, tc.urls, opts)
		for i := 0; i < 150; i++ {
			// a third of the time the same name again, unsubscribed just
			// before; else a fresh name (a new slot, mostly)
			ch := "same"
			if i%3 != 0 {
				ch = fmt.Sprint("c", i)
			}
			subscribe(t, b, ch)
			payload := fmt.Sprint("m", i)
			var err error
			switch i % 3 {
			case 0:
				err = tc.backend.Publish(ctx, opts.Prefix+ch, payload).Err()
			case 1:
				err = tc.backend.SPublish(ctx, opts.Prefix+ch, payload).Err()
			case 2:
				err = tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: opts.Prefix + ch, Values: []any{"data", payload}}).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
			e := rec.next(wait)
			if e.Msg == nil || string(e.Msg.Data) != payload || e.Channel != ch {
				t.Fatalf("round %d: got %+v (gap %q)", i, e.Msg, e.Reason)
			}
			b.Unsubscribe(ch)
		}
		rec.none(50 * time.Millisecond)
	})

	// killed pub/sub connections (the classic one and every sharded one)
	// are made again: each channel gets one gap per resubscription, then
	// live messages of both kinds; streams go on
	t.Run("reconnect", func(t *testing.T) {
		opts := RedisOptions{Prefix: "rc:"}
		b, rec := newClusterBroker(t, tc, tc.urls, opts)
		chans := tc.channelsOnEachMaster(t, opts.Prefix, "r")
		for _, ch := range chans {
			subscribe(t, b, ch)
		}
		for _, s := range tc.srvs {
			if _, err := s.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
				t.Fatal(err)
			}
		}
		gaps := map[string]int{}
		for n := 0; n < 2*len(chans); n++ {
			e := rec.next(wait)
			if e.Msg != nil || e.Reason != "gap" {
				t.Fatalf("want a gap, got %+v", e.Msg)
			}
			gaps[e.Channel]++
		}
		for _, ch := range chans {
			if gaps[ch] != 2 {
				t.Fatalf("gaps: %v", gaps)
			}
		}
		// (a PUBLISH reaches the other nodes over the cluster bus, later
		// than an SPUBLISH or XADD on the slot's master: one at a time)
		for _, ch := range chans {
			key := opts.Prefix + ch
			for _, kind := range []string{"p", "s", "x"} {
				var err error
				switch kind {
				case "p":
					err = tc.backend.Publish(ctx, key, kind).Err()
				case "s":
					err = tc.backend.SPublish(ctx, key, kind).Err()
				case "x":
					err = tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"data", kind}}).Err()
				}
				if err != nil {
					t.Fatal(err)
				}
				if e := rec.next(wait); e.Msg == nil || e.Channel != ch || string(e.Msg.Data) != kind {
					t.Fatalf("%s: want %q, got %+v (gap %q)", ch, kind, e.Msg, e.Reason)
				}
			}
		}
		// killed stream reader connections resume from the last id read
		for _, s := range tc.srvs {
			if _, err := s.Do("CLIENT", "KILL", "TYPE", "normal"); err != nil {
				t.Fatal(err)
			}
		}
		for _, ch := range chans {
			var ids []string
			for i := 0; i < 3; i++ {
				id, err := tc.backend.XAdd(ctx, &redis.XAddArgs{Stream: opts.Prefix + ch, Values: []any{"data", fmt.Sprint(i)}}).Result()
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			for i, id := range ids {
				if e := rec.next(wait); e.Msg == nil || e.Channel != ch || e.Msg.ID != id || string(e.Msg.Data) != fmt.Sprint(i) {
					t.Fatalf("%s: want %s, got %+v (gap %q)", ch, id, e.Msg, e.Reason)
				}
			}
		}
		rec.none(50 * time.Millisecond)
	})

	t.Run("close", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		rec := newRecorder(t)
		b, err := NewRedis(RedisOptions{URLs: tc.urls, Prefix: "cl:"}, rec, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range tc.channelsOnEachMaster(t, "cl:", "x") {
			subscribe(t, b, ch)
			if _, err := b.Publish(ctx, ch, "", []byte("x"), SourceHTTP); err != nil {
				t.Fatal(err)
			}
			rec.next(wait)
		}
		start := time.Now()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Close took %v", d)
		}
		if b.Healthy() {
			t.Fatal("healthy after Close")
		}
	})
}
