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

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
)

// Options configures one poll.
type Options struct {
	// Timeout is how long a poll waits for a message.
	Timeout time.Duration
	// Shutdown, when done, ends the wait early: the poll is answered
	// (with its position) so the client polls again elsewhere.
	Shutdown context.Context
}

// Serve answers one poll for session ss: at once with the retained
// messages after the client's position, or with the first live ones
// within the timeout, or with none; always with the position to poll
// from next.
func Serve(ctx context.Context, w http.ResponseWriter, ss *hub.Session, opts Options) error {
	sent := ss.TakeReplay()
	shutdown := opts.Shutdown
	if shutdown == nil {
		shutdown = context.Background()
	}
	if len(sent) == 0 {
		timer := time.NewTimer(opts.Timeout)
		defer timer.Stop()
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil // the client left; nothing to answer
			case <-ss.Done():
				break wait // answer what we have; the client polls again
			case <-shutdown.Done():
				break wait
			case <-timer.C:
				break wait
			case <-ss.Ready():
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
			body = hub.AppendJSON(body, e.Msg, id)
		} else {
			body = append(body, e.JSON()...)
		}
	}
	if data, ok := hub.ClosedData(ss.Err()); ok {
		// the subscription ended for good: the client is not to poll
		// again on its own (its position is still that of its last
		// message)
		if len(sent) > 0 {
			body = append(body, ',')
		}
		closed := &broker.Message{Channel: ss.Channels()[0], Event: hub.EventClosed, Data: data}
		body = hub.AppendJSON(body, closed, "")
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
	for _, e := range sent {
		ss.Delivered(e)
	}
	return nil
}
