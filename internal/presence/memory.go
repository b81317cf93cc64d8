package presence

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Memory is the Store of a single node (the embedded broker): nothing
// expires, since no other node's counts are kept.
type Memory struct {
	mu       sync.Mutex
	channels map[string]*memChannel
}

type memChannel struct {
	subs  map[string]int
	total int
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{channels: make(map[string]*memChannel)} }

// Set implements Store.
func (m *Memory) Set(_ context.Context, channel string, counts []Count) ([]Transition, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.channels[channel]
	if c == nil {
		c = &memChannel{subs: make(map[string]int)}
		m.channels[channel] = c
	}
	now := time.Now()
	var out []Transition
	for _, n := range counts {
		before, totalBefore := c.subs[n.Sub], c.total
		after := max(n.N, 0)
		if after == 0 {
			delete(c.subs, n.Sub)
		} else {
			c.subs[n.Sub] = after
		}
		c.total += after - before
		out = appendTransitions(out, channel, n.Sub, before, after, totalBefore, c.total, now)
	}
	if c.total == 0 {
		delete(m.channels, channel)
	}
	return out, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, channel string) (Snapshot, []Transition, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap := Snapshot{Channel: channel, Members: []Member{}}
	if c := m.channels[channel]; c != nil {
		snap.Connections = c.total
		for sub, n := range c.subs {
			if sub != "" {
				snap.Members = append(snap.Members, Member{Sub: sub, Connections: n})
			}
		}
	}
	sortMembers(snap.Members)
	return snap, nil, nil
}

// Sweep implements Store: nothing expires.
func (m *Memory) Sweep(context.Context) ([]Transition, error) { return nil, nil }

// Orphans implements Store: there is no outbox (one node).
func (m *Memory) Orphans(context.Context) ([]Transition, error) { return nil, nil }

// appendTransitions appends what one sub's change from before to after
// connections (and the channel's from totalBefore to totalAfter) means,
// in the order an app expects: occupied, added, removed, vacated.
func appendTransitions(out []Transition, channel, sub string, before, after, totalBefore, totalAfter int, at time.Time) []Transition {
	if totalBefore <= 0 && totalAfter > 0 {
		out = append(out, Transition{Kind: ChannelOccupied, Channel: channel, At: at})
	}
	if sub != "" {
		switch {
		case before <= 0 && after > 0:
			out = append(out, Transition{Kind: MemberAdded, Channel: channel, Sub: sub, At: at})
		case before > 0 && after <= 0:
			out = append(out, Transition{Kind: MemberRemoved, Channel: channel, Sub: sub, At: at})
		}
	}
	if totalBefore > 0 && totalAfter <= 0 {
		out = append(out, Transition{Kind: ChannelVacated, Channel: channel, At: at})
	}
	return out
}

func sortMembers(ms []Member) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Sub < ms[j].Sub })
}
