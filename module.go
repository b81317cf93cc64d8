// Package realtime is a Caddy HTTP handler that adds real-time push to the
// apps behind Caddy: it keeps Server-Sent Events and WebSocket streams of
// an upstream healthy (no buffering, heartbeats, Origin and ticket checks),
// and with `hub` it serves subscriptions itself from Redis or an embedded
// broker over SSE, WebSocket and long-polling.
//
// This package is the thin Caddy adapter: configuration, provisioning and
// request routing. The work is done by the packages sse, ws, fallback,
// auth, replay, broker and hub, which do not import Caddy.
package realtime

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/endpoint"
	"github.com/caddy-realtime/realtime/internal/metrics"
	"github.com/caddy-realtime/realtime/internal/node"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
	redis.SetLogger(redisLogger{})
}

// redisLogger takes what go-redis logs about its connection pools (a
// dial failure for every command while Redis is down) off stderr and into
// Caddy's log at debug level: the module itself logs each change of
// Redis's health once, at warn or info.
type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if c := caddy.Log().Named("redis").Check(zap.DebugLevel, "go-redis"); c != nil {
		c.Write(zap.String("line", fmt.Sprintf(format, v...)))
	}
}

// Defaults, documented in the README. Those of the packages that do the
// work are theirs, named here once.
const (
	DefaultPrefix          = broker.DefaultPrefix
	DefaultHeartbeat       = 15 * time.Second
	DefaultTicketTTL       = auth.DefaultTicketTTL
	DefaultTicketMaxTTL    = auth.DefaultMaxTTL
	DefaultReplaySize      = replay.DefaultSize
	DefaultReplayTTL       = replay.DefaultTTL
	DefaultLongpollTimeout = 25 * time.Second
	DefaultMaxChannels     = 64
	DefaultMessageSize     = 64 * 1024
	DefaultIdleChannels    = 10000
)

// Handler is the `realtime` HTTP handler.
//
// Without `hub` it is a middleware for an app that streams by itself:
// responses of type text/event-stream are passed through unbuffered with
// heartbeats, and WebSocket upgrades pass only after the Origin (and
// ticket) checks. With `hub` it answers subscriptions and publishes itself.
type Handler struct {
	// Hub makes the handler serve subscriptions (SSE, WebSocket,
	// long-poll) and HTTP publishing from its broker, instead of passing
	// requests to the next handler.
	Hub bool `json:"hub,omitempty"`

	// Redis lists the redis:// or rediss:// URLs of the Redis server, or
	// of the nodes of a Redis Cluster. Empty: an embedded in-process
	// broker serves this node alone.
	Redis []string `json:"redis,omitempty"`

	// Prefix is prepended to every Redis channel and key name. Default
	// "realtime:".
	Prefix string `json:"prefix,omitempty"`

	// Heartbeat is the interval of SSE heartbeat comments and WebSocket
	// pings when a stream is idle. Default 15s; a negative value turns
	// heartbeats off (Caddyfile: `heartbeat off`).
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`

	// Origins lists the allowed values of the Origin header; `*` matches
	// one host label. Empty: only the request's own host (and requests
	// without an Origin header).
	Origins []string `json:"origins,omitempty"`

	// PublishKey is the bearer key that lets a backend publish over HTTP
	// (`Authorization: Bearer <publish_key>`). Placeholders such as
	// {env.REALTIME_PUBLISH_KEY} are replaced when the config loads.
	PublishKey string `json:"publish_key,omitempty"`

	// Ticket turns ticket authentication on.
	Ticket *TicketConfig `json:"ticket,omitempty"`

	// Replay configures the replay cache that lets clients resume.
	Replay *ReplayConfig `json:"replay,omitempty"`

	// LongpollTimeout is how long a long-poll waits for a message before
	// answering with an empty list. Default 25s.
	LongpollTimeout caddy.Duration `json:"longpoll_timeout,omitempty"`

	// Limits bounds what clients may use.
	Limits *Limits `json:"limits,omitempty"`

	// Channels are rules for the channels whose names match a pattern:
	// their replay, rewind and who may publish. The first rule that
	// matches a channel wins; a channel none matches takes the hub's
	// settings. Hub only.
	Channels []ChannelRule `json:"channels,omitempty"`

	// DisableDirectWrites turns off the hub's writing of messages
	// straight to the sockets of idle plain-TCP streams (Linux only): each
	// message then wakes every stream's goroutine, which costs more CPU
	// per delivery but no correctness. An escape hatch, should a kernel
	// or a network filter disagree with it.
	DisableDirectWrites bool `json:"disable_direct_writes,omitempty"`

	logger    *zap.Logger
	heartbeat time.Duration // 0: off

	node     *node.Node // the hub and its broker; nil without hub or redis
	nodeKey  string
	endpoint *endpoint.Endpoint
}

// TicketConfig configures tickets: short-lived credentials a browser
// presents as `?ticket=` or `Authorization: Bearer`.
type TicketConfig struct {
	// Secret is the HS256 key of signed tickets (JWTs). Empty: signed
	// tickets are not accepted.
	Secret string `json:"secret,omitempty"`
	// Issue is the path of the built-in ticket endpoint (POST).
	Issue string `json:"issue,omitempty"`
	// Authorize is the URL of the app endpoint that approves ticket
	// requests and ticketless subscriptions.
	Authorize string `json:"authorize,omitempty"`
	// TTL is the lifetime of issued tickets. Default 30s.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// MaxTTL bounds the life of a signed ticket: one whose exp lies
	// further ahead is refused (401), so that a leaked ticket does not
	// work for ever. Default 1h.
	MaxTTL caddy.Duration `json:"max_ttl,omitempty"`
	// AuthorizeTimeout bounds each call to the authorize endpoint; an app
	// that does not answer in time gives the caller a 504. Default 5s.
	AuthorizeTimeout caddy.Duration `json:"authorize_timeout,omitempty"`
}

// ReplayConfig configures the replay cache.
type ReplayConfig struct {
	// Size is how many messages are kept per channel. Default 1000.
	Size int `json:"size,omitempty"`
	// TTL is how long a channel's messages are kept, and how long a node
	// keeps feeding a channel's cache after its last subscriber left.
	// Default 10m.
	TTL caddy.Duration `json:"ttl,omitempty"`
}

// ChannelRule holds the settings of the channels whose names match
// Pattern (Caddyfile: `channels <pattern> { ... }`).
type ChannelRule struct {
	// Pattern is a glob on channel names: `*` matches any run of
	// characters, `:` and `/` included ("chat:*", "user:*", "prices").
	Pattern string `json:"pattern"`
	// Replay overrides the hub's replay for these channels; a zero
	// field keeps the hub's.
	Replay *ReplayConfig `json:"replay,omitempty"`
	// Rewind is how many of a channel's newest messages a subscriber
	// without a cursor gets first, and the most `?rewind=` may ask.
	// Zero: none unless asked, up to 100.
	Rewind int `json:"rewind,omitempty"`
	// Publish says who may publish to these channels over HTTP and
	// WebSocket: "key" (the publish key only), "ticket" (tickets with
	// publish rights only), "off" (nobody: messages come through Redis);
	// empty: both key and ticket.
	Publish string `json:"publish,omitempty"`
	// Presence tracks the members of these channels (tickets' subs)
	// across every node (Caddyfile: `presence [events]`).
	Presence *PresenceConfig `json:"presence,omitempty"`
	// Notify is the URL of the app endpoint that receives the lifecycle
	// webhooks of these channels (occupied, vacated, and with presence
	// member added and removed), signed with the publish key.
	Notify string `json:"notify,omitempty"`
}

// PresenceConfig turns presence on for the channels of a rule.
type PresenceConfig struct {
	// Events publishes realtime.join when a member's first connection
	// to a channel opens anywhere, and realtime.leave when its last one
	// has been gone for the grace period: ordinary, resumable messages.
	Events bool `json:"events,omitempty"`
}

// Limits bounds what clients may use. Zero values take the defaults
// documented in the README.
type Limits struct {
	// Connections is the number of open subscriptions on this node, all
	// transports together. Default 0: no limit beyond the open-file limit.
	Connections int `json:"connections,omitempty"`
	// PerIP is the number of open subscriptions per client IP. Default
	// 0: no limit.
	PerIP int `json:"per_ip,omitempty"`
	// Channels is the number of channels in one subscription. Default 64.
	Channels int `json:"channels,omitempty"`
	// MessageSize is the largest publish body and inbound WebSocket
	// frame, in bytes. Default 64KiB.
	MessageSize int64 `json:"message_size,omitempty"`
	// IdleChannels is the number of channels this node keeps without a
	// subscriber (for resume, up to the replay TTL); past it, the
	// longest idle is dropped and a resume on it gets the reset signal.
	// It bounds what a client subscribing to ever-new channel names can
	// make the node hold. Default 10000.
	IdleChannels int `json:"idle_channels,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.realtime",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.replacePlaceholders()
	h.setDefaults()
	if err := metrics.Init(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	origins, err := auth.NewOrigins(h.Origins)
	if err != nil {
		return fmt.Errorf("origins: %w", err)
	}
	set, err := h.ruleSet()
	if err != nil {
		return err
	}
	// the hub needs its broker; tickets stored in Redis need the client
	if h.Hub || len(h.Redis) > 0 {
		if h.node, h.nodeKey, err = h.loadNode(set); err != nil {
			return err
		}
	}
	tickets, err := h.newTickets(h.node)
	if err != nil {
		return err
	}
	cfg := endpoint.Config{
		Origins:         origins,
		Tickets:         tickets,
		PublishKey:      h.PublishKey,
		Heartbeat:       h.heartbeat,
		LongpollTimeout: time.Duration(h.LongpollTimeout),
		Limits: endpoint.Limits{
			Connections: h.Limits.Connections, PerIP: h.Limits.PerIP,
			Channels: h.Limits.Channels, MessageSize: h.Limits.MessageSize,
		},
		DirectWrites: !h.DisableDirectWrites,
		Logger:       h.logger,
	}
	if h.Hub {
		cfg.Hub, cfg.Conns, cfg.Rules = h.node.Hub, h.node, h.node.Rules
		if h.node.Presence != nil {
			cfg.Presence = h.node.Presence
		}
	}
	h.endpoint = endpoint.New(cfg)
	// streams end as soon as the server starts shutting down (reload,
	// stop), not only at Cleanup, which comes after the server's
	// shutdown has waited for every request in flight
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterOnShutdown(h.endpoint.Shutdown)
		if servesHTTP3(srv) {
			for _, w := range idleOverHTTP3(h.heartbeat, time.Duration(h.LongpollTimeout), h.Hub) {
				h.logger.Warn(w)
			}
		}
	}
	return nil
}

// replacePlaceholders resolves the global placeholders ({env.*}) of the
// settings that take them.
func (h *Handler) replacePlaceholders() {
	repl := caddy.NewReplacer()
	h.PublishKey = repl.ReplaceKnown(h.PublishKey, "")
	// a placeholder that resolves to nothing (`redis {env.REDIS_URL}`
	// with the variable unset) means the embedded broker
	var urls []string
	for _, u := range h.Redis {
		if u = strings.TrimSpace(repl.ReplaceKnown(u, "")); u != "" {
			urls = append(urls, u)
		}
	}
	h.Redis = urls
	for i, o := range h.Origins {
		h.Origins[i] = repl.ReplaceKnown(o, "")
	}
	if h.Ticket != nil {
		h.Ticket.Secret = repl.ReplaceKnown(h.Ticket.Secret, "")
		h.Ticket.Authorize = repl.ReplaceKnown(h.Ticket.Authorize, "")
	}
}

// setDefaults fills in every setting left at zero.
func (h *Handler) setDefaults() {
	switch {
	case h.Heartbeat == 0:
		h.heartbeat = DefaultHeartbeat
	case h.Heartbeat > 0:
		h.heartbeat = time.Duration(h.Heartbeat)
	}
	if h.Replay == nil {
		h.Replay = new(ReplayConfig)
	}
	if h.Limits == nil {
		h.Limits = new(Limits)
	}
	orDefault(&h.Prefix, DefaultPrefix)
	orDefault(&h.LongpollTimeout, caddy.Duration(DefaultLongpollTimeout))
	if h.Ticket != nil {
		orDefault(&h.Ticket.TTL, caddy.Duration(DefaultTicketTTL))
		orDefault(&h.Ticket.MaxTTL, caddy.Duration(DefaultTicketMaxTTL))
	}
	orDefault(&h.Replay.Size, DefaultReplaySize)
	orDefault(&h.Replay.TTL, caddy.Duration(DefaultReplayTTL))
	orDefault(&h.Limits.Channels, DefaultMaxChannels)
	orDefault(&h.Limits.MessageSize, DefaultMessageSize)
	orDefault(&h.Limits.IdleChannels, DefaultIdleChannels)
}

// orDefault sets *v to def when it is the zero value (not configured).
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate rejects configurations that cannot work.
func (h *Handler) Validate() error {
	for _, u := range h.Redis {
		if !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
			return fmt.Errorf("redis: URL %q must start with redis:// or rediss://", u)
		}
	}
	if h.LongpollTimeout < 0 {
		return fmt.Errorf("longpoll_timeout must not be negative (0: the default)")
	}
	if h.Replay.Size < 0 || h.Replay.TTL < 0 {
		return fmt.Errorf("replay size and ttl must not be negative (0: the default)")
	}
	if h.Limits.Connections < 0 || h.Limits.PerIP < 0 || h.Limits.Channels < 0 || h.Limits.MessageSize < 0 || h.Limits.IdleChannels < 0 {
		return fmt.Errorf("limits must not be negative (0: the default)")
	}
	if t := h.Ticket; t != nil {
		if t.Issue != "" && t.Authorize == "" {
			return fmt.Errorf("ticket: issue needs authorize, the app endpoint that approves ticket requests")
		}
		if t.Secret == "" && t.Authorize == "" && len(h.Redis) == 0 {
			return fmt.Errorf("ticket: no way to accept a ticket: set secret, authorize, or redis")
		}
		if t.Issue != "" && t.Secret == "" && len(h.Redis) == 0 {
			return fmt.Errorf("ticket: issue needs redis or secret to store or sign the tickets it issues")
		}
	}
	if len(h.Channels) > 0 && !h.Hub {
		return fmt.Errorf("channels: rules apply to the channels of a hub: add hub")
	}
	if _, err := h.ruleSet(); err != nil {
		return err
	}
	return nil
}

// ruleSet compiles the channel rules, with the hub's replay settings
// filled in where a rule has none.
func (h *Handler) ruleSet() (*rules.Set, error) {
	list := make([]rules.Rule, len(h.Channels))
	for i, c := range h.Channels {
		pub, err := rules.ParsePublish(c.Publish)
		if err != nil {
			return nil, fmt.Errorf("channels %s: %w", c.Pattern, err)
		}
		list[i] = rules.Rule{Pattern: c.Pattern, Rewind: c.Rewind, Publish: pub, Notify: c.Notify}
		if c.Presence != nil {
			list[i].Presence, list[i].PresenceEvents = true, c.Presence.Events
		}
		if c.Notify != "" && h.PublishKey == "" {
			return nil, fmt.Errorf("channels %s: notify signs its webhooks with publish_key: set publish_key", c.Pattern)
		}
		if c.Replay != nil {
			list[i].ReplaySize, list[i].ReplayTTL = c.Replay.Size, time.Duration(c.Replay.TTL)
		}
	}
	return rules.New(list, rules.Rule{ReplaySize: h.Replay.Size, ReplayTTL: time.Duration(h.Replay.TTL)})
}

// Cleanup ends the streams this handler serves and releases its share
// of its node (hub, broker, replay cache), which is destroyed once no config uses it.
func (h *Handler) Cleanup() error {
	if h.endpoint != nil {
		h.endpoint.Close(2 * time.Second)
	}
	if h.node != nil {
		_, err := nodes.Delete(h.nodeKey)
		return err
	}
	return nil
}

// ServeHTTP serves the request from the hub, or passes it through.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return h.endpoint.ServeHTTP(w, r, next)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
