package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
)

// A command one node broadcasts reaches every node on the same Redis and
// prefix, and none on another prefix.
func TestRedisBroadcast(t *testing.T) {
	srv := testredis.Start(t)
	a, _ := newTestRedis(t, srv, RedisOptions{})
	_, recB := newTestRedis(t, srv, RedisOptions{})
	_, recOther := newTestRedis(t, srv, RedisOptions{Prefix: "other:"})
	ctx := context.Background()
	// B's control subscription is made in the background: send until it
	// arrives (the delivery is at most once, while connected)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		if err := a.Broadcast(ctx, []byte(fmt.Sprintf("hello %d", i))); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-recB.ch:
			if e.Control == nil {
				t.Fatalf("B got %+v, want a control command", e)
			}
			goto arrived
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no broadcast reached the other node within 5s")
		}
	}
arrived:
	select {
	case e := <-recOther.ch:
		t.Fatalf("a broker on another prefix got %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
}

// Recent reads the newest entries of a stream, oldest first; a channel
// without a stream has none.
func TestRedisRecent(t *testing.T) {
	srv := testredis.Start(t)
	b, _ := newTestRedis(t, srv, RedisOptions{})
	ctx := context.Background()
	var ids []string
	for i := 1; i <= 5; i++ {
		id, err := b.Publish(ctx, "r", "", []byte(fmt.Sprint(i)), SourceHTTP)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	msgs, err := b.Recent(ctx, "r", 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, m.ID+"="+string(m.Data))
	}
	want := fmt.Sprint([]string{ids[2] + "=3", ids[3] + "=4", ids[4] + "=5"})
	if fmt.Sprint(got) != want {
		t.Fatalf("Recent = %v, want %v", got, want)
	}
	if msgs, err := b.Recent(ctx, "none", 3); err != nil || len(msgs) != 0 {
		t.Fatalf("Recent of a channel without a stream: %v, %v", msgs, err)
	}
	if _, err := srv.Do("SET", "realtime:str", "x"); err != nil {
		t.Fatal(err)
	}
	if msgs, err := b.Recent(ctx, "str", 3); err != nil || len(msgs) != 0 {
		t.Fatalf("Recent of a key of another type: %v, %v", msgs, err)
	}
}
