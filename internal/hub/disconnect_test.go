package hub

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestDisconnect(t *testing.T) {
	h := newTestHub(t, Options{})
	open := func(sub string, channels ...string) *Session {
		t.Helper()
		from, _ := ParseFrom("", channels)
		ss, err := h.Subscribe(context.Background(), channels, Client{Transport: "test", Sub: sub}, from)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ss.Close)
		return ss
	}
	dropped := func(ss *Session) bool {
		select {
		case <-ss.Done():
			if !errors.Is(ss.Err(), ErrDisconnected) {
				t.Fatalf("dropped with %v, want ErrDisconnected", ss.Err())
			}
			return true
		default:
			return false
		}
	}
	u1a := open("u1", "a", "b")
	u1c := open("u1", "c")
	u2a := open("u2", "a")
	anon := open("", "a")

	if n := h.Disconnect("", ""); n != 0 {
		t.Fatalf("Disconnect of nothing ended %d", n)
	}
	if n := h.Disconnect("u1", "c"); n != 1 || !dropped(u1c) || dropped(u1a) {
		t.Fatalf("sub u1 on c: %d ended", n)
	}
	if n := h.Disconnect("u1", ""); n != 1 || !dropped(u1a) {
		t.Fatalf("sub u1: %d ended", n) // once, though on two channels
	}
	if dropped(u2a) || dropped(anon) {
		t.Fatal("others dropped")
	}
	// another node's command, then one of this hub's own (ignored) and
	// one that is no command
	mine, _ := json.Marshal(command{Op: "disconnect", Origin: h.id, Channel: "a"})
	h.Control(mine)
	h.Control([]byte("{not json"))
	if dropped(u2a) {
		t.Fatal("the hub acted on its own broadcast")
	}
	other, _ := json.Marshal(command{Op: "disconnect", Origin: "elsewhere", Channel: "a"})
	h.Control(other)
	deadline := time.Now().Add(time.Second)
	for !(dropped(u2a) && dropped(anon)) {
		if time.Now().After(deadline) {
			t.Fatal("channel a's subscribers not dropped by another node's command")
		}
		time.Sleep(time.Millisecond)
	}
}
