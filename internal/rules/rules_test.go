package rules

import (
	"strings"
	"testing"
	"time"
)

// Patterns match as tickets' channel patterns do (auth.Glob): * crosses
// : and /.
func TestPatterns(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"prices", "prices", true},
		{"prices", "prices2", false},
		{"chat:*", "chat:lobby", true},
		{"chat:*", "chat:", true},
		{"chat:*", "chat", false},
		{"chat:*", "xchat:lobby", false},
		{"user:*", "user:42/inbox", true}, // * crosses / and :
		{"*:admin", "room:7:admin", true},
		{"*", "anything", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"a*a*a*a*b", strings.Repeat("a", 200), false},
	}
	for _, c := range cases {
		s, err := New([]Rule{{Pattern: c.pattern, Rewind: 1}}, Rule{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(c.name).Rewind == 1; got != c.want {
			t.Errorf("pattern %q matches %q: %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestFirstMatchWins(t *testing.T) {
	s, err := New([]Rule{
		{Pattern: "chat:vip", Rewind: 50},
		{Pattern: "chat:*", Rewind: 5, Publish: PublishTicket},
		{Pattern: "prices", ReplaySize: 1, Rewind: 1},
	}, Rule{ReplaySize: 1000, ReplayTTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Match("chat:vip"); r.Rewind != 50 || r.ReplaySize != 1000 || r.ReplayTTL != 10*time.Minute {
		t.Errorf("chat:vip: %+v, want the first rule with the hub's replay", r)
	}
	if r := s.Match("chat:lobby"); r.Rewind != 5 || r.Publish != PublishTicket {
		t.Errorf("chat:lobby: %+v", r)
	}
	if r := s.Match("prices"); r.ReplaySize != 1 || r.ReplayTTL != 10*time.Minute {
		t.Errorf("prices: %+v, want size 1 and the hub's ttl", r)
	}
	if r := s.Match("news"); r.Pattern != "" || r.Rewind != 0 || r.ReplaySize != 1000 {
		t.Errorf("news: %+v, want the hub's settings", r)
	}
	if got := s.MaxReplayTTL(); got != 10*time.Minute {
		t.Errorf("MaxReplayTTL = %v", got)
	}
}

func TestRewindFor(t *testing.T) {
	withRewind := &Rule{Rewind: 10}
	without := &Rule{}
	cases := []struct {
		r         *Rule
		requested int
		asked     bool
		want      int
	}{
		{withRewind, 0, false, 10}, // the rule's default
		{withRewind, 3, true, 3},   // fewer asked
		{withRewind, 0, true, 0},   // none asked
		{withRewind, 500, true, 10},
		{without, 0, false, 0},
		{without, 7, true, 7},
		{without, 5000, true, DefaultRewindCap},
	}
	for _, c := range cases {
		if got := c.r.RewindFor(c.requested, c.asked); got != c.want {
			t.Errorf("rule rewind %d, ?rewind=%d (asked %v): %d, want %d", c.r.Rewind, c.requested, c.asked, got, c.want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, r := range []Rule{
		{Pattern: ""},
		{Pattern: "chat #"},
		{Pattern: strings.Repeat("a", 201)},
		{Pattern: "a", Rewind: -1},
		{Pattern: "a", ReplaySize: 1 << 30},
	} {
		if _, err := New([]Rule{r}, Rule{}); err == nil {
			t.Errorf("New accepted %+v", r)
		}
	}
}
