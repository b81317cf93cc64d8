package presence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// heldStore is the Memory store with reads that wait until released, so
// a test can hold reads running: each Get reports on started and answers
// the number of reads of its channel so far as Connections.
type heldStore struct {
	*Memory
	started chan string
	release chan struct{}

	mu    sync.Mutex
	reads map[string]int
}

func newHeldStore() *heldStore {
	return &heldStore{Memory: NewMemory(), started: make(chan string, 100), release: make(chan struct{}), reads: make(map[string]int)}
}

func (s *heldStore) Get(ctx context.Context, channel string) (Snapshot, []Transition, error) {
	s.mu.Lock()
	s.reads[channel]++
	n := s.reads[channel]
	s.mu.Unlock()
	s.started <- channel
	select {
	case <-s.release:
	case <-ctx.Done():
		return Snapshot{}, nil, ctx.Err()
	}
	return Snapshot{Channel: channel, Connections: n, Members: []Member{}}, nil, nil
}

func (s *heldStore) readsOf(channel string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[channel]
}

func waitStarted(t *testing.T, s *heldStore) string {
	t.Helper()
	select {
	case ch := <-s.started:
		return ch
	case <-time.After(5 * time.Second):
		t.Fatal("no read started")
		return ""
	}
}

// waitAsked waits until n requests wait for channel's reads.
func waitAsked(t *testing.T, tr *Tracker, channel string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.snaps.mu.Lock()
		asked := 0
		if cr := tr.snaps.byCh[channel]; cr != nil {
			asked = cr.running.asked
			if cr.next != nil {
				asked += cr.next.asked
			}
		}
		tr.snaps.mu.Unlock()
		if asked == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests wait for %s's presence, want %d", asked, channel, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A flood of requests for one channel costs two reads: the one running
// when they came and one after it, which answers them all.
func TestSnapshotsShareReads(t *testing.T) {
	store := newHeldStore()
	tr := NewTracker(store, Options{})
	defer tr.Close()
	ctx := context.Background()
	const n = 50
	answers := make(chan int, n+1)
	ask := func() {
		snap, err := tr.Snapshot(ctx, "room")
		if err != nil {
			t.Error(err)
		}
		answers <- snap.Connections
	}
	go ask()
	waitStarted(t, store)
	for range n {
		go ask()
	}
	waitAsked(t, tr, "room", n+1)
	store.release <- struct{}{}
	waitStarted(t, store)
	store.release <- struct{}{}
	byRead := map[int]int{}
	for range n + 1 {
		byRead[<-answers]++
	}
	if byRead[1] != 1 || byRead[2] != n {
		t.Fatalf("answers by read: %v, want the first request from read 1 and the %d others from read 2", byRead, n)
	}
	if got := store.readsOf("room"); got != 2 {
		t.Fatalf("%d reads, want 2", got)
	}
	tr.snaps.mu.Lock()
	left := len(tr.snaps.byCh)
	tr.snaps.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d channels still tracked after every read ended", left)
	}
}

// At most maxSnapshotReads reads run at once, whatever the channels.
func TestSnapshotsBoundReadsAtOnce(t *testing.T) {
	store := newHeldStore()
	tr := NewTracker(store, Options{})
	defer tr.Close()
	const channels = 3 * maxSnapshotReads
	done := make(chan error, channels)
	for i := range channels {
		go func() {
			_, err := tr.Snapshot(context.Background(), fmt.Sprintf("room%d", i))
			done <- err
		}()
	}
	for range maxSnapshotReads {
		waitStarted(t, store)
	}
	for i := range channels - maxSnapshotReads {
		// every slot is taken: the next read starts only once one ends
		select {
		case ch := <-store.started:
			t.Fatalf("read of %s started beyond the %d at once", ch, maxSnapshotReads)
		default:
		}
		store.release <- struct{}{}
		if waitStarted(t, store) == "" {
			t.Fatalf("read %d did not start", maxSnapshotReads+i)
		}
	}
	for range maxSnapshotReads {
		store.release <- struct{}{}
	}
	for range channels {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// A request that gives up stops waiting at once; the read goes on and
// ends on its own.
func TestSnapshotsRequestGivesUp(t *testing.T) {
	store := newHeldStore()
	tr := NewTracker(store, Options{Timeout: time.Second})
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tr.Snapshot(ctx, "room")
		errc <- err
	}()
	waitStarted(t, store)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want the request's own end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request that gave up still waits for the read")
	}
	store.release <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.snaps.mu.Lock()
		left := len(tr.snaps.byCh)
		tr.snaps.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read never ended")
		}
		time.Sleep(time.Millisecond)
	}
}
