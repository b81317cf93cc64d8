package realtime

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/replay"
)

// resumption is how a subscription catches up from the client's cursor.
type resumption struct {
	channels  []string
	positions []replay.Position // one per channel; "" ID: no position
	// bare is a single-channel id given for several channels (a client
	// that added channels): it is tried on each of them.
	bare string
	// unplaceable is a cursor that is no id of ours: every channel gets
	// the reset signal.
	unplaceable bool
}

// parseResume reads the client's cursor: Last-Event-ID (SSE; it wins) or
// ?last_event_id=. An undecodable cursor is a 400.
func (h *Handler) parseResume(r *http.Request, transport string, channels []string) (*resumption, error) {
	cursor := r.URL.Query().Get("last_event_id")
	if transport == "sse" {
		if v := r.Header.Get("Last-Event-ID"); v != "" {
			cursor = v
		}
	}
	res := &resumption{channels: channels, positions: make([]replay.Position, len(channels))}
	for i, c := range channels {
		res.positions[i].Channel = c
	}
	if cursor == "" {
		return res, nil
	}
	if !printableCursor(cursor) {
		return nil, badRequest("invalid last event id: want at most %d printable ASCII characters", replay.MaxCursorLen)
	}
	pos, err := replay.ParseCursor(cursor, channels)
	switch {
	case err != nil:
		res.unplaceable = true
	case len(channels) > 1 && !strings.HasPrefix(cursor, "c1."):
		res.bare = cursor
	default:
		res.positions = pos
	}
	return res, nil
}

// printableCursor reports whether a client's cursor is something an id
// could be: not too long, printable ASCII. Anything else is a 400; a
// printable string that is not an id of ours gets the reset signal.
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

// session is called once the subscription is live: it reads what the
// client missed on each channel (replay cache, then Redis streams), or
// builds the reset signal where that cannot be known, and returns the
// session the transport serves.
func (res *resumption) session(ctx context.Context, h *Handler, sub *hub.Subscriber) *hub.Session {
	st := h.state
	var replayed []*hub.Envelope
	reset := func(p *replay.Position, reason string) {
		last := st.hub.LastID(p.Channel)
		metrics.resets.WithLabelValues(reason).Inc()
		replayed = append(replayed, hub.NewEnvelope(hub.ResetMessage(p.Channel, last, reason)))
		p.ID = last
	}
	if res.unplaceable {
		for i := range res.positions {
			reset(&res.positions[i], "unknown-id")
		}
		return hub.NewSession(sub, res.positions, replayed)
	}
	if res.bare != "" {
		// the id belongs to one of the channels: replay it where it can
		// be placed, start the others live; reset all if none knows it
		placed := false
		var pending []*replay.Position
		for i := range res.positions {
			p := &res.positions[i]
			msgs, reason := st.missed(ctx, p.Channel, res.bare)
			if reason != "" {
				pending = append(pending, p)
				continue
			}
			placed = true
			p.ID = res.bare
			for _, m := range msgs {
				replayed = append(replayed, hub.NewEnvelope(m))
			}
		}
		for _, p := range pending {
			if placed {
				p.ID = st.hub.LastID(p.Channel)
			} else {
				reset(p, "unknown-id")
			}
		}
		sortByReceived(replayed)
		return hub.NewSession(sub, res.positions, replayed)
	}
	for i := range res.positions {
		p := &res.positions[i]
		if p.ID == "" {
			// no position: start from the newest message this node knows,
			// so that the first id the client sees is a resume point
			p.ID = st.hub.LastID(p.Channel)
			continue
		}
		msgs, reason := st.missed(ctx, p.Channel, p.ID)
		if reason != "" {
			reset(p, reason)
			continue
		}
		for _, m := range msgs {
			replayed = append(replayed, hub.NewEnvelope(m))
		}
	}
	if len(res.positions) > 1 && len(replayed) > 1 {
		// several channels: send in the order the node received them
		sortByReceived(replayed)
	}
	return hub.NewSession(sub, res.positions, replayed)
}

// missed returns the retained messages of channel after id, or the reset
// reason when they cannot be known.
func (st *state) missed(ctx context.Context, channel, id string) ([]*broker.Message, string) {
	if id == st.hub.LastID(channel) {
		return nil, "" // nothing new (also the start of an epoch, before its first message)
	}
	msgs, err := st.cache.After(channel, id)
	if errors.Is(err, replay.ErrUnknownID) || errors.Is(err, replay.ErrNoLog) {
		// the position this node's subscription started from, before its
		// first message ("p.<epoch>.0" for a channel without a stream):
		// the cache cannot place it once the messages that followed were
		// not pub/sub ones (XADD, HTTP publish), so replay from the first
		if start, first := st.hub.Start(channel); start != "" && id == start && first != nil {
			if rest, err := st.cache.After(channel, first.ID); err == nil {
				return append([]*broker.Message{first}, rest...), ""
			}
		}
	}
	switch {
	case err == nil:
		metrics.resumeCache.Inc()
		return msgs, ""
	case errors.Is(err, replay.ErrExpired) && !broker.IsStreamID(id):
		return nil, "expired"
	case errors.Is(err, replay.ErrUnknownID):
		return nil, "unknown-id"
	}
	// not (or no longer) in this node's cache: a stream-fed channel may
	// still have it in Redis, which keeps as many entries as its backend
	// asked for
	msgs, err = st.broker.History(ctx, channel, id, maxHistory)
	switch {
	case err == nil:
		metrics.resumeRedis.Inc()
		return msgs, ""
	case errors.Is(err, broker.ErrTrimmed):
		return nil, "expired"
	default:
		return nil, "unknown-id"
	}
}

// sortByReceived puts messages of several channels in the order this
// node received them: by time, and by arrival among those that share one
// (the entries of one XREAD reply).
func sortByReceived(envs []*hub.Envelope) {
	sort.SliceStable(envs, func(i, j int) bool {
		a, b := envs[i].Msg, envs[j].Msg
		if !a.Received.Equal(b.Received) {
			return a.Received.Before(b.Received)
		}
		return a.Arrival < b.Arrival
	})
}
