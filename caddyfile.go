package realtime

import (
	"strconv"
	"strings"

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
	return unmarshalBlock(d, "", func(name string) error { return h.unmarshalOption(d, name) })
}

// repeatable are the subdirectives that may be given more than once:
// their arguments add up.
var repeatable = map[string]bool{"origins": true, "redis": true}

// unmarshalBlock reads the block of the current directive (what names it
// in errors; "" for realtime itself), which takes no argument, handing
// each subdirective to option by name; one that is not repeatable may be
// given once.
func unmarshalBlock(d *caddyfile.Dispenser, what string, option func(name string) error) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] && (what != "" || !repeatable[name]) {
			return d.Errf("%s: given more than once", strings.TrimSpace(what+" "+name))
		}
		seen[name] = true
		if err := option(name); err != nil {
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
		h.LongpollTimeout, err = durationArg(d, name)
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

// unmarshalTicket reads the ticket block.
func (h *Handler) unmarshalTicket(d *caddyfile.Dispenser) error {
	h.Ticket = new(TicketConfig)
	return unmarshalBlock(d, "ticket", func(name string) error {
		var err error
		switch name {
		case "secret":
			h.Ticket.Secret, err = oneArg(d)
		case "issue":
			h.Ticket.Issue, err = oneArg(d)
		case "authorize":
			h.Ticket.Authorize, err = oneArg(d)
		case "ttl":
			h.Ticket.TTL, err = durationArg(d, "ticket ttl")
		case "authorize_timeout":
			h.Ticket.AuthorizeTimeout, err = durationArg(d, "ticket authorize_timeout")
		default:
			return d.Errf("unrecognized ticket subdirective %q", name)
		}
		return err
	})
}

// unmarshalReplay reads the replay block.
func (h *Handler) unmarshalReplay(d *caddyfile.Dispenser) error {
	h.Replay = new(ReplayConfig)
	return unmarshalBlock(d, "replay", func(name string) error {
		var err error
		switch name {
		case "size":
			h.Replay.Size, err = positiveInt(d, "replay size")
		case "ttl":
			h.Replay.TTL, err = durationArg(d, "replay ttl")
		default:
			return d.Errf("unrecognized replay subdirective %q", name)
		}
		return err
	})
}

// unmarshalLimits reads the limits block.
func (h *Handler) unmarshalLimits(d *caddyfile.Dispenser) error {
	h.Limits = new(Limits)
	return unmarshalBlock(d, "limits", func(name string) error {
		var err error
		switch name {
		case "connections":
			h.Limits.Connections, err = positiveInt(d, "limits connections")
		case "per_ip":
			h.Limits.PerIP, err = positiveInt(d, "limits per_ip")
		case "channels":
			h.Limits.Channels, err = positiveInt(d, "limits channels")
		case "message_size":
			h.Limits.MessageSize, err = sizeArg(d, "limits message_size")
		default:
			return d.Errf("unrecognized limits subdirective %q", name)
		}
		return err
	})
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

// sizeArg returns the single argument of the current subdirective, a
// size from 1 byte to 1GiB such as 64KiB; name is the subdirective in
// errors.
func sizeArg(d *caddyfile.Dispenser, name string) (int64, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(v)
	if err != nil || n == 0 || n > 1<<30 {
		return 0, d.Errf("invalid %s '%s': want a size such as 64KiB, at most 1GiB", name, v)
	}
	return int64(n), nil
}

// durationArg returns the single argument of the current subdirective,
// a positive duration; name is the subdirective in errors.
func durationArg(d *caddyfile.Dispenser, name string) (caddy.Duration, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	return parsePositiveDuration(d, name, v)
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
