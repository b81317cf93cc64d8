package replay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock for the cache.
type clock struct{ t atomic.Int64 }

func (c *clock) now() int64              { return c.t.Load() }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newTestCache(t testing.TB, opts Options) (*Cache, *clock) {
	t.Helper()
	clk := &clock{}
	clk.t.Store(1)
	c, err := newCache(opts, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, clk
}

func msg(ch, id string) *broker.Message {
	return &broker.Message{Channel: ch, ID: id, Data: []byte("payload " + id)}
}

func ids(ms []*broker.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// logOf returns the channel's log (nil if none), for tests.
func (c *Cache) logOf(ch string) *chanLog {
	sh := c.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.logs[ch]
}

func TestAfter(t *testing.T) {
	type query struct {
		id   string
		want []string // nil: no messages
		err  error
	}
	// A step appends an id, or advances the clock ("+<duration>"), or
	// evicts the channel ("evict").
	tests := []struct {
		name    string
		opts    Options
		steps   []string
		queries []query
	}{
		{
			name:  "stream found and end",
			steps: []string{"1-0", "2-0", "3-0"},
			queries: []query{
				{id: "1-0", want: []string{"2-0", "3-0"}},
				{id: "2-0", want: []string{"3-0"}},
				{id: "3-0"},
			},
		},
		{
			name:  "stream ordering",
			steps: []string{"10-0", "20-0", "20-5", "30-0"},
			queries: []query{
				{id: "15-7", want: []string{"20-0", "20-5", "30-0"}},
				{id: "20-1", want: []string{"20-5", "30-0"}},
				{id: "25-0", want: []string{"30-0"}},
				{id: "35-0"},
				{id: "5-0", err: ErrNoLog},
				{id: "0-0", err: ErrNoLog},
			},
		},
		{
			name:  "expired by size",
			opts:  Options{Size: 3},
			steps: []string{"1-0", "2-0", "3-0", "4-0", "5-0"},
			queries: []query{
				{id: "0-0", err: ErrExpired},
				{id: "1-0", err: ErrExpired},
				{id: "1-5", err: ErrExpired},
				{id: "2-0", want: []string{"3-0", "4-0", "5-0"}},
				{id: "2-9", want: []string{"3-0", "4-0", "5-0"}},
				{id: "3-0", want: []string{"4-0", "5-0"}},
				{id: "5-0"},
			},
		},
		{
			name:  "expired by ttl",
			opts:  Options{TTL: time.Minute},
			steps: []string{"1-0", "2-0", "+50s", "3-0", "+15s"},
			queries: []query{
				{id: "1-0", err: ErrExpired},
				{id: "2-0", want: []string{"3-0"}},
				{id: "3-0"},
			},
		},
		{
			name:  "all expired by ttl",
			opts:  Options{TTL: time.Minute},
			steps: []string{"1-0", "2-0", "+2m"},
			queries: []query{
				{id: "1-0", err: ErrExpired},
				{id: "2-0"},
				{id: "9-0"},
			},
		},
		{
			name:  "node ids",
			steps: []string{"p.ab1.1", "p.ab1.2", "p.ab1.3"},
			queries: []query{
				{id: "p.ab1.0", want: []string{"p.ab1.1", "p.ab1.2", "p.ab1.3"}},
				{id: "p.ab1.2", want: []string{"p.ab1.3"}},
				{id: "p.ab1.3"},
				{id: "p.zz9.1", err: ErrUnknownID},
				{id: "p.ab1.4", err: ErrUnknownID},
				{id: "2-0", err: ErrNoLog},
			},
		},
		{
			name:  "node ids expired by size",
			opts:  Options{Size: 2},
			steps: []string{"p.e.1", "p.e.2", "p.e.3", "p.e.4"},
			queries: []query{
				{id: "p.e.0", err: ErrExpired},
				{id: "p.e.1", err: ErrExpired},
				{id: "p.e.2", want: []string{"p.e.3", "p.e.4"}},
				{id: "p.e.4"},
				{id: "p.e.5", err: ErrUnknownID},
			},
		},
		{
			name: "new epoch after a gap",
			// The reset signal of the gap carries the new epoch's first id.
			steps: []string{"p.a.1", "p.a.2", "p.b.1", "p.b.2"},
			queries: []query{
				{id: "p.a.1", want: []string{"p.a.2", "p.b.1", "p.b.2"}},
				{id: "p.a.2", want: []string{"p.b.1", "p.b.2"}},
				{id: "p.b.0", want: []string{"p.b.1", "p.b.2"}},
				{id: "p.b.1", want: []string{"p.b.2"}},
				{id: "p.a.3", err: ErrUnknownID},
			},
		},
		{
			name:  "old epoch trimmed",
			opts:  Options{Size: 2},
			steps: []string{"p.a.1", "p.a.2", "p.b.1", "p.b.2"},
			queries: []query{
				{id: "p.a.1", err: ErrExpired},
				{id: "p.a.2", want: []string{"p.b.1", "p.b.2"}},
				{id: "p.b.0", want: []string{"p.b.1", "p.b.2"}},
			},
		},
		{
			name:  "mixed shapes",
			steps: []string{"p.a.1", "5-0", "p.a.2", "6-0"},
			queries: []query{
				{id: "5-0", want: []string{"p.a.2", "6-0"}},
				{id: "5-5", want: []string{"p.a.2", "6-0"}},
				{id: "p.a.1", want: []string{"5-0", "p.a.2", "6-0"}},
				{id: "p.a.2", want: []string{"6-0"}},
				{id: "6-0"},
			},
		},
		{
			name:  "duplicate delivery",
			steps: []string{"1-0", "2-0", "2-0", "3-0"},
			queries: []query{
				{id: "1-0", want: []string{"2-0", "3-0"}},
			},
		},
		{
			name:  "out of order id is kept but not placed",
			steps: []string{"5-0", "3-0", "6-0"},
			queries: []query{
				{id: "5-0", want: []string{"3-0", "6-0"}},
				{id: "3-0", err: ErrNoLog},
			},
		},
		{
			name:  "node seq going back is kept but not placed",
			steps: []string{"p.a.1", "p.a.3", "p.a.2", "p.a.4"},
			queries: []query{
				{id: "p.a.3", want: []string{"p.a.2", "p.a.4"}},
				{id: "p.a.2", want: []string{"p.a.3", "p.a.2", "p.a.4"}},
				{id: "p.a.4"},
			},
		},
		{
			name:  "old epoch coming back is kept but not placed",
			steps: []string{"p.a.1", "p.b.1", "p.a.2"},
			queries: []query{
				{id: "p.a.1", want: []string{"p.b.1", "p.a.2"}},
				{id: "p.b.1", want: []string{"p.a.2"}},
				{id: "p.a.2", err: ErrUnknownID},
			},
		},
		{
			name:  "malformed ids",
			steps: []string{"1-0"},
			queries: []query{
				{id: "", err: ErrUnknownID},
				{id: "1", err: ErrUnknownID},
				{id: "01-0", err: ErrUnknownID},
				{id: "1-0-0", err: ErrUnknownID},
				{id: "p..1", err: ErrUnknownID},
				{id: "p.A.1", err: ErrUnknownID},
				{id: "18446744073709551616-0", err: ErrUnknownID},
			},
		},
		{
			name:  "evicted",
			steps: []string{"1-0", "2-0", "evict"},
			queries: []query{
				{id: "1-0", err: ErrEvicted},
				{id: "2-0", err: ErrEvicted},
				{id: "p.a.1", err: ErrEvicted},
			},
		},
		{
			name:  "evicted then new messages",
			steps: []string{"1-0", "2-0", "evict", "3-0", "4-0"},
			queries: []query{
				{id: "1-0", err: ErrEvicted},
				{id: "2-0", err: ErrEvicted},
				{id: "3-0", want: []string{"4-0"}},
				{id: "3-5", want: []string{"4-0"}},
				{id: "p.a.1", err: ErrEvicted},
			},
		},
		{
			name:  "evicted node ids then new epoch",
			steps: []string{"p.a.1", "evict", "p.b.1"},
			queries: []query{
				{id: "p.a.1", err: ErrEvicted},
				{id: "p.b.0", err: ErrEvicted},
				{id: "p.b.1"},
			},
		},
		{
			name:  "tomb forgotten after ttl",
			opts:  Options{TTL: time.Minute},
			steps: []string{"1-0", "evict", "+2m"},
			queries: []query{
				{id: "1-0", err: ErrNoLog},
			},
		},
		{
			name:  "expired log dropped",
			opts:  Options{TTL: time.Minute},
			steps: []string{"1-0", "+2m", "evict"},
			queries: []query{
				{id: "1-0", err: ErrExpired},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTestCache(t, tc.opts)
			const ch = "room:1"
			for _, s := range tc.steps {
				switch {
				case s == "evict":
					c.drop(c.logOf(ch), false)
				case strings.HasPrefix(s, "+"):
					d, err := time.ParseDuration(s[1:])
					if err != nil {
						t.Fatal(err)
					}
					clk.advance(d)
				default:
					c.Append(msg(ch, s))
				}
			}
			for _, q := range tc.queries {
				got, err := c.After(ch, q.id)
				if !errors.Is(err, q.err) {
					t.Errorf("After(%q): error %v, want %v", q.id, err, q.err)
					continue
				}
				if g := ids(got); fmt.Sprint(g) != fmt.Sprint(q.want) && !(len(g) == 0 && len(q.want) == 0) {
					t.Errorf("After(%q) = %v, want %v", q.id, g, q.want)
				}
			}
		})
	}
}

func TestAfterNoLog(t *testing.T) {
	c, _ := newTestCache(t, Options{})
	if _, err := c.After("nothing", "1-0"); !errors.Is(err, ErrNoLog) {
		t.Fatalf("error %v, want ErrNoLog", err)
	}
	if got := c.Last("nothing"); got != "" {
		t.Fatalf("Last = %q", got)
	}
}

func TestLast(t *testing.T) {
	c, clk := newTestCache(t, Options{TTL: time.Minute})
	c.Append(msg("a", "1-0"))
	c.Append(msg("a", "2-0"))
	if got := c.Last("a"); got != "2-0" {
		t.Fatalf("Last = %q, want 2-0", got)
	}
	clk.advance(2 * time.Minute)
	if got := c.Last("a"); got != "" {
		t.Fatalf("Last after ttl = %q, want empty", got)
	}
}

func TestNewOptions(t *testing.T) {
	for _, o := range []Options{{Size: -1}, {TTL: -1}, {MaxBytes: -1}, {Size: maxSizeLimit + 1}, {TTL: maxTTL + 1}} {
		if c, err := New(o); err == nil {
			c.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.size != DefaultSize || c.ttl != int64(DefaultTTL) || c.maxBytes != DefaultMaxBytes {
		t.Fatalf("defaults not applied: %d %d %d", c.size, c.ttl, c.maxBytes)
	}
	c.Append(msg("a", "1-0"))
	c.Close()
	c.Close()
	c.Append(msg("a", "2-0")) // ignored after Close
	if _, err := c.After("a", "1-0"); !errors.Is(err, ErrNoLog) {
		t.Fatalf("After after Close: %v", err)
	}
}

// TestAfterModel checks stream-id answers against a plain list of every
// message appended, trimmed by size.
func TestAfterModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		size := 1 + r.IntN(20)
		c, _ := newTestCache(t, Options{Size: size, MaxBytes: 1 << 20})
		var all []skey
		k := skey{ms: uint64(r.IntN(5))}
		for range r.IntN(60) {
			if r.IntN(2) == 0 {
				k.ms += uint64(1 + r.IntN(3))
				k.seq = 0
			} else {
				k.seq += uint64(1 + r.IntN(2))
			}
			if k == (skey{}) {
				k.seq = 1
			}
			all = append(all, k)
			c.Append(msg("m", fmt.Sprintf("%d-%d", k.ms, k.seq)))
		}
		retained := all[max(0, len(all)-size):]
		dropped := len(all) > size
		for range 30 {
			q := skey{ms: uint64(r.IntN(int(k.ms) + 3)), seq: uint64(r.IntN(4))}
			var after []string
			seenBefore := false
			for _, m := range all {
				if q.less(m) {
					after = append(after, fmt.Sprintf("%d-%d", m.ms, m.seq))
				} else {
					seenBefore = true
				}
			}
			var wantErr error
			switch {
			case dropped && len(after) > len(retained):
				wantErr, after = ErrExpired, nil
			case !dropped && !seenBefore:
				wantErr, after = ErrNoLog, nil
			}
			qs := fmt.Sprintf("%d-%d", q.ms, q.seq)
			got, err := c.After("m", qs)
			if !errors.Is(err, wantErr) || fmt.Sprint(ids(got)) != fmt.Sprint(after) && len(got)+len(after) > 0 {
				t.Fatalf("round %d size %d log %v: After(%s) = %v, %v; want %v, %v",
					round, size, all, qs, ids(got), err, after, wantErr)
			}
		}
		c.Close()
	}
}

// checkRun fails unless got is the run of stream ids after id "<k>-0",
// k+1, k+2, ... (each channel below uses ids "<n>-0").
func checkRun(got []*broker.Message, k int) error {
	for i, m := range got {
		if want := strconv.Itoa(k+1+i) + "-0"; m.ID != want {
			return fmt.Errorf("after %d-0: message %d is %s, want %s (%v)", k, i, m.ID, want, ids(got))
		}
	}
	return nil
}

func TestConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"roomy", Options{Size: 100}},
		{"evicting", Options{Size: 100, MaxBytes: 32 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const writers, chansPer, msgs, readers = 8, 8, 400, 8
			var wg sync.WaitGroup
			var done atomic.Bool
			for w := range writers {
				wg.Go(func() {
					for i := 1; i <= msgs; i++ {
						for k := range chansPer {
							c.Append(msg(fmt.Sprintf("ch%d.%d", w, k), strconv.Itoa(i)+"-0"))
						}
					}
				})
			}
			errs := make(chan error, readers)
			var rg sync.WaitGroup
			var answers atomic.Int64
			for r := range readers {
				rg.Go(func() {
					rnd := rand.New(rand.NewPCG(uint64(r), 9))
					for !done.Load() {
						ch := fmt.Sprintf("ch%d.%d", rnd.IntN(writers), rnd.IntN(chansPer))
						k := rnd.IntN(msgs + 2)
						got, err := c.After(ch, strconv.Itoa(k)+"-0")
						switch {
						case err == nil:
							if err := checkRun(got, k); err != nil {
								errs <- err
								return
							}
							answers.Add(1)
						case errors.Is(err, ErrExpired), errors.Is(err, ErrNoLog), errors.Is(err, ErrEvicted):
						default:
							errs <- err
							return
						}
						_ = c.Last(ch)
					}
				})
			}
			wg.Wait()
			done.Store(true)
			rg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d exact answers", answers.Load())
			// Once the writers are done, a channel still held answers
			// exactly from its newest message back.
			for w := range writers {
				for k := range chansPer {
					ch := fmt.Sprintf("ch%d.%d", w, k)
					last := c.Last(ch)
					if last == "" {
						continue
					}
					if last != strconv.Itoa(msgs)+"-0" {
						t.Errorf("%s: Last = %s", ch, last)
					}
					got, err := c.After(ch, strconv.Itoa(msgs-10)+"-0")
					if err == nil {
						err = checkRun(got, msgs-10)
					}
					if err != nil && !errors.Is(err, ErrEvicted) {
						t.Errorf("%s: %v", ch, err)
					}
				}
			}
		})
	}
}

// TestMemoryBound fills a small cache with many channels: the logs it
// keeps stay within the bound, and the channels it dropped say so.
func TestMemoryBound(t *testing.T) {
	const maxBytes = 64 << 10
	c, _ := newTestCache(t, Options{MaxBytes: maxBytes})
	const chans, msgs = 400, 30
	data := make([]byte, 200)
	for i := 1; i <= msgs; i++ {
		for k := range chans {
			c.Append(&broker.Message{Channel: fmt.Sprintf("c%d", k), ID: strconv.Itoa(i) + "-0", Data: data})
		}
		c.rc.Wait()
	}
	var total, kept int64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		for _, l := range sh.logs {
			l.mu.Lock()
			total += l.bytes
			kept++
			l.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
	used := c.rc.MaxCost() - c.rc.RemainingCost()
	t.Logf("%d logs kept, %d bytes by their count, %d by ristretto's", kept, total, used)
	// Costs are re-reported when they move by an eighth (at least 512
	// bytes), so the sum may run ahead of ristretto's by that much.
	if limit := int64(maxBytes) + maxBytes/8 + kept*512; total > limit {
		t.Errorf("logs hold %d bytes, over %d", total, limit)
	}
	if used > maxBytes+maxBytes/8 {
		t.Errorf("ristretto counts %d bytes, over %d", used, maxBytes)
	}
	var exact, evicted int
	for k := range chans {
		ch := fmt.Sprintf("c%d", k)
		got, err := c.After(ch, "1-0")
		switch {
		case err == nil:
			if err := checkRun(got, 1); err != nil || len(got) != msgs-1 {
				t.Errorf("%s: %v (%d messages)", ch, err, len(got))
			}
			exact++
		case errors.Is(err, ErrEvicted):
			evicted++
		default:
			t.Errorf("%s: %v", ch, err)
		}
	}
	t.Logf("%d channels whole, %d evicted", exact, evicted)
	if evicted == 0 {
		t.Error("no channel evicted")
	}
}

// TestTooBigForCache: a channel whose log outgrows the whole bound is
// dropped rather than kept over it.
func TestTooBigForCache(t *testing.T) {
	c, _ := newTestCache(t, Options{MaxBytes: 16 << 10})
	data := make([]byte, 1024)
	for i := 1; i <= 100; i++ {
		c.Append(&broker.Message{Channel: "big", ID: strconv.Itoa(i) + "-0", Data: data})
		c.rc.Wait()
	}
	if l := c.logOf("big"); l != nil {
		l.mu.Lock()
		b := l.bytes
		l.mu.Unlock()
		if b > 16<<10+16<<10/8+512 {
			t.Fatalf("log of %d bytes kept", b)
		}
	}
	if _, err := c.After("big", "1-0"); !errors.Is(err, ErrEvicted) {
		t.Fatalf("After: %v, want ErrEvicted", err)
	}
}

// FuzzAfter looks up arbitrary ids in a log mixing both id shapes, two
// epochs and trimmed messages: no panic, only the documented errors, and
// an answer is always a suffix of the log.
func FuzzAfter(f *testing.F) {
	for _, s := range []string{"", "0-0", "5-0", "7-3", "99-0", "p.a.0", "p.a.2", "p.b.1", "p.b.9", "p.c.1", "x", "p.a.18446744073709551615"} {
		f.Add(s)
	}
	steps := []string{"p.a.1", "3-0", "p.a.2", "5-0", "p.a.3", "p.b.1", "7-0", "p.b.2", "9-0", "p.b.3"}
	f.Fuzz(func(t *testing.T, id string) {
		c, _ := newTestCache(t, Options{Size: 6, MaxBytes: 1 << 20})
		for _, s := range steps {
			c.Append(msg("f", s))
		}
		got, err := c.After("f", id)
		switch {
		case err == nil:
			if g, want := fmt.Sprint(ids(got)), fmt.Sprint(steps[len(steps)-len(got):]); len(got) > 0 && g != want {
				t.Fatalf("After(%q) = %s, not a suffix of the log", id, g)
			}
		case errors.Is(err, ErrExpired), errors.Is(err, ErrUnknownID), errors.Is(err, ErrNoLog):
		default:
			t.Fatalf("After(%q): unexpected error %v", id, err)
		}
	})
}

// TestOrphanKey: a log dropped while its Set is still in flight may land
// in ristretto after its channel got a new log; the new log must take the
// key over rather than be refused as a duplicate.
func TestOrphanKey(t *testing.T) {
	c, _ := newTestCache(t, Options{MaxBytes: 1 << 20})
	for i := range 200 {
		ch := fmt.Sprintf("o%d", i)
		c.Append(msg(ch, "1-0"))
		c.drop(c.logOf(ch), false) // as if evicted at once
		c.Append(msg(ch, "2-0"))
		c.rc.Wait()
		l := c.logOf(ch)
		if l == nil {
			t.Fatalf("%s: new log dropped", ch)
		}
		if v, ok := c.rc.Get(ch); !ok || v != l {
			t.Fatalf("%s: ristretto holds %p (%v), want the live log %p", ch, v, ok, l)
		}
		if _, err := c.After(ch, "1-0"); !errors.Is(err, ErrEvicted) {
			t.Fatalf("%s: After(1-0): %v, want ErrEvicted", ch, err)
		}
		if got, err := c.After(ch, "2-0"); err != nil || len(got) != 0 {
			t.Fatalf("%s: After(2-0) = %v, %v", ch, ids(got), err)
		}
	}
}

func TestManyEpochs(t *testing.T) {
	c, _ := newTestCache(t, Options{MaxBytes: 1 << 20})
	var all []string
	for i := range maxEpochs + 4 {
		id := fmt.Sprintf("p.e%d.1", i)
		all = append(all, id)
		c.Append(msg("m", id))
	}
	// The oldest epochs are forgotten; the others are still ordered.
	if _, err := c.After("m", "p.e0.1"); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("forgotten epoch: %v", err)
	}
	got, err := c.After("m", "p.e4.1")
	if err != nil || fmt.Sprint(ids(got)) != fmt.Sprint(all[5:]) {
		t.Fatalf("After(p.e4.1) = %v, %v", ids(got), err)
	}
}
