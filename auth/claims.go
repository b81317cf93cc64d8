package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Claims are what a ticket (or the app's approval) grants: a subject and
// glob patterns of the channels it may subscribe to and publish to. A
// *Claims handed out by this package is not shared; callers may keep it.
type Claims struct {
	Sub      string   `json:"sub,omitempty"`
	Channels []string `json:"channels,omitempty"`
	Publish  []string `json:"publish,omitempty"`
}

// CanSubscribe reports whether the claims cover subscribing to ch.
func (c *Claims) CanSubscribe(ch string) bool {
	return c != nil && matchAny(c.Channels, ch)
}

// CanPublish reports whether the claims allow publishing to ch.
func (c *Claims) CanPublish(ch string) bool {
	return c != nil && matchAny(c.Publish, ch)
}

// Cover returns nil if the claims cover subscribing to every channel, else
// a 403 *Error of kind "scope" naming the first channel not covered.
func (c *Claims) Cover(channels []string) error {
	for _, ch := range channels {
		if !c.CanSubscribe(ch) {
			return scopeError(errNotCovered, ch)
		}
	}
	return nil
}

// CheckPublish returns nil if the claims may publish to ch, else a 403
// *Error of kind "scope".
func (c *Claims) CheckPublish(ch string) error {
	if c.CanPublish(ch) {
		return nil
	}
	return scopeError(errNoPublish, ch)
}

func scopeError(sentinel error, ch string) *Error {
	err := fmt.Errorf("%w %q", sentinel, ch)
	return &Error{Status: http.StatusForbidden, Reason: err.Error(), Kind: KindScope, Err: err}
}

func (c *Claims) clone() *Claims {
	if c == nil {
		return nil
	}
	return &Claims{
		Sub:      c.Sub,
		Channels: append([]string(nil), c.Channels...),
		Publish:  append([]string(nil), c.Publish...),
	}
}

// parseClaims decodes claims JSON, which must be an object; unknown fields
// are ignored, wrong types are errors.
func parseClaims(b []byte) (*Claims, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("claims must be a JSON object")
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Glob(p, name) {
			return true
		}
	}
	return false
}

// Glob reports whether name matches pattern, where '*' matches any run of
// bytes (also none) and every other byte matches itself. It runs in
// O(len(pattern)*len(name)) at worst, without recursion.
func Glob(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
