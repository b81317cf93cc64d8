package auth

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Defaults of the Authorizer.
const (
	DefaultAuthorizeTimeout = 5 * time.Second
	DefaultCacheTTL         = 5 * time.Second
	DefaultCacheSize        = 10_000
)

const (
	maxAnswerSize = 64 << 10 // largest app answer read
	maxReasonLen  = 200      // longest app text passed on as a reason
)

// Authorizer asks the app's authorize endpoint whether a request may have
// a set of channels. It is safe for concurrent use.
type Authorizer struct {
	url     string
	timeout time.Duration
	client  *http.Client
	log     *zap.Logger
	cache   *answerCache
	now     func() time.Time // time.Now; tests move it to expire cached answers
}

// NewAuthorizer returns an Authorizer that POSTs to rawURL (absolute http
// or https). timeout 0 means 5s; client nil means a default client (its
// redirects are never followed either way); logger nil means no logging.
func NewAuthorizer(rawURL string, timeout time.Duration, client *http.Client, logger *zap.Logger) (*Authorizer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("authorize url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authorize url %q: must be an absolute http:// or https:// URL", u.Redacted())
	}
	if timeout < 0 {
		return nil, fmt.Errorf("authorize timeout must not be negative")
	}
	if timeout == 0 {
		timeout = DefaultAuthorizeTimeout
	}
	var c http.Client
	if client != nil {
		c = *client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Authorizer{
		url:     rawURL,
		timeout: timeout,
		client:  &c,
		log:     logger,
		cache:   newAnswerCache(DefaultCacheSize, DefaultCacheTTL),
		now:     time.Now,
	}, nil
}

// Authorize asks the app whether r may subscribe to channels, for a
// request that presents no ticket. It forwards r's Cookie header and its
// Authorization header unless that is a Bearer credential (which this
// module reads as a ticket). On approval it returns the app's claims
// (covering exactly channels when the app names none); otherwise an
// *Error with the app's status (3xx becomes 401), or 502/504 when the app
// cannot be reached in time. A cancelled ctx gives an error wrapping
// ctx's error. Callers check the claims with Claims.Cover, since an app
// may approve with channels other than those asked for.
func (a *Authorizer) Authorize(ctx context.Context, r *http.Request, channels []string) (*Claims, error) {
	auth := r.Header.Get("Authorization")
	if Bearer(auth) != "" {
		auth = ""
	}
	return a.ask(ctx, r, auth, channels)
}

// AuthorizeIssue is Authorize for the built-in ticket endpoint, where no
// ticket is presented: the Authorization header is forwarded whatever its
// scheme, so apps that use Bearer tokens for their own login work.
func (a *Authorizer) AuthorizeIssue(ctx context.Context, r *http.Request, channels []string) (*Claims, error) {
	return a.ask(ctx, r, r.Header.Get("Authorization"), channels)
}

func (a *Authorizer) ask(ctx context.Context, r *http.Request, auth string, channels []string) (*Claims, error) {
	cookie := strings.Join(r.Header.Values("Cookie"), "; ")
	if channels == nil {
		channels = []string{}
	}
	key := cacheKey(cookie, auth, channels)
	if c, err, ok := a.cache.get(key, a.now()); ok {
		return c.clone(), err
	}
	c, err := a.call(ctx, cookie, auth, channels)
	if cacheable(err) {
		a.cache.put(key, c, err, a.now())
	}
	return c.clone(), err
}

func cacheable(err error) bool {
	if err == nil {
		return true
	}
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

func (a *Authorizer) call(ctx context.Context, cookie, auth string, channels []string) (*Claims, error) {
	body, err := json.Marshal(map[string][]string{"channels": channels})
	if err != nil {
		return nil, fmt.Errorf("authorize request: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("authorize request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "caddy-realtime")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, a.transportError(ctx, cctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerSize+1))
	if err != nil {
		return nil, a.transportError(ctx, cctx, err)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if len(b) > maxAnswerSize {
			a.log.Warn("authorize endpoint answer too large", zap.Int("limit", maxAnswerSize))
			return nil, &Error{Status: http.StatusBadGateway, Reason: errAppAnswer.Error(), Err: errAppAnswer}
		}
		return approval(b, channels, a.log)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, refuse(http.StatusUnauthorized, KindTicket, errAppRedirect)
	}
	kind := KindTicket
	switch {
	case resp.StatusCode == http.StatusForbidden:
		kind = KindScope
	case resp.StatusCode >= 500:
		kind = ""
	}
	return nil, &Error{
		Status: resp.StatusCode,
		Reason: appReason(resp.StatusCode, resp.Header.Get("Content-Type"), b),
		Kind:   kind,
		Err:    errAppRefused,
	}
}

// approval turns a 2xx answer into claims.
func approval(b []byte, asked []string, log *zap.Logger) (*Claims, error) {
	c := &Claims{}
	if len(bytes.TrimSpace(b)) > 0 {
		var err error
		if c, err = parseClaims(b); err != nil {
			log.Warn("authorize endpoint approved with invalid claims JSON", zap.Error(err))
			return nil, &Error{Status: http.StatusBadGateway, Reason: errAppAnswer.Error(), Err: errAppAnswer}
		}
	}
	if c.Channels == nil {
		c.Channels = append([]string{}, asked...)
	}
	return c, nil
}

func (a *Authorizer) transportError(parent, cctx context.Context, err error) error {
	if parent.Err() != nil {
		return fmt.Errorf("asking the authorize endpoint: %w", parent.Err())
	}
	var ne net.Error
	if errors.Is(cctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		a.log.Warn("authorize endpoint timed out", zap.Duration("timeout", a.timeout))
		return &Error{Status: http.StatusGatewayTimeout, Reason: errAppTimeout.Error(), Err: err}
	}
	a.log.Warn("authorize endpoint unreachable", zap.Error(err))
	return &Error{Status: http.StatusBadGateway, Reason: errAppDown.Error(), Err: err}
}

// appReason is the reason shown for an app refusal: its body when that is
// a short line of text (or {"reason"|"error": "..."} JSON), else the
// status text.
func appReason(status int, ctype string, b []byte) string {
	mt, _, _ := mime.ParseMediaType(ctype)
	var s string
	switch mt {
	case "text/plain":
		s = string(b)
	case "application/json":
		var v struct {
			Reason string `json:"reason"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(b, &v) == nil {
			s = v.Reason
			if s == "" {
				s = v.Error
			}
		}
	}
	s = strings.TrimSpace(s)
	if s != "" && len(s) <= maxReasonLen && utf8.ValidString(s) &&
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	if t := http.StatusText(status); t != "" {
		return strings.ToLower(t)
	}
	return fmt.Sprintf("refused by the app (status %d)", status)
}

// cacheKey hashes the forwarded credentials and the channel set, so the
// cache holds no credentials.
func cacheKey(cookie, auth string, channels []string) [32]byte {
	chs := slices.Clone(channels)
	slices.Sort(chs)
	chs = slices.Compact(chs)
	h := sha256.New()
	for _, s := range append([]string{cookie, auth}, chs...) {
		fmt.Fprintf(h, "%d:%s\x00", len(s), s)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// answerCache keeps recent answers of the app for ttl, at most max of
// them, evicting the oldest first.
type answerCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	items map[[32]byte]*list.Element
	order *list.List // front: oldest
}

type answer struct {
	key    [32]byte
	claims *Claims
	err    error
	exp    time.Time
}

func newAnswerCache(max int, ttl time.Duration) *answerCache {
	return &answerCache{max: max, ttl: ttl, items: make(map[[32]byte]*list.Element), order: list.New()}
}

func (c *answerCache) get(key [32]byte, now time.Time) (*Claims, error, bool) {
	if c.ttl <= 0 || c.max <= 0 {
		return nil, nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, nil, false
	}
	a := el.Value.(*answer)
	if !now.Before(a.exp) {
		c.order.Remove(el)
		delete(c.items, key)
		return nil, nil, false
	}
	return a.claims, a.err, true
}

func (c *answerCache) put(key [32]byte, claims *Claims, err error, now time.Time) {
	if c.ttl <= 0 || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*answer).key)
	}
	c.items[key] = c.order.PushBack(&answer{key: key, claims: claims.clone(), err: err, exp: now.Add(c.ttl)})
}
