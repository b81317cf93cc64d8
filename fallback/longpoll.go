// Package fallback serves the hub's long-poll transport, for clients that
// can use neither WebSocket nor Server-Sent Events.
//
// One poll is one request: it answers at once with the messages after the
// client's position, or waits up to a timeout for the next ones, and always
// carries the position to poll from next, so nothing falls between polls.
package fallback

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-realtime/realtime/internal/hub"
)

// Options configures one poll.
type Options struct {
	// Timeout is how long a poll waits for a message.
	Timeout  time.Duration
	Observer hub.DeliveryObserver
	// Shutdown, when closed, ends the wait early: the poll is answered
	// (with its position) so the client polls again elsewhere.
	Shutdown <-chan struct{}
}

// Serve answers one poll for session ss: at once with the retained
// messages after the client's position, or with the first live ones
// within the timeout, or with none; always with the position to poll
// from next.
func Serve(ctx context.Context, w http.ResponseWriter, ss *hub.Session, opts Options) error {
	s := ss.Sub
	sent := ss.Replay
	if len(sent) == 0 {
		timer := time.NewTimer(opts.Timeout)
		defer timer.Stop()
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil // the client left; nothing to answer
			case <-s.Done():
				break wait // answer what we have; the client polls again
			case <-opts.Shutdown:
				break wait
			case <-timer.C:
				break wait
			case <-s.Ready():
				if sent = ss.Next(sent); len(sent) > 0 {
					break wait
				}
			}
		}
	}
	body := make([]byte, 0, 64)
	body = append(body, `{"messages":[`...)
	for i, e := range sent {
		if i > 0 {
			body = append(body, ',')
		}
		id := ss.Advance(e)
		if ss.Multi() {
			body = hub.AppendJSONWithID(body, e.Msg, id)
		} else {
			body = append(body, e.JSON()...)
		}
	}
	body = append(body, `],"last_event_id":`...)
	pos, _ := json.Marshal(ss.Cursor())
	body = append(body, pos...)
	body = append(body, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(body); err != nil {
		return err
	}
	if opts.Observer != nil {
		for _, e := range sent {
			opts.Observer.Delivered("longpoll", e, 1)
		}
	}
	return nil
}
