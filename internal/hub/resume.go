package hub

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// From is where a subscription starts, read from the client's cursor by
// ParseFrom. The zero From is a client without a position.
type From struct {
	// cursor is the client's last event id, "" for none.
	cursor string
	// positions has one per channel; an empty ID: no position.
	positions []replay.Position
	// bare is a single-channel id given for several channels (a client
	// that added channels): it is tried on each of them.
	bare string
	// unplaceable is a cursor that is no id of ours: every channel gets
	// the reset signal.
	unplaceable bool
	// rewind is, per channel, how many of its newest retained messages
	// a client without a cursor gets first (nil: none).
	rewind []int
}

// Rewind asks for up to n[i] of the newest retained messages of the
// i-th channel to be sent first, in order, before the live ones. A
// client with a cursor resumes from it instead: Rewind does nothing.
func (f *From) Rewind(n []int) {
	if f.cursor != "" || len(n) != len(f.positions) {
		return
	}
	for _, k := range n {
		if k > 0 {
			f.rewind = n
			return
		}
	}
}

// ErrBadCursor is a client's cursor that cannot be an id at all.
var ErrBadCursor = fmt.Errorf("invalid last event id: want at most %d printable ASCII characters", replay.MaxCursorLen)

// ParseFrom reads the client's cursor (its last event id, "" for none)
// for a subscription to channels. A printable cursor that is no id of
// ours is no error: the client gets the reset signal. Anything else is
// ErrBadCursor.
func ParseFrom(cursor string, channels []string) (From, error) {
	from := From{cursor: cursor, positions: make([]replay.Position, len(channels))}
	for i, c := range channels {
		from.positions[i].Channel = c
	}
	if cursor == "" {
		return from, nil
	}
	if !printableCursor(cursor) {
		return From{}, ErrBadCursor
	}
	pos, err := replay.ParseCursor(cursor, channels)
	switch {
	case err != nil:
		from.unplaceable = true
	case len(channels) > 1 && !strings.HasPrefix(cursor, "c1."):
		from.bare = cursor
	default:
		from.positions = pos
	}
	return from, nil
}

// printableCursor reports whether a client's cursor is something an id
// could be: not too long, printable ASCII.
func printableCursor(s string) bool {
	if len(s) > replay.MaxCursorLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// maxHistory bounds what one resume reads from Redis per channel.
const maxHistory = 10000

// resume is called once the subscription s is live: it reads what the
// client missed on each channel (replay cache, then Redis streams), or
// builds the reset signal where that cannot be known, and returns the
// session the transport serves.
func (h *Hub) resume(ctx context.Context, s *subscriber, from From) *Session {
	if from.positions == nil {
		from, _ = ParseFrom("", s.channels) // the zero From: no position
	}
	positions := from.positions
	var replayed []*Envelope
	switch {
	case from.unplaceable:
		for i := range positions {
			replayed = h.reset(replayed, &positions[i], "unknown-id")
		}
	case from.bare != "":
		replayed = h.resumeBare(ctx, s, positions, from.bare)
	case from.rewind != nil:
		replayed = h.rewind(ctx, s, positions, from.rewind)
	default:
		replayed = h.resumeEach(ctx, s, positions)
	}
	if len(positions) > 1 && len(replayed) > 1 {
		// several channels: send in the order the node received them
		sortByReceived(replayed)
	}
	return newSession(s, positions, replayed)
}

// reset appends the reset signal of p's channel to replayed and moves p
// to the newest position this node knows.
func (h *Hub) reset(replayed []*Envelope, p *replay.Position, reason string) []*Envelope {
	last := h.LastID(p.Channel)
	h.opts.Observer.Reset(reason)
	p.ID = last
	return append(replayed, NewEnvelope(resetMessage(p.Channel, last, reason)))
}

// resumeEach replays each channel from its own position.
func (h *Hub) resumeEach(ctx context.Context, s *subscriber, positions []replay.Position) []*Envelope {
	var replayed []*Envelope
	for i := range positions {
		p := &positions[i]
		if p.ID == "" {
			// no position: start where the subscriber joined the channel,
			// so that the first id the client sees is a resume point
			p.ID = s.startOf(p.Channel)
			continue
		}
		msgs, reason := h.missed(ctx, p.Channel, p.ID)
		if reason != "" {
			replayed = h.reset(replayed, p, reason)
			continue
		}
		for _, m := range msgs {
			replayed = append(replayed, NewEnvelope(m))
		}
	}
	return replayed
}

// rewind starts each channel from up to n[i] of its newest retained
// messages. The subscription is live already: a message that arrives
// while they are read is either among them (and the session drops its
// live copy) or after them.
func (h *Hub) rewind(ctx context.Context, s *subscriber, positions []replay.Position, n []int) []*Envelope {
	var replayed []*Envelope
	for i := range positions {
		p := &positions[i]
		msgs := h.recent(ctx, p.Channel, n[i])
		if len(msgs) == 0 {
			p.ID = s.startOf(p.Channel)
			continue
		}
		for _, m := range msgs {
			replayed = append(replayed, NewEnvelope(m))
		}
		p.ID = msgs[len(msgs)-1].ID
	}
	return replayed
}

// recent returns up to n of channel's newest retained messages, oldest
// first: from this node's replay cache, or from the channel's Redis
// stream when that holds more (a node that has not been caching the
// channel, or since less long than the stream's span). Reset signals
// are left out: a client that starts here has missed nothing.
func (h *Hub) recent(ctx context.Context, channel string, n int) []*broker.Message {
	if n <= 0 {
		return nil
	}
	var msgs []*broker.Message
	if h.opts.Replay != nil {
		msgs = withoutResets(h.opts.Replay.Tail(channel, n))
	}
	if len(msgs) < n {
		stored, err := h.broker.Recent(ctx, channel, n)
		if err == nil && len(stored) > len(msgs) {
			msgs = h.validEvents(stored)
		}
	}
	return msgs
}

// withoutResets returns msgs without the reset signals among them.
func withoutResets(msgs []*broker.Message) []*broker.Message {
	out := msgs[:0:0]
	for _, m := range msgs {
		if m.Event != eventReset {
			out = append(out, m)
		}
	}
	return out
}

// resumeBare places an id that belongs to one of the channels: it is
// replayed where it can be placed and the others start live; all are
// reset if none knows it.
func (h *Hub) resumeBare(ctx context.Context, s *subscriber, positions []replay.Position, id string) []*Envelope {
	var replayed []*Envelope
	placed := false
	var pending []*replay.Position
	for i := range positions {
		p := &positions[i]
		msgs, reason := h.missed(ctx, p.Channel, id)
		if reason != "" {
			pending = append(pending, p)
			continue
		}
		placed = true
		p.ID = id
		for _, m := range msgs {
			replayed = append(replayed, NewEnvelope(m))
		}
	}
	for _, p := range pending {
		if placed {
			p.ID = s.startOf(p.Channel)
		} else {
			replayed = h.reset(replayed, p, "unknown-id")
		}
	}
	return replayed
}

// missed returns the retained messages of channel after id, or the reset
// reason when they cannot be known.
func (h *Hub) missed(ctx context.Context, channel, id string) ([]*broker.Message, string) {
	if id == h.LastID(channel) {
		return nil, "" // nothing new (also the start of an epoch, before its first message)
	}
	msgs, err := h.fromCache(channel, id)
	switch {
	case err == nil:
		h.opts.Observer.Resumed("cache")
		return msgs, ""
	case errors.Is(err, replay.ErrExpired) && !broker.IsStreamID(id):
		return nil, "expired"
	case errors.Is(err, replay.ErrUnknownID):
		return nil, "unknown-id"
	}
	// not (or no longer) in this node's cache: a stream-fed channel may
	// still have it in Redis, which keeps as many entries as its backend
	// asked for
	msgs, err = h.broker.History(ctx, channel, id, maxHistory)
	switch {
	case err == nil:
		h.opts.Observer.Resumed("redis")
		return h.validEvents(msgs), ""
	case errors.Is(err, broker.ErrTrimmed):
		return nil, "expired"
	default:
		return nil, "unknown-id"
	}
}

// fromCache reads the messages of channel after id from the replay cache.
func (h *Hub) fromCache(channel, id string) ([]*broker.Message, error) {
	if h.opts.Replay == nil {
		return nil, replay.ErrNoLog
	}
	msgs, err := h.opts.Replay.After(channel, id)
	if errors.Is(err, replay.ErrUnknownID) || errors.Is(err, replay.ErrNoLog) {
		// the position this node's subscription started from, before its
		// first message ("p.<epoch>.0" for a channel without a stream):
		// the cache cannot place it once the messages that followed were
		// not pub/sub ones (XADD, HTTP publish), so replay from the first
		if start, first := h.Start(channel); start != "" && id == start && first != nil {
			if rest, err := h.opts.Replay.After(channel, first.ID); err == nil {
				return append([]*broker.Message{first}, rest...), nil
			}
		}
	}
	return msgs, err
}

// sortByReceived puts messages of several channels in the order this
// node received them: by time, and by arrival among those that share one
// (the entries of one XREAD reply).
func sortByReceived(envs []*Envelope) {
	sort.SliceStable(envs, func(i, j int) bool {
		a, b := envs[i].Msg, envs[j].Msg
		if !a.Received.Equal(b.Received) {
			return a.Received.Before(b.Received)
		}
		return a.Arrival < b.Arrival
	})
}
