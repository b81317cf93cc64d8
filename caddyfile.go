package realtime

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("realtime", parseCaddyfile)
	// After templates, before handle/route and the responding handlers:
	// a top-level `realtime` wraps every proxied response (and sees every
	// upgrade) even when the site routes with `handle` blocks. encode
	// comes earlier, so it wraps us and our flushes reach the client.
	httpcaddyfile.RegisterDirectiveOrder("realtime", httpcaddyfile.After, "templates")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	realtime [<matcher>] {
//	    hub
//	    redis <url> [<url>...]
//	    prefix <string>
//	    heartbeat <duration>|off
//	    origins <pattern...>
//	    publish_key <secret>
//	    ticket {
//	        secret <key>
//	        issue <path>
//	        authorize <url>
//	        ttl <duration>
//	        authorize_timeout <duration>
//	    }
//	    replay {
//	        size <n>
//	        ttl <duration>
//	    }
//	    longpoll_timeout <duration>
//	    limits {
//	        connections <n>
//	        per_ip <n>
//	        channels <n>
//	        message_size <size>
//	    }
//	    direct_writes on|off
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] && name != "origins" && name != "redis" {
			return d.Errf("%s: given more than once", name)
		}
		seen[name] = true
		if err := h.unmarshalOption(d, name); err != nil {
			return err
		}
	}
	return nil
}

// unmarshalOption reads one subdirective of the realtime block.
func (h *Handler) unmarshalOption(d *caddyfile.Dispenser, name string) error {
	var err error
	switch name {
	case "hub":
		if d.NextArg() {
			return d.ArgErr()
		}
		h.Hub = true
	case "redis":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		h.Redis = append(h.Redis, args...)
	case "prefix":
		h.Prefix, err = oneArg(d)
	case "heartbeat":
		err = h.unmarshalHeartbeat(d)
	case "origins":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		h.Origins = append(h.Origins, args...)
	case "publish_key":
		h.PublishKey, err = oneArg(d)
	case "longpoll_timeout":
		var v string
		if v, err = oneArg(d); err == nil {
			h.LongpollTimeout, err = parsePositiveDuration(d, name, v)
		}
	case "ticket":
		err = h.unmarshalTicket(d)
	case "replay":
		err = h.unmarshalReplay(d)
	case "limits":
		err = h.unmarshalLimits(d)
	case "direct_writes":
		err = h.unmarshalDirectWrites(d)
	default:
		return d.Errf("unrecognized subdirective %q", name)
	}
	return err
}

func (h *Handler) unmarshalTicket(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	h.Ticket = new(TicketConfig)
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("ticket %s: given more than once", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "secret":
			h.Ticket.Secret, err = oneArg(d)
		case "issue":
			h.Ticket.Issue, err = oneArg(d)
		case "authorize":
			h.Ticket.Authorize, err = oneArg(d)
		case "ttl":
			var v string
			if v, err = oneArg(d); err == nil {
				h.Ticket.TTL, err = parsePositiveDuration(d, "ticket ttl", v)
			}
		case "authorize_timeout":
			var v string
			if v, err = oneArg(d); err == nil {
				h.Ticket.AuthorizeTimeout, err = parsePositiveDuration(d, "ticket authorize_timeout", v)
			}
		default:
			return d.Errf("unrecognized ticket subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalReplay(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	h.Replay = new(ReplayConfig)
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("replay %s: given more than once", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "size":
			h.Replay.Size, err = positiveInt(d, "replay size")
		case "ttl":
			var v string
			if v, err = oneArg(d); err == nil {
				h.Replay.TTL, err = parsePositiveDuration(d, "replay ttl", v)
			}
		default:
			return d.Errf("unrecognized replay subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalLimits(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	h.Limits = new(Limits)
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("limits %s: given more than once", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "connections":
			h.Limits.Connections, err = positiveInt(d, "limits connections")
		case "per_ip":
			h.Limits.PerIP, err = positiveInt(d, "limits per_ip")
		case "channels":
			h.Limits.Channels, err = positiveInt(d, "limits channels")
		case "message_size":
			var v string
			if v, err = oneArg(d); err == nil {
				var n uint64
				n, err = humanize.ParseBytes(v)
				if err != nil || n == 0 || n > 1<<30 {
					return d.Errf("invalid limits message_size '%s': want a size such as 64KiB, at most 1GiB", v)
				}
				h.Limits.MessageSize = int64(n)
			}
		default:
			return d.Errf("unrecognized limits subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneArg returns the single argument of the current subdirective.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func positiveInt(d *caddyfile.Dispenser, name string) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, d.Errf("invalid %s '%s': want a positive integer", name, v)
	}
	return n, nil
}

func parsePositiveDuration(d *caddyfile.Dispenser, name, v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("invalid %s '%s': %v", name, v, err)
	}
	if dur <= 0 {
		return 0, d.Errf("invalid %s '%s': must be positive", name, v)
	}
	return caddy.Duration(dur), nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// unmarshalHeartbeat reads `heartbeat <duration>|off`.
func (h *Handler) unmarshalHeartbeat(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	if v == "off" {
		h.Heartbeat = -1
		return nil
	}
	h.Heartbeat, err = parsePositiveDuration(d, "heartbeat", v)
	return err
}

// unmarshalDirectWrites reads `direct_writes on|off`.
func (h *Handler) unmarshalDirectWrites(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	switch v {
	case "on":
		h.DisableDirectWrites = false
	case "off":
		h.DisableDirectWrites = true
	default:
		return d.Errf("direct_writes: want on or off, got %q", v)
	}
	return nil
}
