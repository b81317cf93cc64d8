// Package broker moves published messages between backends and the hub of
// this node: an embedded in-process broker for a single node, and a Redis
// broker (pub/sub and streams) shared by many nodes.
//
// A broker knows nothing about subscribers: the hub tells it which
// channels are in use on this node and receives every message of those
// channels through a Handler.
package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Source says how a message first reached this node.
type Source uint8

const (
	SourcePubSub Source = iota // Redis PUBLISH / SPUBLISH
	SourceStream               // Redis XADD, read from the stream
	SourceHTTP                 // HTTP POST to the hub
	SourceWS                   // WebSocket publish frame
)

func (s Source) String() string {
	switch s {
	case SourcePubSub:
		return "pubsub"
	case SourceStream:
		return "stream"
	case SourceHTTP:
		return "http"
	case SourceWS:
		return "ws"
	}
	return "unknown"
}

// Message is one published message as it reached this node. It is shared
// by every subscriber and must not be modified once handed to a Handler.
type Message struct {
	Channel string
	// ID is the message's position in its channel: a Redis stream id
	// ("1700000000000-0") for stream-fed messages, the same on every
	// node, or "p.<epoch>.<seq>" assigned by this node for pub/sub and
	// embedded-broker messages (see parseNodeID, IsStreamID).
	ID    string
	Event string // "" is the default event, "message"
	Data  []byte
	// Source is how the message first reached this node.
	Source Source
	// Received is when the message reached this node, for latency
	// metrics.
	Received time.Time
	// Arrival numbers the messages this node's brokers received, in the
	// order they handed them on (0: read back from Redis, not received
	// live). Messages of one XREAD reply share a Received time; Arrival
	// keeps the order of their channels' messages among each other.
	Arrival uint64
}

var arrivals atomic.Uint64

// nextArrival is the Arrival of the next message received live.
func nextArrival() uint64 { return arrivals.Add(1) }

// Handler receives what a broker delivers for the channels the hub has
// subscribed (the embedded broker hands over every message published
// through it). Calls for one channel (Deliver and Gap) never overlap and
// come in order; calls for different channels may run concurrently.
//
// A call may block: that is back-pressure onto the broker's reader (a
// Redis read loop, or the embedded broker's Publish), not loss. A Redis
// stream reader reads on where it stopped; a pub/sub connection that
// falls too far behind is cut by Redis (client-output-buffer-limit), and
// its reconnect reports a Gap. The hub blocks when its fan-out lanes are
// full, never on a single subscriber (one that falls behind is dropped
// and resumes).
type Handler interface {
	// Deliver hands over one message.
	Deliver(m *Message)
	// Gap reports that messages of channel may have been lost (a pub/sub
	// subscription was interrupted, a stream could not be read). The
	// broker starts a new epoch for the channel's pub/sub ids. After a
	// reconnect it is called once the channel's subscription is confirmed
	// again, before any message received on the new subscription.
	// resumeID is the position from which delivery goes on (for pub/sub
	// the start of the new epoch), a valid resume point.
	Gap(channel, reason, resumeID string)
	// Control hands over a command another node broadcast (see
	// Broker.Broadcast). Calls come one at a time, in order.
	Control(payload []byte)
}

// Broker is what the hub needs from a message bus.
type Broker interface {
	// Subscribe starts delivering channel's messages to the Handler.
	// When it returns nil, every message published to channel after
	// that moment is delivered: the subscription is confirmed by the
	// bus. It returns the channel's current stream position (the last
	// id, or "" when the channel has no stored messages). The hub calls
	// it once per channel, when the channel gains its first local user.
	Subscribe(ctx context.Context, channel string) (lastID string, err error)
	// Unsubscribe stops delivery of channel once it has no local user.
	// It does no network I/O and never blocks on the bus.
	Unsubscribe(channel string)
	// Publish stores and/or broadcasts a message and returns its id. The
	// message reaches this node's Handler like any other, with Source src.
	// When the bus is down it fails at once with an error wrapping
	// ErrUnavailable.
	Publish(ctx context.Context, channel, event string, data []byte, src Source) (id string, err error)
	// History returns up to limit stored messages of channel with an id
	// after afterID, oldest first. ErrTrimmed means messages after afterID
	// are no longer retained, and an error wrapping ErrUnavailable that
	// the bus is down. Any other error means that afterID cannot be
	// served: the broker keeps no history for the channel (errNoHistory:
	// pub/sub only, or afterID is a node-assigned id), or afterID cannot
	// be placed (errUnknownID).
	History(ctx context.Context, channel, afterID string, limit int) ([]*Message, error)
	// Recent returns up to n of the newest stored messages of channel,
	// oldest first: none when the broker keeps no history for it. An
	// error wrapping ErrUnavailable means the bus is down.
	Recent(ctx context.Context, channel string, n int) ([]*Message, error)
	// Broadcast sends a command to the Handler of every node connected
	// to the bus (with Redis, this one's too), at most once each: there
	// is no retry for a node that is not connected. The embedded broker
	// has no other node and sends nothing.
	Broadcast(ctx context.Context, payload []byte) error
	// Healthy reports whether the bus is reachable.
	Healthy() bool
	// Close stops every goroutine of the broker.
	Close() error
}

var (
	// errNoHistory means a channel keeps no history in the broker.
	errNoHistory = errors.New("no history kept for this channel")
	// errUnknownID means an id cannot be placed in a channel's history.
	errUnknownID = errors.New("unknown message id")
	// ErrUnavailable means the bus cannot be reached now.
	ErrUnavailable = errors.New("message bus unavailable")
	// ErrTrimmed means messages after an id were trimmed away or expired:
	// the caller answers "expired".
	ErrTrimmed = errors.New("messages after this id are no longer retained")
)
