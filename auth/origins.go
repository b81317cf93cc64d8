package auth

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Origins decides which Origin headers are allowed. The zero value and nil
// allow only same-host origins and requests without an Origin header.
type Origins struct {
	patterns []originPattern
	any      bool // "*": any origin except "null"
	null     bool // "null" listed
}

type originPattern struct {
	scheme string
	labels []string // host labels; "*" matches one label
	port   string   // "" never (default filled in); "*" any
}

// origin is a parsed Origin header value, lowercased.
type origin struct {
	scheme, host, port string
}

// NewOrigins parses allowed-origin patterns (see the package doc).
func NewOrigins(patterns []string) (*Origins, error) {
	o := &Origins{}
	for _, raw := range patterns {
		p := strings.ToLower(strings.TrimSpace(raw))
		switch p {
		case "":
			return nil, fmt.Errorf("empty origin pattern")
		case "*":
			o.any = true
			continue
		case "null":
			o.null = true
			continue
		}
		op, err := parsePattern(p)
		if err != nil {
			return nil, fmt.Errorf("origin pattern %q: %w", raw, err)
		}
		o.patterns = append(o.patterns, op)
	}
	return o, nil
}

func parsePattern(p string) (originPattern, error) {
	scheme, rest, ok := strings.Cut(p, "://")
	if !ok || !validScheme(scheme) {
		return originPattern{}, fmt.Errorf("needs a scheme, like https://app.example.com")
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#@\\ ") {
		return originPattern{}, fmt.Errorf("an origin is scheme://host[:port], without path, query or user info")
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return originPattern{}, err
	}
	if port == "" {
		port = defaultPort(scheme)
	} else if port != "*" && !validPort(port) {
		return originPattern{}, fmt.Errorf("invalid port %q", port)
	}
	if host == "" {
		return originPattern{}, fmt.Errorf("missing host")
	}
	var labels []string
	if strings.HasPrefix(host, "[") {
		// IPv6 literal: no wildcards.
		labels = []string{host}
	} else {
		labels = strings.Split(host, ".")
		for _, l := range labels {
			if l == "" {
				return originPattern{}, fmt.Errorf("empty host label")
			}
			if l != "*" && strings.Contains(l, "*") {
				return originPattern{}, fmt.Errorf("a wildcard must be a whole host label, like *.example.com")
			}
		}
	}
	return originPattern{scheme: scheme, labels: labels, port: port}, nil
}

// splitHostPort splits "host[:port]" where host may be a bracketed IPv6
// literal; the port may be empty (no colon).
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("unclosed IPv6 literal")
		}
		host, rest := s[:end+1], s[end+1:]
		if inner := host[1 : len(host)-1]; !strings.Contains(inner, ":") || net.ParseIP(inner) == nil {
			return "", "", fmt.Errorf("invalid IPv6 literal")
		}
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", fmt.Errorf("invalid port")
		}
		return host, rest[1:], nil
	}
	if strings.Count(s, ":") > 1 {
		return "", "", fmt.Errorf("IPv6 addresses need brackets")
	}
	host, port, found := strings.Cut(s, ":")
	if found && port == "" {
		return "", "", fmt.Errorf("empty port")
	}
	return host, port, nil
}

func validScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

// parseOrigin parses a serialized origin ("scheme://host[:port]"),
// lowercased, with the default port filled in.
func parseOrigin(v string) (origin, bool) {
	v = strings.ToLower(v)
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok || !validScheme(scheme) || rest == "" || strings.ContainsAny(rest, "/?#@\\ *") {
		return origin{}, false
	}
	host, port, err := splitHostPort(rest)
	if err != nil || host == "" {
		return origin{}, false
	}
	if port == "" {
		port = defaultPort(scheme)
	} else if !validPort(port) {
		return origin{}, false
	}
	if !strings.HasPrefix(host, "[") {
		for _, l := range strings.Split(host, ".") {
			if l == "" {
				return origin{}, false
			}
		}
	}
	return origin{scheme: scheme, host: host, port: port}, true
}

func (p originPattern) match(o origin) bool {
	if p.scheme != o.scheme {
		return false
	}
	if p.port != "*" && p.port != o.port {
		return false
	}
	var labels []string
	if strings.HasPrefix(o.host, "[") {
		labels = []string{o.host}
	} else {
		labels = strings.Split(o.host, ".")
	}
	if len(labels) != len(p.labels) {
		return false
	}
	for i, l := range p.labels {
		if l != "*" && l != labels[i] {
			return false
		}
	}
	return true
}

// requestOrigin is the origin the request was sent to: its scheme (https
// over TLS) and Host.
func requestOrigin(r *http.Request) (origin, bool) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	return parseOrigin(scheme + "://" + host)
}

// Allowed reports whether r's Origin header is acceptable: absent,
// same-host, or matching a pattern.
func (o *Origins) Allowed(r *http.Request) bool {
	v := r.Header.Get("Origin")
	if v == "" {
		return true
	}
	if strings.EqualFold(v, "null") {
		return o != nil && o.null
	}
	org, ok := parseOrigin(v)
	if !ok {
		return false
	}
	if self, ok := requestOrigin(r); ok && self == org {
		return true
	}
	if o == nil {
		return false
	}
	if o.any {
		return true
	}
	for _, p := range o.patterns {
		if p.match(org) {
			return true
		}
	}
	return false
}

// Credentialed reports whether r may act with the user's ambient
// credentials (cookies): it has no Origin, or a same-host one, or one a
// listed pattern (or a listed "null") allows. An Origin allowed only by
// "*" may not: any site could otherwise read what the user's cookies
// unlock.
func (o *Origins) Credentialed(r *http.Request) bool {
	v := r.Header.Get("Origin")
	if v == "" {
		return true
	}
	if !o.Allowed(r) {
		return false
	}
	if o == nil || !o.any || strings.EqualFold(v, "null") {
		return true
	}
	org, _ := parseOrigin(v)
	if self, ok := requestOrigin(r); ok && self == org {
		return true
	}
	for _, p := range o.patterns {
		if p.match(org) {
			return true
		}
	}
	return false
}

// Check is Allowed as an error: nil, or a 403 *Error of kind "origin".
func (o *Origins) Check(r *http.Request) error {
	if o.Allowed(r) {
		return nil
	}
	return refuse(http.StatusForbidden, KindOrigin, errNoOrigin)
}

// Headers a preflight may ask for when it names none we can echo.
const defaultAllowHeaders = "Authorization, Content-Type, Last-Event-ID, Cache-Control, X-Requested-With"

// CORS sets the CORS response headers for r and reports whether r is a
// preflight (OPTIONS with Origin and Access-Control-Request-Method), which
// the caller answers with 204 and no body. For an allowed Origin it
// echoes it in Access-Control-Allow-Origin with credentials allowed (also
// for same-origin requests, where browsers ignore it), except for one
// allowed only by "*", which gets "*" and no credentials (browsers then
// withhold the answer to a request made with cookies); for a preflight it
// adds the allowed methods (GET, POST, OPTIONS), the requested headers
// and a Max-Age of 10 minutes. Vary: Origin is set whenever r has an
// Origin. A disallowed Origin gets no Allow headers; callers refuse it
// with Check first.
func (o *Origins) CORS(w http.ResponseWriter, r *http.Request) (preflight bool) {
	v := r.Header.Get("Origin")
	if v == "" {
		return false
	}
	preflight = r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	addVary(h, "Origin")
	if preflight {
		addVary(h, "Access-Control-Request-Method")
		addVary(h, "Access-Control-Request-Headers")
	}
	if !o.Allowed(r) {
		return preflight
	}
	if o.Credentialed(r) {
		h.Set("Access-Control-Allow-Origin", v)
		h.Set("Access-Control-Allow-Credentials", "true")
	} else {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	if preflight {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		allow := defaultAllowHeaders
		if req := r.Header.Values("Access-Control-Request-Headers"); len(req) > 0 {
			if list, ok := headerList(req); ok {
				allow = list
			}
		}
		h.Set("Access-Control-Allow-Headers", allow)
		h.Set("Access-Control-Max-Age", "600")
	}
	return preflight
}

// headerList validates a requested header list (comma-separated field
// names) and returns it normalized.
func headerList(values []string) (string, bool) {
	var names []string
	for _, v := range values {
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if !isToken(n) {
				return "", false
			}
			names = append(names, n)
		}
	}
	if len(names) == 0 || len(names) > 32 {
		return "", false
	}
	return strings.Join(names, ", "), true
}

func isToken(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func addVary(h http.Header, name string) {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, name) {
				return
			}
		}
	}
	h.Add("Vary", name)
}
