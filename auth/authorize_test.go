package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testApp is an app's authorize endpoint: it approves requests carrying
// the session cookie and refuses others, or answers a fixed status.
type testApp struct {
	hits    atomic.Int64
	status  int           // fixed status to answer, 0: cookie logic
	body    string        // fixed body
	ctype   string        // fixed content type
	delay   time.Duration // before answering
	lastReq atomic.Pointer[appRequest]
}

type appRequest struct {
	method, ctype, cookie, auth string
	channels                    []string
}

func (a *testApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	var body struct{ Channels []string }
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	a.lastReq.Store(&appRequest{
		method: r.Method, ctype: r.Header.Get("Content-Type"),
		cookie: r.Header.Get("Cookie"), auth: r.Header.Get("Authorization"),
		channels: body.Channels,
	})
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
	}
	if a.status != 0 {
		if a.ctype != "" {
			w.Header().Set("Content-Type", a.ctype)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
		return
	}
	c, err := r.Cookie("session")
	if err != nil || c.Value != "good" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "please log in\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"sub":"user-42","publish":["chat:*"]}`)
}

func startApp(t *testing.T, app http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(app)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		srv.Close()
	})
	return srv, client
}

func newAuthorizer(t *testing.T, url string, timeout time.Duration, client *http.Client) *Authorizer {
	t.Helper()
	a, err := NewAuthorizer(url, timeout, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func subRequest(cookie, auth string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/hub?channel=news", nil)
	if cookie != "" {
		r.Header.Set("Cookie", cookie)
	}
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

func TestAuthorizeCookie(t *testing.T) {
	app := &testApp{}
	srv, client := startApp(t, app)
	a := newAuthorizer(t, srv.URL+"/authorize", time.Second, client)
	ctx := context.Background()

	c, err := a.Authorize(ctx, subRequest("session=good; theme=dark", ""), []string{"news", "chat:1"})
	if err != nil {
		t.Fatal(err)
	}
	// no channels in the answer: approves the ones asked for
	if c.Sub != "user-42" || c.Cover([]string{"news", "chat:1"}) != nil || c.CanSubscribe("other") || !c.CanPublish("chat:1") {
		t.Errorf("claims = %+v", c)
	}
	req := app.lastReq.Load()
	if req.method != http.MethodPost || req.ctype != "application/json" || req.cookie != "session=good; theme=dark" ||
		!equalStrings(req.channels, []string{"news", "chat:1"}) {
		t.Errorf("app got %+v", req)
	}

	_, err = a.Authorize(ctx, subRequest("", ""), []string{"news"})
	e := asError(t, err)
	if e.Status != 401 || e.Kind != KindTicket || e.Reason != "please log in" {
		t.Errorf("refusal = %+v", e)
	}
	_, err = a.Authorize(ctx, subRequest("session=bad", ""), []string{"news"})
	wantRefusal(t, err, 401, KindTicket, nil)
}

func TestAuthorizeHeaders(t *testing.T) {
	app := &testApp{status: 200, body: `{"channels":["news"]}`}
	srv, client := startApp(t, app)
	a := newAuthorizer(t, srv.URL, time.Second, client)
	ctx := context.Background()
	tests := []struct {
		name, auth, want string
		issue            bool
	}{
		{"basic forwarded", "Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz", false},
		{"bearer ticket stripped", "Bearer some-ticket", "", false},
		{"bearer forwarded on issue", "Bearer app-token", "Bearer app-token", true},
		{"none", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := subRequest("", tc.auth)
			r.Header.Add("Cookie", "a=1")
			r.Header.Add("Cookie", "b=2") // HTTP/2 splits cookies
			var err error
			if tc.issue {
				_, err = a.AuthorizeIssue(ctx, r, []string{tc.name})
			} else {
				_, err = a.Authorize(ctx, r, []string{tc.name})
			}
			if err != nil {
				t.Fatal(err)
			}
			req := app.lastReq.Load()
			if req.auth != tc.want || req.cookie != "a=1; b=2" {
				t.Errorf("app got Authorization %q Cookie %q", req.auth, req.cookie)
			}
		})
	}
}

func TestAuthorizeStatuses(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		ctype, body  string
		wantStatus   int
		wantKind     string
		wantReason   string
		wantChannels []string
	}{
		{"401 text", 401, "text/plain", "log in first", 401, KindTicket, "log in first", nil},
		{"403 json reason", 403, "application/json", `{"reason":"not a member"}`, 403, KindScope, "not a member", nil},
		{"403 json error", 403, "application/json", `{"error":"nope"}`, 403, KindScope, "nope", nil},
		{"418 html", 418, "text/html", "<h1>teapot</h1>", 418, KindTicket, "i'm a teapot", nil},
		{"429 long text", 429, "text/plain", strings.Repeat("x", 300), 429, KindTicket, "too many requests", nil},
		{"401 control chars", 401, "text/plain", "a\x1b[31mb", 401, KindTicket, "unauthorized", nil},
		{"500", 500, "text/plain", "boom", 500, "", "boom", nil},
		{"302 login redirect", 302, "text/html", "", 401, KindTicket, errAppRedirect.Error(), nil},
		{"200 bad json", 200, "application/json", `{"channels":`, 502, "", errAppAnswer.Error(), nil},
		{"200 too large", 200, "application/json", `{"sub":"` + strings.Repeat("x", maxAnswerSize) + `"}`, 502, "", errAppAnswer.Error(), nil},
		{"204 empty", 204, "", "", 0, "", "", []string{"news"}},
		{"200 explicit channels", 200, "application/json", `{"channels":["other"]}`, 0, "", "", []string{"other"}},
		{"200 explicit empty channels", 200, "application/json", `{"channels":[]}`, 0, "", "", []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := &testApp{status: tc.status, ctype: tc.ctype, body: tc.body}
			srv, client := startApp(t, app)
			if tc.status == 302 {
				// a redirect to a page that would say 200
				mux := http.NewServeMux()
				mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") })
				mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/login", http.StatusFound) })
				srv.Config.Handler = mux
			}
			a := newAuthorizer(t, srv.URL, time.Second, client)
			c, err := a.Authorize(context.Background(), subRequest("s=1", ""), []string{"news"})
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !equalStrings(c.Channels, tc.wantChannels) {
					t.Errorf("channels = %#v, want %#v", c.Channels, tc.wantChannels)
				}
				if covered := c.CanSubscribe("news"); covered != slices.Contains(tc.wantChannels, "news") {
					t.Errorf("CanSubscribe(news) = %v", covered)
				}
				return
			}
			e := asError(t, err)
			if e.Status != tc.wantStatus || e.Kind != tc.wantKind || e.Reason != tc.wantReason {
				t.Errorf("error = status %d kind %q reason %q, want %d %q %q", e.Status, e.Kind, e.Reason, tc.wantStatus, tc.wantKind, tc.wantReason)
			}
		})
	}
}

func TestAuthorizeDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	a := newAuthorizer(t, "http://"+addr+"/authorize", time.Second, client)
	_, err = a.Authorize(context.Background(), subRequest("s=1", ""), []string{"news"})
	wantRefusal(t, err, 502, "", nil)
}

func TestAuthorizeSlow(t *testing.T) {
	app := &testApp{status: 200, delay: 5 * time.Second}
	srv, client := startApp(t, app)
	const timeout = 200 * time.Millisecond
	a := newAuthorizer(t, srv.URL, timeout, client)
	start := time.Now()
	_, err := a.Authorize(context.Background(), subRequest("s=1", ""), []string{"news"})
	took := time.Since(start)
	wantRefusal(t, err, 504, "", nil)
	if took < timeout || took > timeout+time.Second {
		t.Errorf("took %v with timeout %v", took, timeout)
	}
	// not cached: the app is asked again
	_, _ = a.Authorize(context.Background(), subRequest("s=1", ""), []string{"news"})
	if n := app.hits.Load(); n != 2 {
		t.Errorf("app hit %d times, want 2 (5xx not cached)", n)
	}
}

func TestAuthorizeCallerGone(t *testing.T) {
	app := &testApp{status: 200, delay: 5 * time.Second}
	srv, client := startApp(t, app)
	a := newAuthorizer(t, srv.URL, time.Second, client)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := a.Authorize(ctx, subRequest("s=1", ""), []string{"news"})
	var e *Error
	if errors.As(err, &e) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the caller's context error", err)
	}
}

func TestAuthorizeCache(t *testing.T) {
	app := &testApp{}
	srv, client := startApp(t, app)
	a := newAuthorizer(t, srv.URL, time.Second, client)
	// the Authorizer's clock moves only when the test moves it, so no
	// answer expires early on a slow run and expiry needs no sleep
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	ask := func(cookie string, channels ...string) error {
		c, err := a.Authorize(ctx, subRequest(cookie, ""), channels)
		if err == nil {
			c.Channels[0] = "mutated" // callers own their claims
		}
		return err
	}
	steps := []struct {
		cookie   string
		channels []string
		ok       bool
		hits     int64
	}{
		{"session=good", []string{"a", "b"}, true, 1},
		{"session=good", []string{"a", "b"}, true, 1},      // cached approval
		{"session=good", []string{"b", "a", "a"}, true, 1}, // same channel set
		{"session=good", []string{"a"}, true, 2},           // other channels
		{"", []string{"a"}, false, 3},
		{"", []string{"a"}, false, 3}, // cached refusal
		{"session=other", []string{"a"}, false, 4},
	}
	for i, s := range steps {
		err := ask(s.cookie, s.channels...)
		if (err == nil) != s.ok {
			t.Errorf("step %d: err %v", i, err)
		}
		if n := app.hits.Load(); n != s.hits {
			t.Errorf("step %d: app hit %d times, want %d", i, n, s.hits)
		}
	}
	c, err := a.Authorize(ctx, subRequest("session=good", ""), []string{"a", "b"})
	if err != nil || !equalStrings(c.Channels, []string{"a", "b"}) {
		t.Errorf("cached claims were mutated: %+v %v", c, err)
	}

	// answers expire a TTL after they were given, not before
	_ = ask("session=good", "z")
	now = now.Add(a.cache.ttl - time.Nanosecond)
	_ = ask("session=good", "z")
	if n := app.hits.Load(); n != 5 {
		t.Errorf("just before expiry app hit %d times, want 5", n)
	}
	now = now.Add(time.Nanosecond)
	_ = ask("session=good", "z")
	if n := app.hits.Load(); n != 6 {
		t.Errorf("after expiry app hit %d times, want 6", n)
	}
}

func TestAnswerCacheBound(t *testing.T) {
	c := newAnswerCache(3, time.Minute)
	now := time.Now()
	for i := range 10 {
		c.put(cacheKey(string(rune('a'+i)), "", nil), &Claims{}, nil, now)
	}
	if n := c.len(); n != 3 {
		t.Errorf("cache holds %d, want 3", n)
	}
	if _, _, ok := c.get(cacheKey("a", "", nil), now); ok {
		t.Error("oldest entry kept")
	}
	if _, _, ok := c.get(cacheKey("j", "", nil), now); !ok {
		t.Error("newest entry lost")
	}
	// distinct fields never collide
	if cacheKey("a", "b", nil) == cacheKey("ab", "", nil) || cacheKey("a", "", []string{"b"}) == cacheKey("a", "b", nil) {
		t.Error("cache keys collide")
	}
}

func TestNewAuthorizerErrors(t *testing.T) {
	for _, u := range []string{"", "/authorize", "ftp://app/authorize", "http://", "::"} {
		if _, err := NewAuthorizer(u, 0, nil, nil); err == nil {
			t.Errorf("NewAuthorizer(%q) accepted", u)
		}
	}
	a, err := NewAuthorizer("http://app.internal/authorize", 0, nil, nil)
	if err != nil || a.timeout != DefaultAuthorizeTimeout {
		t.Errorf("defaults: %v %v", a, err)
	}
	if http.DefaultClient.CheckRedirect != nil {
		t.Error("NewAuthorizer changed http.DefaultClient")
	}
}

func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
