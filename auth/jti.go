package auth

import (
	"container/heap"
	"sync"
	"time"
)

// jtiSet remembers used JWT ids until their expiry, in memory, for a
// single node without Redis. It holds at most max unexpired ids; when
// full, add refuses rather than forgetting an id early.
type jtiSet struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time
	exps jtiHeap
}

func newJTISet(max int) *jtiSet {
	return &jtiSet{max: max, seen: make(map[string]time.Time)}
}

// add records jti until exp. It reports ok false if jti was already seen,
// full true if the set has no room.
func (s *jtiSet) add(jti string, exp, now time.Time) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.exps) > 0 && !s.exps[0].exp.After(now) {
		e := heap.Pop(&s.exps).(jtiEntry)
		if s.seen[e.jti].Equal(e.exp) {
			delete(s.seen, e.jti)
		}
	}
	if _, dup := s.seen[jti]; dup {
		return false, false
	}
	if len(s.seen) >= s.max {
		return false, true
	}
	s.seen[jti] = exp
	heap.Push(&s.exps, jtiEntry{jti: jti, exp: exp})
	return true, false
}

type jtiEntry struct {
	jti string
	exp time.Time
}

type jtiHeap []jtiEntry

func (h jtiHeap) Len() int           { return len(h) }
func (h jtiHeap) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h jtiHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jtiHeap) Push(x any)        { *h = append(*h, x.(jtiEntry)) }
func (h *jtiHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = jtiEntry{}
	*h = old[:len(old)-1]
	return e
}
