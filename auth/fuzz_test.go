package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// asciiUpper upper-cases ASCII letters only, keeping every other byte.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzOrigins(f *testing.F) {
	for _, tc := range originTests {
		p := ""
		if len(tc.patterns) > 0 {
			p = tc.patterns[0]
		}
		f.Add(p, tc.origin, tc.host)
	}
	f.Fuzz(func(t *testing.T, pattern, org, host string) {
		var patterns []string
		if pattern != "" {
			patterns = []string{pattern}
		}
		o, err := NewOrigins(patterns)
		if err != nil {
			return
		}
		req := func(org, host string) *http.Request {
			return &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Host: host,
				Header: http.Header{"Origin": {org}}}
		}
		r := req(org, host)
		got := o.Allowed(r)
		// case-insensitive throughout
		if o2, err := NewOrigins([]string{asciiUpper(pattern)}); err == nil && pattern != "" {
			if o2.Allowed(req(asciiUpper(org), asciiUpper(host))) != got {
				t.Errorf("case changes the answer for pattern %q origin %q host %q", pattern, org, host)
			}
		}
		if strings.EqualFold(org, "null") && got != strings.EqualFold(strings.TrimSpace(pattern), "null") {
			t.Errorf("null origin allowed=%v with pattern %q", got, pattern)
		}
		if org == "" && !got {
			t.Error("request without Origin refused")
		}
		// a literal pattern allows itself as an Origin
		p := strings.TrimSuffix(strings.TrimSpace(pattern), "/")
		if pattern != "" && !strings.Contains(p, "*") && !strings.EqualFold(p, "null") && p != "" {
			if !o.Allowed(req(p, "other.invalid")) {
				t.Errorf("pattern %q refuses itself", pattern)
			}
		}
		w := httptest.NewRecorder()
		if r.Method == http.MethodGet && o.CORS(w, r) {
			t.Error("GET reported as preflight")
		}
		// an allowed origin is echoed with credentials, or gets "*"
		// without them when only "*" allows it
		v, creds := w.Header().Get("Access-Control-Allow-Origin"), w.Header().Get("Access-Control-Allow-Credentials")
		if v != "" && (!got || (v != org && v != "*") || (v == "*") == (creds == "true")) {
			t.Errorf("Allow-Origin %q, credentials %q for origin %q allowed=%v", v, creds, org, got)
		}
	})
}

func FuzzVerifyJWT(f *testing.F) {
	seedSecret := []byte("seed-secret-known-to-the-corpus!")
	for _, c := range []struct {
		m   jwt.SigningMethod
		key any
	}{
		{jwt.SigningMethodHS256, seedSecret},
		{jwt.SigningMethodHS512, seedSecret},
		{jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType},
	} {
		f.Add(sign(f, c.m, c.key, validClaims("seed")))
	}
	for _, s := range []string{"", "a.b.c", "a.b.", "..", "eyJhbGciOiJIUzI1NiJ9.e30.", "plain", "a.b.c.d",
		"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjk5OTk5OTk5OTksImp0aSI6IngifQ.AAAA"} {
		f.Add(s)
	}
	// A secret nobody outside this process knows: nothing may verify.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	hidden, err := NewTickets(TicketOptions{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	known, err := NewTickets(TicketOptions{Secret: seedSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		ctx := context.Background()
		c, err := hidden.Verify(ctx, token)
		if err == nil {
			t.Fatalf("token %q verified without the secret: %+v", token, c)
		}
		if e := asError(t, err); e.Status != http.StatusUnauthorized || e.Kind != KindTicket || e.Reason == "" {
			t.Errorf("error %+v", e)
		}
		// with the corpus's secret: no panic, and only HS256 verifies
		if c, err := known.Verify(ctx, token); err == nil {
			tok, _, perr := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
			if perr != nil || tok.Method != jwt.SigningMethodHS256 || c == nil {
				t.Errorf("accepted %q (%v)", token, perr)
			}
		}
	})
}

func globRegexp(pattern string) *regexp.Regexp {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
}

func FuzzGlob(f *testing.F) {
	for _, tc := range globTests {
		f.Add(tc.pattern, tc.name)
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 200 || len(name) > 400 {
			return
		}
		got := Glob(pattern, name)
		if !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return
		}
		if want := globRegexp(pattern).MatchString(name); got != want {
			t.Errorf("Glob(%q, %q) = %v, want %v", pattern, name, got, want)
		}
	})
}

func FuzzClaimsJSON(f *testing.F) {
	for _, tc := range claimsJSONTests {
		f.Add([]byte(tc.in), "news")
		f.Add([]byte(tc.in), "chat:1")
	}
	f.Fuzz(func(t *testing.T, data []byte, ch string) {
		c, err := parseClaims(data)
		if err != nil {
			return
		}
		if c.CanSubscribe(ch) != matchAny(c.Channels, ch) || c.CanPublish(ch) != matchAny(c.Publish, ch) {
			t.Error("inconsistent")
		}
		if (c.Cover([]string{ch}) == nil) != c.CanSubscribe(ch) {
			t.Error("Cover disagrees with CanSubscribe")
		}
		// round trip
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := parseClaims(b)
		if err != nil {
			t.Fatalf("re-parse %s: %v", b, err)
		}
		if c2.Sub != c.Sub || !equalStrings(c2.Channels, c.Channels) || !equalStrings(c2.Publish, c.Publish) {
			t.Errorf("round trip %+v != %+v", c2, c)
		}
		if c.CanSubscribe(ch) != c2.CanSubscribe(ch) {
			t.Error("round trip changes rights")
		}
	})
}
