package integration_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

// Hostile clients: `origins *` lets every site in, but never with the
// user's credentials. A foreign site gets "Access-Control-Allow-Origin: *"
// without credentials (browsers withhold the answer to a request made
// with cookies), and the app is asked about its requests without the
// user's cookies, so no other site gets a ticket or a stream the cookie
// unlocks. Listed origins keep the echo, the credentials and the cookie.
func TestOriginsAnyWithoutCredentials(t *testing.T) {
	t.Parallel()
	app := newAuthApp(t)
	tb := ticketBlock("secret "+jwtSecret, "issue /hub/ticket", "authorize "+app.url+"/auth")
	c := startAuthSite(t, authConfig{Hub: "origins * https://app.example.com\n\t\t" + tb}).c
	const evil, listed = "https://evil.attacker.net", "https://app.example.com"
	withCookie := func(origin string, kv ...string) http.Header {
		h := http.Header{"Cookie": {"session=good"}, "Origin": {origin}, "Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	cors := func(t *testing.T, what string, r reply, allowOrigin string, credentials bool) {
		t.Helper()
		if got := r.header.Get("Access-Control-Allow-Origin"); got != allowOrigin {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got, allowOrigin)
		}
		if got := r.header.Get("Access-Control-Allow-Credentials") == "true"; got != credentials {
			t.Errorf("%s: credentials allowed %v, want %v", what, got, credentials)
		}
	}

	r := do(t, "POST", c.URL("/hub/ticket"), withCookie(evil), `{"channels":["news"]}`)
	expect(t, "a foreign site asking for a ticket with the user's cookie", r, 401, "please log in")
	cors(t, "foreign ticket request", r, "*", false)
	if call := app.lastCall(t); call.cookie != "" {
		t.Fatalf("the app got the user's cookie %q for a foreign site", call.cookie)
	}
	r = do(t, "GET", c.URL("/hub?channel=news"), withCookie(evil), "")
	expect(t, "a foreign site's long-poll with the user's cookie", r, 401, "please log in")
	cors(t, "foreign long-poll", r, "*", false)
	r = do(t, "GET", c.URL("/hub?channel=news"), withCookie(evil, "Accept", "text/event-stream"), "")
	expect(t, "a foreign site's event stream with the user's cookie", r, 401, "please log in")
	if got := wsStatus(t, c.URL("/hub?channel=news"), withCookie(evil), ""); got != 401 {
		t.Fatalf("a foreign site's WebSocket with the user's cookie: status %d, want 401", got)
	}
	r = do(t, "OPTIONS", c.URL("/hub/ticket"), http.Header{"Origin": {evil}, "Access-Control-Request-Method": {"POST"}}, "")
	cors(t, "foreign preflight", r, "*", false)

	// a listed origin acts with the user's cookie
	r = do(t, "POST", c.URL("/hub/ticket"), withCookie(listed), `{"channels":["news"]}`)
	expect(t, "a listed site asking for a ticket", r, 200, "")
	cors(t, "listed ticket request", r, listed, true)
	var got struct {
		Ticket string `json:"ticket"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || got.Ticket == "" {
		t.Fatalf("ticket answer %q: %v", r.body, err)
	}
	// a ticket, given to a foreign page explicitly, works from there:
	// `origins *` is for public streams opened with a ticket
	r = do(t, "GET", c.URL("/hub?channel=news&ticket="+url.QueryEscape(got.Ticket)), sseHeader("Origin", evil), "")
	expect(t, "a foreign site with a ticket", r, 200, "")
	cors(t, "foreign stream with a ticket", r, "*", false)
}
