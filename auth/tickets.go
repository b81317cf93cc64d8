package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of TicketOptions.
const (
	DefaultPrefix    = "realtime:"
	DefaultTicketTTL = 30 * time.Second
	DefaultMaxJTIs   = 100_000
	// DefaultMaxTTL bounds how far ahead a signed ticket's exp may lie.
	DefaultMaxTTL = time.Hour
)

const (
	maxTokenLen = 8192 // longer tokens are refused before any lookup
	maxJTILen   = 256
	jtiSkew     = time.Minute // extra life of a jti record in Redis
	// clockSkew is how far in the future a signed ticket's iat or nbf may
	// lie (the backend's clock may run ahead of this node's).
	clockSkew = 30 * time.Second
)

// TicketOptions configure Tickets. Either Redis or Secret (or both) makes
// tickets verifiable; with neither every ticket is refused.
type TicketOptions struct {
	// Redis stores tickets (GETDEL on use) and used JWT ids. Optional.
	Redis redis.UniversalClient
	// Prefix of Redis keys: <prefix>ticket:<t> and <prefix>jti:<jti>.
	// Default "realtime:".
	Prefix string
	// Secret is the HS256 key of signed tickets. Empty: JWTs are not
	// accepted (a JWT-shaped token is then looked up in Redis).
	Secret []byte
	// TTL is the lifetime of issued tickets. Default 30s.
	TTL time.Duration
	// MaxTTL bounds the life of a signed ticket: one whose exp lies
	// further ahead is refused, so that no ticket lives for ever and the
	// used ids to remember stay few. Default 1h.
	MaxTTL time.Duration
	// MaxJTIs bounds the in-memory set of used JWT ids (used only without
	// Redis). Default 100000.
	MaxJTIs int
	// Logger gets operator-facing problems (bad claims in Redis, Redis
	// errors). Default: no logging.
	Logger *zap.Logger
}

// Tickets verifies and issues tickets. It is safe for concurrent use.
type Tickets struct {
	redis  redis.UniversalClient
	prefix string
	secret []byte
	ttl    time.Duration
	maxTTL time.Duration
	log    *zap.Logger
	jtis   *jtiSet
	parser *jwt.Parser
	now    func() time.Time
}

// NewTickets builds Tickets from opts, filling in defaults.
func NewTickets(opts TicketOptions) (*Tickets, error) {
	if opts.TTL < 0 {
		return nil, fmt.Errorf("ticket ttl must not be negative")
	}
	if opts.MaxTTL < 0 {
		return nil, fmt.Errorf("ticket max_ttl must not be negative")
	}
	if opts.MaxJTIs < 0 {
		return nil, fmt.Errorf("max jtis must not be negative")
	}
	t := &Tickets{
		redis:  opts.Redis,
		prefix: opts.Prefix,
		secret: append([]byte(nil), opts.Secret...),
		ttl:    opts.TTL,
		maxTTL: opts.MaxTTL,
		log:    opts.Logger,
		now:    time.Now,
	}
	if t.prefix == "" {
		t.prefix = DefaultPrefix
	}
	if t.ttl == 0 {
		t.ttl = DefaultTicketTTL
	}
	if t.maxTTL == 0 {
		t.maxTTL = DefaultMaxTTL
	}
	if len(opts.Secret) > 0 && t.ttl > t.maxTTL {
		return nil, fmt.Errorf("ticket ttl %v exceeds max_ttl %v: the tickets issued would be refused", t.ttl, t.maxTTL)
	}
	if t.log == nil {
		t.log = zap.NewNop()
	}
	if len(t.secret) > 0 && len(t.secret) < 32 {
		t.log.Warn("ticket secret is shorter than 32 bytes; HS256 keys should be at least 32 random bytes",
			zap.Int("length", len(t.secret)))
	}
	maxJTIs := opts.MaxJTIs
	if maxJTIs == 0 {
		maxJTIs = DefaultMaxJTIs
	}
	t.jtis = newJTISet(maxJTIs)
	// the times are checked by checkTimes, which bounds them both ways
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	return t, nil
}

// TTL is the lifetime of issued tickets.
func (t *Tickets) TTL() time.Duration { return t.ttl }

// TokenFromRequest returns the ticket r presents: the ?ticket= query
// value, else the credential of "Authorization: Bearer <t>", else "".
func TokenFromRequest(r *http.Request) string {
	if r.URL != nil {
		if v := r.URL.Query().Get("ticket"); v != "" {
			return v
		}
	}
	return Bearer(r.Header.Get("Authorization"))
}

// Bearer returns the credential of an Authorization header value of the
// Bearer scheme, matched case-insensitively as HTTP requires; "" for
// another scheme.
func Bearer(v string) string {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}

// looksLikeJWT reports whether token is three base64url segments, the
// first two non-empty (an empty signature is the "alg": "none" form,
// which is then refused by name).
func looksLikeJWT(token string) bool {
	parts := 0
	seg := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '.':
			if seg == 0 || parts == 2 {
				return false
			}
			parts++
			seg = 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			seg++
		default:
			return false
		}
	}
	return parts == 2
}

// Verify checks a ticket and returns its claims. Every failure is an
// *Error: 401 (kind "ticket") for a missing, unknown, used, malformed,
// badly signed or expired ticket; 503 (no kind) when the ticket store is
// unavailable or the in-memory jti set is full. A cancelled ctx gives an
// error wrapping ctx's error instead. Callers then check the claims
// against the channels with Claims.Cover.
func (t *Tickets) Verify(ctx context.Context, token string) (*Claims, error) {
	switch {
	case token == "":
		return nil, refuse(http.StatusUnauthorized, KindTicket, errNoTicket)
	case len(token) > maxTokenLen:
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketTooLong)
	case len(t.secret) > 0 && looksLikeJWT(token):
		return t.verifyJWT(ctx, token)
	case t.redis != nil:
		return t.verifyStored(ctx, token)
	case len(t.secret) > 0:
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketMalformed)
	default:
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketsOff)
	}
}

func (t *Tickets) verifyStored(ctx context.Context, token string) (*Claims, error) {
	b, err := t.redis.GetDel(ctx, t.prefix+"ticket:"+token).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketUnknown)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("consuming ticket: %w", ctx.Err())
		}
		t.log.Error("consuming a stored ticket", zap.Error(err))
		return nil, &Error{Status: http.StatusServiceUnavailable, Reason: errStore.Error(), Err: err}
	}
	c, err := parseClaims(b)
	if err != nil {
		// The backend wrote it: tell the operator (never the token).
		t.log.Warn("stored ticket has invalid claims JSON", zap.Error(err))
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketClaims)
	}
	return c, nil
}

// jwtClaims is the JWT payload of a signed ticket.
type jwtClaims struct {
	Channels []string `json:"channels,omitempty"`
	Publish  []string `json:"publish,omitempty"`
	jwt.RegisteredClaims
}

func (t *Tickets) verifyJWT(ctx context.Context, token string) (*Claims, error) {
	var jc jwtClaims
	tok, err := t.parser.ParseWithClaims(token, &jc, func(tok *jwt.Token) (any, error) {
		if tok.Method != jwt.SigningMethodHS256 {
			return nil, errTicketAlg
		}
		return t.secret, nil
	})
	if err != nil {
		return nil, refuse(http.StatusUnauthorized, KindTicket, jwtReason(tok, err))
	}
	if err := t.checkTimes(&jc.RegisteredClaims); err != nil {
		return nil, refuse(http.StatusUnauthorized, KindTicket, err)
	}
	if jc.ID == "" {
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketNoJTI)
	}
	if len(jc.ID) > maxJTILen {
		return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketJTILong)
	}
	exp := jc.ExpiresAt.Time
	if t.redis != nil {
		ok, err := t.redis.SetArgs(ctx, t.prefix+"jti:"+jc.ID, 1, redis.SetArgs{
			Mode:     "NX",
			ExpireAt: exp.Add(jtiSkew),
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketReused)
		case err != nil:
			if ctx.Err() != nil {
				return nil, fmt.Errorf("recording ticket id: %w", ctx.Err())
			}
			t.log.Error("recording a signed ticket's jti", zap.Error(err))
			return nil, &Error{Status: http.StatusServiceUnavailable, Reason: errStore.Error(), Err: err}
		case ok != "OK":
			return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketReused)
		}
	} else {
		ok, full := t.jtis.add(jc.ID, exp, t.now())
		if full {
			t.log.Warn("in-memory set of used ticket ids is full; refusing signed tickets until some expire",
				zap.Int("max", t.jtis.max))
			return nil, &Error{Status: http.StatusServiceUnavailable, Reason: errJTIFull.Error(), Err: errJTIFull}
		}
		if !ok {
			return nil, refuse(http.StatusUnauthorized, KindTicket, errTicketReused)
		}
	}
	return &Claims{Sub: jc.Subject, Channels: jc.Channels, Publish: jc.Publish}, nil
}

// checkTimes checks that a signed ticket is valid now and short-lived: it
// has an exp, not past and at most maxTTL ahead, and no iat or nbf more
// than clockSkew ahead.
func (t *Tickets) checkTimes(c *jwt.RegisteredClaims) error {
	now := t.now()
	switch {
	case c.ExpiresAt == nil:
		return errTicketNoExp
	case now.After(c.ExpiresAt.Time):
		return errTicketExpired
	case c.ExpiresAt.Sub(now) > t.maxTTL:
		return errTicketLongLived
	case c.IssuedAt != nil && c.IssuedAt.Sub(now) > clockSkew,
		c.NotBefore != nil && c.NotBefore.Sub(now) > clockSkew:
		return errTicketNotYet
	}
	return nil
}

// jwtReason maps a jwt/v5 parse error to one of our sentinels.
func jwtReason(tok *jwt.Token, err error) error {
	algBad := tok != nil && tok.Method != jwt.SigningMethodHS256
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errTicketMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, errTicketAlg):
		return errTicketAlg
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if algBad {
			return errTicketAlg
		}
		return errTicketSignature
	}
	return errTicketMalformed
}

// Issue creates a ticket for claims: a Redis ticket (32 random bytes,
// base64url) when Redis is configured, else an HS256 JWT. It returns the
// token and how long it stays valid.
func (t *Tickets) Issue(ctx context.Context, claims *Claims) (token string, expiresIn time.Duration, err error) {
	if claims == nil {
		return "", 0, errors.New("issuing a ticket: nil claims")
	}
	switch {
	case t.redis != nil:
		b, err := json.Marshal(claims)
		if err != nil {
			return "", 0, fmt.Errorf("issuing a ticket: %w", err)
		}
		token = randomToken(32)
		if err := t.redis.Set(ctx, t.prefix+"ticket:"+token, b, t.ttl).Err(); err != nil {
			if ctx.Err() != nil {
				return "", 0, fmt.Errorf("storing ticket: %w", ctx.Err())
			}
			t.log.Error("storing an issued ticket", zap.Error(err))
			return "", 0, &Error{Status: http.StatusServiceUnavailable, Reason: errStore.Error(), Err: err}
		}
		return token, t.ttl, nil
	case len(t.secret) > 0:
		now := t.now()
		// Round exp up to a whole second so the ticket lives at least ttl.
		exp := now.Add(t.ttl + time.Second - 1).Truncate(time.Second)
		jc := jwtClaims{
			Channels: claims.Channels,
			Publish:  claims.Publish,
			RegisteredClaims: jwt.RegisteredClaims{
				Subject:   claims.Sub,
				ID:        randomToken(16),
				IssuedAt:  jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(exp),
			},
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jc).SignedString(t.secret)
		if err != nil {
			return "", 0, fmt.Errorf("signing a ticket: %w", err)
		}
		return s, t.ttl, nil
	}
	return "", 0, &Error{Status: http.StatusInternalServerError, Reason: "ticket issuing needs redis or a secret", Err: errTicketsOff}
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
