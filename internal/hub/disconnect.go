package hub

import (
	"context"
	"encoding/json"
	"errors"

	"go.uber.org/zap"
)

// EventClosed is the event that ends a subscription for good: a client
// that gets it does not reconnect on its own.
const EventClosed = "realtime.closed"

// ClosedData returns the data of the realtime.closed event for err, why
// the hub dropped a session, and false when err does not end the
// subscription for good (the client is to come back and resume).
func ClosedData(err error) ([]byte, bool) {
	if errors.Is(err, ErrDisconnected) {
		return []byte(`{"reason":"disconnected"}`), true
	}
	return nil, false
}

// Disconnect ends this node's subscriptions of sub (a ticket's subject)
// and of the channel name, whichever are given ("" matches any; one at least must
// be set): each is dropped with ErrDisconnected, so that its transport
// tells the client to stay away (realtime.closed, WebSocket close 4000).
// A subscription to several channels ends as a whole. It returns how
// many subscriptions ended. The work is proportional to the node's
// subscriptions of the channels looked at; it is meant for an
// operator's command, not for every request.
func (h *Hub) Disconnect(sub, name string) int {
	if sub == "" && name == "" {
		return 0
	}
	matched := make(map[*subscriber]struct{})
	collect := func(c *channel) {
		p := c.subs.Load()
		if p == nil {
			return
		}
		for i := range *p {
			m := &(*p)[i]
			if !m.left() && (sub == "" || m.s.sub == sub) && m.s.failure() == nil {
				matched[m.s] = struct{}{}
			}
		}
	}
	if name != "" {
		sh := h.shard(name)
		sh.mu.RLock()
		if c := sh.channels[name]; c != nil {
			collect(c)
		}
		sh.mu.RUnlock()
	} else {
		for i := range h.shards {
			sh := &h.shards[i]
			sh.mu.RLock()
			for _, c := range sh.channels {
				collect(c)
			}
			sh.mu.RUnlock()
		}
	}
	for s := range matched {
		s.fail(ErrDisconnected)
	}
	return len(matched)
}

// ChannelInfo is what the admin API shows of a channel on this node.
type ChannelInfo struct {
	Name string
	// Subscribers counts the channel's subscriptions by transport.
	Subscribers map[string]int
	// LastID is the newest message id this node has seen, "" for none.
	LastID string
}

// Channels returns the channels this node holds (with subscribers, or
// lingering for resume), at most limit of them (0: all), and whether
// there were more.
func (h *Hub) Channels(limit int) ([]ChannelInfo, bool) {
	var out []ChannelInfo
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, c := range sh.channels {
			if limit > 0 && len(out) == limit {
				sh.mu.RUnlock()
				return out, true
			}
			out = append(out, c.info())
		}
		sh.mu.RUnlock()
	}
	return out, false
}

// Channel returns what this node holds of the channel name, and whether
// it holds the channel at all.
func (h *Hub) Channel(name string) (ChannelInfo, bool) {
	sh := h.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	c := sh.channels[name]
	if c == nil {
		return ChannelInfo{Name: name, Subscribers: map[string]int{}}, false
	}
	return c.info(), true
}

// info is the channel's ChannelInfo; the shard's lock is held.
func (c *channel) info() ChannelInfo {
	ci := ChannelInfo{Name: c.name, Subscribers: make(map[string]int)}
	if p := c.subs.Load(); p != nil {
		for i := range *p {
			if m := &(*p)[i]; !m.left() {
				ci.Subscribers[m.s.transport]++
			}
		}
	}
	if id := c.lastID.Load(); id != nil {
		ci.LastID = *id
	}
	return ci
}

// command is a control message between the hubs of a deployment.
type command struct {
	Op      string `json:"op"`     // "disconnect"
	Origin  string `json:"origin"` // the hub that sent it, which acted already
	Sub     string `json:"sub,omitempty"`
	Channel string `json:"channel,omitempty"`
}

// DisconnectEverywhere ends the subscriptions of sub and channel (see
// Disconnect) on this node at once, and on every other node through the
// broker. It returns how many ended here; an error means the other nodes
// could not be told (the bus is down).
func (h *Hub) DisconnectEverywhere(ctx context.Context, sub, channel string) (int, error) {
	n := h.Disconnect(sub, channel)
	payload, err := json.Marshal(command{Op: "disconnect", Origin: h.id, Sub: sub, Channel: channel})
	if err != nil {
		return n, err
	}
	return n, h.broker.Broadcast(ctx, payload)
}

// Control carries out a command another node broadcast. One this hub
// sent itself, or that it cannot read, is ignored (logged at debug
// level: the control channel is the deployment's own).
func (h *Hub) Control(payload []byte) {
	var c command
	if err := json.Unmarshal(payload, &c); err != nil || c.Op != "disconnect" {
		if ce := h.opts.Logger.Check(zap.DebugLevel, "ignoring a control message"); ce != nil {
			ce.Write(zap.ByteString("payload", payload[:min(len(payload), 200)]))
		}
		return
	}
	if c.Origin == h.id {
		return
	}
	h.Disconnect(c.Sub, c.Channel)
}
