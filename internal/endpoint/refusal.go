package endpoint

import (
	"errors"
	"fmt"
	"github.com/caddy-realtime/realtime/internal/metrics"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"
)

// refusal is a request the handler answers with an error status and a
// reason the client can read. It is counted under its metric reason and
// logged once.
type refusal struct {
	status     int
	reason     string
	metric     string // realtime_refusals_total reason; "" counts nothing
	retryAfter bool
}

func (e *refusal) Error() string { return e.reason }

func refused(status int, metric, format string, args ...any) error {
	return &refusal{status: status, metric: metric, reason: fmt.Sprintf(format, args...)}
}

// writeRefusal answers a refusal: status, a one-line text reason, and
// Retry-After for 503s. It reports false if err is not a refusal.
func (h *Endpoint) writeRefusal(w http.ResponseWriter, r *http.Request, err error) bool {
	var rf *refusal
	if !errors.As(err, &rf) {
		return false
	}
	if rf.metric != "" {
		metrics.Refuse(rf.metric)
	}
	h.logger.Info("request refused",
		zap.Int("status", rf.status),
		zap.String("reason", rf.reason),
		zap.String("remote_ip", r.RemoteAddr),
		zap.String("uri", redactedURI(r)))
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if rf.retryAfter || rf.status == http.StatusServiceUnavailable {
		hdr.Set("Retry-After", "5")
	}
	body := rf.reason + "\n"
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rf.status)
	_, _ = io.WriteString(w, body)
	return true
}

// redactedURI is r's URI with any ticket query value hidden, for logs.
func redactedURI(r *http.Request) string {
	q := r.URL.Query()
	if q.Has("ticket") {
		q.Set("ticket", "REDACTED")
		u := *r.URL
		u.RawQuery = q.Encode()
		return u.RequestURI()
	}
	return r.URL.RequestURI()
}
