package replay

import (
	"errors"
	"testing"
	"time"
)

// A channel the node stopped following is forgotten: a resume on it is
// answered ErrExpired for ttl (a history with a hole is never given),
// and a later subscription starts a fresh log.
func TestForget(t *testing.T) {
	c, clk := newTestCache(t, Options{Size: 8, TTL: time.Minute})
	c.Append(msg("a", "1-0"))
	c.Append(msg("a", "2-0"))
	c.Forget("a")
	c.Forget("never-seen")
	for _, ch := range []string{"a", "never-seen"} {
		if _, err := c.After(ch, "1-0"); !errors.Is(err, ErrExpired) {
			t.Errorf("After on forgotten %s: %v, want ErrExpired", ch, err)
		}
	}
	if c.logOf("a") != nil {
		t.Fatal("the forgotten log is still kept")
	}
	c.Append(msg("a", "3-0"))
	if got, err := c.After("a", "3-0"); err != nil || len(got) != 0 {
		t.Fatalf("a fresh log after Forget: %v, %v", ids(got), err)
	}
	clk.advance(2 * time.Minute)
	if _, err := c.After("never-seen", "1-0"); !errors.Is(err, ErrNoLog) {
		t.Fatalf("after ttl: %v, want ErrNoLog", err)
	}
}
