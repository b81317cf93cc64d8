package realtime

import (
	"crypto/tls"
	"net"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-realtime/realtime/internal/rawconn"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// ListenerWrapper lets the hub write messages to WebSocket and event
// stream subscribers over HTTPS with HTTP/1.1 from its fan-out, as it
// does over plain HTTP, rather than from a goroutine started per message
// and subscriber: about a fifth less CPU per delivery. It must come
// before tls in the server's listener wrappers:
//
//	{
//		servers {
//			listener_wrappers {
//				realtime
//				tls
//			}
//		}
//	}
//
// A connection behaves as without it until the hub takes it over; HTTP/2
// and HTTP/3 streams (SSE from most browsers over HTTPS) are not taken
// over, so it changes nothing for them. Linux only: elsewhere it does
// nothing.
type ListenerWrapper struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.realtime",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision sets up the wrapper.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	lw.logger = ctx.Logger()
	return nil
}

// WrapListener wraps each TCP connection ln accepts for the hub.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return &socketListener{Listener: ln, logger: lw.logger}
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens; it takes
// no options:
//
//	realtime
func (lw *ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("the realtime listener wrapper takes no options, got %q", d.Val())
	}
	return nil
}

type socketListener struct {
	net.Listener
	logger *zap.Logger
	warned atomic.Bool
}

func (l *socketListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	if _, ok := c.(*tls.Conn); ok && !l.warned.Swap(true) {
		l.logger.Warn("the realtime listener wrapper comes after tls in listener_wrappers, where it does nothing: list it before tls")
	}
	return rawconn.WrapSocket(c), nil
}

var (
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
