package sse

import (
	"strings"
	"testing"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/ssetest"
	"github.com/caddy-realtime/realtime/internal/stream"
)

// parseOne reads the one event of b as a browser would.
func parseOne(t *testing.T, b []byte) ssetest.Event {
	t.Helper()
	ev, err := ssetest.NewParser(strings.NewReader(string(b))).Next()
	if err != nil {
		t.Fatalf("parsing %q: %v", b, err)
	}
	return ev
}

// A hub message's SSE forms, shared by every stream: plain SSE carries
// the payload as it is when it can, and otherwise as EventEncoded with
// the message's JSON form (which says the real event and carries bytes
// that are not UTF-8 in base64); `?format=json` always carries the JSON
// form; the chunked forms are those events as one HTTP/1.1 chunk. A
// multi-channel stream writes each message with its own cursor as id.
func TestEnvelopeEncodings(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		encoded bool // plain SSE cannot carry it: EventEncoded
	}{
		{"text", "hello", false},
		{"multiline", "a\nb\n", false},
		{"unicode", "héllo ✓ 𝄞", false},
		{"json", `{"a":[1,2]}`, false},
		{"carriage return", "a\r\nb", true},
		{"binary", "\xff\xfe\x00", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &broker.Message{Channel: "c", ID: "1-0", Event: "update", Data: []byte(tc.data)}
			e := hub.NewEnvelope(m)

			ev := parseOne(t, e.Encoded(plain))
			switch {
			case !tc.encoded && (ev.Data != tc.data || ev.ID != "1-0" || ev.Event != "update"):
				t.Fatalf("plain SSE gave %+v, want event update with data %q", ev, tc.data)
			case tc.encoded && (ev.Event != EventEncoded || ev.Data != string(e.JSON()) || ev.ID != "1-0"):
				t.Fatalf("plain SSE gave %+v, want event %s with the JSON form %s", ev, EventEncoded, e.JSON())
			}

			ev = parseOne(t, e.Encoded(asJSON))
			if ev.Event != "update" || ev.Data != string(e.JSON()) || ev.ID != "1-0" {
				t.Fatalf("JSON SSE gave %+v, want event update with the JSON form %s", ev, e.JSON())
			}

			if got, want := string(e.Encoded(plainChunk)), string(stream.AppendChunk(nil, e.Encoded(plain))); got != want {
				t.Fatalf("plain chunk %q, want %q", got, want)
			}
			if got, want := string(e.Encoded(asJSONChunk)), string(stream.AppendChunk(nil, e.Encoded(asJSON))); got != want {
				t.Fatalf("JSON chunk %q, want %q", got, want)
			}

			// a multi-channel stream: the cursor is the id, in the event
			// and in the JSON form
			const cursor = "c1.cursor"
			for _, asJSONForm := range []bool{false, true} {
				f := &framer{opts: StreamOptions{JSON: asJSONForm}}
				ev := parseOne(t, f.Message(nil, e, cursor))
				withCursor := string(hub.AppendJSON(nil, m, cursor))
				switch {
				case ev.ID != cursor:
					t.Fatalf("JSON %v: id %q, want the cursor", asJSONForm, ev.ID)
				case asJSONForm && (ev.Event != "update" || ev.Data != withCursor):
					t.Fatalf("JSON stream gave %+v, want event update with %s", ev, withCursor)
				case !asJSONForm && !tc.encoded && (ev.Event != "update" || ev.Data != tc.data):
					t.Fatalf("plain stream gave %+v, want event update with data %q", ev, tc.data)
				case !asJSONForm && tc.encoded && (ev.Event != EventEncoded || ev.Data != withCursor):
					t.Fatalf("plain stream gave %+v, want event %s with %s", ev, EventEncoded, withCursor)
				}
			}
		})
	}
}
