package hub

import (
	"errors"
	"strings"
	"sync"

	"github.com/caddy-realtime/realtime/internal/broker"
	"go.uber.org/zap"
)

// maxEventLen bounds an event name.
const maxEventLen = 64

// CheckEvent reports why name may not be a message's event name, nil if
// it may: an event name is empty (none) or 1 to 64 printable ASCII
// characters without spaces, and does not start with ReservedPrefix. A
// name that passes means the same to every transport: SSE cuts a field at
// a line break, where a WebSocket frame would carry the whole name.
func CheckEvent(name string) error {
	if len(name) > maxEventLen {
		return errors.New("event name longer than 64 characters")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return errors.New("event name must be printable ASCII without spaces")
		}
	}
	if strings.HasPrefix(name, ReservedPrefix) {
		return errors.New(`event names starting with "realtime." are reserved`)
	}
	return nil
}

// The module's presence events: ordinary, resumable messages of a
// channel whose rule has `presence events`.
const (
	EventJoin  = "realtime.join"
	EventLeave = "realtime.leave"
)

// checkReceived is CheckEvent for a message read from the broker: the
// presence events are the module's own on the channels that have them.
func (h *Hub) checkReceived(m *broker.Message) error {
	if (m.Event == EventJoin || m.Event == EventLeave) && h.opts.Rules != nil && h.opts.Rules.Match(m.Channel).PresenceEvents {
		return nil
	}
	return CheckEvent(m.Event)
}

// maxBadEventChannels bounds the channels whose bad event names were
// logged: past it, they are counted but not logged.
const maxBadEventChannels = 1000

// badEvents notes the channels whose Redis entries had an event name the
// hub refused, to log each channel once.
type badEvents struct {
	mu     sync.Mutex
	logged map[string]struct{}
}

// refuseEvent drops m, whose event name CheckEvent refused (a backend's XADD
// or PUBLISH of something no publisher of the module may send): it is
// counted as a bad_request refusal, and logged once per channel.
func (h *Hub) refuseEvent(m *broker.Message, err error) {
	h.opts.Observer.Refused("bad_request")
	b := &h.badEvents
	b.mu.Lock()
	_, seen := b.logged[m.Channel]
	first := !seen && len(b.logged) < maxBadEventChannels
	if first {
		if b.logged == nil {
			b.logged = make(map[string]struct{})
		}
		b.logged[m.Channel] = struct{}{}
	}
	b.mu.Unlock()
	if first {
		h.opts.Logger.Warn("message with a bad event name not delivered (logged once per channel)",
			zap.String("channel", m.Channel), zap.String("id", m.ID), zap.Error(err))
	}
}

// validEvents returns msgs without those whose event name is refused.
func (h *Hub) validEvents(msgs []*broker.Message) []*broker.Message {
	out := msgs[:0:0]
	for _, m := range msgs {
		if err := h.checkReceived(m); err != nil {
			h.refuseEvent(m, err)
			continue
		}
		out = append(out, m)
	}
	return out
}
