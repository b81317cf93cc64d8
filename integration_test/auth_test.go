package integration_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// Issue 6: tickets, Origin checks and CORS for every transport. A real
// Caddy, a real redis-server, and a real little app that answers the
// `authorize` calls.

// authWait bounds every wait of these tests.
const authWait = 5 * time.Second

// jwtSecret is the HS256 key of the signed tickets (32 bytes or more).
const jwtSecret = "integration-test-secret-0123456789abcdef"

// authSite has a hub under /hub and a passthrough under /pass, whose
// upstream gets the ticket's subject as X-User.
const authSite = `
:{{.HTTPPort}} {
	{{.Log}}
	realtime /hub* {
		hub
		heartbeat 1s
		longpoll_timeout 300ms
		{{.Hub}}
	}
	realtime /pass* {
		heartbeat 1s
		{{.Pass}}
	}
	reverse_proxy /pass* {{.Upstream}} {
		header_up X-User {http.realtime.sub}
	}
}
`

// authConfig configures authSite.
type authConfig struct {
	Hub  string // realtime subdirectives of the hub
	Pass string // realtime subdirectives of the passthrough
	Log  string // site directives before realtime (log)
}

// authEnv is one running authSite with its upstream.
type authEnv struct {
	c  *harness.Caddy
	up *appUpstream
}

func startAuthSite(t *testing.T, cfg authConfig) *authEnv {
	t.Helper()
	up := newAppUpstream(t)
	c := harness.StartCaddy(t, authSite,
		harness.Var("Upstream", up.addr),
		harness.Var("Hub", cfg.Hub),
		harness.Var("Pass", cfg.Pass),
		harness.Var("Log", cfg.Log),
	)
	return &authEnv{c: c, up: up}
}

// ticketBlock is a realtime `ticket { ... }` block.
func ticketBlock(lines ...string) string {
	return "ticket {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}"
}

// appUpstream is the app behind the passthrough: an SSE response whose
// one event tells the X-User header it got, or a WebSocket that sends
// "x-user=<X-User>" first and then echoes. It remembers the `case` query
// value of every request, to show that refused requests never reach it.
type appUpstream struct {
	addr string
	stop chan struct{}

	mu      sync.Mutex
	cases   map[string]int
	queries map[string]string // raw query by case
}

func newAppUpstream(t *testing.T) *appUpstream {
	t.Helper()
	u := &appUpstream{stop: make(chan struct{}), cases: map[string]int{}, queries: map[string]string{}}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.cases[r.URL.Query().Get("case")]++
		u.queries[r.URL.Query().Get("case")] = r.URL.RawQuery
		u.mu.Unlock()
		user := r.Header.Get("X-User")
		if websocket.IsWebSocketUpgrade(r) {
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			go func() { <-u.stop; _ = conn.Close() }()
			_ = conn.SetWriteDeadline(time.Now().Add(authWait))
			if conn.WriteMessage(websocket.TextMessage, []byte("x-user="+user)) != nil {
				return
			}
			for {
				typ, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				_ = conn.SetWriteDeadline(time.Now().Add(authWait))
				if conn.WriteMessage(typ, msg) != nil {
					return
				}
			}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: x-user=%s\n\n", user)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-u.stop:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(u.stop) }) // runs first: lets handlers return
	u.addr = srv.Listener.Addr().String()
	return u
}

// saw reports whether a request with ?case=name reached the upstream.
func (u *appUpstream) saw(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cases[name] > 0
}

// query is the raw query of the last request with ?case=name.
func (u *appUpstream) query(name string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[name]
}

// authApp is the app's `authorize` endpoint: it approves by the session
// cookie and records what it was sent.
type authApp struct {
	url  string // base URL
	stop chan struct{}

	mu    sync.Mutex
	calls []appCall
}

type appCall struct {
	cookie, authorization, contentType string
	channels                           []string
}

// sessions are the app's logins: cookie value → answer.
var sessions = map[string]struct {
	status int
	body   string
}{
	"good":     {200, `{"sub":"cookie-user","channels":["news","chat:*"],"publish":["chat:*"]}`},
	"newsonly": {200, `{"sub":"reader","channels":["news"]}`},
	"banned":   {403, "account suspended"},
}

func newAuthApp(t *testing.T) *authApp {
	t.Helper()
	a := &authApp{stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /auth", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Channels []string `json:"channels"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		a.mu.Lock()
		a.calls = append(a.calls, appCall{
			cookie:        r.Header.Get("Cookie"),
			authorization: r.Header.Get("Authorization"),
			contentType:   r.Header.Get("Content-Type"),
			channels:      body.Channels,
		})
		a.mu.Unlock()
		ck, err := r.Cookie("session")
		if err != nil {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "please log in")
			return
		}
		s, ok := sessions[ck.Value]
		if !ok {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "unknown session")
			return
		}
		if s.status == 200 {
			w.Header().Set("Content-Type", "application/json")
		} else {
			w.Header().Set("Content-Type", "text/plain")
		}
		w.WriteHeader(s.status)
		io.WriteString(w, s.body)
	})
	// /slow never answers in time: it waits until the caller gives up
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-a.stop:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(a.stop) })
	a.url = srv.URL
	return a
}

// lastCall returns the last call the app got.
func (a *authApp) lastCall(t *testing.T) appCall {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.calls) == 0 {
		t.Fatal("the authorize endpoint was never called")
	}
	return a.calls[len(a.calls)-1]
}

// reply is an answer whose body has been read (an event stream's body
// is not: only its headers count).
type reply struct {
	status int
	header http.Header
	body   string
}

// reason is the body of a refusal, trimmed.
func (r reply) reason() string { return strings.TrimSpace(r.body) }

// do sends one request and returns its answer within authWait. An
// accepted event stream is closed as soon as its headers are in.
func do(t *testing.T, method, rawURL string, header http.Header, body string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), authWait)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := harness.HTTP1Client()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, redactTicket(rawURL), err)
	}
	defer resp.Body.Close()
	out := reply{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return out
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, redactTicket(rawURL), err)
	}
	out.body = string(b)
	return out
}

var ticketParam = regexp.MustCompile(`ticket=[^&]*`)

// redactTicket keeps tickets out of failure messages too.
func redactTicket(u string) string { return ticketParam.ReplaceAllString(u, "ticket=…") }

// sseHeader asks for an event stream, with extra header pairs.
func sseHeader(kv ...string) http.Header {
	h := http.Header{"Accept": {"text/event-stream"}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// bearer is an Authorization: Bearer header, with extra pairs.
func bearer(tok string, kv ...string) http.Header {
	h := sseHeader(kv...)
	h.Set("Authorization", "Bearer "+tok)
	return h
}

// expect checks a reply's status and that its reason contains want.
func expect(t *testing.T, what string, r reply, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d (%q), want %d", what, r.status, r.reason(), status)
	}
	if want != "" && !strings.Contains(r.reason(), want) {
		t.Fatalf("%s: reason %q, want it to contain %q", what, r.reason(), want)
	}
	if status >= 400 && r.reason() == "" {
		t.Fatalf("%s: %d without a reason", what, status)
	}
}

// subscribe opens a hub SSE subscription and waits until it is live
// (the `retry:` field comes once the subscriptions are).
func subscribe(t *testing.T, c *harness.Caddy, path string, header http.Header) *harness.SSEReader {
	t.Helper()
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	r := harness.OpenSSE(t, client, c.URL(path), header)
	resp := r.ResponseWithin(t, authWait)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribing to %s: status %d", redactTicket(path), resp.StatusCode)
	}
	for {
		it := r.Next(t, authWait)
		if it.Kind == harness.KindRetry {
			return r
		}
	}
}

// redisTicket stores a ticket the way a backend does and returns it.
func redisTicket(t *testing.T, rdb *redis.Client, claims string) string {
	t.Helper()
	tok := randomID()
	ctx, cancel := context.WithTimeout(context.Background(), authWait)
	defer cancel()
	if err := rdb.Set(ctx, "realtime:ticket:"+tok, claims, 30*time.Second).Err(); err != nil {
		t.Fatalf("SET ticket: %v", err)
	}
	return tok
}

func randomID() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Claims of the tickets the tests hand out.
const (
	claimsUser   = `{"sub":"u1","channels":["news","chat:*"],"publish":["chat:*"]}`
	claimsReader = `{"sub":"u2","channels":["news","chat:*"]}`
)

// signed returns an HS256 JWT of claims (exp and jti filled in unless
// present), signed with key.
func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Minute).Unix()
	}
	if _, ok := claims["jti"]; !ok {
		claims["jti"] = randomID()
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing a JWT: %v", err)
	}
	return s
}

func userClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "jwt-user", "channels": []string{"news", "chat:*"}, "publish": []string{"chat:*"}}
}

// Redis tickets: each works once, by query or Bearer header; a missing or
// unknown one is a 401, one that does not cover the channel a 403.
func TestTicketRedis(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	env := startAuthSite(t, authConfig{Hub: "redis " + rs.URL() + "\n\t\t" + ticketBlock("secret "+jwtSecret)})
	c := env.c
	q := func(tok, channels string) string { return "/hub?" + channels + "&ticket=" + url.QueryEscape(tok) }

	t.Run("once then 401", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		r := subscribe(t, c, q(tok, "channel=news"), sseHeader())
		r.Close()
		expect(t, "second use", do(t, "GET", c.URL(q(tok, "channel=news")), sseHeader(), ""), 401, "unknown or used ticket")
	})
	t.Run("bearer header", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		subscribe(t, c, "/hub?channel=news&channel=chat:room1", bearer(tok)).Close()
		expect(t, "second use", do(t, "GET", c.URL("/hub?channel=news"), bearer(tok), ""), 401, "unknown or used ticket")
	})
	t.Run("refused origin keeps the ticket", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		expect(t, "other origin", do(t, "GET", c.URL(q(tok, "channel=news")), sseHeader("Origin", "https://evil.example"), ""), 403, "origin")
		subscribe(t, c, q(tok, "channel=news"), sseHeader("Origin", c.URL(""))).Close()
	})
	t.Run("missing", func(t *testing.T) {
		expect(t, "no ticket", do(t, "GET", c.URL("/hub?channel=news"), sseHeader(), ""), 401, "missing ticket")
	})
	t.Run("publish without a ticket", func(t *testing.T) {
		expect(t, "no ticket", do(t, "POST", c.URL("/hub?channel=chat:1"), nil, "x"), 401, "missing ticket")
	})
	t.Run("unknown", func(t *testing.T) {
		expect(t, "unknown ticket", do(t, "GET", c.URL(q("no-such-ticket", "channel=news")), sseHeader(), ""), 401, "unknown or used ticket")
	})
	t.Run("wrong channel", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		expect(t, "uncovered channel", do(t, "GET", c.URL(q(tok, "channel=news&channel=secret")), sseHeader(), ""), 403, `"secret"`)
	})
	t.Run("long-poll", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		r := do(t, "GET", c.URL(q(tok, "channel=news")), nil, "")
		expect(t, "long-poll", r, 200, "")
		if !strings.Contains(r.body, `"messages"`) {
			t.Fatalf("long-poll body %q, want the messages JSON", r.body)
		}
		expect(t, "long-poll, reused", do(t, "GET", c.URL(q(tok, "channel=news")), nil, ""), 401, "unknown or used ticket")
	})
	t.Run("websocket", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		conn := dialHub(t, c, q(tok, "channel=chat:1"), nil)
		conn.Close()
		_, resp, err := harness.WSDialer().Dial(harness.WSURL(c.URL(q(tok, "channel=chat:1"))), nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("reused ticket on a WebSocket: %v, %v, want 401", err, statusOf(resp))
		}
	})
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// dialHub opens a hub WebSocket and waits for its subscribed frame.
func dialHub(t *testing.T, c *harness.Caddy, path string, header http.Header) *websocket.Conn {
	t.Helper()
	conn, resp, err := harness.WSDialer().Dial(harness.WSURL(c.URL(path)), header)
	if err != nil {
		t.Fatalf("dialing %s: %v (status %d)", redactTicket(path), err, statusOf(resp))
	}
	t.Cleanup(func() { conn.Close() })
	if f := readFrame(t, conn); f["type"] != "subscribed" {
		t.Fatalf("first frame %v, want subscribed", f)
	}
	return conn
}

// readFrame reads one JSON text frame within authWait.
func readFrame(t *testing.T, conn *websocket.Conn) map[string]any {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(authWait))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("frame %q: %v", msg, err)
	}
	return f
}

// Signed tickets (HS256 JWT), with used ids kept in Redis or in memory.
func TestTicketJWT(t *testing.T) {
	t.Parallel()
	variants := []struct {
		name  string
		redis bool
	}{{"redis jti", true}, {"memory jti", false}}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			hub := ticketBlock("secret " + jwtSecret)
			if v.redis {
				hub = "redis " + testredis.Start(t).URL() + "\n\t\t" + hub
			}
			c := startAuthSite(t, authConfig{Hub: hub}).c
			key := []byte(jwtSecret)
			get := func(tok, channel string) reply {
				return do(t, "GET", c.URL("/hub?channel="+channel+"&ticket="+url.QueryEscape(tok)), sseHeader(), "")
			}

			valid := signed(t, jwt.SigningMethodHS256, key, userClaims())
			expect(t, "valid", get(valid, "news"), 200, "")
			expect(t, "reused", get(valid, "news"), 401, "ticket already used")

			jti := randomID()
			withJTI := func() jwt.MapClaims { m := userClaims(); m["jti"] = jti; return m }
			expect(t, "first with jti", get(signed(t, jwt.SigningMethodHS256, key, withJTI()), "news"), 200, "")
			expect(t, "other token, same jti", get(signed(t, jwt.SigningMethodHS256, key, withJTI()), "news"), 401, "ticket already used")

			bearerTok := signed(t, jwt.SigningMethodHS256, key, userClaims())
			expect(t, "bearer", do(t, "GET", c.URL("/hub?channel=chat:x"), bearer(bearerTok), ""), 200, "")

			expired := userClaims()
			expired["exp"] = time.Now().Add(-time.Minute).Unix()
			noJTI := userClaims()
			noJTI["jti"] = ""
			none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
				"sub": "x", "channels": []string{"news"}, "exp": time.Now().Add(time.Minute).Unix(), "jti": randomID(),
			}).SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name, token, channel string
				status               int
				reason               string
			}{
				{"expired", signed(t, jwt.SigningMethodHS256, key, expired), "news", 401, "ticket expired"},
				{"wrong signature", signed(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes!!"), userClaims()), "news", 401, "ticket signature invalid"},
				{"alg none", none, "news", 401, "algorithm not allowed"},
				{"HS512", signed(t, jwt.SigningMethodHS512, key, userClaims()), "news", 401, "algorithm not allowed"},
				{"malformed", "eyJhbGciOiJIUzI1NiJ9.bm90LWpzb24.c2ln", "news", 401, "malformed ticket"},
				{"garbage", "abc.def.ghi", "news", 401, "malformed ticket"},
				{"no exp", signedNoExp(t, key), "news", 401, "no expiry"},
				{"no jti", signed(t, jwt.SigningMethodHS256, key, noJTI), "news", 401, "no id (jti)"},
				{"channel not covered", signed(t, jwt.SigningMethodHS256, key, userClaims()), "secret", 403, `"secret"`},
			}
			for _, tc := range tests {
				expect(t, tc.name, get(tc.token, tc.channel), tc.status, tc.reason)
			}
		})
	}
}

// signedNoExp is a JWT without exp (signed() always adds one).
func signedNoExp(t *testing.T, key []byte) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "x", "channels": []string{"news"}, "jti": randomID(),
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The built-in ticket endpoint asks the app, passes its refusals back, and
// hands out tickets that work once.
func TestTicketIssue(t *testing.T) {
	t.Parallel()
	variants := []struct {
		name  string
		redis bool // Redis tickets; else signed ones
	}{{"redis", true}, {"signed", false}}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			app := newAuthApp(t)
			tb := ticketBlock("issue /hub/ticket", "authorize "+app.url+"/auth", "ttl 20s")
			if !v.redis {
				tb = ticketBlock("secret "+jwtSecret, "issue /hub/ticket", "authorize "+app.url+"/auth", "ttl 20s")
			}
			hub := tb
			if v.redis {
				hub = "redis " + testredis.Start(t).URL() + "\n\t\t" + tb
			}
			c := startAuthSite(t, authConfig{Hub: hub}).c
			issue := func(cookie, body string) reply {
				h := http.Header{"Content-Type": {"application/json"}}
				if cookie != "" {
					h.Set("Cookie", cookie)
				}
				return do(t, "POST", c.URL("/hub/ticket"), h, body)
			}

			r := issue("session=good; theme=dark", `{"channels":["news","chat:1"]}`)
			expect(t, "issue with a login", r, 200, "")
			var got struct {
				Ticket    string `json:"ticket"`
				ExpiresIn int    `json:"expires_in"`
			}
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || got.Ticket == "" {
				t.Fatalf("issue answer %q: %v, want {ticket, expires_in}", r.body, err)
			}
			if got.ExpiresIn != 20 {
				t.Fatalf("expires_in %d, want 20", got.ExpiresIn)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			if v.redis == (strings.Count(got.Ticket, ".") == 2) {
				t.Errorf("ticket %q: with redis=%v want a stored ticket, else a JWT", got.Ticket, v.redis)
			}
			call := app.lastCall(t)
			if call.cookie != "session=good; theme=dark" || strings.Join(call.channels, ",") != "news,chat:1" || call.contentType != "application/json" {
				t.Fatalf("the app got %+v, want the cookie and the channels as JSON", call)
			}

			sub := subscribe(t, c, "/hub?channel=news&ticket="+url.QueryEscape(got.Ticket), sseHeader())
			sub.Close()
			expect(t, "issued ticket reused", do(t, "GET", c.URL("/hub?channel=news&ticket="+url.QueryEscape(got.Ticket)), sseHeader(), ""), 401, "")

			expect(t, "issue without a login", issue("", `{"channels":["news"]}`), 401, "please log in")
			expect(t, "issue for a banned user", issue("session=banned", `{"channels":["news"]}`), 403, "account suspended")
			expect(t, "issue with GET", do(t, "GET", c.URL("/hub/ticket"), nil, ""), 405, "POST")
			// another site cannot mint tickets with the user's cookie
			app.mu.Lock()
			calls := len(app.calls)
			app.mu.Unlock()
			cross := do(t, "POST", c.URL("/hub/ticket"), http.Header{"Cookie": {"session=good"}, "Origin": {"https://evil.example"}}, `{"channels":["news"]}`)
			expect(t, "issue from another origin", cross, 403, "origin")
			app.mu.Lock()
			if len(app.calls) != calls {
				t.Errorf("a refused Origin reached the app")
			}
			app.mu.Unlock()
			expect(t, "issue with a bad body", issue("session=good", `{"channels":`), 400, "JSON")

			// the app's claims decide: a reader's ticket does not cover chat
			r = issue("session=newsonly", `{"channels":["news"]}`)
			expect(t, "issue for a reader", r, 200, "")
			_ = json.Unmarshal([]byte(r.body), &got)
			expect(t, "reader on chat", do(t, "GET", c.URL("/hub?channel=chat:1&ticket="+url.QueryEscape(got.Ticket)), sseHeader(), ""), 403, "chat:1")
		})
	}
}

// An app that is down is a 502, one that is too slow a 504 after
// authorize_timeout, for the ticket endpoint and ticketless subscriptions.
func TestAuthorizeAppFailures(t *testing.T) {
	t.Parallel()
	app := newAuthApp(t)
	down := "http://" + refusingListener(t) + "/auth"
	tests := []struct {
		name, url string
		status    int
		reason    string
	}{
		{"app down", down, 502, "unreachable"},
		{"app slow", app.url + "/slow", 504, "timed out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hub := ticketBlock("secret "+jwtSecret, "issue /hub/ticket", "authorize "+tc.url, "authorize_timeout 300ms")
			c := startAuthSite(t, authConfig{Hub: hub}).c
			start := time.Now()
			expect(t, "issue", do(t, "POST", c.URL("/hub/ticket?channel=news"), http.Header{"Cookie": {"session=good"}}, ""), tc.status, tc.reason)
			expect(t, "ticketless SSE", do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Cookie", "session=good"), ""), tc.status, tc.reason)
			expect(t, "ticketless long-poll", do(t, "GET", c.URL("/hub?channel=news"), http.Header{"Cookie": {"session=good"}}, ""), tc.status, tc.reason)
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("three calls took %v with authorize_timeout 300ms", d)
			}
		})
	}
}

// refusingListener returns the address of a port that this test holds
// and on which every connection is closed at once, as by an app that is
// down (a merely free port might be taken by another test meanwhile).
func refusingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // a reset, as from a closed port
			}
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// With `authorize` and no ticket, the app approves or refuses the
// subscription by its cookie.
func TestAuthorizeCookieSubscription(t *testing.T) {
	t.Parallel()
	app := newAuthApp(t)
	tb := ticketBlock("secret "+jwtSecret, "authorize "+app.url+"/auth")
	env := startAuthSite(t, authConfig{Hub: tb, Pass: tb})
	c := env.c

	sub := subscribe(t, c, "/hub?channel=news&channel=chat:9", sseHeader("Cookie", "session=good"))
	sub.Close()
	call := app.lastCall(t)
	if call.cookie != "session=good" || strings.Join(call.channels, ",") != "news,chat:9" {
		t.Fatalf("the app got %+v, want the cookie and channels news,chat:9", call)
	}
	// a non-Bearer Authorization header is the app's own login: passed on
	expect(t, "Basic login", do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Authorization", "Basic dTpw", "Cookie", "session=good"), ""), 200, "")
	if call := app.lastCall(t); call.authorization != "Basic dTpw" {
		t.Fatalf("the app got Authorization %q, want the Basic credentials", call.authorization)
	}

	expect(t, "no cookie", do(t, "GET", c.URL("/hub?channel=news"), sseHeader(), ""), 401, "please log in")
	expect(t, "banned", do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Cookie", "session=banned"), ""), 403, "account suspended")
	expect(t, "reader on chat", do(t, "GET", c.URL("/hub?channel=chat:1"), sseHeader("Cookie", "session=newsonly"), ""), 403, "chat:1")
	expect(t, "reader on news", do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Cookie", "session=newsonly"), ""), 200, "")
	expect(t, "long-poll with cookie", do(t, "GET", c.URL("/hub?channel=news"), http.Header{"Cookie": {"session=good"}}, ""), 200, "")
	dialHub(t, c, "/hub?channel=news", http.Header{"Cookie": {"session=good"}}).Close()
	_, resp, err := harness.WSDialer().Dial(harness.WSURL(c.URL("/hub?channel=news")), nil)
	if err == nil || statusOf(resp) != 401 {
		t.Fatalf("WebSocket without a login: %v (status %d), want 401", err, statusOf(resp))
	}

	// passthrough: the app's answer names the user for the upstream
	r := harness.OpenSSE(t, harness.HTTP1Client(), c.URL("/pass/events?case=cookie"), http.Header{"Cookie": {"session=good"}})
	if ev := r.NextEvent(t, authWait); ev.Data != "x-user=cookie-user" {
		t.Fatalf("upstream got %q, want x-user=cookie-user", ev.Data)
	}
	r.Close()
	expect(t, "passthrough without a login", do(t, "GET", c.URL("/pass/events?case=nologin"), sseHeader(), ""), 401, "please log in")
	if env.up.saw("nologin") {
		t.Fatal("a refused passthrough request reached the upstream")
	}
}

// Publishing with a ticket: WebSocket publish frames and HTTP POSTs, only
// to the channels the ticket's publish rights name.
func TestTicketPublish(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	c := startAuthSite(t, authConfig{Hub: "redis " + rs.URL() + "\n\t\tpublish_key backend-key\n\t\t" + ticketBlock("secret "+jwtSecret)}).c
	tq := func(claims string) string { return "&ticket=" + url.QueryEscape(redisTicket(t, rdb, claims)) }

	listener := subscribe(t, c, "/hub?channel=chat:1"+tq(claimsReader), sseHeader())

	t.Run("websocket allowed", func(t *testing.T) {
		conn := dialHub(t, c, "/hub?channel=chat:1"+tq(claimsUser), nil)
		if err := conn.WriteJSON(map[string]string{"type": "publish", "channel": "chat:1", "data": "hi"}); err != nil {
			t.Fatal(err)
		}
		var ack, msg map[string]any
		for ack == nil || msg == nil {
			f := readFrame(t, conn)
			switch {
			case f["type"] == "ack":
				ack = f
			case f["type"] == nil:
				msg = f
			default:
				t.Fatalf("unexpected frame %v", f)
			}
		}
		if id, _ := ack["id"].(string); id == "" {
			t.Fatalf("ack %v without an id", ack)
		}
		if msg["channel"] != "chat:1" || msg["data"] != "hi" {
			t.Fatalf("the publisher's own subscription got %v", msg)
		}
		if ev := listener.NextEvent(t, authWait); ev.Data != "hi" {
			t.Fatalf("subscriber got %v, want data hi", ev)
		}
	})
	t.Run("websocket refused by scope", func(t *testing.T) {
		conn := dialHub(t, c, "/hub?channel=news"+tq(claimsUser), nil)
		if err := conn.WriteJSON(map[string]string{"type": "publish", "channel": "news", "data": "sneaky"}); err != nil {
			t.Fatal(err)
		}
		f := readFrame(t, conn)
		if reason, _ := f["reason"].(string); f["type"] != "error" || !strings.Contains(reason, "news") {
			t.Fatalf("frame %v, want an error naming the channel", f)
		}
		// a ticket without publish rights cannot publish at all
		ro := dialHub(t, c, "/hub?channel=chat:1"+tq(claimsReader), nil)
		if err := ro.WriteJSON(map[string]string{"type": "publish", "channel": "chat:1", "data": "sneaky"}); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ro); f["type"] != "error" || f["reason"] == "" {
			t.Fatalf("frame %v, want an error with a reason", f)
		}
	})
	t.Run("http", func(t *testing.T) {
		post := func(path string, h http.Header, body string) reply { return do(t, "POST", c.URL(path), h, body) }
		auth := func(claims string) http.Header {
			return http.Header{"Authorization": {"Bearer " + redisTicket(t, rdb, claims)}}
		}
		expect(t, "ticket without publish rights", post("/hub?channel=chat:1", auth(claimsReader), "no"), 403, "publish")
		expect(t, "publish rights, other channel", post("/hub?channel=news", auth(claimsUser), "no"), 403, "news")
		expect(t, "unknown ticket", post("/hub?channel=chat:1", http.Header{"Authorization": {"Bearer nope"}}, "no"), 401, "")
		expect(t, "no credentials", post("/hub?channel=chat:1", nil, "no"), 401, "publish_key> or a ticket")
		r := post("/hub?channel=chat:1", auth(claimsUser), "by http")
		expect(t, "ticket with publish rights", r, 200, `"id"`)
		r = post("/hub?channel=chat:1"+tq(claimsUser), nil, "by query ticket")
		expect(t, "ticket in the query", r, 200, `"id"`)
		expect(t, "publish key", post("/hub?channel=chat:1", http.Header{"Authorization": {"Bearer backend-key"}}, "by backend"), 200, `"id"`)
		for _, want := range []string{"by http", "by query ticket", "by backend"} {
			if ev := listener.NextEvent(t, authWait); ev.Data != want {
				t.Fatalf("subscriber got %v, want data %q (refused publishes must not be delivered)", ev, want)
			}
		}
	})
}

// transport is a way to subscribe, checked for its Origin handling.
type transport struct {
	name string
	// open returns the status of a request with header to path (a hub
	// subscription or a passthrough request); 200/101 count as allowed.
	open func(t *testing.T, c *harness.Caddy, path string, header http.Header) int
}

var originTransports = []transport{
	{"hub sse", func(t *testing.T, c *harness.Caddy, path string, h http.Header) int {
		h.Set("Accept", "text/event-stream")
		return do(t, "GET", c.URL("/hub?channel=news&"+path), h, "").status
	}},
	{"hub long-poll", func(t *testing.T, c *harness.Caddy, path string, h http.Header) int {
		return do(t, "GET", c.URL("/hub?channel=news&"+path), h, "").status
	}},
	{"hub websocket", func(t *testing.T, c *harness.Caddy, path string, h http.Header) int {
		return wsStatus(t, c.URL("/hub?channel=news&"+path), h, "subscribed")
	}},
	{"passthrough sse", func(t *testing.T, c *harness.Caddy, path string, h http.Header) int {
		h.Set("Accept", "text/event-stream")
		return do(t, "GET", c.URL("/pass/events?"+path), h, "").status
	}},
	{"passthrough websocket", func(t *testing.T, c *harness.Caddy, path string, h http.Header) int {
		return wsStatus(t, c.URL("/pass/ws?"+path), h, "")
	}},
}

// wsStatus dials a WebSocket: 101 once the first frame is in (containing
// want), else the refusal's status.
func wsStatus(t *testing.T, rawURL string, h http.Header, want string) int {
	t.Helper()
	conn, resp, err := harness.WSDialer().Dial(harness.WSURL(rawURL), h)
	if err != nil {
		if resp == nil {
			t.Fatalf("dialing %s: %v", rawURL, err)
		}
		return resp.StatusCode
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(authWait))
	_, msg, err := conn.ReadMessage()
	if err != nil || !strings.Contains(string(msg), want) {
		t.Fatalf("first frame %q, %v: want one containing %q", msg, err, want)
	}
	return http.StatusSwitchingProtocols
}

// Origins on every transport: listed, wildcard and same-host origins
// pass; others get 403 and the upstream sees nothing.
func TestOrigins(t *testing.T) {
	t.Parallel()
	const listed = "origins https://allowed.example https://*.example.com"
	sites := []struct {
		name    string
		origins string
		cases   []struct {
			origin  string // "self": the site's own origin
			allowed bool
		}
	}{
		{"listed", listed, []struct {
			origin  string
			allowed bool
		}{
			{"", true},
			{"self", true},
			{"https://allowed.example", true},
			{"https://app.example.com", true},
			{"https://a.b.example.com", false},
			{"https://evil.example", false},
			{"http://allowed.example", false},
			{"null", false},
		}},
		{"default same host", "", []struct {
			origin  string
			allowed bool
		}{
			{"", true},
			{"self", true},
			{"https://evil.example", false},
			{"http://localhost:1", false},
		}},
	}
	for _, s := range sites {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			env := startAuthSite(t, authConfig{Hub: s.origins, Pass: s.origins})
			for _, tc := range s.cases {
				for _, tr := range originTransports {
					name := tr.name + " " + tc.origin
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						h := http.Header{}
						switch tc.origin {
						case "":
						case "self":
							h.Set("Origin", env.c.URL(""))
						default:
							h.Set("Origin", tc.origin)
						}
						marker := randomID()
						status := tr.open(t, env.c, "case="+marker, h)
						if tc.allowed {
							if status != 200 && status != 101 {
								t.Fatalf("Origin %q: status %d, want it allowed", tc.origin, status)
							}
							return
						}
						if status != 403 {
							t.Fatalf("Origin %q: status %d, want 403", tc.origin, status)
						}
						if env.up.saw(marker) {
							t.Fatalf("Origin %q: the refused request reached the upstream", tc.origin)
						}
					})
				}
			}
		})
	}
}

// A refused Origin also cannot publish, and a refused request's body
// says why.
func TestOriginRefusedPublish(t *testing.T) {
	t.Parallel()
	c := startAuthSite(t, authConfig{Hub: "origins https://*.example.com\n\t\tpublish_key backend-key"}).c
	sub := subscribe(t, c, "/hub?channel=news", sseHeader())
	key := func(origin string) http.Header {
		return http.Header{"Authorization": {"Bearer backend-key"}, "Origin": {origin}}
	}
	expect(t, "publish from a refused origin", do(t, "POST", c.URL("/hub?channel=news"), key("https://evil.example"), "evil"), 403, "origin not allowed")
	expect(t, "subscribe from a refused origin", do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Origin", "https://evil.example"), ""), 403, "origin not allowed")
	expect(t, "publish from an allowed origin", do(t, "POST", c.URL("/hub?channel=news"), key("https://app.example.com"), "good"), 200, "")
	if ev := sub.NextEvent(t, authWait); ev.Data != "good" {
		t.Fatalf("subscriber got %v, want only the allowed publish", ev)
	}
}

// Allowed cross-origin SSE, long-poll and publish get CORS headers, and
// preflights are answered.
func TestCORS(t *testing.T) {
	t.Parallel()
	c := startAuthSite(t, authConfig{Hub: "origins https://*.example.com\n\t\tpublish_key backend-key"}).c
	const origin = "https://app.example.com"
	checkCORS := func(t *testing.T, what string, r reply) {
		t.Helper()
		if got := r.header.Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got, origin)
		}
		if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Errorf("%s: Access-Control-Allow-Credentials %q, want true", what, got)
		}
		if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: Vary %q, want Origin", what, r.header.Values("Vary"))
		}
	}
	t.Run("sse", func(t *testing.T) {
		r := do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Origin", origin), "")
		expect(t, "sse", r, 200, "")
		checkCORS(t, "sse", r)
	})
	t.Run("long-poll", func(t *testing.T) {
		r := do(t, "GET", c.URL("/hub?channel=news"), http.Header{"Origin": {origin}}, "")
		expect(t, "long-poll", r, 200, "")
		checkCORS(t, "long-poll", r)
	})
	t.Run("publish", func(t *testing.T) {
		r := do(t, "POST", c.URL("/hub?channel=news"), http.Header{"Origin": {origin}, "Authorization": {"Bearer backend-key"}}, "x")
		expect(t, "publish", r, 200, "")
		checkCORS(t, "publish", r)
	})
	t.Run("preflight", func(t *testing.T) {
		r := do(t, "OPTIONS", c.URL("/hub?channel=news"), http.Header{
			"Origin":                         {origin},
			"Access-Control-Request-Method":  {"POST"},
			"Access-Control-Request-Headers": {"authorization, content-type"},
		}, "")
		if r.status != 204 && r.status != 200 {
			t.Fatalf("preflight: status %d (%q), want 204", r.status, r.reason())
		}
		checkCORS(t, "preflight", r)
		if m := r.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") || !strings.Contains(m, "GET") {
			t.Errorf("Access-Control-Allow-Methods %q, want GET and POST", m)
		}
		if h := strings.ToLower(r.header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") || !strings.Contains(h, "content-type") {
			t.Errorf("Access-Control-Allow-Headers %q, want authorization and content-type", h)
		}
	})
	t.Run("preflight refused origin", func(t *testing.T) {
		r := do(t, "OPTIONS", c.URL("/hub?channel=news"), http.Header{
			"Origin":                        {"https://evil.example"},
			"Access-Control-Request-Method": {"POST"},
		}, "")
		expect(t, "preflight from a refused origin", r, 403, "origin")
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("refused preflight: Access-Control-Allow-Origin %q", got)
		}
	})
	t.Run("same origin", func(t *testing.T) {
		r := do(t, "GET", c.URL("/hub?channel=news"), sseHeader(), "")
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("no Origin: Access-Control-Allow-Origin %q, want none", got)
		}
	})
}

// {http.realtime.sub} carries the ticket's subject to later handlers: the
// passthrough's upstream gets it as X-User.
func TestTicketSubPlaceholder(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	tb := "redis " + rs.URL() + "\n\t\t" + ticketBlock("secret "+jwtSecret)
	env := startAuthSite(t, authConfig{Pass: tb})
	c := env.c
	jwtTok := func() string { return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims()) }

	t.Run("sse redis ticket", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		r := harness.OpenSSE(t, harness.HTTP1Client(), c.URL("/pass/events?a=1&ticket="+url.QueryEscape(tok)+"&case=subq&b=x%20y"), nil)
		if ev := r.NextEvent(t, authWait); ev.Data != "x-user=u1" {
			t.Fatalf("upstream got %q, want x-user=u1", ev.Data)
		}
		// the checked ticket goes no further; the rest of the query does
		if q := env.up.query("subq"); q != "a=1&case=subq&b=x%20y" {
			t.Fatalf("upstream got the query %q, want a=1&case=subq&b=x%%20y", redactTicket(q))
		}
	})
	t.Run("sse jwt bearer", func(t *testing.T) {
		r := harness.OpenSSE(t, harness.HTTP1Client(), c.URL("/pass/events"), http.Header{"Authorization": {"Bearer " + jwtTok()}})
		if ev := r.NextEvent(t, authWait); ev.Data != "x-user=jwt-user" {
			t.Fatalf("upstream got %q, want x-user=jwt-user", ev.Data)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		tok := redisTicket(t, rdb, claimsUser)
		conn, resp, err := harness.WSDialer().Dial(harness.WSURL(c.URL("/pass/ws?ticket="+url.QueryEscape(tok))), nil)
		if err != nil {
			t.Fatalf("dial: %v (status %d)", err, statusOf(resp))
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(authWait))
		_, msg, err := conn.ReadMessage()
		if err != nil || string(msg) != "x-user=u1" {
			t.Fatalf("upstream said %q, %v; want x-user=u1", msg, err)
		}
		echo(t, conn, "hello")
	})
	t.Run("refused", func(t *testing.T) {
		expect(t, "no ticket", do(t, "GET", c.URL("/pass/events?case=none"), sseHeader(), ""), 401, "missing ticket")
		expect(t, "bad ticket", do(t, "GET", c.URL("/pass/events?case=bad&ticket=bad"), sseHeader(), ""), 401, "")
		if s := wsStatus(t, c.URL("/pass/ws?case=ws"), nil, ""); s != 401 {
			t.Fatalf("WebSocket without a ticket: status %d, want 401", s)
		}
		for _, m := range []string{"none", "bad", "ws"} {
			if env.up.saw(m) {
				t.Fatalf("refused request %q reached the upstream", m)
			}
		}
		// a request that did not ask for an event stream but gets one is
		// checked when the stream comes (hostile_passthrough_test.go)
		expect(t, "an event stream not asked for", do(t, "GET", c.URL("/pass/plain?case=plain"), nil, ""), 401, "missing ticket")
	})
}

// accessLogFilter is the README's recipe: Caddy logs the request URI
// before any handler runs, so the query's ticket is redacted by the log
// encoder.
const accessLogFilter = `log {
		output stderr
		format filter {
			wrap json
			request>uri query {
				replace ticket REDACTED
			}
		}
	}`

// No ticket reaches the logs: Caddy's access log (with the documented
// filter), its Authorization redaction, and the module's own refusal log.
func TestTicketNotLogged(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	tb := "redis " + rs.URL() + "\n\t\t" + ticketBlock("secret "+jwtSecret)
	env := startAuthSite(t, authConfig{Hub: tb, Pass: tb, Log: accessLogFilter})
	c := env.c
	var tickets []string
	add := func(tok string) string { tickets = append(tickets, tok); return url.QueryEscape(tok) }

	subscribe(t, c, "/hub?channel=news&ticket="+add(redisTicket(t, rdb, claimsUser)), sseHeader()).Close()
	subscribe(t, c, "/hub?channel=news&ticket="+add(signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())), sseHeader()).Close()
	bt := redisTicket(t, rdb, claimsUser)
	tickets = append(tickets, bt)
	subscribe(t, c, "/hub?channel=news", bearer(bt)).Close()
	do(t, "GET", c.URL("/hub?channel=news&ticket="+add("unknown-ticket-"+randomID())), sseHeader(), "")
	do(t, "GET", c.URL("/hub?channel=secret&ticket="+add(redisTicket(t, rdb, claimsUser))), sseHeader(), "")
	do(t, "GET", c.URL("/hub?channel=news"), bearer("unknown-bearer-"+randomID()), "")
	r := harness.OpenSSE(t, harness.HTTP1Client(), c.URL("/pass/events?ticket="+add(redisTicket(t, rdb, claimsUser))), nil)
	r.NextEvent(t, authWait)
	r.Close()

	// every request is in the access log once it has ended
	const requests = 7
	deadline := time.Now().Add(authWait)
	for strings.Count(c.Logs(), `"handled request"`) < requests {
		if time.Now().After(deadline) {
			t.Fatalf("%d access log entries within %v, want %d", strings.Count(c.Logs(), `"handled request"`), authWait, requests)
		}
		time.Sleep(20 * time.Millisecond) // polling the log
	}
	logs := c.Logs()
	for _, tok := range tickets {
		if strings.Contains(logs, tok) || strings.Contains(logs, url.QueryEscape(tok)) {
			t.Errorf("a ticket appears in Caddy's logs")
		}
	}
	if !strings.Contains(logs, "ticket=REDACTED") {
		t.Errorf("no redacted ticket in the access log: the filter did not apply")
	}
	if !strings.Contains(logs, `"request refused"`) {
		t.Errorf("the refusals were not logged")
	}
}

var refusalLine = regexp.MustCompile(`(?m)^realtime_refusals_total\{reason="([a-z_]+)"\} ([0-9.e+]+)$`)

// refusals reads realtime_refusals_total by reason from the admin
// /metrics endpoint.
func refusals(t *testing.T, c *harness.Caddy) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range refusalLine.FindAllStringSubmatch(c.Metrics(t), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metric %q: %v", m[0], err)
		}
		out[m[1]] = v
	}
	return out
}

// Refusals are counted by reason.
func TestRefusalMetrics(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	tb := "redis " + rs.URL() + "\n\t\torigins https://*.example.com\n\t\t" + ticketBlock("secret "+jwtSecret)
	c := startAuthSite(t, authConfig{Hub: tb, Pass: tb}).c
	before := refusals(t, c)

	// origin: hub SSE, hub WebSocket, passthrough WebSocket
	do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Origin", "https://evil.example"), "")
	wsStatus(t, c.URL("/hub?channel=news"), http.Header{"Origin": {"https://evil.example"}}, "")
	wsStatus(t, c.URL("/pass/ws"), http.Header{"Origin": {"https://evil.example"}}, "")
	// ticket: missing, unknown, reused
	do(t, "GET", c.URL("/hub?channel=news"), sseHeader(), "")
	do(t, "GET", c.URL("/hub?channel=news&ticket=nope"), sseHeader(), "")
	tok := redisTicket(t, rdb, claimsUser)
	do(t, "GET", c.URL("/hub?channel=news&ticket="+tok), sseHeader(), "")
	do(t, "GET", c.URL("/hub?channel=news&ticket="+tok), sseHeader(), "")
	// scope: channel not covered, HTTP publish and WebSocket publish
	// without the rights
	do(t, "GET", c.URL("/hub?channel=secret&ticket="+redisTicket(t, rdb, claimsUser)), sseHeader(), "")
	do(t, "POST", c.URL("/hub?channel=news"), http.Header{"Authorization": {"Bearer " + redisTicket(t, rdb, claimsUser)}}, "x")
	conn := dialHub(t, c, "/hub?channel=chat:1&ticket="+redisTicket(t, rdb, claimsUser), nil)
	if err := conn.WriteJSON(map[string]string{"type": "publish", "channel": "news", "data": "x"}); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn); f["type"] != "error" {
		t.Fatalf("frame %v, want an error", f)
	}

	after := refusals(t, c)
	want := map[string]float64{"origin": 3, "ticket": 3, "scope": 3}
	for reason, n := range want {
		if got := after[reason] - before[reason]; got != n {
			t.Errorf(`realtime_refusals_total{reason=%q} went up by %v, want %v`, reason, got, n)
		}
	}
}
