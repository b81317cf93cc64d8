// Package rules chooses the settings of a channel from the `channels
// <pattern>` rules of the configuration: the first rule whose pattern
// matches the channel's name wins, and a channel no rule matches takes
// the hub's settings.
//
// A rule carries everything that differs per kind of channel: its replay
// (how many messages are kept, and for how long), its rewind, and who may
// publish to it over HTTP and WebSocket. Rules are read on subscribe and
// publish, and when a channel's log is created; never per delivery.
package rules

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/replay"
)

// Publish says who may publish to a channel over HTTP and WebSocket.
// Backends writing to Redis are not concerned: they hold Redis itself.
type Publish uint8

const (
	// PublishAny: the publish key, or a ticket with publish rights.
	PublishAny Publish = iota
	// PublishKey: only the publish key (backends).
	PublishKey
	// PublishTicket: only a ticket with publish rights (browsers).
	PublishTicket
	// PublishOff: nobody; messages come from Redis only.
	PublishOff
)

// String is the Caddyfile form: "key", "ticket", "off", or "" for the
// default.
func (p Publish) String() string {
	switch p {
	case PublishKey:
		return "key"
	case PublishTicket:
		return "ticket"
	case PublishOff:
		return "off"
	}
	return ""
}

// ParsePublish reads the Caddyfile and JSON form of a Publish: "" (the
// default), "key", "ticket" or "off".
func ParsePublish(s string) (Publish, error) {
	switch s {
	case "":
		return PublishAny, nil
	case "key":
		return PublishKey, nil
	case "ticket":
		return PublishTicket, nil
	case "off":
		return PublishOff, nil
	}
	return 0, fmt.Errorf("publish: want key, ticket or off, got %q", s)
}

// DefaultRewindCap bounds ?rewind= on a channel whose rule sets no
// rewind (or that no rule matches).
const DefaultRewindCap = 100

// Rule is the settings of the channels one pattern matches, with the
// hub's settings filled in where the rule has none.
type Rule struct {
	// Pattern is a glob on channel names, as in tickets' claims
	// (auth.Glob): `*` matches any run of characters (including none,
	// and `:` and `/`); every other character matches itself. "" matches every channel (the hub's
	// own settings).
	Pattern string `json:"pattern"`
	// ReplaySize and ReplayTTL bound the messages kept per channel.
	ReplaySize int           `json:"replay_size"`
	ReplayTTL  time.Duration `json:"replay_ttl"`
	// Rewind is how many of its last messages a subscriber without a
	// cursor gets first, and the most ?rewind= may ask. Zero: none
	// unless asked, and up to DefaultRewindCap.
	Rewind int `json:"rewind,omitempty"`
	// Publish says who may publish over HTTP and WebSocket.
	Publish Publish `json:"publish,omitempty"`
	// Presence tracks the channels' members (tickets' subs) across the
	// deployment; PresenceEvents also publishes realtime.join and
	// realtime.leave messages.
	Presence       bool `json:"presence,omitempty"`
	PresenceEvents bool `json:"presence_events,omitempty"`
	// Notify is the URL lifecycle webhooks are POSTed to, "" for none.
	Notify string `json:"notify,omitempty"`
}

// Tracks reports whether the channels' subscriptions are counted across
// the deployment: for presence, or for the occupied/vacated webhooks.
func (r *Rule) Tracks() bool { return r.Presence || r.Notify != "" }

// RewindFor is how many retained messages a subscriber without a cursor
// gets first, for the client's ?rewind= (asked false: none given).
func (r *Rule) RewindFor(requested int, asked bool) int {
	switch {
	case !asked:
		return r.Rewind
	case r.Rewind > 0:
		return min(requested, r.Rewind)
	}
	return min(requested, DefaultRewindCap)
}

// Set is the rules of one configuration, in order, and the hub's
// settings for every channel none matches.
type Set struct {
	rules []Rule
	def   Rule
}

// New checks each rule's pattern and returns the set. def holds the
// hub's settings; a rule's zero replay size or ttl takes def's.
func New(rules []Rule, def Rule) (*Set, error) {
	s := &Set{rules: make([]Rule, len(rules)), def: def}
	s.def.Pattern = ""
	for i, r := range rules {
		if err := CheckPattern(r.Pattern); err != nil {
			return nil, fmt.Errorf("channels rule %d: %w", i+1, err)
		}
		switch {
		case r.ReplaySize < 0, r.ReplayTTL < 0, r.Rewind < 0:
			return nil, fmt.Errorf("channels %s: replay size, replay ttl and rewind must not be negative", r.Pattern)
		case r.ReplaySize > replay.MaxSize:
			return nil, fmt.Errorf("channels %s: replay size %d is more than %d", r.Pattern, r.ReplaySize, replay.MaxSize)
		case r.Rewind > replay.MaxSize:
			return nil, fmt.Errorf("channels %s: rewind %d is more than a channel can keep (%d)", r.Pattern, r.Rewind, replay.MaxSize)
		}
		if r.PresenceEvents {
			r.Presence = true
		}
		if r.Notify != "" {
			if u, err := url.Parse(r.Notify); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("channels %s: notify %q: want an http:// or https:// URL", r.Pattern, r.Notify)
			}
		}
		if r.ReplaySize == 0 {
			r.ReplaySize = def.ReplaySize
		}
		if r.ReplayTTL == 0 {
			r.ReplayTTL = def.ReplayTTL
		}
		s.rules[i] = r
	}
	return s, nil
}

// Tracked reports whether any rule tracks its channels' subscriptions.
func (s *Set) Tracked() bool {
	for i := range s.rules {
		if s.rules[i].Tracks() {
			return true
		}
	}
	return false
}

// Rules returns the rules with the hub's settings filled in, in order.
func (s *Set) Rules() []Rule { return append([]Rule(nil), s.rules...) }

// Default returns the settings of a channel no rule matches.
func (s *Set) Default() *Rule { return &s.def }

// Match returns the rule of channel: the first whose pattern matches,
// or the hub's settings. The result must not be modified.
func (s *Set) Match(channel string) *Rule {
	if s == nil {
		return &Rule{ReplaySize: replay.DefaultSize, ReplayTTL: replay.DefaultTTL}
	}
	for i := range s.rules {
		if auth.Glob(s.rules[i].Pattern, channel) {
			return &s.rules[i]
		}
	}
	return &s.def
}

// MaxReplayTTL is the longest replay ttl of any channel.
func (s *Set) MaxReplayTTL() time.Duration {
	ttl := s.def.ReplayTTL
	for _, r := range s.rules {
		ttl = max(ttl, r.ReplayTTL)
	}
	return ttl
}

// CheckPattern reports whether p can match channel names: 1 to 200
// characters, each one a channel name may have or `*`.
func CheckPattern(p string) error {
	if p == "" || len(p) > replay.MaxChannelLen {
		return fmt.Errorf("pattern %q: want 1 to %d characters", p, replay.MaxChannelLen)
	}
	if name := strings.ReplaceAll(p, "*", "a"); !replay.ValidChannel(name) {
		return fmt.Errorf("pattern %q: use * and the characters of channel names (A-Z a-z 0-9 _ - . : @ /)", p)
	}
	return nil
}
