package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/golang-jwt/jwt/v5"
)

// Hostile clients: with tickets on, an upstream answer that turns out to
// be an event stream never reaches a client without a valid ticket,
// however the request was phrased (no Accept, */*, text/html): the client
// gets the 401 or 403, and the upstream request is cancelled. Answers
// that are no event stream pass unchecked.
func TestPassthroughStreamGatedWhateverTheAccept(t *testing.T) {
	t.Parallel()
	up := harness.NewSSEUpstream(t)
	c := startSite(t, site{Upstream: up.Addr(), Realtime: ticketBlock("secret " + jwtSecret)})
	// ask sends a request in the background and returns its answer's
	// channel; the upstream answers it meanwhile
	ask := func(path string, h http.Header) <-chan reply {
		ch := make(chan reply, 1)
		go func() { ch <- do(t, "GET", c.URL(path), h, "") }()
		return ch
	}
	answer := func(t *testing.T, ch <-chan reply) reply {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(authWait):
			t.Fatal("no answer")
			return reply{}
		}
	}
	for _, accept := range []string{"", "*/*", "text/html"} {
		h := http.Header{}
		if accept != "" {
			h.Set("Accept", accept)
		}
		ch := ask("/events", h)
		s := up.Next(t)
		_ = s.TrySend("data: for ticket holders only\n\n") // may fail: refused
		r := answer(t, ch)
		expect(t, "an event stream asked for with Accept "+strconvQuote(accept), r, 401, "missing ticket")
		if strings.Contains(r.body, "ticket holders") {
			t.Fatalf("the upstream's stream reached the client: %q", r.body)
		}
		s.WaitCancelled(t, authWait)
	}
	// over HTTP/2 the refusal ends its stream normally: the whole answer
	// reads without error (no stream reset after it)
	h2 := harness.HTTP2Client()
	t.Cleanup(h2.CloseIdleConnections)
	h2ch := make(chan error, 1)
	var h2status int
	var h2body []byte
	go func() {
		resp, err := h2.Get(c.HTTPSURL("/events"))
		if err == nil {
			h2status = resp.StatusCode
			h2body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				err = fmt.Errorf("answered over %s", resp.Proto)
			}
		}
		h2ch <- err
	}()
	s2 := up.Next(t)
	_ = s2.TrySend("data: for ticket holders only\n\n")
	select {
	case err := <-h2ch:
		if err != nil || h2status != 401 || !strings.Contains(string(h2body), "missing ticket") {
			t.Fatalf("over HTTP/2: status %d body %q error %v, want a complete 401", h2status, h2body, err)
		}
	case <-time.After(authWait):
		t.Fatal("over HTTP/2: no answer")
	}
	s2.WaitCancelled(t, authWait)

	// a foreign Origin with a valid ticket: 403
	tok := signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())
	ch := ask("/events?ticket="+url.QueryEscape(tok), http.Header{"Origin": {"https://evil.example"}})
	s := up.Next(t)
	_ = s.TrySend("data: for ticket holders only\n\n")
	expect(t, "a foreign Origin", answer(t, ch), 403, "origin")
	s.WaitCancelled(t, authWait)

	// a valid ticket: the stream flows, without an Accept header too
	tok = signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	sr := harness.Open(t, client, http.MethodGet, c.URL("/events?ticket="+url.QueryEscape(tok)), nil, "")
	up.NextFor(t, sr).Send("data: for ticket holders only\n\n")
	if ev := sr.NextEvent(t, authWait); ev.Data != "for ticket holders only" {
		t.Fatalf("with a ticket: got %+v", ev)
	}
	sr.Close()

	// an answer that is no event stream passes unchecked
	up.SetHeader("Content-Type", "text/plain")
	ch = ask("/page", nil)
	s = up.Next(t)
	s.Send("a page")
	s.End()
	if r := answer(t, ch); r.status != 200 || r.body != "a page" {
		t.Fatalf("a plain answer: status %d body %q, want 200 and the page", r.status, r.body)
	}
}

func strconvQuote(s string) string { return `"` + s + `"` }

// Heartbeats flow through Caddy's encode (gzip, zstd): the heartbeat
// comments are compressed with the stream and flushed, so a client that
// decompresses sees them when the stream is idle. (An upstream that
// compresses by itself gets none: see the sse package's tests.)
func TestPassthroughHeartbeatsThroughEncode(t *testing.T) {
	t.Parallel()
	const hb = 500 * time.Millisecond
	for _, enc := range []string{"gzip", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			t.Parallel()
			forEachProtocol(t, func(t *testing.T, p protocol) {
				up := harness.NewSSEUpstream(t)
				c := startSite(t, site{Upstream: up.Addr(), Heartbeat: hb.String(), Before: "encode " + enc})
				r := p.open(t, c, "/events", http.Header{"Accept-Encoding": {enc}})
				up.NextFor(t, r).Send("data: hello\n\n")
				ev := r.NextEvent(t, authWait)
				if ev.Data != "hello" {
					t.Fatalf("got %+v, want data hello", ev)
				}
				if got := r.Response(t).Header.Get("Content-Encoding"); got != enc {
					t.Fatalf("Content-Encoding %q, want %q (the site's encode)", got, enc)
				}
				last := ev.At
				for i := 0; i < 2; i++ {
					beat := r.NextComment(t, authWait)
					if beat.Text != "heartbeat" {
						t.Fatalf("comment %q, want heartbeat", beat.Text)
					}
					if gap := beat.At.Sub(last); gap < hb*9/10 {
						t.Fatalf("heartbeat %d came %v after the last line, before the stream was idle for %v", i, gap, hb)
					}
					last = beat.At
				}
			})
		})
	}
}
