package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func newTickets(t testing.TB, opts TicketOptions) *Tickets {
	t.Helper()
	tk, err := NewTickets(opts)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// sign makes a JWT with claims, signed by method with key.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims(jti string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":      "user-42",
		"channels": []string{"news", "chat:*"},
		"publish":  []string{"chat:*"},
		"exp":      time.Now().Add(time.Minute).Unix(),
		"jti":      jti,
	}
}

// timed returns valid claims whose time claim (exp, iat or nbf) lies d
// from now.
func timed(jti, claim string, d time.Duration) jwt.MapClaims {
	c := validClaims(jti)
	c[claim] = time.Now().Add(d).Unix()
	return c
}

func wantRefusal(t testing.TB, err error, status int, kind string, sentinel error) {
	t.Helper()
	e := asError(t, err)
	if e.Status != status || e.Kind != kind {
		t.Errorf("error %q: status %d kind %q, want %d %q", e.Reason, e.Status, e.Kind, status, kind)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("error %q is not %q", e.Reason, sentinel)
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		url, auth, want string
	}{
		{"/hub?ticket=abc", "", "abc"},
		{"/hub?ticket=abc", "Bearer xyz", "abc"},
		{"/hub", "Bearer xyz", "xyz"},
		{"/hub", "bearer   xyz  ", "xyz"},
		{"/hub", "Basic dXNlcjpwYXNz", ""},
		{"/hub", "Bearer", ""},
		{"/hub?ticket=", "", ""},
		{"/hub", "", ""},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodGet, tc.url, nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		if got := TokenFromRequest(r); got != tc.want {
			t.Errorf("TokenFromRequest(%q, %q) = %q, want %q", tc.url, tc.auth, got, tc.want)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	tests := map[string]bool{
		"a.b.c":              true,
		"eyJ.eyJ.sig-_":      true,
		"a.b":                false,
		"a.b.c.d":            false,
		"a..c":               false,
		".b.c":               false,
		"a.b.":               true,
		"a..":                false,
		"a.b.c=":             false,
		"plain-redis-ticket": false,
		"":                   false,
	}
	for tok, want := range tests {
		if got := looksLikeJWT(tok); got != want {
			t.Errorf("looksLikeJWT(%q) = %v", tok, got)
		}
	}
}

func TestRedisTicket(t *testing.T) {
	s := testredis.Start(t)
	rdb := s.Client()
	core, logs := observer.New(zapcore.DebugLevel)
	tk := newTickets(t, TicketOptions{Redis: rdb, Logger: zap.New(core)})
	ctx := context.Background()

	if err := rdb.Set(ctx, "realtime:ticket:t1", `{"sub":"user-42","channels":["news","chat:*"],"publish":["chat:*"]}`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := tk.Verify(ctx, "t1")
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	if c.Sub != "user-42" || !c.CanSubscribe("chat:1") || !c.CanPublish("chat:1") || c.CanPublish("news") {
		t.Errorf("claims = %+v", c)
	}
	_, err = tk.Verify(ctx, "t1")
	wantRefusal(t, err, 401, KindTicket, errTicketUnknown)

	_, err = tk.Verify(ctx, "never-stored")
	wantRefusal(t, err, 401, KindTicket, errTicketUnknown)

	_, err = tk.Verify(ctx, "")
	wantRefusal(t, err, 401, KindTicket, errNoTicket)

	_, err = tk.Verify(ctx, strings.Repeat("x", maxTokenLen+1))
	wantRefusal(t, err, 401, KindTicket, errTicketTooLong)

	// A JWT-shaped token without a secret is a Redis key like any other.
	if err := rdb.Set(ctx, "realtime:ticket:a.b.c", `{"channels":["x"]}`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify(ctx, "a.b.c"); err != nil {
		t.Errorf("JWT-shaped Redis ticket: %v", err)
	}

	// Bad JSON: 401 with a reason, logged once, without the token.
	const secretTicket = "bad-json-ticket-value"
	if err := rdb.Set(ctx, "realtime:ticket:"+secretTicket, `{"channels":`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = tk.Verify(ctx, secretTicket)
	wantRefusal(t, err, 401, KindTicket, errTicketClaims)
	if n := logs.FilterMessage("stored ticket has invalid claims JSON").Len(); n != 1 {
		t.Errorf("bad claims logged %d times, want 1", n)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, secretTicket) || strings.Contains(e.ContextMap()["error"].(string), secretTicket) {
			t.Errorf("log leaks the ticket: %+v", e)
		}
	}
	// consumed even though bad
	if n, _ := rdb.Exists(ctx, "realtime:ticket:"+secretTicket).Result(); n != 0 {
		t.Error("bad ticket left in Redis")
	}
}

func TestRedisTicketPrefix(t *testing.T) {
	s := testredis.Start(t)
	rdb := s.Client()
	tk := newTickets(t, TicketOptions{Redis: rdb, Prefix: "app1:"})
	ctx := context.Background()
	rdb.Set(ctx, "realtime:ticket:t", `{}`, time.Minute)
	rdb.Set(ctx, "app1:ticket:t", `{"channels":["a"]}`, time.Minute)
	c, err := tk.Verify(ctx, "t")
	if err != nil || !c.CanSubscribe("a") {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
}

func TestRedisDown(t *testing.T) {
	s := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	tk := newTickets(t, TicketOptions{Redis: rdb, Secret: testSecret})
	s.Kill()
	ctx := context.Background()
	_, err := tk.Verify(ctx, "t1")
	wantRefusal(t, err, 503, "", nil)
	_, err = tk.Verify(ctx, sign(t, jwt.SigningMethodHS256, testSecret, validClaims("j1")))
	wantRefusal(t, err, 503, "", nil)
	_, _, err = tk.Issue(ctx, &Claims{Channels: []string{"a"}})
	wantRefusal(t, err, 503, "", nil)
}

func TestJWT(t *testing.T) {
	tests := []struct {
		name     string
		token    func(t *testing.T) string
		sentinel error // nil: valid
	}{
		{"valid", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, validClaims("valid"))
		}, nil},
		{"expired", func(t *testing.T) string {
			c := validClaims("expired")
			c["exp"] = time.Now().Add(-time.Second).Unix()
			return sign(t, jwt.SigningMethodHS256, testSecret, c)
		}, errTicketExpired},
		{"not yet valid", func(t *testing.T) string {
			c := validClaims("nbf")
			c["nbf"] = time.Now().Add(time.Hour).Unix()
			return sign(t, jwt.SigningMethodHS256, testSecret, c)
		}, errTicketNotYet},
		{"not yet valid, within the clock skew", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("nbf-skew", "nbf", 20*time.Second))
		}, nil},
		{"not before 31s ahead", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("nbf-31", "nbf", 31*time.Second))
		}, errTicketNotYet},
		{"issued within the clock skew", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("iat-skew", "iat", 20*time.Second))
		}, nil},
		{"issued 31s ahead", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("iat-31", "iat", 31*time.Second))
		}, errTicketNotYet},
		{"expiring within max_ttl", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("exp-59m", "exp", 59*time.Minute))
		}, nil},
		{"expiring past max_ttl", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("exp-61m", "exp", 61*time.Minute))
		}, errTicketLongLived},
		{"expiring in 100 years", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, timed("exp-100y", "exp", 100*365*24*time.Hour))
		}, errTicketLongLived},
		{"wrong signature", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes!!!"), validClaims("wrongsig"))
		}, errTicketSignature},
		{"tampered payload", func(t *testing.T) string {
			tok := sign(t, jwt.SigningMethodHS256, testSecret, validClaims("tampered"))
			parts := strings.Split(tok, ".")
			c := validClaims("tampered")
			c["channels"] = []string{"*"}
			other := strings.Split(sign(t, jwt.SigningMethodHS256, []byte("x"), c), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}, errTicketSignature},
		{"alg none", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims("none"))
		}, errTicketAlg},
		{"alg none, unsigned with secret-signed header swap", func(t *testing.T) string {
			tok := sign(t, jwt.SigningMethodHS256, testSecret, validClaims("none2"))
			parts := strings.Split(tok, ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
			return hdr + "." + parts[1] + "." + parts[2]
		}, errTicketAlg},
		{"alg HS512", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS512, testSecret, validClaims("hs512"))
		}, errTicketAlg},
		{"alg unknown", func(t *testing.T) string {
			tok := sign(t, jwt.SigningMethodHS256, testSecret, validClaims("unknown"))
			parts := strings.Split(tok, ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"XY999","typ":"JWT"}`))
			return hdr + "." + parts[1] + "." + parts[2]
		}, errTicketAlg},
		{"malformed base64", func(t *testing.T) string { return "abc.def.ghi" }, errTicketMalformed},
		{"malformed json", func(t *testing.T) string {
			b := base64.RawURLEncoding.EncodeToString
			return b([]byte(`{"alg":"HS256"}`)) + "." + b([]byte(`{"exp":`)) + ".sig"
		}, errTicketMalformed},
		{"wrong claim type", func(t *testing.T) string {
			c := validClaims("type")
			c["channels"] = "news"
			return sign(t, jwt.SigningMethodHS256, testSecret, c)
		}, errTicketMalformed},
		{"missing exp", func(t *testing.T) string {
			c := validClaims("noexp")
			delete(c, "exp")
			return sign(t, jwt.SigningMethodHS256, testSecret, c)
		}, errTicketNoExp},
		{"missing jti", func(t *testing.T) string {
			c := validClaims("")
			delete(c, "jti")
			return sign(t, jwt.SigningMethodHS256, testSecret, c)
		}, errTicketNoJTI},
		{"jti too long", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, testSecret, validClaims(strings.Repeat("j", maxJTILen+1)))
		}, errTicketJTILong},
	}
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			opts := TicketOptions{Secret: testSecret}
			if store == "redis" {
				opts.Redis = testredis.Start(t).Client()
			}
			tk := newTickets(t, opts)
			ctx := context.Background()
			// A token that is no JWT is looked up in Redis, if any.
			_, err := tk.Verify(ctx, "plain-token")
			if store == "redis" {
				wantRefusal(t, err, 401, KindTicket, errTicketUnknown)
			} else {
				wantRefusal(t, err, 401, KindTicket, errTicketMalformed)
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					tok := tc.token(t)
					c, err := tk.Verify(ctx, tok)
					if tc.sentinel != nil {
						wantRefusal(t, err, 401, KindTicket, tc.sentinel)
						return
					}
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					if c.Sub != "user-42" || !c.CanSubscribe("news") || !c.CanSubscribe("chat:x") || !c.CanPublish("chat:x") || c.CanPublish("news") {
						t.Errorf("claims = %+v", c)
					}
					// each jti once
					_, err = tk.Verify(ctx, tok)
					wantRefusal(t, err, 401, KindTicket, errTicketReused)
					// also when re-signed with the same jti
					_, err = tk.Verify(ctx, sign(t, jwt.SigningMethodHS256, testSecret, validClaims("valid")))
					wantRefusal(t, err, 401, KindTicket, errTicketReused)
				})
			}
		})
	}
}

func TestJWTReuseAcrossNodes(t *testing.T) {
	rdb := testredis.Start(t).Client()
	a := newTickets(t, TicketOptions{Secret: testSecret, Redis: rdb})
	b := newTickets(t, TicketOptions{Secret: testSecret, Redis: rdb})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, validClaims("shared"))
	ctx := context.Background()
	if _, err := a.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	_, err := b.Verify(ctx, tok)
	wantRefusal(t, err, 401, KindTicket, errTicketReused)
	ttl, err := rdb.TTL(ctx, "realtime:jti:shared").Result()
	if err != nil || ttl <= jtiSkew || ttl > jtiSkew+2*time.Minute {
		t.Errorf("jti TTL = %v, %v", ttl, err)
	}
}

// TestMaxTTL: a configured max_ttl bounds signed tickets, and issuing
// tickets that would outlive it is a configuration error.
func TestMaxTTL(t *testing.T) {
	tk := newTickets(t, TicketOptions{Secret: testSecret, MaxTTL: 5 * time.Minute})
	ctx := context.Background()
	_, err := tk.Verify(ctx, sign(t, jwt.SigningMethodHS256, testSecret, timed("a", "exp", 6*time.Minute)))
	wantRefusal(t, err, 401, KindTicket, errTicketLongLived)
	if _, err := tk.Verify(ctx, sign(t, jwt.SigningMethodHS256, testSecret, timed("b", "exp", 4*time.Minute))); err != nil {
		t.Fatalf("a ticket within max_ttl: %v", err)
	}
	if _, err := NewTickets(TicketOptions{Secret: testSecret, TTL: 2 * time.Hour}); err == nil {
		t.Fatal("ttl above the default max_ttl accepted")
	}
}

func TestJTIMemoryBound(t *testing.T) {
	now := time.Now()
	tk := newTickets(t, TicketOptions{Secret: testSecret, MaxJTIs: 2})
	tk.now = func() time.Time { return now }
	ctx := context.Background()
	mk := func(jti string, exp time.Time) string {
		c := validClaims(jti)
		c["exp"] = exp.Unix()
		return sign(t, jwt.SigningMethodHS256, testSecret, c)
	}
	if _, err := tk.Verify(ctx, mk("a", now.Add(10*time.Second))); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify(ctx, mk("b", now.Add(20*time.Second))); err != nil {
		t.Fatal(err)
	}
	_, err := tk.Verify(ctx, mk("c", now.Add(time.Minute)))
	wantRefusal(t, err, 503, "", errJTIFull)
	// after a's exp, a is forgotten and c fits
	now = now.Add(11 * time.Second)
	if _, err := tk.Verify(ctx, mk("c", now.Add(time.Minute))); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := tk.jtis.len(); n != 2 {
		t.Errorf("jti set holds %d", n)
	}
	// b is still remembered
	_, err = tk.Verify(ctx, mk("b", now.Add(20*time.Second)))
	wantRefusal(t, err, 401, KindTicket, errTicketReused)
}

func TestNoStore(t *testing.T) {
	tk := newTickets(t, TicketOptions{})
	ctx := context.Background()
	_, err := tk.Verify(ctx, "abc")
	wantRefusal(t, err, 401, KindTicket, errTicketsOff)
	_, err = tk.Verify(ctx, sign(t, jwt.SigningMethodHS256, testSecret, validClaims("x")))
	wantRefusal(t, err, 401, KindTicket, errTicketsOff)
	_, _, err = tk.Issue(ctx, &Claims{})
	wantRefusal(t, err, 500, "", nil)
}

func TestIssueVerify(t *testing.T) {
	claims := &Claims{Sub: "user-7", Channels: []string{"news", "chat:*"}, Publish: []string{"chat:1"}}
	for _, store := range []string{"redis", "jwt", "redis+jwt"} {
		t.Run(store, func(t *testing.T) {
			var opts TicketOptions
			s := (*testredis.Server)(nil)
			if strings.Contains(store, "redis") {
				s = testredis.Start(t)
				opts.Redis = s.Client()
			}
			if strings.Contains(store, "jwt") {
				opts.Secret = testSecret
			}
			opts.TTL = 45 * time.Second
			tk := newTickets(t, opts)
			ctx := context.Background()
			tok, expiresIn, err := tk.Issue(ctx, claims)
			if err != nil {
				t.Fatal(err)
			}
			if expiresIn != 45*time.Second {
				t.Errorf("expiresIn = %v", expiresIn)
			}
			if s != nil {
				// Redis wins when both are configured.
				if looksLikeJWT(tok) || len(tok) != 43 {
					t.Errorf("redis ticket %q", tok)
				}
				ttl, err := opts.Redis.TTL(ctx, "realtime:ticket:"+tok).Result()
				if err != nil || ttl <= 40*time.Second || ttl > 45*time.Second {
					t.Errorf("ticket TTL %v, %v", ttl, err)
				}
			} else {
				if !looksLikeJWT(tok) {
					t.Fatalf("jwt ticket %q", tok)
				}
				var rc jwt.RegisteredClaims
				if _, _, err := jwt.NewParser().ParseUnverified(tok, &rc); err != nil {
					t.Fatal(err)
				}
				if left := time.Until(rc.ExpiresAt.Time); left < 44*time.Second || left > 46*time.Second {
					t.Errorf("exp in %v", left)
				}
				if rc.ID == "" || rc.Subject != "user-7" {
					t.Errorf("registered claims %+v", rc)
				}
			}
			c, err := tk.Verify(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			if c.Sub != claims.Sub || !equalStrings(c.Channels, claims.Channels) || !equalStrings(c.Publish, claims.Publish) {
				t.Errorf("round trip %+v, want %+v", c, claims)
			}
			_, err = tk.Verify(ctx, tok)
			wantRefusal(t, err, 401, KindTicket, nil)
		})
	}
}

func TestIssueUnique(t *testing.T) {
	tk := newTickets(t, TicketOptions{Secret: testSecret})
	seen := map[string]bool{}
	for range 100 {
		tok, _, err := tk.Issue(context.Background(), &Claims{Channels: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] {
			t.Fatal("duplicate ticket")
		}
		seen[tok] = true
	}
}

func TestNoSecretsLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	short := []byte("short-secret-value")
	tk := newTickets(t, TicketOptions{Secret: short, Logger: zap.New(core), MaxJTIs: 1})
	ctx := context.Background()
	tok1 := sign(t, jwt.SigningMethodHS256, short, validClaims("one"))
	tok2 := sign(t, jwt.SigningMethodHS256, short, validClaims("two"))
	_, _ = tk.Verify(ctx, tok1)
	_, _ = tk.Verify(ctx, tok2) // full: logged
	if logs.Len() < 2 {
		t.Errorf("want the short-secret and full-set warnings, got %d entries", logs.Len())
	}
	var buf bytes.Buffer
	for _, e := range logs.All() {
		buf.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			buf.WriteString(k)
			buf.WriteString(strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(toString(v), "\n", ""), " ", "")))
		}
	}
	for _, s := range []string{string(short), tok1, tok2} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("logs contain a secret or token")
		}
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case error:
		return v.Error()
	}
	return ""
}

func (s *jtiSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}
