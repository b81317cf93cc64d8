package realtime

import (
	"fmt"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/endpoint"
	"github.com/caddy-realtime/realtime/internal/node"
	"github.com/redis/go-redis/v9"
)

// newTickets sets up the ticket configuration at work: stored and
// signed tickets, and the app that approves ticket requests; nil when
// tickets are off.
func (h *Handler) newTickets(n *node.Node) (*endpoint.Tickets, error) {
	t := h.Ticket
	if t == nil {
		return nil, nil
	}
	var rdb redis.UniversalClient
	if n != nil {
		if rb, ok := n.Broker.(*broker.Redis); ok {
			rdb = rb.Client()
		}
	}
	var secret []byte
	if t.Secret != "" {
		secret = []byte(t.Secret)
	}
	tickets, err := auth.NewTickets(auth.TicketOptions{
		Redis:  rdb,
		Prefix: h.Prefix,
		Secret: secret,
		TTL:    time.Duration(t.TTL),
		MaxTTL: time.Duration(t.MaxTTL),
		Logger: h.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("ticket: %w", err)
	}
	ta := &endpoint.Tickets{Tickets: tickets, IssuePath: t.Issue}
	if t.Authorize != "" {
		ta.Authorizer, err = auth.NewAuthorizer(t.Authorize, time.Duration(t.AuthorizeTimeout), nil, h.logger)
		if err != nil {
			return nil, fmt.Errorf("ticket authorize: %w", err)
		}
	}
	return ta, nil
}
