package harness

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Kind is what an SSEItem is.
type Kind int

// Kinds of SSEItem.
const (
	KindEvent   Kind = iota // a dispatched event
	KindComment             // a line starting with ":"
	KindRetry               // a valid retry field
)

func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindComment:
		return "comment"
	case KindRetry:
		return "retry"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// SSEItem is one thing an SSE client saw, with the time it saw it (when
// the line that completed it arrived).
type SSEItem struct {
	Kind Kind
	At   time.Time
	// Comment: the text after the colon, less one leading space.
	Text string
	// Event: the last event ID, type ("message" by default) and data.
	ID, Event, Data string
	// Retry: the reconnection delay.
	Retry time.Duration
}

func (it SSEItem) String() string {
	switch it.Kind {
	case KindComment:
		return fmt.Sprintf("comment %q", it.Text)
	case KindRetry:
		return fmt.Sprintf("retry %v", it.Retry)
	}
	return fmt.Sprintf("event id=%q event=%q data=%q", it.ID, it.Event, it.Data)
}

// SSEReader reads an event stream the way a browser's EventSource does
// (WHATWG HTML "Server-sent events": lines end in CRLF, LF or CR, a
// leading BOM is dropped, one space after the colon is dropped, unknown
// fields are ignored, a blank line dispatches non-empty data) and hands
// each event, comment and retry to the test with its arrival time. It
// does its own parsing, independent of the code under test.
type SSEReader struct {
	items chan SSEItem
	done  chan struct{} // closed when the stream has ended
	err   error         // set before done is closed; nil for a clean EOF
	close func()

	gotResp   chan struct{} // closed when resp or err is set
	resp      *http.Response
	headersAt time.Time

	mu   sync.Mutex
	seen []SSEItem
}

// NewSSEReader starts reading body in a goroutine that ends with the
// body; closeFn (may be nil) is called by Close.
func NewSSEReader(body io.Reader, closeFn func()) *SSEReader {
	r := newSSEReader(closeFn)
	close(r.gotResp)
	go r.run(body)
	return r
}

func newSSEReader(closeFn func()) *SSEReader {
	return &SSEReader{
		items:   make(chan SSEItem, 4096),
		done:    make(chan struct{}),
		gotResp: make(chan struct{}),
		close:   closeFn,
	}
}

// OpenSSE starts a GET for an event stream (Accept: text/event-stream
// plus the given headers) and returns at once: the request runs in the
// background, so the test can drive the upstream meanwhile. Response
// waits for the response headers; the body is read as an event stream
// (gzip decoded when the response is). The request ends with Close or
// when the test ends.
func OpenSSE(t testing.TB, client *http.Client, url string, header http.Header) *SSEReader {
	t.Helper()
	return Open(t, client, http.MethodGet, url, header, "text/event-stream")
}

// Open is OpenSSE with any method, and an Accept header only if accept
// is not empty.
func Open(t testing.TB, client *http.Client, method, url string, header http.Header, accept string) *SSEReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	var once sync.Once
	var body io.Closer
	var bodyMu sync.Mutex
	r := newSSEReader(func() {
		once.Do(func() {
			cancel()
			bodyMu.Lock()
			if body != nil {
				_ = body.Close()
			}
			bodyMu.Unlock()
		})
	})
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			r.err = fmt.Errorf("%s %s: %w", method, url, err)
			close(r.gotResp)
			close(r.done)
			return
		}
		bodyMu.Lock()
		body = resp.Body
		bodyMu.Unlock()
		r.resp, r.headersAt = resp, time.Now()
		close(r.gotResp)
		r.run(DecodedBody(resp))
	}()
	t.Cleanup(r.Close)
	return r
}

// Response waits (WaitTimeout) for the response headers and returns the
// response; its body belongs to the reader.
func (r *SSEReader) Response(t testing.TB) *http.Response {
	t.Helper()
	return r.ResponseWithin(t, WaitTimeout)
}

// ResponseWithin waits up to timeout for the response headers.
func (r *SSEReader) ResponseWithin(t testing.TB, timeout time.Duration) *http.Response {
	t.Helper()
	select {
	case <-r.gotResp:
	case <-time.After(timeout):
		t.Fatalf("sse client: no response headers within %v", timeout)
	}
	if r.resp == nil {
		t.Fatalf("sse client: %v", r.err)
	}
	return r.resp
}

// HeadersAt is when the response headers arrived (zero before).
func (r *SSEReader) HeadersAt() time.Time {
	select {
	case <-r.gotResp:
		return r.headersAt
	default:
		return time.Time{}
	}
}

// DecodedBody is resp's body, decoded if its Content-Encoding is gzip or
// zstd. The decoder reads its first bytes on the first Read, not here, so
// a stream whose first bytes are late does not block the caller.
func DecodedBody(resp *http.Response) io.Reader {
	switch strings.ToLower(resp.Header.Get("Content-Encoding")) {
	case "gzip":
		return &lazyDecoder{src: resp.Body, open: func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }}
	case "zstd":
		return &lazyDecoder{src: resp.Body, open: func(r io.Reader) (io.Reader, error) {
			// one goroutine, no read-ahead: each flushed block is
			// decoded as it arrives
			return zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		}}
	}
	return resp.Body
}

// lazyDecoder opens its decoder on the first Read.
type lazyDecoder struct {
	src  io.Reader
	open func(io.Reader) (io.Reader, error)
	dec  io.Reader
}

func (l *lazyDecoder) Read(p []byte) (int, error) {
	if l.dec == nil {
		dec, err := l.open(l.src)
		if err != nil {
			return 0, fmt.Errorf("decoding the body: %w", err)
		}
		l.dec = dec
	}
	return l.dec.Read(p)
}

// Close ends the request (closing the body). Safe to call more than once.
func (r *SSEReader) Close() {
	if r.close != nil {
		r.close()
	}
}

// Seen returns every item read so far, in order, including those Next
// has not returned yet.
func (r *SSEReader) Seen() []SSEItem {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]SSEItem(nil), r.seen...)
}

// Next returns the next item, failing the test if none arrives within
// timeout or the stream ends first.
func (r *SSEReader) Next(t testing.TB, timeout time.Duration) SSEItem {
	t.Helper()
	it, err := r.TryNext(timeout)
	if err != nil {
		t.Fatalf("sse client: %v", err)
	}
	return it
}

var errNoItem = errors.New("nothing arrived")

// TryNext returns the next item, or an error if none arrives within
// timeout (wrapping errNoItem) or the stream ends (io.EOF or the read
// error).
func (r *SSEReader) TryNext(timeout time.Duration) (SSEItem, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case it := <-r.items:
		return it, nil
	case <-timer.C:
		return SSEItem{}, fmt.Errorf("%w within %v", errNoItem, timeout)
	case <-r.done:
		// items sent before the end are still buffered
		select {
		case it := <-r.items:
			return it, nil
		default:
		}
		if r.err != nil {
			return SSEItem{}, fmt.Errorf("stream ended: %w", r.err)
		}
		return SSEItem{}, fmt.Errorf("stream ended: %w", io.EOF)
	}
}

// NextEvent returns the next event, skipping comments and retry fields,
// failing the test if none arrives within timeout.
func (r *SSEReader) NextEvent(t testing.TB, timeout time.Duration) SSEItem {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		it, err := r.TryNext(time.Until(deadline))
		if err != nil {
			t.Fatalf("sse client: waiting for an event: %v", err)
		}
		if it.Kind == KindEvent {
			return it
		}
	}
}

// NextComment returns the next comment, skipping retry fields, and fails
// the test if an event comes first or nothing within timeout.
func (r *SSEReader) NextComment(t testing.TB, timeout time.Duration) SSEItem {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		it, err := r.TryNext(time.Until(deadline))
		if err != nil {
			t.Fatalf("sse client: waiting for a comment: %v", err)
		}
		switch it.Kind {
		case KindComment:
			return it
		case KindEvent:
			t.Fatalf("sse client: waiting for a comment, got %v", it)
		}
	}
}

// WaitEnd waits up to timeout for the stream to end, failing the test if
// it does not, and returns the items that were still unread and the read
// error (nil for a clean end).
func (r *SSEReader) WaitEnd(t testing.TB, timeout time.Duration) ([]SSEItem, error) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("sse client: stream did not end within %v", timeout)
	}
	var rest []SSEItem
	for {
		select {
		case it := <-r.items:
			rest = append(rest, it)
		default:
			return rest, r.err
		}
	}
}

// Done is closed when the stream has ended.
func (r *SSEReader) Done() <-chan struct{} { return r.done }

func (r *SSEReader) emit(it SSEItem) {
	it.At = time.Now()
	r.mu.Lock()
	r.seen = append(r.seen, it)
	r.mu.Unlock()
	r.items <- it
}

func (r *SSEReader) run(body io.Reader) {
	defer close(r.done)
	if body == nil {
		return
	}
	br := bufio.NewReader(body)
	var (
		line      []byte
		first     = true
		skipLF    bool
		lastID    string
		eventType string
		data      bytes.Buffer
		dataSeen  bool
	)
	process := func(l []byte) {
		if first {
			l = bytes.TrimPrefix(l, []byte("\ufeff"))
			first = false
		}
		if len(l) == 0 {
			if dataSeen {
				d := data.Bytes()
				d = bytes.TrimSuffix(d, []byte("\n"))
				typ := eventType
				if typ == "" {
					typ = "message"
				}
				r.emit(SSEItem{Kind: KindEvent, ID: lastID, Event: typ, Data: string(d)})
			}
			data.Reset()
			dataSeen = false
			eventType = ""
			return
		}
		if l[0] == ':' {
			r.emit(SSEItem{Kind: KindComment, Text: strings.TrimPrefix(string(l[1:]), " ")})
			return
		}
		field, value, _ := bytes.Cut(l, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			eventType = string(value)
		case "data":
			data.Write(value)
			data.WriteByte('\n')
			dataSeen = true
		case "id":
			if !bytes.ContainsRune(value, 0) {
				lastID = string(value)
			}
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 && !bytes.ContainsAny(value, "+-") {
				r.emit(SSEItem{Kind: KindRetry, Retry: time.Duration(n) * time.Millisecond})
			}
		}
	}
	for {
		b, err := br.ReadByte()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.err = err
			}
			return
		}
		if skipLF {
			skipLF = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\r':
			skipLF = true
			process(line)
			line = line[:0]
		case '\n':
			process(line)
			line = line[:0]
		default:
			line = append(line, b)
		}
	}
}
