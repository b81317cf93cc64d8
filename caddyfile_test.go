package realtime

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    string // JSON of the handler
		wantErr string
	}{
		{
			name:  "bare",
			input: `realtime`,
			want:  `{}`,
		},
		{
			name: "every subdirective",
			input: `realtime {
				hub
				redis redis://127.0.0.1:6379 rediss://10.0.0.2:6380
				prefix app:
				heartbeat 10s
				origins https://app.example.com https://*.example.com
				origins http://localhost:3000
				publish_key {env.KEY}
				ticket {
					secret {env.SECRET}
					issue /hub/ticket
					authorize http://127.0.0.1:3000/auth
					ttl 20s
				}
				replay {
					size 50
					ttl 1m
				}
				longpoll_timeout 30s
				limits {
					connections 1000
					per_ip 10
					channels 8
					message_size 16KiB
					idle_channels 500
				}
			}`,
			want: `{"hub":true,"redis":["redis://127.0.0.1:6379","rediss://10.0.0.2:6380"],"prefix":"app:","heartbeat":10000000000,` +
				`"origins":["https://app.example.com","https://*.example.com","http://localhost:3000"],"publish_key":"{env.KEY}",` +
				`"ticket":{"secret":"{env.SECRET}","issue":"/hub/ticket","authorize":"http://127.0.0.1:3000/auth","ttl":20000000000},` +
				`"replay":{"size":50,"ttl":60000000000},"longpoll_timeout":30000000000,` +
				`"limits":{"connections":1000,"per_ip":10,"channels":8,"message_size":16384,"idle_channels":500}}`,
		},
		{name: "heartbeat off", input: "realtime {\n heartbeat off\n}", want: `{"heartbeat":-1}`},
		{
			name:  "ticket authorize_timeout",
			input: "realtime {\n ticket {\n authorize http://127.0.0.1:3000/auth\n authorize_timeout 750ms\n }\n}",
			want:  `{"ticket":{"authorize":"http://127.0.0.1:3000/auth","authorize_timeout":750000000}}`,
		},
		{name: "bad authorize_timeout", input: "realtime {\n ticket {\n authorize_timeout 0s\n }\n}", wantErr: "must be positive"},
		{name: "unknown subdirective", input: "realtime {\n bogus\n}", wantErr: `unrecognized subdirective "bogus"`},
		{name: "hub with argument", input: "realtime {\n hub yes\n}", wantErr: "wrong argument count"},
		{name: "inline argument", input: "realtime foo", wantErr: "wrong argument count"},
		{name: "redis without url", input: "realtime {\n redis\n}", wantErr: "wrong argument count"},
		{name: "bad heartbeat", input: "realtime {\n heartbeat soon\n}", wantErr: "invalid heartbeat 'soon'"},
		{name: "negative heartbeat", input: "realtime {\n heartbeat -1s\n}", wantErr: "must be positive"},
		{name: "duplicate prefix", input: "realtime {\n prefix a\n prefix b\n}", wantErr: "prefix: given more than once"},
		{name: "bad replay size", input: "realtime {\n replay {\n size many\n }\n}", wantErr: "invalid replay size 'many'"},
		{name: "zero channels", input: "realtime {\n limits {\n channels 0\n }\n}", wantErr: "invalid limits channels '0'"},
		{name: "bad message size", input: "realtime {\n limits {\n message_size lots\n }\n}", wantErr: "invalid limits message_size 'lots'"},
		{name: "unknown ticket option", input: "realtime {\n ticket {\n foo bar\n }\n}", wantErr: `unrecognized ticket subdirective "foo"`},
		{name: "error names the line", input: "realtime {\n hub\n\n bogus\n}", wantErr: "Testfile:4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(h)
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		h       Handler
		wantErr string
	}{
		{name: "defaults", h: Handler{}},
		{name: "bad redis scheme", h: Handler{Redis: []string{"http://x"}}, wantErr: "must start with redis://"},
		{name: "issue without authorize", h: Handler{Ticket: &TicketConfig{Issue: "/t", Secret: "s"}}, wantErr: "issue needs authorize"},
		{name: "ticket with nothing to check", h: Handler{Ticket: &TicketConfig{}}, wantErr: "no way to accept a ticket"},
		{name: "issue without storage", h: Handler{Ticket: &TicketConfig{Issue: "/t", Authorize: "http://a"}}, wantErr: "needs redis or secret"},
		// channel rules given as JSON, which no Caddyfile parser checked
		{name: "rules", h: Handler{Hub: true, Channels: []ChannelRule{{Pattern: "chat:*", Rewind: 5, Publish: "ticket"}, {Pattern: "user:*", Replay: &ReplayConfig{Size: 10}}}}},
		{name: "rule pattern", h: Handler{Hub: true, Channels: []ChannelRule{{Pattern: "chat #"}}}, wantErr: `channels rule 1: pattern "chat #"`},
		{name: "rule without pattern", h: Handler{Hub: true, Channels: []ChannelRule{{Rewind: 1}}}, wantErr: "channels rule 1: pattern"},
		{name: "rule publish", h: Handler{Hub: true, Channels: []ChannelRule{{Pattern: "a", Publish: "everyone"}}}, wantErr: "want key, ticket or off"},
		{name: "rule rewind", h: Handler{Hub: true, Channels: []ChannelRule{{Pattern: "a", Rewind: -1}}}, wantErr: "must not be negative"},
		{name: "rules without hub", h: Handler{Channels: []ChannelRule{{Pattern: "a"}}}, wantErr: "add hub"},
		{name: "notify", h: Handler{Hub: true, PublishKey: "k", Channels: []ChannelRule{{Pattern: "a", Presence: &PresenceConfig{Events: true}, Notify: "https://app.example/hooks"}}}},
		{name: "notify without publish_key", h: Handler{Hub: true, Channels: []ChannelRule{{Pattern: "a", Notify: "https://app.example/hooks"}}}, wantErr: "set publish_key"},
		{name: "notify not a URL", h: Handler{Hub: true, PublishKey: "k", Channels: []ChannelRule{{Pattern: "a", Notify: "app.example/hooks"}}}, wantErr: "want an http:// or https:// URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			h.Replay = &ReplayConfig{}
			h.Limits = &Limits{}
			err := h.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzUnmarshalCaddyfile feeds arbitrary Caddyfile text to the parser: it
// must return an error or a config, never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"realtime",
		"realtime {\n hub\n redis redis://x\n}",
		"realtime {\n ticket {\n secret s\n ttl 1s\n }\n limits {\n message_size 1KiB\n }\n}",
		"realtime {\n heartbeat off\n replay {\n size 1\n }\n}",
		"realtime {\n origins *\n}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	})
}
