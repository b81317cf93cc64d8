// Package auth decides who may open a realtime connection: it checks the
// Origin header, verifies and issues tickets (Redis-stored or HS256-signed
// JWTs), and asks the app's authorize endpoint when a request presents no
// ticket. It never imports Caddy; the root package adapts it.
//
// Every refusal is an *Error carrying the HTTP status to answer, a reason
// a client can read, and the metric category ("origin", "ticket",
// "scope"; empty for faults that are not the client's, such as a Redis
// outage or an unreachable app).
//
// # Origins
//
// A pattern is "scheme://host[:port]", "*" (any origin except "null") or
// "null". A host label that is exactly "*" matches one non-empty label:
// "https://*.example.com" matches "https://a.example.com" but neither
// "https://example.com" nor "https://a.b.example.com" (as TLS wildcard
// certificates do). Partial-label wildcards ("app-*.example.com") are
// rejected. A port of "*" matches any port; an omitted port means the
// scheme's default (80 for http and ws, 443 for https and wss). Scheme
// and port must match; everything is compared case-insensitively. A
// trailing "/" is tolerated; any other path, a query or user info is a
// configuration error.
//
// Requests without an Origin header (non-browser clients, same-origin
// EventSource) are always allowed. Same-host origins are always allowed,
// with or without patterns: the Origin's scheme, host and port equal the
// request's (scheme https when the request came over TLS, else http;
// default ports implied). Behind a proxy that terminates TLS, list the
// public origin explicitly. "Origin: null" is refused unless "null" is
// listed; an Origin that is not a valid serialized origin is refused.
//
// # Claims
//
// A ticket's claims name the channels it may subscribe to and publish to,
// as glob patterns where "*" matches any run of characters (also none,
// also ":" and "/"). No field means no rights: claims without "channels"
// cover no channel, claims without "publish" may not publish.
//
// An app that approves an authorize call with a 2xx answer whose claims
// have no "channels" field (or with an empty body) approves exactly the
// channels it was asked about; an explicit "channels" list is used as is.
//
// # Tickets
//
// A token with three base64url segments is verified as a JWT when a
// secret is set; any other token is looked up in Redis (when configured)
// and consumed with GETDEL, so it works once (Redis 6.2 or later). With a
// secret set, backends should pick Redis ticket names without dots (the
// Issue tokens have none), or they would be read as JWTs. Signed tickets must be
// HS256 and carry "exp" and "jti"; each jti is accepted once. With Redis
// the jti is recorded there (SET NX EXAT exp+60s, the minute covering
// clock skew between nodes), so single use holds across nodes; without
// Redis it is kept in a bounded in-memory set until its exp. When that
// set is full of unexpired entries, new signed tickets are refused with
// 503 rather than forgetting a jti early, which would allow a replay.
//
// Issue stores a Redis ticket (32 random bytes, base64url) when Redis is
// configured, else signs a JWT with exp = now+TTL (rounded up to a whole
// second), a random jti, iat, sub, channels and publish.
//
// Tickets, JWTs and secrets are never logged.
//
// # Authorize
//
// The app's authorize endpoint gets a POST with the caller's Cookie
// header, its Authorization header (except a Bearer credential on the
// subscribe path, which is a ticket), and {"channels": [...]}. Redirects
// are not followed: a 3xx (typically a login redirect) is a 401. Other
// non-2xx statuses are passed back with the app's short text reason. A
// timeout is 504, an unreachable app or an unreadable answer 502.
// Approvals and 401/403 refusals are cached for a few seconds, keyed by a
// hash of the forwarded credentials and the channel set, so a reconnect
// storm does not hammer the app.
package auth
