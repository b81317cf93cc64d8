// Package integration_test runs a real Caddy built from this repository
// against real upstreams on loopback.
package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/gorilla/websocket"
)

// Issue 3: SSE and WebSocket passthrough. The realtime directive sits in
// front of an app that streams by itself (reverse_proxy, php_fastcgi) and
// keeps its event streams unbuffered and alive, and checks WebSocket
// upgrades before they reach the app.

// immediate is how soon a write of the upstream must reach the client.
const immediate = time.Second

// passthroughSite serves the same site over HTTP/1.1 (http_port) and
// HTTPS with HTTP/2 (https_port, Caddy's internal CA).
const passthroughSite = `
{
	{{.Globals}}
}

:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	{{.Before}}
	realtime {
		heartbeat {{.Heartbeat}}
		{{.Realtime}}
	}
	reverse_proxy {{.Upstream}} {
		{{.Proxy}}
	}
}
`

// site configures passthroughSite.
type site struct {
	Upstream  string
	Heartbeat string // default 500ms
	Globals   string // extra global options
	Before    string // directives before realtime (encode, ...)
	Realtime  string // extra realtime subdirectives
	Proxy     string // reverse_proxy subdirectives
}

func startSite(t *testing.T, s site) *harness.Caddy {
	t.Helper()
	if s.Heartbeat == "" {
		s.Heartbeat = "500ms"
	}
	return harness.StartCaddy(t, passthroughSite,
		harness.Var("Upstream", s.Upstream),
		harness.Var("Heartbeat", s.Heartbeat),
		harness.Var("Globals", s.Globals),
		harness.Var("Before", s.Before),
		harness.Var("Realtime", s.Realtime),
		harness.Var("Proxy", s.Proxy),
	)
}

// protocol is a way a client reaches the site.
type protocol struct {
	name   string
	client func() *http.Client
	url    func(c *harness.Caddy, path string) string
	major  int
}

var protocols = []protocol{
	{"http1", harness.HTTP1Client, (*harness.Caddy).URL, 1},
	{"http2", harness.HTTP2Client, (*harness.Caddy).HTTPSURL, 2},
}

// forEachProtocol runs test once per protocol, in parallel.
func forEachProtocol(t *testing.T, test func(t *testing.T, p protocol)) {
	t.Helper()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			test(t, p)
		})
	}
}

// open starts an SSE request and checks the response's protocol once its
// headers are in.
func (p protocol) open(t *testing.T, c *harness.Caddy, path string, header http.Header) *harness.SSEReader {
	t.Helper()
	client := p.client()
	// runs after the request's own cleanup: an idle HTTP/2 connection
	// would hold up Caddy's graceful stop
	t.Cleanup(client.CloseIdleConnections)
	return harness.OpenSSE(t, client, p.url(c, path), header)
}

func (p protocol) checkProto(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.ProtoMajor != p.major {
		t.Fatalf("response over %s, want HTTP/%d", resp.Proto, p.major)
	}
}

// within fails the test if the item arrived more than d after since.
func within(t *testing.T, what string, since, at time.Time, d time.Duration) {
	t.Helper()
	if lag := at.Sub(since); lag > d {
		t.Fatalf("%s arrived %v after the upstream wrote it, want at most %v", what, lag, d)
	}
}

func TestPassthroughFirstEventAtOnce(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "off"})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		sent := time.Now()
		s.Send("id: 1\ndata: first\n\n")
		// the upstream now stalls: nothing else is written
		ev := r.NextEvent(t, 5*time.Second)
		within(t, "the first event", sent, ev.At, immediate)
		if ev.Data != "first" || ev.ID != "1" {
			t.Fatalf("got %v, want id 1 data first", ev)
		}
		p.checkProto(t, r.Response(t))
		sent = time.Now()
		s.Send("data: second\n\n")
		ev = r.NextEvent(t, 5*time.Second)
		within(t, "the second event", sent, ev.At, immediate)
	})
}

// Caddy issue 4247: a stream's headers must reach the client before its
// first body byte, or a client waiting for them waits for the first event.
func TestPassthroughHeadersBeforeBody(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "off"})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		sent := time.Now()
		s.WriteHeader(http.StatusOK) // headers and a flush, no body
		resp := r.ResponseWithin(t, 5*time.Second)
		within(t, "the response headers", sent, r.HeadersAt(), immediate)
		p.checkProto(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestPassthroughHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		cacheControl string // set by the upstream
		wantCache    string
		whole        bool // the upstream writes a short body and ends, so Go sets Content-Length
	}{
		{name: "defaults", wantCache: "no-cache"},
		{name: "upstream cache-control kept", cacheControl: "private, max-age=0", wantCache: "private, max-age=0"},
		{name: "upstream content-length dropped", wantCache: "no-cache", whole: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachProtocol(t, func(t *testing.T, p protocol) {
				up := harness.NewSSEUpstream(t)
				up.SetHeader("Cache-Control", tc.cacheControl)
				c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "off"})
				r := p.open(t, c, "/events", nil)
				s := up.NextFor(t, r)
				if tc.whole {
					s.Buffer("data: whole\n\n")
					s.End()
				} else {
					s.Send("data: x\n\n")
				}
				resp := r.Response(t)
				p.checkProto(t, resp)
				h := resp.Header
				if got := h.Get("Cache-Control"); got != tc.wantCache {
					t.Errorf("Cache-Control %q, want %q", got, tc.wantCache)
				}
				if got := h.Get("X-Accel-Buffering"); got != "no" {
					t.Errorf("X-Accel-Buffering %q, want no", got)
				}
				if got := h.Get("Content-Type"); !strings.HasPrefix(got, "text/event-stream") {
					t.Errorf("Content-Type %q", got)
				}
				if _, ok := h["Content-Length"]; ok || resp.ContentLength != -1 {
					t.Errorf("Content-Length present (%d): an event stream has none", resp.ContentLength)
				}
				ev := r.NextEvent(t, 5*time.Second)
				if tc.whole && ev.Data != "whole" {
					t.Fatalf("got %v", ev)
				}
			})
		})
	}
}

func TestPassthroughCancelsUpstream(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr()})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		s.Send("data: hello\n\n")
		r.NextEvent(t, 5*time.Second)
		closed := time.Now()
		r.Close()
		at := s.WaitCancelled(t, 5*time.Second)
		if lag := at.Sub(closed); lag > immediate {
			t.Fatalf("upstream request cancelled %v after the client left, want at most %v", lag, immediate)
		}
	})
}

func TestPassthroughHeartbeatWhenIdle(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "300ms"})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		hello := time.Now()
		s.Send("data: hello\n\n")
		ev := r.NextEvent(t, 5*time.Second)
		// idle from now: a comment after each 300ms of silence. Each
		// heartbeat is written 300ms after the item before it at the
		// earliest, so heartbeat i reaches the client (i+1)*300ms after
		// the upstream's last write at the earliest; when the client sees
		// it depends on the machine's load, so gaps between two items the
		// client sees are bounded above only, generously.
		prev := ev.At
		for i := 0; i < 3; i++ {
			hb := r.NextComment(t, 2*time.Second)
			if early := time.Duration(i+1) * 300 * time.Millisecond; hb.At.Sub(hello) < early {
				t.Errorf("heartbeat %d came %v after the upstream's last write, want at least %v", i, hb.At.Sub(hello), early)
			}
			if gap := hb.At.Sub(prev); gap > time.Second {
				t.Errorf("heartbeat %d came %v after the previous item, want about 300ms", i, gap)
			}
			prev = hb.At
		}
		// an event still comes through between heartbeats
		sent := time.Now()
		s.Send("data: again\n\n")
		ev = r.NextEvent(t, 5*time.Second)
		within(t, "an event after heartbeats", sent, ev.At, immediate)
		if ev.Data != "again" {
			t.Fatalf("got %v", ev)
		}
	})
}

func TestPassthroughHeartbeatOnlyAtLineBoundary(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "200ms"})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		s.Send("data: par")
		// the stream now stays mid-line for several heartbeat intervals:
		// the condition under test is this silence, so it is waited out
		time.Sleep(time.Second)
		s.Send("tial\n\n")
		ev := r.NextEvent(t, 5*time.Second)
		if ev.Data != "partial" {
			t.Fatalf("event data %q, want \"partial\": a heartbeat was injected mid-line", ev.Data)
		}
		for _, it := range r.Seen() {
			if it.Kind == harness.KindComment && it.At.Before(ev.At) {
				t.Fatalf("comment %q arrived while the upstream was mid-line", it.Text)
			}
		}
		// back at a line boundary: heartbeats resume
		r.NextComment(t, 2*time.Second)
		// mid-event (between lines, before the blank line) is a line
		// boundary too, and a comment there does not break the event
		s.Send("event: multi\ndata: a\n")
		time.Sleep(500 * time.Millisecond)
		s.Send("data: b\n\n")
		ev = r.NextEvent(t, 5*time.Second)
		if ev.Event != "multi" || ev.Data != "a\nb" {
			t.Fatalf("got %v, want event multi data a\\nb", ev)
		}
	})
}

func TestPassthroughWithEncode(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Heartbeat: "off", Before: "encode gzip"})
		r := p.open(t, c, "/events", http.Header{"Accept-Encoding": {"gzip"}})
		s := up.NextFor(t, r)
		for i := 0; i < 3; i++ {
			sent := time.Now()
			s.Send(fmt.Sprintf("data: event %d\n\n", i))
			ev := r.NextEvent(t, 5*time.Second)
			within(t, fmt.Sprintf("event %d", i), sent, ev.At, immediate)
			if want := fmt.Sprintf("event %d", i); ev.Data != want {
				t.Fatalf("got %v, want data %q", ev, want)
			}
		}
		resp := r.Response(t)
		p.checkProto(t, resp)
		t.Logf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	})
}

func TestPassthroughOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{
			Upstream: up.Addr(),
			Globals:  "servers {\n\t\ttimeouts {\n\t\t\twrite 1s\n\t\t}\n\t}",
		})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		const n = 10 // one every 250ms: 2.5s, more than twice the timeout
		for i := 0; i < n; i++ {
			if err := s.TrySend(fmt.Sprintf("data: %d\n\n", i)); err != nil {
				t.Fatalf("upstream write %d: %v (the stream was cut)", i, err)
			}
			ev, err := nextEvent(r, 2*time.Second)
			if err != nil {
				t.Fatalf("event %d of %d after %v: %v (the write timeout cut the stream?)", i, n, time.Since(r.HeadersAt()), err)
			}
			if want := fmt.Sprint(i); ev.Data != want {
				t.Fatalf("got %v, want data %s", ev, want)
			}
			time.Sleep(250 * time.Millisecond) // the stream's pace, not a synchronisation
		}
		s.End()
		rest, err := r.WaitEnd(t, 5*time.Second)
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
		for _, it := range rest {
			if it.Kind == harness.KindEvent {
				t.Fatalf("unexpected %v", it)
			}
		}
	})
}

// nextEvent is NextEvent returning the error.
func nextEvent(r *harness.SSEReader, timeout time.Duration) (harness.SSEItem, error) {
	deadline := time.Now().Add(timeout)
	for {
		it, err := r.TryNext(time.Until(deadline))
		if err != nil || it.Kind == harness.KindEvent {
			return it, err
		}
	}
}

// The same holds behind a FastCGI app (php_fastcgi or reverse_proxy with
// the fastcgi transport).
func TestPassthroughFastCGI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		site string
	}{
		{"fastcgi transport", `
:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	realtime {
		heartbeat 300ms
	}
	reverse_proxy {{.Upstream}} {
		transport fastcgi
	}
}
`},
		{"php_fastcgi", `
:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	root * {{.Root}}
	realtime {
		heartbeat 300ms
	}
	php_fastcgi {{.Upstream}}
}
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachProtocol(t, func(t *testing.T, p protocol) {
				up := harness.NewFastCGIUpstream(t)
				root := t.TempDir()
				c := harness.StartCaddy(t, tc.site, harness.Var("Upstream", up.Addr()), harness.Var("Root", root))
				r := p.open(t, c, "/events.php", nil)
				s := up.NextFor(t, r)
				for i := 0; i < 3; i++ {
					sent := time.Now()
					s.Send(fmt.Sprintf("data: %d\n\n", i))
					ev := r.NextEvent(t, 5*time.Second)
					within(t, fmt.Sprintf("event %d", i), sent, ev.At, immediate)
				}
				resp := r.Response(t)
				p.checkProto(t, resp)
				if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
					t.Errorf("X-Accel-Buffering %q, want no", got)
				}
				r.NextComment(t, 2*time.Second) // heartbeats too
				s.End()
				if _, err := r.WaitEnd(t, 5*time.Second); err != nil {
					t.Fatalf("stream ended with %v, want a clean end", err)
				}
			})
		})
	}
}

// wsSite proxies WebSocket upgrades to an echo upstream.
const wsSite = `
:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	realtime {
		{{.Realtime}}
	}
	reverse_proxy {{.Upstream}}
}
`

func TestPassthroughWebSocketOrigins(t *testing.T) {
	t.Parallel()
	const listed = "origins https://allowed.example https://*.example.com"
	tests := []struct {
		name     string
		realtime string
		origin   string // "self": the site's own scheme://host:port
		allowed  bool
	}{
		{"no origin header", "", "", true},
		{"same host by default", "", "self", true},
		{"other host by default", "", "https://evil.example", false},
		{"listed origin", listed, "https://allowed.example", true},
		{"wildcard label", listed, "https://app.example.com", true},
		{"wildcard is one label", listed, "https://a.b.example.com", false},
		{"unlisted origin", listed, "https://evil.example", false},
		{"listed host other scheme", listed, "http://allowed.example", false},
		{"null origin", listed, "null", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachProtocol(t, func(t *testing.T, p protocol) {
				up := harness.NewWSEchoUpstream(t)
				c := harness.StartCaddy(t, wsSite, harness.Var("Upstream", up.Addr()), harness.Var("Realtime", tc.realtime))
				base := p.url(c, "")
				header := http.Header{}
				switch tc.origin {
				case "":
				case "self":
					header.Set("Origin", base)
				default:
					header.Set("Origin", tc.origin)
				}
				conn, resp, err := harness.WSDialer().Dial(harness.WSURL(base+"/ws"), header)
				if !tc.allowed {
					if err == nil {
						conn.Close()
						t.Fatalf("Origin %q: upgrade accepted, want 403", tc.origin)
					}
					if resp == nil {
						t.Fatalf("Origin %q: %v, want a 403 response", tc.origin, err)
					}
					if resp.StatusCode != http.StatusForbidden {
						t.Fatalf("Origin %q: status %d, want 403", tc.origin, resp.StatusCode)
					}
					if n := up.Requests(); n != 0 {
						t.Fatalf("refused upgrade reached the upstream (%d requests, origins %q)", n, up.Origins())
					}
					return
				}
				if err != nil {
					status := 0
					if resp != nil {
						status = resp.StatusCode
					}
					t.Fatalf("Origin %q: dial: %v (status %d)", tc.origin, err, status)
				}
				defer conn.Close()
				echo(t, conn, "hello "+p.name)
				if up.Upgrades() != 1 {
					t.Fatalf("upstream upgrades %d, want 1", up.Upgrades())
				}
			})
		})
	}
}

// A disallowed Origin on an event-stream request is refused the same way.
func TestPassthroughSSEOriginRefused(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewSSEUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Realtime: "origins https://allowed.example"})
		r := p.open(t, c, "/events", http.Header{"Origin": {"https://evil.example"}})
		resp := r.Response(t)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
		if n := up.Requests(); n != 0 {
			t.Fatalf("refused request reached the upstream (%d requests)", n)
		}
		ok := p.open(t, c, "/events", http.Header{"Origin": {"https://allowed.example"}})
		s := up.NextFor(t, ok)
		s.Send("data: hi\n\n")
		if ev := ok.NextEvent(t, 5*time.Second); ev.Data != "hi" {
			t.Fatalf("got %v", ev)
		}
	})
}

func echo(t *testing.T, conn *websocket.Conn, msg string) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("websocket write: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, got, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("websocket read: %v", err)
	}
	if typ != websocket.TextMessage || string(got) != msg {
		t.Fatalf("echo: type %d %q, want text %q", typ, got, msg)
	}
}

// caddyCmd runs the built binary with args and returns its combined
// output, failing the test if it does not exit 0 within 30s.
func caddyCmd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+cmd.Dir, "XDG_DATA_HOME="+cmd.Dir, "XDG_CONFIG_HOME="+cmd.Dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("caddy %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func TestListModules(t *testing.T) {
	t.Parallel()
	out := caddyCmd(t, "list-modules")
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "http.handlers.realtime" {
			return
		}
	}
	t.Fatalf("list-modules does not list http.handlers.realtime:\n%s", out)
}

// everySubdirective uses every documented form of the directive.
const everySubdirective = `{
	admin off
}

:8080 {
	realtime /hub* {
		hub
		redis redis://127.0.0.1:6379 redis://127.0.0.1:6380
		redis rediss://user:pass@127.0.0.1:6381/0
		prefix "app:"
		heartbeat 20s
		origins https://example.com
		origins https://*.example.com http://localhost:3000
		publish_key {env.REALTIME_PUBLISH_KEY}
		ticket {
			secret {env.REALTIME_TICKET_SECRET}
			issue /hub/ticket
			authorize http://127.0.0.1:9000/authorize
			ttl 45s
		}
		replay {
			size 500
			ttl 5m
		}
		longpoll_timeout 20s
		limits {
			connections 10000
			per_ip 50
			channels 16
			message_size 64KiB
		}
	}
	realtime {
		heartbeat off
	}
	reverse_proxy 127.0.0.1:9000
}
`

func TestAdaptEverySubdirective(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(everySubdirective), 0o600); err != nil {
		t.Fatal(err)
	}
	out := caddyCmd(t, "adapt", "--config", path, "--adapter", "caddyfile")
	var cfg any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("adapt output is not JSON: %v\n%s", err, out)
	}
	var handlers []map[string]any
	collectHandlers(cfg, &handlers)
	if len(handlers) != 2 {
		t.Fatalf("%d realtime handlers in the adapted config, want 2:\n%s", len(handlers), out)
	}
	full, off := handlers[0], handlers[1]
	if _, ok := full["hub"]; !ok {
		full, off = off, full
	}
	want := map[string]any{
		"hub":              true,
		"redis":            []any{"redis://127.0.0.1:6379", "redis://127.0.0.1:6380", "rediss://user:pass@127.0.0.1:6381/0"},
		"prefix":           "app:",
		"heartbeat":        float64(20 * time.Second),
		"origins":          []any{"https://example.com", "https://*.example.com", "http://localhost:3000"},
		"publish_key":      "{env.REALTIME_PUBLISH_KEY}",
		"longpoll_timeout": float64(20 * time.Second),
		"ticket": map[string]any{
			"secret":    "{env.REALTIME_TICKET_SECRET}",
			"issue":     "/hub/ticket",
			"authorize": "http://127.0.0.1:9000/authorize",
			"ttl":       float64(45 * time.Second),
		},
		"replay": map[string]any{"size": float64(500), "ttl": float64(5 * time.Minute)},
		"limits": map[string]any{
			"connections":  float64(10000),
			"per_ip":       float64(50),
			"channels":     float64(16),
			"message_size": float64(64 << 10),
		},
	}
	for k, v := range want {
		if got, _ := json.Marshal(full[k]); string(got) != mustJSON(t, v) {
			t.Errorf("%s: %s, want %s", k, got, mustJSON(t, v))
		}
	}
	if hb, ok := off["heartbeat"].(float64); !ok || hb >= 0 {
		t.Errorf("heartbeat off: %v, want a negative duration", off["heartbeat"])
	}
	if !strings.Contains(out, `"/hub*"`) {
		t.Errorf("the /hub* matcher is not in the adapted config")
	}
}

// A config the module accepts passes `caddy validate` (which provisions
// it) in both its forms: passthrough and an embedded-broker hub.
func TestValidate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	err := os.WriteFile(path, []byte(`{
	admin off
}

:8080 {
	realtime /hub* {
		hub
		publish_key secret
		origins https://*.example.com
	}
	realtime {
		heartbeat 5s
	}
	reverse_proxy 127.0.0.1:9000
}
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	caddyCmd(t, "validate", "--config", path, "--adapter", "caddyfile")
}

func collectHandlers(v any, out *[]map[string]any) {
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "realtime" {
			*out = append(*out, v)
		}
		for _, e := range v {
			collectHandlers(e, out)
		}
	case []any:
		for _, e := range v {
			collectHandlers(e, out)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// When the client of a FastCGI stream goes away, Caddy lets go of the
// app's connection: the app's next writes fail.
func TestPassthroughFastCGIClientGone(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, p protocol) {
		up := harness.NewFastCGIUpstream(t)
		c := startSite(t, site{Upstream: up.Addr(), Proxy: "transport fastcgi"})
		r := p.open(t, c, "/events", nil)
		s := up.NextFor(t, r)
		s.Send("data: hello\n\n")
		r.NextEvent(t, 5*time.Second)
		r.Close()
		deadline := time.Now().Add(3 * time.Second)
		for s.TrySend(": still there?\n") == nil {
			if time.Now().After(deadline) {
				t.Fatal("the app can still write 3s after the client left: its FastCGI request was not aborted")
			}
			time.Sleep(100 * time.Millisecond) // polling the app's writes
		}
	})
}

// With the realtime listener wrapper beneath TLS, what the hub does not
// take over passes through untouched: a proxied event stream over HTTPS
// (HTTP/1.1 and HTTP/2) and a proxied WebSocket over TLS, with messages
// larger than a TLS record.
func TestPassthroughOverSocket(t *testing.T) {
	t.Parallel()
	globals := "servers {\n\t\t" + socketServers + "\n\t}"
	big := strings.Repeat("x", 100<<10)
	for _, p := range []protocol{
		{"https1", harness.HTTP1Client, (*harness.Caddy).HTTPSURL, 1},
		{"http2", harness.HTTP2Client, (*harness.Caddy).HTTPSURL, 2},
	} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			up := harness.NewSSEUpstream(t)
			c := startSite(t, site{Upstream: up.Addr(), Globals: globals})
			r := p.open(t, c, "/events", nil)
			s := up.NextFor(t, r)
			s.Send("id: 1\ndata: first\n\n")
			if ev := r.NextEvent(t, 5*time.Second); ev.Data != "first" || ev.ID != "1" {
				t.Fatalf("got %v, want id 1 data first", ev)
			}
			s.Send("data: " + big + "\n\n")
			if ev := r.NextEvent(t, 5*time.Second); ev.Data != big {
				t.Fatalf("got %d bytes, want %d", len(ev.Data), len(big))
			}
			p.checkProto(t, r.Response(t))
		})
	}
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		up := harness.NewWSEchoUpstream(t)
		c := harness.StartCaddy(t, "{\n\t"+globals+"\n}\n"+wsSite, harness.Var("Upstream", up.Addr()), harness.Var("Realtime", ""))
		conn, _, err := harness.WSDialer().Dial(harness.WSURL(c.HTTPSURL("/ws")), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		echo(t, conn, "hello")
		echo(t, conn, big)
		if up.Upgrades() != 1 {
			t.Fatalf("upstream upgrades %d, want 1", up.Upgrades())
		}
	})
}
