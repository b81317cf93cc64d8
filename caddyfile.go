package realtime

import (
	"strconv"
	"strings"

	"github.com/caddy-realtime/realtime/internal/rules"
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
//	        max_ttl <duration>
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
//	        idle_channels <n>
//	    }
//	    channels <pattern> {
//	        replay {
//	            size <n>
//	            ttl <duration>
//	        }
//	        rewind <n>
//	        publish key|ticket|off
//	        presence [events]
//	        notify <url>
//	    }
//	    direct_writes on|off
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	return unmarshalBlock(d, "", subdirectives{
		"hub": func() error {
			h.Hub = true
			return noArgs(d)
		},
		"redis":            func() error { return appendArgs(d, &h.Redis) },
		"prefix":           func() (err error) { h.Prefix, err = oneArg(d); return },
		"heartbeat":        func() error { return h.unmarshalHeartbeat(d) },
		"origins":          func() error { return appendArgs(d, &h.Origins) },
		"publish_key":      func() (err error) { h.PublishKey, err = oneArg(d); return },
		"longpoll_timeout": func() (err error) { h.LongpollTimeout, err = durationArg(d, "longpoll_timeout"); return },
		"ticket": func() error {
			h.Ticket = new(TicketConfig)
			return unmarshalBlock(d, "ticket", h.Ticket.subdirectives(d))
		},
		"replay": func() error {
			h.Replay = new(ReplayConfig)
			return unmarshalBlock(d, "replay", h.Replay.subdirectives(d))
		},
		"limits": func() error {
			h.Limits = new(Limits)
			return unmarshalBlock(d, "limits", h.Limits.subdirectives(d))
		},
		"channels":      func() error { return h.unmarshalChannels(d) },
		"direct_writes": func() error { return h.unmarshalDirectWrites(d) },
	})
}

// unmarshalChannels reads one `channels <pattern> { ... }` rule.
func (h *Handler) unmarshalChannels(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	c := ChannelRule{Pattern: d.Val()}
	if err := rules.CheckPattern(c.Pattern); err != nil {
		return d.Errf("channels: %v", err)
	}
	err := unmarshalBlock(d, "channels", subdirectives{
		"replay": func() error {
			c.Replay = new(ReplayConfig)
			return unmarshalBlock(d, "channels replay", c.Replay.subdirectives(d))
		},
		"rewind": func() (err error) { c.Rewind, err = positiveInt(d, "channels rewind"); return },
		"publish": func() error {
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			if _, err := rules.ParsePublish(v); err != nil || v == "" {
				return d.Errf("channels publish: want key, ticket or off, got %q", v)
			}
			c.Publish = v
			return nil
		},
		"presence": func() error {
			c.Presence = new(PresenceConfig)
			switch args := d.RemainingArgs(); {
			case len(args) == 0:
			case len(args) == 1 && args[0] == "events":
				c.Presence.Events = true
			default:
				return d.Errf("channels presence: want nothing or events, got %q", strings.Join(args, " "))
			}
			return nil
		},
		"notify": func() (err error) { c.Notify, err = oneArg(d); return },
	})
	if err != nil {
		return err
	}
	h.Channels = append(h.Channels, c)
	return nil
}

// subdirectives maps the names of a block's subdirectives to what reads
// each (from the dispenser, at the subdirective's name).
type subdirectives map[string]func() error

// repeatable are the subdirectives that may be given more than once:
// their arguments add up.
var repeatable = map[string]bool{"origins": true, "redis": true, "channels": true}

// unmarshalBlock reads the block of the current directive (what names it
// in errors; "" for realtime itself), which takes no argument. Each
// subdirective must be one of subs, given once unless repeatable.
func unmarshalBlock(d *caddyfile.Dispenser, what string, subs subdirectives) error {
	if err := noArgs(d); err != nil {
		return err
	}
	if what != "" {
		what += " "
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		read, ok := subs[name]
		switch {
		case !ok:
			return d.Errf("unrecognized %ssubdirective %q", what, name)
		case seen[name] && (what != "" || !repeatable[name]):
			return d.Errf("%s%s: given more than once", what, name)
		}
		seen[name] = true
		if err := read(); err != nil {
			return err
		}
	}
	return nil
}

// subdirectives of the ticket block.
func (t *TicketConfig) subdirectives(d *caddyfile.Dispenser) subdirectives {
	return subdirectives{
		"secret":            func() (err error) { t.Secret, err = oneArg(d); return },
		"issue":             func() (err error) { t.Issue, err = oneArg(d); return },
		"authorize":         func() (err error) { t.Authorize, err = oneArg(d); return },
		"ttl":               func() (err error) { t.TTL, err = durationArg(d, "ticket ttl"); return },
		"max_ttl":           func() (err error) { t.MaxTTL, err = durationArg(d, "ticket max_ttl"); return },
		"authorize_timeout": func() (err error) { t.AuthorizeTimeout, err = durationArg(d, "ticket authorize_timeout"); return },
	}
}

// subdirectives of the replay block.
func (r *ReplayConfig) subdirectives(d *caddyfile.Dispenser) subdirectives {
	return subdirectives{
		"size": func() (err error) { r.Size, err = positiveInt(d, "replay size"); return },
		"ttl":  func() (err error) { r.TTL, err = durationArg(d, "replay ttl"); return },
	}
}

// subdirectives of the limits block.
func (l *Limits) subdirectives(d *caddyfile.Dispenser) subdirectives {
	return subdirectives{
		"connections":   func() (err error) { l.Connections, err = positiveInt(d, "limits connections"); return },
		"per_ip":        func() (err error) { l.PerIP, err = positiveInt(d, "limits per_ip"); return },
		"channels":      func() (err error) { l.Channels, err = positiveInt(d, "limits channels"); return },
		"message_size":  func() (err error) { l.MessageSize, err = sizeArg(d, "limits message_size"); return },
		"idle_channels": func() (err error) { l.IdleChannels, err = positiveInt(d, "limits idle_channels"); return },
	}
}

// noArgs checks the current directive has no (more) arguments.
func noArgs(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// appendArgs appends the current subdirective's arguments, at least one,
// to list.
func appendArgs(d *caddyfile.Dispenser, list *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*list = append(*list, args...)
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

// positiveInt returns the single argument of the current subdirective,
// a positive integer; name is the subdirective in errors.
func positiveInt(d *caddyfile.Dispenser, name string) (int, error) {
	return parsedArg(d, name, "want a positive integer", func(v string) (int, bool) {
		n, err := strconv.Atoi(v)
		return n, err == nil && n > 0
	})
}

// sizeArg returns the single argument of the current subdirective, a
// size from 1 byte to 1GiB such as 64KiB.
func sizeArg(d *caddyfile.Dispenser, name string) (int64, error) {
	return parsedArg(d, name, "want a size such as 64KiB, at most 1GiB", func(v string) (int64, bool) {
		n, err := humanize.ParseBytes(v)
		return int64(n), err == nil && n > 0 && n <= 1<<30
	})
}

// parsedArg returns the single argument of the current subdirective as
// parse reads it; one parse refuses is an error saying what is wanted.
func parsedArg[T any](d *caddyfile.Dispenser, name, want string, parse func(string) (T, bool)) (T, error) {
	var zero T
	v, err := oneArg(d)
	if err != nil {
		return zero, err
	}
	x, ok := parse(v)
	if !ok {
		return zero, d.Errf("invalid %s '%s': %s", name, v, want)
	}
	return x, nil
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
