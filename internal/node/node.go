// Package node holds what one Caddy node keeps across config reloads: the
// hub, its broker (Redis or embedded) and replay cache, and the hub
// WebSocket connections, which a reload that keeps this configuration
// leaves open.
package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/metrics"
	"github.com/caddy-realtime/realtime/internal/presence"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/internal/webhook"
	"github.com/caddy-realtime/realtime/replay"
	"go.uber.org/zap"
)

// Config is the part of the module's configuration a node depends on:
// a reload that changes none of it keeps the node.
type Config struct {
	Redis      []string      `json:"redis"`
	Prefix     string        `json:"prefix"`
	ReplaySize int           `json:"replay_size"`
	ReplayTTL  time.Duration `json:"replay_ttl"`
	// IdleChannels bounds the channels kept without a subscriber.
	IdleChannels int `json:"idle_channels"`
	// Rules are the `channels` rules, with the hub's settings filled in.
	Rules []rules.Rule `json:"rules,omitempty"`
	// WebhookKey signs the lifecycle webhooks (the publish key); only
	// its digest is part of the node's identity.
	WebhookKey       string `json:"-"`
	WebhookKeyDigest string `json:"webhook_key,omitempty"`
}

// ruleSet compiles the rules of cfg.
func (cfg Config) ruleSet() (*rules.Set, error) {
	return rules.New(cfg.Rules, rules.Rule{ReplaySize: cfg.ReplaySize, ReplayTTL: cfg.ReplayTTL})
}

// Node is what outlives a config reload.
type Node struct {
	Hub    *hub.Hub
	Broker broker.Broker
	Rules  *rules.Set
	// Presence counts the subscriptions of tracked channels; nil when
	// no rule tracks any.
	Presence *presence.Tracker

	webhookKey []byte
	outbox     *presence.Redis // keeps webhook events until sent; nil without Redis
	sendersMu  sync.Mutex
	senders    map[string]*webhook.Sender // by URL
	cache      *replay.Cache
	logger     *zap.Logger

	connMu    sync.Mutex
	conns     map[io.Closer]struct{}
	connsGone chan struct{} // closed when conns empties, if Destruct waits
}

// New starts a node: its replay cache, hub and broker (connecting to
// Redis when configured).
func New(key Config, logger *zap.Logger) (*Node, error) {
	s := &Node{logger: logger, conns: make(map[io.Closer]struct{})}
	set, err := key.ruleSet()
	if err != nil {
		return nil, err
	}
	s.Rules = set
	cache, err := replay.New(replay.Options{
		Size: key.ReplaySize,
		TTL:  key.ReplayTTL,
		PerChannel: func(channel string) (int, time.Duration) {
			r := set.Match(channel)
			return r.ReplaySize, r.ReplayTTL
		},
	})
	if err != nil {
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	s.cache = cache
	s.Hub = hub.New(hub.Options{
		Linger:       key.ReplayTTL,
		IdleChannels: key.IdleChannels,
		Rules:        set,
		Replay:       cache,
		Logger:       logger,
		Observer:     metrics.Observer{},
	})
	if len(key.Redis) == 0 {
		s.Broker = broker.NewMemory(s.Hub)
		metrics.RedisUp(false, false)
	} else {
		wasDown := false // OnHealth calls come in order, one at a time
		b, err := broker.NewRedis(broker.RedisOptions{
			URLs:         key.Redis,
			Prefix:       key.Prefix,
			StreamMaxLen: int64(key.ReplaySize),
			StreamTTL:    key.ReplayTTL,
			PerChannel: func(channel string) (int64, time.Duration) {
				r := set.Match(channel)
				return int64(r.ReplaySize), r.ReplayTTL
			},
			OnHealth: func(up bool) {
				metrics.RedisUp(up, up && wasDown)
				wasDown = !up
			},
		}, s.Hub, logger)
		if err != nil {
			cache.Close()
			return nil, fmt.Errorf("connecting to redis: %w", err)
		}
		s.Broker = b
	}
	s.Hub.SetBroker(s.Broker)
	if set.Tracked() {
		var store presence.Store = presence.NewMemory()
		if rb, ok := s.Broker.(*broker.Redis); ok {
			s.outbox = presence.NewRedis(rb.Client(), key.Prefix, s.Hub.ID(), PresenceTTL, func(channel string) presence.Notify {
				switch r := set.Match(channel); {
				case r.Notify == "":
					return presence.NotifyNone
				case r.Presence:
					return presence.NotifyChannelMembers
				}
				return presence.NotifyChannel
			})
			store = s.outbox
		}
		s.webhookKey = []byte(key.WebhookKey)
		s.Presence = presence.NewTracker(store, presence.Options{OnTransitions: s.announce, OnOrphans: s.resend, Logger: logger})
		s.Hub.SetPresence(s.Presence)
	}
	return s, nil
}

// PresenceTTL is how long a node's presence counts live in Redis
// without a refresh (every 5s): a crashed node's members are gone from
// the deployment's presence within it, and its leaves announced within
// a refresh more.
const PresenceTTL = 20 * time.Second

// announce makes the deployment's presence transitions this node decided
// known: realtime.join and realtime.leave messages on channels with
// presence events, and lifecycle webhooks on channels with notify.
func (s *Node) announce(trans []presence.Transition) {
	for _, t := range trans {
		metrics.PresenceTransition(t.Kind.String())
		rule := s.Rules.Match(t.Channel)
		member := t.Kind == presence.MemberAdded || t.Kind == presence.MemberRemoved
		if member && rule.PresenceEvents {
			event := hub.EventJoin
			if t.Kind == presence.MemberRemoved {
				event = hub.EventLeave
			}
			data, _ := json.Marshal(struct {
				Channel string `json:"channel"`
				Sub     string `json:"sub"`
			}{t.Channel, t.Sub})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if _, err := s.Hub.Announce(ctx, t.Channel, event, data); err != nil {
				s.logger.Warn("presence: publishing an event failed", zap.String("channel", t.Channel), zap.String("event", event), zap.Error(err))
			}
			cancel()
		}
		if rule.Notify != "" && (!member || rule.Presence) {
			s.sender(rule.Notify).Send(webhookEvent(t))
		}
	}
}

// webhookEvent is the webhook event of t: with the id of its outbox
// entry, if it has one.
func webhookEvent(t presence.Transition) webhook.Event {
	id := t.ID
	if id == "" {
		id = webhook.NewID()
	}
	return webhook.Event{ID: id, Type: t.Kind.String(), Channel: t.Channel, Sub: t.Sub, Time: t.At.UTC()}
}

// resend sends webhook events another node decided and did not send (it
// crashed, or lost Redis): same ids, so that an app drops a repeat.
func (s *Node) resend(orphans []presence.Transition) {
	for _, t := range orphans {
		rule := s.Rules.Match(t.Channel)
		if rule.Notify == "" {
			s.releaseEvents([]webhook.Event{webhookEvent(t)}) // no longer notified
			continue
		}
		s.sender(rule.Notify).Send(webhookEvent(t))
	}
}

// holdEvents and releaseEvents renew and end this node's claim on
// outbox events it sends.
func (s *Node) holdEvents(events []webhook.Event) { s.outboxOp(events, s.outbox.Hold) }

func (s *Node) releaseEvents(events []webhook.Event) { s.outboxOp(events, s.outbox.Release) }

func (s *Node) outboxOp(events []webhook.Event, op func(context.Context, string, []string) error) {
	if s.outbox == nil {
		return
	}
	byChannel := make(map[string][]string)
	for _, e := range events {
		byChannel[e.Channel] = append(byChannel[e.Channel], e.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for ch, ids := range byChannel {
		if err := op(ctx, ch, ids); err != nil {
			s.logger.Warn("webhook outbox", zap.String("channel", ch), zap.Error(err))
		}
	}
}

// sender returns the webhook sender of url, started on first use.
func (s *Node) sender(url string) *webhook.Sender {
	s.sendersMu.Lock()
	defer s.sendersMu.Unlock()
	if s.senders == nil {
		s.senders = make(map[string]*webhook.Sender)
	}
	w := s.senders[url]
	if w == nil {
		w = webhook.New(url, s.webhookKey, webhook.Options{
			Logger: s.logger.Named("webhook"), OnResult: metrics.WebhookEvents,
			Hold: s.holdEvents, Release: s.releaseEvents,
		})
		s.senders[url] = w
	}
	return w
}

// Cached returns how many messages of channel the node's replay cache
// holds.
func (s *Node) Cached(channel string) int { return s.cache.Len(channel) }

// TrackConn keeps c, to close it if it outlives the state.
func (s *Node) TrackConn(c io.Closer) {
	s.connMu.Lock()
	s.conns[c] = struct{}{}
	s.connMu.Unlock()
}

// UntrackConn forgets c.
func (s *Node) UntrackConn(c io.Closer) {
	s.connMu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.connsGone != nil {
		close(s.connsGone)
		s.connsGone = nil
	}
	s.connMu.Unlock()
}

// Destruct runs when no loaded config uses the node any more: it closes
// every subscription and connection, then the broker.
func (s *Node) Destruct() error {
	// closing the hub drops every subscriber: each WebSocket's writer
	// then sends close 1001 and closes its connection; those that cannot
	// within a second are closed here
	s.Hub.Close()
	s.connMu.Lock()
	gone := make(chan struct{})
	if len(s.conns) == 0 {
		close(gone)
	} else {
		s.connsGone = gone
	}
	s.connMu.Unlock()
	select {
	case <-gone:
	case <-time.After(time.Second):
	}
	s.connMu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.connMu.Unlock()
	if s.Presence != nil {
		s.Presence.Close()
	}
	s.sendersMu.Lock()
	for _, w := range s.senders {
		w.Close()
	}
	s.sendersMu.Unlock()
	err := s.Broker.Close()
	s.cache.Close()
	return err
}
