package realtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/caddy-realtime/realtime/internal/node"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddyserver/caddy/v2"
)

// nodes holds the node of each configuration: a reload that keeps the
// configuration a node depends on gets the same node back, so the Redis
// connection, its subscriptions, the replay cache and hub WebSocket
// connections live on.
var nodes = caddy.NewUsagePool()

// loadNode returns the node of h's configuration, and its key in nodes.
func (h *Handler) loadNode(set *rules.Set) (*node.Node, string, error) {
	cfg := node.Config{
		Redis: h.Redis, Prefix: h.Prefix,
		ReplaySize: h.Replay.Size, ReplayTTL: time.Duration(h.Replay.TTL),
		IdleChannels: h.Limits.IdleChannels,
		Rules:        set.Rules(),
	}
	if set.Tracked() && h.PublishKey != "" {
		sum := sha256.Sum256([]byte(h.PublishKey))
		cfg.WebhookKey, cfg.WebhookKeyDigest = h.PublishKey, hex.EncodeToString(sum[:8])
	}
	kb, _ := json.Marshal(cfg)
	val, _, err := nodes.LoadOrNew(string(kb), func() (caddy.Destructor, error) {
		return node.New(cfg, h.logger)
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*node.Node), string(kb), nil
}
