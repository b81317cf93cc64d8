package harness_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/gorilla/websocket"
)

// These tests check the harness itself, with Caddy's standard modules
// only, so that a broken harness is told apart from a missing feature.

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(b)
}

const respondSite = `
:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	respond "{{.Word}}"
}
`

func TestCaddyLifecycle(t *testing.T) {
	t.Parallel()
	c := harness.StartCaddy(t, respondSite, harness.Var("Word", "hello"))
	if _, body := get(t, harness.HTTP1Client(), c.URL("/")); body != "hello" {
		t.Fatalf("http: body %q, want hello", body)
	}
	resp, body := get(t, harness.HTTP2Client(), c.HTTPSURL("/"))
	if body != "hello" || resp.ProtoMajor != 2 {
		t.Fatalf("https: %s body %q, want HTTP/2 hello", resp.Proto, body)
	}
	resp, _ = get(t, harness.HTTP1Client(), c.HTTPSURL("/"))
	if resp.ProtoMajor != 1 {
		t.Fatalf("HTTP1Client negotiated %s", resp.Proto)
	}
	if m := c.Metrics(t); !strings.Contains(m, "go_goroutines") {
		t.Fatalf("metrics without go_goroutines:\n%.500s", m)
	}
	if n := c.Goroutines(t); n < 5 {
		t.Fatalf("goroutines: %d", n)
	}

	c.Reload(t, strings.Replace(respondSite, "{{.Word}}", "bye", 1))
	if _, body := get(t, harness.HTTP1Client(), c.URL("/")); body != "bye" {
		t.Fatalf("after reload: body %q, want bye", body)
	}
	if err := c.TryReload(":{{.HTTPPort}} {\n\tno_such_directive\n}\n"); err == nil {
		t.Fatal("a bad config was loaded")
	} else if !strings.Contains(err.Error(), "no_such_directive") {
		t.Fatalf("reload error does not name the problem: %v", err)
	}

	pid := c.PID()
	c.Restart(t)
	if c.PID() == pid || c.PID() == 0 {
		t.Fatalf("restart: pid %d -> %d", pid, c.PID())
	}
	if _, body := get(t, harness.HTTP1Client(), c.URL("/")); body != "bye" {
		t.Fatalf("after restart: body %q, want bye (the reloaded config)", body)
	}
	c.Kill()
	if c.PID() != 0 {
		t.Fatal("killed caddy still has a pid")
	}
	if _, err := harness.HTTP1Client().Get(c.URL("/")); err == nil {
		t.Fatal("killed caddy still answers")
	}
	if !strings.Contains(c.Logs(), "caddy killed") {
		t.Fatalf("logs do not show the kill:\n%s", c.Logs())
	}
}

func TestGlobalsInjected(t *testing.T) {
	t.Parallel()
	c := harness.StartCaddy(t, `
# a comment first
{
	servers {
		timeouts {
			write 3s
		}
	}
}

:{{.HTTPPort}} {
	respond "ok"
}
`)
	cf := c.Caddyfile()
	if !strings.Contains(cf, "admin "+c.AdminAddr()) || !strings.Contains(cf, "write 3s") {
		t.Fatalf("rendered Caddyfile:\n%s", cf)
	}
	if _, body := get(t, harness.HTTP1Client(), c.URL("/")); body != "ok" {
		t.Fatalf("body %q", body)
	}
}

func TestSSEUpstreamDirect(t *testing.T) {
	t.Parallel()
	up := harness.NewSSEUpstream(t)
	r := harness.OpenSSE(t, harness.HTTP1Client(), "http://"+up.Addr()+"/x", nil)
	s := up.Next(t)
	if s.Request.URL.Path != "/x" {
		t.Fatalf("path %q", s.Request.URL.Path)
	}
	s.Send(": hi\nid: 1\ndata: a\ndata: b\n\n")
	resp := r.Response(t)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type %q", ct)
	}
	if it := r.Next(t, time.Second); it.Kind != harness.KindComment || it.Text != "hi" {
		t.Fatalf("got %v", it)
	}
	if it := r.Next(t, time.Second); it.Kind != harness.KindEvent || it.Data != "a\nb" || it.ID != "1" {
		t.Fatalf("got %v", it)
	}
	r.Close()
	s.WaitCancelled(t, time.Second)
	if up.Requests() != 1 {
		t.Fatalf("requests %d", up.Requests())
	}
}

func TestSSEReaderParsing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"lf", "data: x\n\n", []string{`event id="" event="message" data="x"`}},
		{"crlf and cr", "data: x\r\n\r\ndata:y\r\r", []string{`event id="" event="message" data="x"`, `event id="" event="message" data="y"`}},
		{"bom comment retry", "\ufeff: c\nretry: 10\nretry: x\n\n", []string{`comment "c"`, "retry 10ms"}},
		{"event id carries", "id: 7\nevent: e\ndata\n\ndata: z\n\n", []string{`event id="7" event="e" data=""`, `event id="7" event="message" data="z"`}},
		{"unterminated dropped", "data: a\n\ndata: b\n", []string{`event id="" event="message" data="a"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := harness.NewSSEReader(strings.NewReader(tc.input), nil)
			rest, err := r.WaitEnd(t, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range rest {
				got = append(got, it.String())
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestFastCGIUpstreamThroughCaddy(t *testing.T) {
	t.Parallel()
	up := harness.NewFastCGIUpstream(t)
	c := harness.StartCaddy(t, `
:{{.HTTPPort}} {
	reverse_proxy {{.FCGI}} {
		transport fastcgi
	}
}
`, harness.Var("FCGI", up.Addr()))
	r := harness.OpenSSE(t, harness.HTTP1Client(), c.URL("/stream"), nil)
	s := up.Next(t)
	s.Send("data: one\n\n")
	if it := r.NextEvent(t, 2*time.Second); it.Data != "one" {
		t.Fatalf("got %v", it)
	}
	s.End()
	if _, err := r.WaitEnd(t, 2*time.Second); err != nil {
		t.Fatalf("stream end: %v", err)
	}
}

func TestWSEchoUpstreamDirect(t *testing.T) {
	t.Parallel()
	up := harness.NewWSEchoUpstream(t)
	conn, _, err := harness.WSDialer().Dial("ws://"+up.Addr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, msg, err := conn.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Fatalf("echo: %q %v", msg, err)
	}
	if up.Requests() != 1 || up.Upgrades() != 1 {
		t.Fatalf("requests %d upgrades %d", up.Requests(), up.Upgrades())
	}
}
