package hub

import (
	"encoding/base64"
	"encoding/json"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/caddy-realtime/realtime/internal/broker"
)

// Reserved event names (the `realtime.` prefix is refused on publish).
const (
	// eventReset tells a client it may have missed messages of a channel.
	eventReset = "realtime.reset"
	// ReservedPrefix starts every event name the module keeps for itself.
	ReservedPrefix = "realtime."
)

// Envelope is one message on its way to every local subscriber of its
// channel. Each transport's wire form of it (an Encoding) is computed
// once, on first use, and then shared by all subscribers: nothing is
// copied per subscriber.
type Envelope struct {
	Msg *broker.Message

	jsonOnce sync.Once
	json     []byte
	encoded  [maxEncodings]encoded
}

type encoded struct {
	once sync.Once
	b    []byte
}

// NewEnvelope wraps m for delivery.
func NewEnvelope(m *broker.Message) *Envelope { return &Envelope{Msg: m} }

// Encoding is one wire form of a message, defined by a transport (an SSE
// event, a WebSocket frame): see Envelope.Encoded. Transports declare
// theirs once, as package variables.
type Encoding struct {
	slot   int
	encode func(*Envelope) []byte
}

// maxEncodings is how many encodings the transports may declare: each
// envelope has room for all of them.
const maxEncodings = 8

var encodingCount atomic.Int32

// NewEncoding declares a wire form computed by encode, which may use the
// envelope's other encodings.
func NewEncoding(encode func(*Envelope) []byte) *Encoding {
	slot := int(encodingCount.Add(1)) - 1
	if slot >= maxEncodings {
		panic("hub: more than maxEncodings encodings declared")
	}
	return &Encoding{slot: slot, encode: encode}
}

// Encoded returns the message in the wire form enc, computed on the first
// call and shared by every later one.
func (e *Envelope) Encoded(enc *Encoding) []byte {
	x := &e.encoded[enc.slot]
	x.once.Do(func() { x.b = enc.encode(e) })
	return x.b
}

// JSON returns the message as the one-line JSON object every transport
// can carry: {"channel","id","event","data"}, plus "encoding":"base64"
// when the payload is not UTF-8 text.
func (e *Envelope) JSON() []byte {
	e.jsonOnce.Do(func() { e.json = AppendJSON(nil, e.Msg, e.Msg.ID) })
	return e.json
}

// AppendJSON appends the JSON form of m with id as its id (a
// multi-channel session's cursor, or the message's own id).
func AppendJSON(dst []byte, m *broker.Message, id string) []byte {
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
