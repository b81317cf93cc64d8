// Package presence counts the connections of each member (a ticket's
// sub) to the channels whose rule asks for it, on every node, and decides
// the transitions of the whole deployment: a member's first connection
// anywhere (member added), its last one gone (member removed), a
// channel's first subscription anywhere (occupied) and its last one gone
// (vacated). Each transition is decided once, by whichever node's update
// caused it (atomically in Redis), so that it is announced once.
//
// A node writes its own counts; with Redis they expire unless the node
// refreshes them, so that the members of a node that crashed are gone
// within Options.TTL, their transitions announced by whichever node next
// looks at the channel (or by the sweeper of any node).
package presence

import (
	"context"
	"time"
)

// Kind is the kind of a transition, named as in the webhooks.
type Kind uint8

const (
	ChannelOccupied Kind = iota + 1
	MemberAdded
	MemberRemoved
	ChannelVacated
)

func (k Kind) String() string {
	switch k {
	case ChannelOccupied:
		return "channel_occupied"
	case MemberAdded:
		return "member_added"
	case MemberRemoved:
		return "member_removed"
	case ChannelVacated:
		return "channel_vacated"
	}
	return "unknown"
}

func parseKind(s string) Kind {
	for k := ChannelOccupied; k <= ChannelVacated; k++ {
		if k.String() == s {
			return k
		}
	}
	return 0
}

// Transition is one change of the deployment's presence.
type Transition struct {
	Kind    Kind
	Channel string
	Sub     string // "" for channel transitions
	At      time.Time
	// ID is the webhook event's id when the store keeps it in an outbox
	// until it is sent (Redis), "" otherwise.
	ID string
}

// Member is one member of a channel and its connections, on every node.
type Member struct {
	Sub         string `json:"sub"`
	Connections int    `json:"connections"`
}

// Snapshot is a channel's presence on every node: its subscriptions
// (members' and anonymous ones) and its members.
type Snapshot struct {
	Channel     string   `json:"channel"`
	Connections int      `json:"connections"`
	Members     []Member `json:"members"`
}

// Count is this node's connections of one sub ("" for those without a
// sub) to a channel.
type Count struct {
	Sub string
	N   int
}

// Store keeps the counts of every node and decides the transitions.
type Store interface {
	// Set records this node's connections to channel for each sub of
	// counts (absolute numbers; 0: none left), and returns the
	// transitions that caused, including those of other nodes' counts
	// found expired.
	Set(ctx context.Context, channel string, counts []Count) ([]Transition, error)
	// Get returns the channel's presence, with the transitions of other
	// nodes' counts found expired on the way.
	Get(ctx context.Context, channel string) (Snapshot, []Transition, error)
	// Sweep removes counts that expired in channels no node looks at any
	// more (a crashed node's), and returns the transitions.
	Sweep(ctx context.Context) ([]Transition, error)
	// Orphans claims for this node the webhook events of the outbox that
	// the node that decided them did not confirm in time, to send them.
	Orphans(ctx context.Context) ([]Transition, error)
}
