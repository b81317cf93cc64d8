package realtime

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// states holds each hub's broker, replay cache and open WebSocket
// connections, keyed by the configuration they depend on. A reload that
// keeps that configuration gets the same state back: the Redis connection,
// its subscriptions and the replay cache live on, and so do hub WebSocket
// connections.
var states = caddy.NewUsagePool()

// stateKey is the part of the configuration a hub's state depends on.
type stateKey struct {
	Redis      []string      `json:"redis"`
	Prefix     string        `json:"prefix"`
	ReplaySize int           `json:"replay_size"`
	ReplayTTL  time.Duration `json:"replay_ttl"`
}

// state is what outlives a config reload.
type state struct {
	hub    *hub.Hub
	broker broker.Broker
	cache  *replay.Cache
	logger *zap.Logger

	connMu    sync.Mutex
	conns     map[io.Closer]struct{}
	connsGone chan struct{} // closed when conns empties, if Destruct waits
}

func (h *Handler) loadState() (*state, string, error) {
	key := stateKey{Redis: h.Redis, Prefix: h.Prefix, ReplaySize: h.Replay.Size, ReplayTTL: time.Duration(h.Replay.TTL)}
	kb, _ := json.Marshal(key)
	val, _, err := states.LoadOrNew(string(kb), func() (caddy.Destructor, error) {
		return newState(key, h.logger)
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*state), string(kb), nil
}

func newState(key stateKey, logger *zap.Logger) (*state, error) {
	s := &state{logger: logger, conns: make(map[io.Closer]struct{})}
	cache, err := replay.New(replay.Options{Size: key.ReplaySize, TTL: key.ReplayTTL})
	if err != nil {
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	s.cache = cache
	s.hub = hub.New(hub.Options{
		Linger:   key.ReplayTTL,
		Replay:   cache,
		Logger:   logger,
		Observer: observer{},
	})
	if len(key.Redis) == 0 {
		s.broker = broker.NewMemory(s.hub)
		metrics.redisUp.Set(0)
	} else {
		wasDown := false // OnHealth calls come in order, one at a time
		b, err := broker.NewRedis(broker.RedisOptions{
			URLs:         key.Redis,
			Prefix:       key.Prefix,
			StreamMaxLen: int64(key.ReplaySize),
			StreamTTL:    key.ReplayTTL,
			OnHealth: func(up bool) {
				if up {
					if wasDown {
						metrics.redisReconnects.Inc()
					}
					metrics.redisUp.Set(1)
				} else {
					wasDown = true
					metrics.redisUp.Set(0)
				}
			},
		}, s.hub, logger)
		if err != nil {
			cache.Close()
			return nil, fmt.Errorf("connecting to redis: %w", err)
		}
		s.broker = b
	}
	s.hub.SetBroker(s.broker)
	return s, nil
}

func (s *state) trackConn(c io.Closer) {
	s.connMu.Lock()
	s.conns[c] = struct{}{}
	s.connMu.Unlock()
}

func (s *state) untrackConn(c io.Closer) {
	s.connMu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.connsGone != nil {
		close(s.connsGone)
		s.connsGone = nil
	}
	s.connMu.Unlock()
}

// Destruct runs when no loaded config uses the state any more: it closes
// every subscription and connection, then the broker.
func (s *state) Destruct() error {
	// closing the hub drops every subscriber: each WebSocket's writer
	// then sends close 1001 and closes its connection; those that cannot
	// within a second are closed here
	s.hub.Close()
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
	err := s.broker.Close()
	s.cache.Close()
	return err
}
