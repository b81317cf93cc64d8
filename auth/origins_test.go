package auth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func originRequest(method, host, origin string, secure bool) *http.Request {
	r := httptest.NewRequest(method, "http://"+host+"/hub", nil)
	r.Host = host
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	if secure {
		r.TLS = &tls.ConnectionState{}
	}
	return r
}

var originTests = []struct {
	name     string
	patterns []string
	host     string
	secure   bool
	origin   string
	want     bool
}{
	{"no origin, no patterns", nil, "hub.example.com", true, "", true},
	{"no origin, patterns", []string{"https://app.example.com"}, "hub.example.com", true, "", true},
	{"same host default", nil, "hub.example.com", true, "https://hub.example.com", true},
	{"same host explicit default port", nil, "hub.example.com", true, "https://hub.example.com:443", true},
	{"same host, host header with port", nil, "hub.example.com:443", true, "https://hub.example.com", true},
	{"same host, other port", nil, "hub.example.com:8443", true, "https://hub.example.com", false},
	{"same host, non-default port", nil, "localhost:8080", false, "http://localhost:8080", true},
	{"same host, scheme differs", nil, "hub.example.com", false, "https://hub.example.com", false},
	{"same host, case", nil, "Hub.Example.COM", true, "HTTPS://hub.EXAMPLE.com", true},
	{"cross origin, no patterns", nil, "hub.example.com", true, "https://evil.example.net", false},
	{"same host with patterns", []string{"https://app.example.com"}, "hub.example.com", true, "https://hub.example.com", true},
	{"exact", []string{"https://app.example.com"}, "hub.example.com", true, "https://app.example.com", true},
	{"exact, case", []string{"HTTPS://App.Example.com"}, "hub.example.com", true, "https://APP.example.COM", true},
	{"exact, trailing slash in pattern", []string{"https://app.example.com/"}, "hub.example.com", true, "https://app.example.com", true},
	{"exact, other host", []string{"https://app.example.com"}, "hub.example.com", true, "https://app2.example.com", false},
	{"exact, scheme differs", []string{"https://app.example.com"}, "hub.example.com", true, "http://app.example.com", false},
	{"exact, explicit default port", []string{"https://app.example.com"}, "hub.example.com", true, "https://app.example.com:443", true},
	{"exact, other port", []string{"https://app.example.com"}, "hub.example.com", true, "https://app.example.com:8443", false},
	{"pattern port", []string{"https://app.example.com:8443"}, "hub.example.com", true, "https://app.example.com:8443", true},
	{"pattern port, default given", []string{"https://app.example.com:8443"}, "hub.example.com", true, "https://app.example.com", false},
	{"port wildcard", []string{"http://localhost:*"}, "hub.example.com", true, "http://localhost:3000", true},
	{"port wildcard, no port", []string{"http://localhost:*"}, "hub.example.com", true, "http://localhost", true},
	{"port wildcard, scheme", []string{"http://localhost:*"}, "hub.example.com", true, "https://localhost:3000", false},
	{"wildcard label", []string{"https://*.example.com"}, "hub.example.net", true, "https://app.example.com", true},
	{"wildcard label, apex", []string{"https://*.example.com"}, "hub.example.net", true, "https://example.com", false},
	{"wildcard label, two labels", []string{"https://*.example.com"}, "hub.example.net", true, "https://a.b.example.com", false},
	{"wildcard label, suffix trick", []string{"https://*.example.com"}, "hub.example.net", true, "https://app.example.com.evil.net", false},
	{"wildcard label, suffix trick 2", []string{"https://*.example.com"}, "hub.example.net", true, "https://appexample.com", false},
	{"wildcard middle", []string{"https://app.*.example.com"}, "hub.example.net", true, "https://app.eu.example.com", true},
	{"two wildcards", []string{"https://*.*.example.com"}, "hub.example.net", true, "https://a.b.example.com", true},
	{"any", []string{"*"}, "hub.example.com", true, "https://whatever.example.org:1234", true},
	{"any, not null", []string{"*"}, "hub.example.com", true, "null", false},
	{"null refused by default", nil, "hub.example.com", true, "null", false},
	{"null refused with patterns", []string{"https://app.example.com"}, "hub.example.com", true, "null", false},
	{"null listed", []string{"null"}, "hub.example.com", true, "null", true},
	{"null listed, case", []string{"NULL"}, "hub.example.com", true, "Null", true},
	{"garbage origin", []string{"*"}, "hub.example.com", true, "not an origin", false},
	{"origin with path", []string{"https://app.example.com"}, "hub.example.com", true, "https://app.example.com/x", false},
	{"origin with userinfo", []string{"https://app.example.com"}, "hub.example.com", true, "https://u@app.example.com", false},
	{"origin with empty label", []string{"https://*.example.com"}, "hub.example.com", true, "https://.example.com", false},
	{"ipv6", []string{"http://[::1]:8080"}, "hub.example.com", true, "http://[::1]:8080", true},
	{"ipv6 same host", nil, "[::1]:8080", false, "http://[::1]:8080", true},
	{"other scheme", []string{"capacitor://localhost"}, "hub.example.com", true, "capacitor://localhost", true},
	{"several patterns", []string{"https://a.example.com", "https://b.example.com"}, "hub.example.com", true, "https://b.example.com", true},
}

func TestOriginsAllowed(t *testing.T) {
	for _, tc := range originTests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := NewOrigins(tc.patterns)
			if err != nil {
				t.Fatal(err)
			}
			r := originRequest(http.MethodGet, tc.host, tc.origin, tc.secure)
			if got := o.Allowed(r); got != tc.want {
				t.Errorf("Allowed(Origin %q, Host %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
			}
			err = o.Check(r)
			if (err == nil) != tc.want {
				t.Errorf("Check = %v, want allowed %v", err, tc.want)
			}
			if err != nil {
				e := asError(t, err)
				if e.Status != http.StatusForbidden || e.Kind != KindOrigin {
					t.Errorf("Check error = %+v, want 403 origin", e)
				}
			}
		})
	}
}

func TestOriginsNil(t *testing.T) {
	var o *Origins
	if !o.Allowed(originRequest(http.MethodGet, "h.example.com", "https://h.example.com", true)) {
		t.Error("nil Origins refused same host")
	}
	if o.Allowed(originRequest(http.MethodGet, "h.example.com", "https://x.example.com", true)) {
		t.Error("nil Origins allowed cross origin")
	}
}

func TestNewOriginsErrors(t *testing.T) {
	bad := []string{
		"",
		"app.example.com",
		"//app.example.com",
		"https://",
		"https://app.example.com/path",
		"https://app.example.com?q",
		"https://user@app.example.com",
		"https://app-*.example.com",
		"https://app..example.com",
		"https://app.example.com:99999",
		"https://app.example.com:abc",
		"https://app.example.com:",
		"https://::1",
		"https://[::1",
		"https://[example]",
		"*://app.example.com",
		"1http://app.example.com",
	}
	for _, p := range bad {
		t.Run(p, func(t *testing.T) {
			if _, err := NewOrigins([]string{p}); err == nil {
				t.Errorf("NewOrigins(%q) accepted", p)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	o, err := NewOrigins([]string{"https://app.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		method     string
		origin     string
		reqMethod  string
		reqHeaders string
		preflight  bool
		allowed    bool
		allowHdrs  string
	}{
		{name: "no origin", method: "GET"},
		{name: "allowed get", method: "GET", origin: "https://app.example.com", allowed: true},
		{name: "disallowed get", method: "GET", origin: "https://evil.example.com"},
		{name: "preflight", method: "OPTIONS", origin: "https://app.example.com", reqMethod: "POST",
			reqHeaders: "authorization, content-type, last-event-id", preflight: true, allowed: true,
			allowHdrs: "authorization, content-type, last-event-id"},
		{name: "preflight no headers", method: "OPTIONS", origin: "https://app.example.com", reqMethod: "GET",
			preflight: true, allowed: true, allowHdrs: defaultAllowHeaders},
		{name: "preflight bad headers", method: "OPTIONS", origin: "https://app.example.com", reqMethod: "GET",
			reqHeaders: "x\r\ny: z", preflight: true, allowed: true, allowHdrs: defaultAllowHeaders},
		{name: "disallowed preflight", method: "OPTIONS", origin: "https://evil.example.com", reqMethod: "GET", preflight: true},
		{name: "options without request method", method: "OPTIONS", origin: "https://app.example.com", allowed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := originRequest(tc.method, "hub.example.com", tc.origin, true)
			if tc.reqMethod != "" {
				r.Header.Set("Access-Control-Request-Method", tc.reqMethod)
			}
			if tc.reqHeaders != "" {
				r.Header["Access-Control-Request-Headers"] = []string{tc.reqHeaders}
			}
			w := httptest.NewRecorder()
			w.Header().Add("Vary", "Accept-Encoding")
			if got := o.CORS(w, r); got != tc.preflight {
				t.Errorf("preflight = %v, want %v", got, tc.preflight)
			}
			h := w.Header()
			vary := strings.Join(h.Values("Vary"), ",")
			if tc.origin != "" && !strings.Contains(vary, "Origin") {
				t.Errorf("Vary = %q, want Origin", vary)
			}
			if tc.origin == "" && vary != "Accept-Encoding" {
				t.Errorf("Vary = %q without Origin", vary)
			}
			if !tc.allowed {
				for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods"} {
					if v := h.Get(k); v != "" {
						t.Errorf("%s = %q, want none", k, v)
					}
				}
				return
			}
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.origin {
				t.Errorf("Allow-Origin = %q, want %q", got, tc.origin)
			}
			if got := h.Get("Access-Control-Allow-Credentials"); got != "true" {
				t.Errorf("Allow-Credentials = %q", got)
			}
			if !tc.preflight {
				if v := h.Get("Access-Control-Allow-Methods"); v != "" {
					t.Errorf("Allow-Methods on a non-preflight: %q", v)
				}
				return
			}
			if got := h.Get("Access-Control-Allow-Methods"); got != "GET, POST, OPTIONS" {
				t.Errorf("Allow-Methods = %q", got)
			}
			if got := h.Get("Access-Control-Allow-Headers"); got != tc.allowHdrs {
				t.Errorf("Allow-Headers = %q, want %q", got, tc.allowHdrs)
			}
			if got := h.Get("Access-Control-Max-Age"); got != "600" {
				t.Errorf("Max-Age = %q", got)
			}
		})
	}
}

func TestCORSVaryOnce(t *testing.T) {
	o, _ := NewOrigins(nil)
	r := originRequest(http.MethodGet, "hub.example.com", "https://hub.example.com", true)
	w := httptest.NewRecorder()
	o.CORS(w, r)
	o.CORS(w, r)
	if got := w.Header().Values("Vary"); len(got) != 1 || got[0] != "Origin" {
		t.Errorf("Vary = %q", got)
	}
}

// TestCORSAnyWithoutCredentials: an origin allowed only by "*" gets
// "Access-Control-Allow-Origin: *" and no credentials, so no site reads
// what the user's cookies unlock; same-host, listed and wildcard-label
// origins keep the echo and credentials.
func TestCORSAnyWithoutCredentials(t *testing.T) {
	o, err := NewOrigins([]string{"*", "https://app.example.com", "https://*.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		origin, allowOrigin string
		credentials         bool
	}{
		{"https://evil.attacker.net", "*", false},
		{"https://app.example.com", "https://app.example.com", true},
		{"https://x.example.net", "https://x.example.net", true},
		{"https://hub.example.com", "https://hub.example.com", true}, // same host
	}
	for _, tc := range tests {
		for _, method := range []string{http.MethodGet, http.MethodOptions} {
			r := originRequest(method, "hub.example.com", tc.origin, true)
			if method == http.MethodOptions {
				r.Header.Set("Access-Control-Request-Method", "POST")
			}
			w := httptest.NewRecorder()
			o.CORS(w, r)
			h := w.Header()
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Errorf("%s %s: Allow-Origin %q, want %q", method, tc.origin, got, tc.allowOrigin)
			}
			if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != tc.credentials {
				t.Errorf("%s %s: credentials %v, want %v", method, tc.origin, got, tc.credentials)
			}
			if got := o.Credentialed(r); got != tc.credentials {
				t.Errorf("%s %s: Credentialed %v, want %v", method, tc.origin, got, tc.credentials)
			}
		}
	}
}
