package hub

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/sse"
)

// Reserved event names (the `realtime.` prefix is refused on publish).
const (
	// EventReset tells a client it may have missed messages of a channel.
	EventReset = "realtime.reset"
	// EventEncoded carries, on plain SSE, a message whose payload SSE
	// cannot carry byte for byte (a CR, or bytes that are not UTF-8):
	// its data is the JSON form of the message instead.
	EventEncoded = "realtime.encoded"
	// ReservedPrefix starts every event name the module keeps for itself.
	ReservedPrefix = "realtime."
)

// Envelope is one message on its way to every local subscriber of its
// channel. Each transport's encoding is computed once, on first use, and
// then shared by all subscribers: nothing is copied per subscriber.
type Envelope struct {
	Msg *broker.Message

	sseOnce  sync.Once
	sse      []byte
	sseJOnce sync.Once
	sseJSON  []byte
	jsonOnce sync.Once
	json     []byte
	wsOnce   sync.Once
	ws       []byte

	chunkOnce  sync.Once
	chunk      []byte
	chunkJOnce sync.Once
	chunkJSON  []byte
}

// NewEnvelope wraps m for delivery.
func NewEnvelope(m *broker.Message) *Envelope { return &Envelope{Msg: m} }

// SSE returns the message as an SSE event (id, event, data lines and the
// blank line). A payload plain SSE cannot carry faithfully is sent as the
// event EventEncoded whose data is the message's JSON form, which says
// its real event name and, for non-UTF-8 bytes, carries them in base64.
func (e *Envelope) SSE() []byte {
	e.sseOnce.Do(func() {
		m := e.Msg
		if sse.Representable(m.Data) {
			e.sse = sse.AppendEvent(nil, m.ID, m.Event, m.Data)
			return
		}
		e.sse = sse.AppendEvent(nil, m.ID, EventEncoded, e.JSON())
	})
	return e.sse
}

// SSEJSON returns the message as an SSE event whose data is the JSON form
// of the message (`?format=json`), for streams of several channels.
func (e *Envelope) SSEJSON() []byte {
	e.sseJOnce.Do(func() {
		e.sseJSON = sse.AppendEvent(nil, e.Msg.ID, e.Msg.Event, e.JSON())
	})
	return e.sseJSON
}

// JSON returns the message as the one-line JSON object of the WebSocket
// and long-poll transports: {"channel","id","event","data"}, plus
// "encoding":"base64" when the payload is not UTF-8 text.
func (e *Envelope) JSON() []byte {
	e.jsonOnce.Do(func() { e.json = AppendJSON(nil, e.Msg) })
	return e.json
}

// WebSocket returns the message as a WebSocket text frame (a server's,
// unmasked) carrying its JSON form, framed once for all connections.
func (e *Envelope) WebSocket() []byte {
	e.wsOnce.Do(func() { e.ws = AppendWSFrame(nil, WSText, e.JSON()) })
	return e.ws
}

// SSEChunk returns the SSE event (SSE, or SSEJSON with asJSON) framed as
// one HTTP/1.1 chunk, for streams that write their own chunked body.
func (e *Envelope) SSEChunk(asJSON bool) []byte {
	if asJSON {
		e.chunkJOnce.Do(func() { e.chunkJSON = appendChunk(nil, e.SSEJSON()) })
		return e.chunkJSON
	}
	e.chunkOnce.Do(func() { e.chunk = appendChunk(nil, e.SSE()) })
	return e.chunk
}

func appendChunk(dst, body []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(body)), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, body...)
	return append(dst, '\r', '\n')
}

// AppendSSEWithID appends e as an SSE event carrying id instead of the
// message's own id (a multi-channel cursor).
func (e *Envelope) AppendSSEWithID(dst []byte, id string, asJSON bool) []byte {
	m := e.Msg
	switch {
	case asJSON:
		return sse.AppendEvent(dst, id, m.Event, AppendJSONWithID(nil, m, id))
	case sse.Representable(m.Data):
		return sse.AppendEvent(dst, id, m.Event, m.Data)
	}
	return sse.AppendEvent(dst, id, EventEncoded, AppendJSONWithID(nil, m, id))
}

// AppendJSON appends the JSON form of m to dst.
func AppendJSON(dst []byte, m *broker.Message) []byte {
	return AppendJSONWithID(dst, m, m.ID)
}

// AppendJSONWithID appends the JSON form of m with id as its id.
func AppendJSONWithID(dst []byte, m *broker.Message, id string) []byte {
	dst = append(dst, `{"channel":`...)
	dst = appendJSONString(dst, m.Channel)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, id)
	dst = append(dst, `,"event":`...)
	ev := m.Event
	if ev == "" {
		ev = "message"
	}
	dst = appendJSONString(dst, ev)
	dst = append(dst, `,"data":`...)
	if utf8.Valid(m.Data) {
		dst = appendJSONString(dst, string(m.Data))
	} else {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, m.Data)
		dst = append(dst, `","encoding":"base64"`...)
	}
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string. s must be valid UTF-8
// (invalid bytes would be replaced, which is why payloads are checked
// before and sent in base64 when not UTF-8).
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}
