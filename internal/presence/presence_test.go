package presence

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
)

func kinds(ts []Transition) string {
	var out []string
	for _, t := range ts {
		s := t.Kind.String()
		if t.Sub != "" {
			s += ":" + t.Sub
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// storeCase checks one store's transitions, as two nodes a and b see
// them (b is nil for the single-node Memory store).
func checkTransitions(t *testing.T, a, b Store) {
	ctx := context.Background()
	set := func(s Store, sub string, n int) string {
		t.Helper()
		tr, err := s.Set(ctx, "room", []Count{{Sub: sub, N: n}})
		if err != nil {
			t.Fatal(err)
		}
		return kinds(tr)
	}
	if got := set(a, "u1", 1); got != "channel_occupied member_added:u1" {
		t.Fatalf("first connection: %q", got)
	}
	if got := set(a, "u1", 2); got != "" {
		t.Fatalf("second connection of u1: %q", got)
	}
	if got := set(a, "", 1); got != "" {
		t.Fatalf("an anonymous connection: %q", got)
	}
	other := a
	if b != nil {
		other = b
	}
	if b != nil {
		if got := set(b, "u1", 1); got != "" {
			t.Fatalf("u1 on another node: %q", got)
		}
		if got := set(a, "u1", 0); got != "" {
			t.Fatalf("u1 gone from a, still on b: %q", got)
		}
	} else if got := set(a, "u1", 1); got != "" {
		t.Fatalf("u1 down to one: %q", got)
	}
	snap, _, err := a.Get(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Connections != 2 || fmt.Sprint(snap.Members) != "[{u1 1}]" {
		t.Fatalf("presence %+v, want 2 connections, u1 with 1", snap)
	}
	if got := set(other, "u1", 0); got != "member_removed:u1" {
		t.Fatalf("u1's last connection: %q", got)
	}
	if got := set(a, "", 0); got != "channel_vacated" {
		t.Fatalf("the last connection: %q", got)
	}
}

func TestMemoryTransitions(t *testing.T) {
	checkTransitions(t, NewMemory(), nil)
}

func TestRedisTransitionsAcrossNodes(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client()
	checkTransitions(t, NewRedis(rdb, "realtime:", "a", time.Minute, nil), NewRedis(rdb, "realtime:", "b", time.Minute, nil))
	keys, err := rdb.Keys(context.Background(), "realtime:#presence*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys left once the channel is empty: %v %v", keys, err)
	}
}

// A node that stops refreshing (it crashed) loses its members once its
// counts expire: the next node to look, or the sweeper, announces it.
func TestRedisCrashedNodeExpires(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	crashed := NewRedis(rdb, "realtime:", "crashed", ttl, nil)
	alive := NewRedis(rdb, "realtime:", "alive", ttl, nil)
	if _, err := crashed.Set(ctx, "room", []Count{{"u1", 1}, {"u2", 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.Set(ctx, "hall", []Count{{"u3", 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := alive.Set(ctx, "room", []Count{{"u2", 1}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 100*time.Millisecond) // the crashed node's counts expire
	snap, trans, err := alive.Get(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(trans); got != "member_removed:u1" {
		t.Fatalf("transitions found by a reader: %q, want u1 removed (u2 is still on the live node)", got)
	}
	if snap.Connections != 1 || fmt.Sprint(snap.Members) != "[{u2 1}]" {
		t.Fatalf("presence %+v", snap)
	}
	// nobody looks at hall: the sweeper does, once
	trans, err = alive.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(trans); got != "member_removed:u3 channel_vacated" {
		t.Fatalf("sweep: %q", got)
	}
	if trans, _ := alive.Sweep(ctx); len(trans) != 0 {
		t.Fatalf("a second sweep: %q", kinds(trans))
	}
}

// The tracker coalesces, and a reconnect within the grace is no leave.
func TestTrackerGrace(t *testing.T) {
	got := make(chan []Transition, 16)
	tr := NewTracker(NewMemory(), Options{Grace: 200 * time.Millisecond, OnTransitions: func(ts []Transition) { got <- ts }})
	defer tr.Close()
	next := func() string {
		t.Helper()
		select {
		case ts := <-got:
			return kinds(ts)
		case <-time.After(2 * time.Second):
			t.Fatal("no transition")
		}
		return ""
	}
	tr.Join("room", "u1")
	if k := next(); k != "channel_occupied member_added:u1" {
		t.Fatalf("join: %q", k)
	}
	tr.Leave("room", "u1")
	tr.Join("room", "u1") // a reconnect within the grace
	tr.Leave("room", "u1")
	if k := next(); k != "member_removed:u1 channel_vacated" {
		t.Fatalf("leave: %q", k)
	}
	select {
	case ts := <-got:
		t.Fatalf("more transitions: %q", kinds(ts))
	case <-time.After(300 * time.Millisecond):
	}
}

// A connection that leaves before the tracker wrote its arrival still
// leaves after the grace, not at once.
func TestTrackerGraceBeforeFlush(t *testing.T) {
	store := NewMemory()
	got := make(chan []Transition, 16)
	tr := NewTracker(store, Options{Grace: 300 * time.Millisecond, OnTransitions: func(ts []Transition) { got <- ts }})
	defer tr.Close()
	tr.Join("room", "u1")
	if k := kinds(<-got); k != "channel_occupied member_added:u1" {
		t.Fatalf("join: %q", k)
	}
	left := time.Now()
	tr.Join("room", "u1") // a second tab...
	tr.Leave("room", "u1")
	tr.Leave("room", "u1") // ...and both gone, before any flush
	select {
	case ts := <-got:
		if time.Since(left) < 250*time.Millisecond || kinds(ts) != "member_removed:u1 channel_vacated" {
			t.Fatalf("%q after %v, want the leave after the grace", kinds(ts), time.Since(left))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no leave")
	}
}

// A node that decides a webhook event while another node's sweeper is
// dropping the channel from the outbox index (it found the outbox empty
// a moment before) must not leave its event unindexed: were the deciding
// node to crash, nobody would send it.
func TestRedisOutboxIndexKeepsLateEvent(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	notify := func(string) Notify { return NotifyChannelMembers }
	sweeper := NewRedis(rdb, "realtime:", "sweeper", time.Minute, notify)
	decider := NewRedis(rdb, "realtime:", "decider", time.Minute, notify)
	// the channel's entry in the index is due, its outbox empty
	if err := rdb.ZAdd(ctx, sweeper.outboxKey(), redis.Z{Score: 0, Member: "room"}).Err(); err != nil {
		t.Fatal(err)
	}
	claimedHook = func(channel string) {
		// after the sweeper's look, before it updates the index
		if _, err := decider.Set(ctx, channel, []Count{{Sub: "u1", N: 1}}); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { claimedHook = nil })
	if _, err := sweeper.Orphans(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rdb.ZScore(ctx, sweeper.outboxKey(), "room").Result(); err != nil {
		t.Fatalf("the channel left the outbox index with an event in its outbox: %v", err)
	}
	// and the next sweep, once the decider's claim lapsed, sends it
	claimedHook = nil
	ids, err := rdb.ZRange(ctx, sweeper.base("room")+":outbox", 0, -1).Result()
	if err != nil || len(ids) == 0 {
		t.Fatalf("outbox %v %v", ids, err)
	}
	for _, id := range ids {
		rdb.ZAdd(ctx, sweeper.base("room")+":outbox", redis.Z{Score: 0, Member: id})
	}
	rdb.ZAdd(ctx, sweeper.outboxKey(), redis.Z{Score: 0, Member: "room"})
	orphans, err := sweeper.Orphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(orphans); got != "channel_occupied member_added:u1" {
		t.Fatalf("orphans %q, want the decider's events", got)
	}
}
