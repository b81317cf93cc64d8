package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

const wait = 5 * time.Second

type healthLog struct {
	ch chan bool
}

func (h *healthLog) on(up bool) { h.ch <- up }

func (h *healthLog) expect(t *testing.T, up bool) {
	t.Helper()
	select {
	case got := <-h.ch:
		if got != up {
			t.Fatalf("health changed to %v, want %v", got, up)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("health did not change to %v", up)
	}
}

func newTestRedis(t *testing.T, srv *testredis.Server, opts RedisOptions) (*Redis, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	opts.URLs = []string{srv.URL()}
	if opts.HealthCheck == 0 {
		opts.HealthCheck = time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
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
	return b, rec
}

func subscribe(t *testing.T, b Broker, channel string) string {
	t.Helper()
	last, err := b.Subscribe(context.Background(), channel)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func TestRedisPubSubExactBytes(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	if last := subscribe(t, b, "news"); !strings.HasSuffix(last, ".0") || IsStreamID(last) {
		t.Fatalf("lastID of a channel without stream: %q, want the start of a pub/sub epoch", last)
	}
	payloads := []string{"hello", "\x00\xff\xfe binary \x00", "multi\nline\r\nend\n", "ünïcødé ✓ 😀", "", strings.Repeat("x", 100000)}
	var epoch string
	for i, p := range payloads {
		if err := client.Publish(ctx, "realtime:news", p).Err(); err != nil {
			t.Fatal(err)
		}
		m := rec.next(wait).Msg
		if m == nil || !bytes.Equal(m.Data, []byte(p)) || m.Channel != "news" || m.Source != SourcePubSub || m.Event != "" || m.Received.IsZero() {
			t.Fatalf("payload %d: delivered %+v", i, m)
		}
		ep, seq, ok := parseNodeID(m.ID)
		if !ok || seq != uint64(i)+1 || (i > 0 && ep != epoch) {
			t.Fatalf("payload %d: id %q", i, m.ID)
		}
		epoch = ep
	}
	// other prefixes and channels are not delivered
	if err := client.Publish(ctx, "news", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.Publish(ctx, "realtime:other", "x").Err(); err != nil {
		t.Fatal(err)
	}
	rec.none(100 * time.Millisecond)
}

func TestRedisSubscribeReadiness(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		// half the time a fresh name, half the time the same name again
		// (unsubscribed just before, so UNSUBSCRIBE and SUBSCRIBE race)
		ch := "same"
		if i%2 == 1 {
			ch = fmt.Sprint("c", i)
		}
		subscribe(t, b, ch)
		payload := fmt.Sprint("m", i)
		if err := client.Publish(ctx, "realtime:"+ch, payload).Err(); err != nil {
			t.Fatal(err)
		}
		e := rec.next(wait)
		if e.Msg == nil || string(e.Msg.Data) != payload || e.Channel != ch {
			t.Fatalf("round %d: got %+v (gap %q)", i, e.Msg, e.Reason)
		}
		b.Unsubscribe(ch)
	}
	rec.none(50 * time.Millisecond)
}

func TestRedisStreamLive(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	old, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:s", Values: []any{"data", "before"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if last := subscribe(t, b, "s"); last != old {
		t.Fatalf("Subscribe lastID %q, want %q", last, old)
	}
	subscribe(t, b, "empty") // a second stream read by the same XREAD
	for i, tc := range []struct{ ch, data, event string }{
		{"s", "one", "update"},
		{"s", "two\nlines\x00", ""},
		{"empty", "ü", "x.y"},
		{"s", "", "e"},
	} {
		values := []any{"data", tc.data}
		if tc.event != "" {
			values = append(values, "event", tc.event)
		}
		start := time.Now()
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:" + tc.ch, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		m := rec.next(wait).Msg
		if m == nil || m.ID != id || m.Channel != tc.ch || string(m.Data) != tc.data || m.Event != tc.event || m.Source != SourceStream {
			t.Fatalf("entry %d: delivered %+v, want id %s", i, m, id)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("entry %d took %v", i, d)
		}
	}
	// a channel subscribed while the reader is blocked is read at once
	subscribe(t, b, "late")
	start := time.Now()
	id, _ := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:late", Values: []any{"data", "x"}}).Result()
	if m := rec.next(wait).Msg; m == nil || m.ID != id {
		t.Fatalf("late channel: %+v", m)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("late channel took %v", d)
	}
	rec.none(50 * time.Millisecond)
}

func TestRedisStreamSubscribeReadiness(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		ch := fmt.Sprint("s", i%3)
		subscribe(t, b, ch)
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:" + ch, Values: []any{"data", fmt.Sprint(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		e := rec.next(wait)
		if e.Msg == nil || e.Msg.ID != id {
			t.Fatalf("round %d: got %+v, want %s", i, e.Msg, id)
		}
		b.Unsubscribe(ch)
	}
	rec.none(50 * time.Millisecond)
}

func TestRedisHistory(t *testing.T) {
	srv := testredis.Start(t)
	b, _ := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:h", Values: []any{"data", fmt.Sprint("m", i), "event", "e"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	msgs, err := b.History(ctx, "h", ids[1], 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("%d messages after %s", len(msgs), ids[1])
	}
	for i, m := range msgs {
		if m.ID != ids[i+2] || string(m.Data) != fmt.Sprint("m", i+2) || m.Event != "e" || m.Source != SourceStream || m.Channel != "h" {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if msgs, err := b.History(ctx, "h", ids[0], 2); err != nil || len(msgs) != 2 || msgs[0].ID != ids[1] {
		t.Fatalf("limit 2: %v %v", msgs, err)
	}
	if msgs, err := b.History(ctx, "h", "", 0); err != nil || len(msgs) != 5 {
		t.Fatalf("from the start: %d %v", len(msgs), err)
	}
	if msgs, err := b.History(ctx, "h", ids[4], 10); err != nil || len(msgs) != 0 {
		t.Fatalf("after the last: %v %v", msgs, err)
	}

	tests := []struct {
		name    string
		channel string
		after   string
		want    error
	}{
		{"node id", "h", formatNodeID("abc", 3), errNoHistory},
		{"garbage", "h", "yesterday", errUnknownID},
		{"future", "h", "99999999999999-0", errUnknownID},
		{"expired stream", "gone", ids[0], ErrTrimmed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.History(ctx, tc.channel, tc.after, 10); !errors.Is(err, tc.want) {
				t.Fatalf("History after %q: %v, want %v", tc.after, err, tc.want)
			}
		})
	}
	if msgs, err := b.History(ctx, "gone", "0-0", 10); err != nil || len(msgs) != 0 {
		t.Fatalf("missing stream from the start: %v %v", msgs, err)
	}

	// trimmed: the entries after ids[0] and ids[1] are partly gone
	if err := client.XTrimMaxLen(ctx, "realtime:h", 2).Err(); err != nil {
		t.Fatal(err)
	}
	for _, after := range ids[:3] {
		if _, err := b.History(ctx, "h", after, 10); !errors.Is(err, ErrTrimmed) {
			t.Fatalf("History after trimmed %s: %v", after, err)
		}
	}
	if msgs, err := b.History(ctx, "h", ids[3], 10); err != nil || len(msgs) != 1 || msgs[0].ID != ids[4] {
		t.Fatalf("after %s (first retained): %v %v", ids[3], msgs, err)
	}
	// XDEL in the middle: resuming before it is a gap, after it is not
	if err := client.XDel(ctx, "realtime:h", ids[4]).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.History(ctx, "h", ids[3], 10); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("History before a deleted entry: %v", err)
	}
	if msgs, err := b.History(ctx, "h", ids[4], 10); err != nil || len(msgs) != 0 {
		t.Fatalf("History after the deleted entry: %v %v", msgs, err)
	}
}

func TestRedisPublish(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{StreamTTL: time.Minute})
	client := srv.Client()
	ctx := context.Background()
	subscribe(t, b, "p")
	id, err := b.Publish(ctx, "p", "update", []byte("a\x00b\nc"), SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if !IsStreamID(id) {
		t.Fatalf("Publish id %q", id)
	}
	m := rec.next(wait).Msg
	if m == nil || m.ID != id || string(m.Data) != "a\x00b\nc" || m.Event != "update" || m.Source != SourceHTTP {
		t.Fatalf("delivered %+v", m)
	}
	ttl, err := client.TTL(ctx, "realtime:p").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("stream TTL %v %v", ttl, err)
	}
	xs, err := client.XRange(ctx, "realtime:p", "-", "+").Result()
	if err != nil || len(xs) != 1 || xs[0].Values["data"] != "a\x00b\nc" || xs[0].Values["event"] != "update" {
		t.Fatalf("stream holds %v %v", xs, err)
	}
	// no event: no event field
	if _, err := b.Publish(ctx, "p", "", []byte("x"), SourceWS); err != nil {
		t.Fatal(err)
	}
	if m := rec.next(wait).Msg; m.Event != "" || m.Source != SourceWS {
		t.Fatalf("delivered %+v", m)
	}
	// publishing to a channel not subscribed here works too
	if _, err := b.Publish(ctx, "elsewhere", "", []byte("x"), SourceHTTP); err != nil {
		t.Fatal(err)
	}
	rec.none(50 * time.Millisecond)
}

// Concurrent publishes from this node interleaved with XADDs of a backend:
// each message is delivered once, in stream order, with the right source.
func TestRedisPublishSources(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	subscribe(t, b, "mix")
	var mu sync.Mutex
	want := map[string]Source{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				id, err := b.Publish(ctx, "mix", "", []byte("node"), SourceWS)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[id] = SourceWS
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 100; i++ {
			id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:mix", Values: []any{"data", "backend"}}).Result()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			want[id] = SourceStream
			mu.Unlock()
		}
	}()
	wg.Wait()
	last := "0-0"
	for i := 0; i < 300; i++ {
		m := rec.next(wait).Msg
		if m == nil {
			t.Fatal("gap")
		}
		if CompareStreamIDs(m.ID, last) <= 0 {
			t.Fatalf("id %s after %s", m.ID, last)
		}
		last = m.ID
		if src, ok := want[m.ID]; !ok || src != m.Source {
			t.Fatalf("%s delivered with source %v, want %v (known %v)", m.ID, m.Source, src, ok)
		}
		delete(want, m.ID)
	}
	rec.none(50 * time.Millisecond)
}

func TestRedisUnsubscribeStopsDelivery(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	subscribe(t, b, "a")
	subscribe(t, b, "b")
	b.Unsubscribe("a")
	b.Unsubscribe("a") // twice is fine
	b.Unsubscribe("never")
	client.Publish(ctx, "realtime:a", "x")
	client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:a", Values: []any{"data", "x"}})
	// b's messages come after anything of a's would have
	client.Publish(ctx, "realtime:b", "pb")
	client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:b", Values: []any{"data", "xb"}})
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		e := rec.next(wait)
		if e.Channel != "b" {
			t.Fatalf("delivered on %q after Unsubscribe", e.Channel)
		}
		got[string(e.Msg.Data)] = true
	}
	if !got["pb"] || !got["xb"] {
		t.Fatalf("got %v", got)
	}
	rec.none(100 * time.Millisecond)
	// the UNSUBSCRIBE reached Redis
	deadline := time.Now().Add(wait)
	for {
		n, err := client.PubSubNumSub(ctx, "realtime:a").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n["realtime:a"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still subscribed in redis")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRedisRestart(t *testing.T) {
	srv := testredis.Start(t)
	hl := &healthLog{ch: make(chan bool, 16)}
	b, rec := newTestRedis(t, srv, RedisOptions{OnHealth: hl.on})
	hl.expect(t, true)
	ctx := context.Background()
	subscribe(t, b, "live")
	client := srv.Client()
	client.Publish(ctx, "realtime:live", "before")
	first := rec.next(wait).Msg
	if first == nil || string(first.Data) != "before" {
		t.Fatalf("before the restart: %+v", first)
	}

	srv.Kill()
	hl.expect(t, false)
	if b.Healthy() {
		t.Fatal("healthy while redis is down")
	}
	start := time.Now()
	if _, err := b.Publish(ctx, "live", "", []byte("x"), SourceHTTP); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Publish while down: %v", err)
	}
	if _, err := b.Subscribe(ctx, "other"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Subscribe while down: %v", err)
	}
	if _, err := b.History(ctx, "live", "1-0", 10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("History while down: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("calls while down took %v", d)
	}

	srv.Restart()
	hl.expect(t, true)
	// the gap comes once the subscription is confirmed again
	e := rec.nextOf("live", 10*time.Second)
	if e.Msg != nil || e.Reason != "gap" {
		t.Fatalf("after the restart: %+v, want a gap", e)
	}
	client.Publish(ctx, "realtime:live", "after")
	m := rec.nextOf("live", wait).Msg
	if m == nil || string(m.Data) != "after" {
		t.Fatalf("after the restart: %+v", m)
	}
	oldEpoch, _, _ := parseNodeID(first.ID)
	if ep, seq, ok := parseNodeID(m.ID); !ok || ep == oldEpoch || seq != 1 {
		t.Fatalf("id after the gap %q (before %q)", m.ID, first.ID)
	}
	// streams work again too
	id, err := b.Publish(ctx, "live", "", []byte("p"), SourceHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if m := rec.nextOf("live", wait).Msg; m == nil || m.ID != id {
		t.Fatalf("stream after the restart: %+v", m)
	}
}

// The reader's connection is cut while a backend keeps adding: the reader
// reconnects and catches up from the last id it saw, without a gap.
func TestRedisStreamCatchUp(t *testing.T) {
	srv := testredis.Start(t)
	hl := &healthLog{ch: make(chan bool, 16)}
	b, rec := newTestRedis(t, srv, RedisOptions{OnHealth: hl.on})
	hl.expect(t, true)
	ctx := context.Background()
	client := srv.Client()
	subscribe(t, b, "cu")
	add := func(data string) string {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:cu", Values: []any{"data", data}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	id0 := add("0")
	if m := rec.next(wait).Msg; m == nil || m.ID != id0 {
		t.Fatalf("first: %+v", m)
	}
	// kill the XREAD connection, then add while it reconnects
	var readerID int64
	deadline := time.Now().Add(wait)
	for readerID == 0 {
		list, err := client.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "cmd=xread") {
				fmt.Sscanf(line, "id=%d", &readerID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no xread client")
		}
	}
	if err := client.ClientKillByFilter(ctx, "ID", fmt.Sprint(readerID)).Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 1; i <= 20; i++ {
		ids = append(ids, add(fmt.Sprint(i)))
	}
	hl.expect(t, false)
	hl.expect(t, true)
	for i, id := range ids {
		e := rec.next(wait)
		if e.Msg == nil || e.Msg.ID != id {
			t.Fatalf("catch-up %d: %+v (gap %q), want %s", i, e.Msg, e.Reason, id)
		}
	}
	rec.none(100 * time.Millisecond)
}

func TestRedisCloseStopsEverything(t *testing.T) {
	srv := testredis.Start(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rec := newRecorder(t)
	b, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}}, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, b, "x")
	if _, err := b.Publish(context.Background(), "x", "", []byte("x"), SourceHTTP); err != nil {
		t.Fatal(err)
	}
	rec.next(wait)
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if b.Healthy() {
		t.Fatal("healthy after Close")
	}
}

func TestRedisCloseWhileDown(t *testing.T) {
	srv := testredis.Start(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var ups atomic.Int32
	b, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}, OnHealth: func(up bool) { ups.Add(1) }}, newRecorder(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func TestRedisUnreachableAtStart(t *testing.T) {
	port := testredis.FreePort(t)
	b, err := NewRedis(RedisOptions{URLs: []string{fmt.Sprintf("redis://127.0.0.1:%d", port)}, Timeout: 200 * time.Millisecond}, newRecorder(t), nil)
	if err != nil {
		t.Fatalf("NewRedis with redis down: %v", err)
	}
	defer b.Close()
	if b.Healthy() {
		t.Fatal("healthy without redis")
	}
	if _, err := b.Subscribe(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Subscribe: %v", err)
	}
}

func TestNewRedisBadConfig(t *testing.T) {
	tests := []struct {
		name string
		urls []string
	}{
		{"none", nil},
		{"bad scheme", []string{"http://localhost:6379"}},
		{"bad url", []string{"redis://[::1"}},
		{"cluster with sentinel", []string{"redis://a:1", "redis://b:2?master_name=m"}},
		{"cluster mixed tls", []string{"redis://a:1", "rediss://b:2"}},
		{"cluster db", []string{"redis://a:1/2", "redis://b:2"}},
		{"cluster bad url", []string{"redis://a:1", "http://b:2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := NewRedis(RedisOptions{URLs: tc.urls}, newRecorder(t), nil); err == nil {
				b.Close()
				t.Fatal("no error")
			}
		})
	}
}

func TestRedisUnsubscribeUnderHandlerLock(t *testing.T) {
	srv := testredis.Start(t)
	h := &hubLike{}
	b, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}}, h, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	client := srv.Client()
	ctx := context.Background()
	if _, err := b.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	churn(t, b, h, "c", func(i int) {
		switch i % 3 {
		case 0:
			_, _ = b.Publish(ctx, "c", "", []byte("x"), SourceHTTP)
		case 1:
			client.Publish(ctx, "realtime:c", "x")
		case 2:
			client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:c", Values: []any{"data", "x"}})
		}
	})
	if h.n.Load() == 0 {
		t.Fatal("nothing delivered")
	}
}

// go-redis reconnects a killed pub/sub connection: subscribers get a gap,
// then live messages.
func TestRedisPubSubConnectionKilled(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	subscribe(t, b, "k1")
	subscribe(t, b, "k2")
	if err := client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	gaps := map[string]bool{}
	for len(gaps) < 2 {
		e := rec.next(10 * time.Second)
		if e.Msg != nil {
			t.Fatalf("message before the gap: %+v", e.Msg)
		}
		gaps[e.Channel] = true
	}
	for _, ch := range []string{"k1", "k2"} {
		client.Publish(ctx, "realtime:"+ch, "after")
		if m := rec.nextOf(ch, wait).Msg; m == nil || string(m.Data) != "after" {
			t.Fatalf("%s after the gap: %+v", ch, m)
		}
	}
	rec.none(50 * time.Millisecond)
}

// Entries trimmed while the reader was away are reported with a gap
// before the reader catches up with the rest.
func TestRedisStreamTrimmedWhileAway(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	subscribe(t, b, "tr")
	id0, _ := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:tr", Values: []any{"data", "0"}}).Result()
	if m := rec.next(wait).Msg; m == nil || m.ID != id0 {
		t.Fatalf("first: %+v", m)
	}
	// cut the reader (it waits a backoff before reconnecting), then add
	// and trim in one transaction
	if err := client.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	var last *redis.StringCmd
	_, err := client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := 1; i <= 5; i++ {
			last = p.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:tr", Values: []any{"data", fmt.Sprint(i)}})
		}
		p.XTrimMaxLen(ctx, "realtime:tr", 1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e := rec.next(10 * time.Second)
	if e.Msg != nil || e.Channel != "tr" || e.Reason != "gap" {
		t.Fatalf("want a gap first, got %+v", e)
	}
	if m := rec.next(wait).Msg; m == nil || m.ID != last.Val() {
		t.Fatalf("after the gap: %+v, want %s", m, last.Val())
	}
	rec.none(50 * time.Millisecond)
}

// chanHandler hands each delivered message to a Go channel.
type chanHandler chan *Message

func (h chanHandler) Deliver(m *Message) {
	select {
	case h <- m:
	default:
	}
}

func (chanHandler) Gap(string, string, string) {}

func (chanHandler) Control([]byte) {}

// BenchmarkRedisPublishDeliver measures Publish through Redis until the
// stream reader delivers the message back (one at a time: latency).
func BenchmarkRedisPublishDeliver(b *testing.B) {
	srv := testredis.Start(b)
	h := make(chanHandler, 1)
	br, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}}, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	ctx := context.Background()
	if _, err := br.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := br.Publish(ctx, "bench", "", data, SourceHTTP); err != nil {
			b.Fatal(err)
		}
		select {
		case <-h:
		case <-time.After(wait):
			b.Fatal("not delivered")
		}
	}
}

// BenchmarkRedisPubSubDeliver measures a backend's PUBLISH until delivery.
func BenchmarkRedisPubSubDeliver(b *testing.B) {
	srv := testredis.Start(b)
	h := make(chanHandler, 1)
	br, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}}, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	client := srv.Client()
	ctx := context.Background()
	if _, err := br.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := client.Publish(ctx, "realtime:bench", data).Err(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-h:
		case <-time.After(wait):
			b.Fatal("not delivered")
		}
	}
}
