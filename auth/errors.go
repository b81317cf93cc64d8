package auth

import "errors"

// Metric categories of refusals (realtime_refusals_total reasons).
const (
	KindOrigin = "origin"
	KindTicket = "ticket"
	KindScope  = "scope"
)

// Error is a refused or failed check: the HTTP status to answer, a reason
// the client may read, and the metric category (empty when the failure is
// not the client's, e.g. 502, 503, 504).
type Error struct {
	Status int
	Reason string
	Kind   string
	Err    error // underlying cause, for errors.Is; never shown to clients
}

func (e *Error) Error() string { return e.Reason }

func (e *Error) Unwrap() error { return e.Err }

func refuse(status int, kind string, cause error) *Error {
	return &Error{Status: status, Reason: cause.Error(), Kind: kind, Err: cause}
}

// Sentinels, one per distinct reason; the reason shown is the sentinel's
// text.
var (
	errNoOrigin        = errors.New("origin not allowed")
	errNoTicket        = errors.New("missing ticket")
	errTicketTooLong   = errors.New("ticket too long")
	errTicketUnknown   = errors.New("unknown or used ticket")
	errTicketClaims    = errors.New("ticket has invalid claims")
	errTicketMalformed = errors.New("malformed ticket")
	errTicketSignature = errors.New("ticket signature invalid")
	errTicketAlg       = errors.New("ticket signing algorithm not allowed")
	errTicketExpired   = errors.New("ticket expired")
	errTicketNotYet    = errors.New("ticket not valid yet")
	errTicketNoExp     = errors.New("ticket has no expiry (exp)")
	errTicketLongLived = errors.New("ticket expiry (exp) too far ahead (max_ttl)")
	errTicketNoJTI     = errors.New("ticket has no id (jti)")
	errTicketJTILong   = errors.New("ticket id (jti) too long")
	errTicketReused    = errors.New("ticket already used")
	errTicketsOff      = errors.New("tickets are not accepted here")
	errStore           = errors.New("ticket store unavailable")
	errJTIFull         = errors.New("too many signed tickets in use, retry shortly")
	errNotCovered      = errors.New("ticket does not cover channel")
	errNoPublish       = errors.New("ticket may not publish to channel")
	errAppTimeout      = errors.New("authorize endpoint timed out")
	errAppDown         = errors.New("authorize endpoint unreachable")
	errAppAnswer       = errors.New("authorize endpoint gave an unreadable answer")
	errAppRedirect     = errors.New("not authorized (the app answered with a redirect)")
	errAppRefused      = errors.New("refused by the app")
)
