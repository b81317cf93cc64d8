package integration_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Hostile clients: a signed ticket is short-lived. One whose exp lies
// more than max_ttl ahead, or whose iat or nbf lies more than 30 s ahead,
// is a 401; a little clock skew is tolerated.
func TestSignedTicketLifetimes(t *testing.T) {
	t.Parallel()
	for _, maxTTL := range []string{"", "5m"} {
		t.Run("max_ttl="+maxTTL, func(t *testing.T) {
			t.Parallel()
			tb := ticketBlock("secret " + jwtSecret)
			limit := time.Hour
			if maxTTL != "" {
				tb = ticketBlock("secret "+jwtSecret, "max_ttl "+maxTTL)
				limit = 5 * time.Minute
			}
			c := startAuthSite(t, authConfig{Hub: tb}).c
			get := func(claim string, d time.Duration) reply {
				claims := userClaims()
				claims[claim] = time.Now().Add(d).Unix()
				tok := signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), claims)
				return do(t, "GET", c.URL("/hub?channel=news&ticket="+url.QueryEscape(tok)), sseHeader(), "")
			}
			expect(t, "exp 100 years ahead", get("exp", 100*365*24*time.Hour), 401, "max_ttl")
			expect(t, "exp just past max_ttl", get("exp", limit+time.Minute), 401, "max_ttl")
			expect(t, "exp within max_ttl", get("exp", limit-time.Minute), 200, "")
			expect(t, "iat an hour ahead", get("iat", time.Hour), 401, "not valid yet")
			expect(t, "nbf an hour ahead", get("nbf", time.Hour), 401, "not valid yet")
			expect(t, "iat 10 s ahead (clock skew)", get("iat", 10*time.Second), 200, "")
		})
	}
}

// Hostile clients: the Bearer scheme is matched case-insensitively, as
// HTTP requires, for the publish key and for tickets.
func TestBearerAnyCase(t *testing.T) {
	t.Parallel()
	c := startAuthSite(t, authConfig{Hub: "publish_key backend-key\n\t\t" + ticketBlock("secret "+jwtSecret)}).c
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		publish := do(t, "POST", c.URL("/hub?channel=news"), http.Header{"Authorization": {scheme + " backend-key"}}, "x")
		expect(t, scheme+" publish key", publish, 200, "")
		tok := signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())
		sub := do(t, "GET", c.URL("/hub?channel=news"), sseHeader("Authorization", scheme+" "+tok), "")
		expect(t, scheme+" ticket", sub, 200, "")
	}
	expect(t, "another scheme", do(t, "POST", c.URL("/hub?channel=news"), http.Header{"Authorization": {"Basic backend-key"}}, "x"), 401, "")
}
