package replay

import (
	"sort"
	"sync"
	"unsafe"

	"github.com/caddy-realtime/realtime/internal/broker"
)

// skey orders stream ids: by ms, then seq. The zero skey sorts before
// every stream message (no message has id "0-0").
type skey struct{ ms, seq uint64 }

func (a skey) less(b skey) bool { return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq) }

// nkey orders node-assigned ids within one log: by the ordinal of the
// epoch (the order in which the log saw the epochs, from 1), then seq.
// The zero nkey sorts before every node message.
type nkey struct {
	ord uint32
	seq uint64
}

func (a nkey) less(b nkey) bool { return a.ord < b.ord || (a.ord == b.ord && a.seq < b.seq) }

// entry is one retained message. s and n are prefix keys over the log's
// whole history (including trimmed entries): s is the greatest stream key
// among this entry and every earlier one, n the key of the last node
// message up to and including this one. Both never decrease along the
// log, which is what makes binary search work in a log that mixes both
// id shapes. A message of an id shape the log cannot order (or out of
// order) has kind kindOther and carries its predecessor's prefix keys.
type entry struct {
	m    *broker.Message
	at   int64 // Cache clock when appended
	s    skey
	n    nkey
	kind idKind
}

// epochRec is what a log knows of one epoch of node-assigned ids.
type epochRec struct {
	name        string
	ord         uint32
	first, last uint64 // first and last seq seen
}

// maxEpochs bounds the epochs a log remembers; a lookup with a forgotten
// epoch answers ErrUnknownID.
const maxEpochs = 16

// Approximate memory, for the cost handed to ristretto.
var (
	entrySize   = int64(unsafe.Sizeof(entry{}))
	msgOverhead = int64(unsafe.Sizeof(broker.Message{})) + 48 // struct + allocation slack of its strings and slice
	logOverhead = int64(unsafe.Sizeof(chanLog{})) + 160       // struct, map and ristretto entries, epoch records
)

func msgCost(m *broker.Message) int64 {
	return msgOverhead + int64(len(m.ID)+len(m.Event)+len(m.Data))
}

// Where a log stands with ristretto.
const (
	stUnsent   uint8 = iota // no Set accepted yet (or it was dropped): retry on next Append
	stPending               // Set accepted, admission not confirmed
	stAdmitted              // seen in the cache
)

// chanLog is the ordered log of one channel: a ring buffer of at most
// size entries, oldest at head.
type chanLog struct {
	mu   sync.Mutex
	ch   string
	size int
	ttl  int64 // nanoseconds

	buf  []entry
	head int
	n    int

	curS   skey // prefix keys for the next entry
	curN   nkey
	epochs []epochRec

	// What the log lost from its start.
	anyDropped  bool
	lastDropped entry // the most recently trimmed entry (m cleared)
	lost        error // history before the log's first entry was lost: ErrEvicted or ErrExpired

	// ristretto bookkeeping
	bytes    int64 // current cost
	reported int64 // cost last handed to ristretto
	setAt    int64 // clock of the last Set
	state    uint8
	dead     bool  // dropped from the cache; a new log takes over the channel
	deadErr  error // what a lookup on a dead log answers
}

func newLog(ch string, size int, ttl int64) *chanLog {
	return &chanLog{ch: ch, size: size, ttl: ttl, bytes: logOverhead + int64(len(ch))}
}

func (l *chanLog) at(i int) *entry {
	j := l.head + i
	if j >= len(l.buf) {
		j -= len(l.buf)
	}
	return &l.buf[j]
}

// popOldest trims the oldest entry.
func (l *chanLog) popOldest() {
	e := &l.buf[l.head]
	l.bytes -= msgCost(e.m)
	l.anyDropped = true
	l.lastDropped = *e
	l.lastDropped.m = nil
	*e = entry{}
	l.head++
	if l.head == len(l.buf) {
		l.head = 0
	}
	l.n--
}

// trimTTL drops entries appended at or before cutoff.
func (l *chanLog) trimTTL(cutoff int64) {
	for l.n > 0 && l.buf[l.head].at <= cutoff {
		l.popOldest()
	}
}

// push appends m, trimming the oldest entry when the log is full. It
// reports false when m repeats the newest retained id (a duplicate
// delivery) and was not appended.
func (l *chanLog) push(m *broker.Message, now int64) bool {
	if l.n > 0 && m.ID != "" && l.at(l.n-1).m.ID == m.ID {
		return false
	}
	e := entry{m: m, at: now}
	if p, ok := parseID(m.ID); ok {
		switch p.kind {
		case kindStream:
			if k := (skey{p.ms, p.seq}); l.curS.less(k) {
				l.curS = k
				e.kind = kindStream
			}
		case kindNode:
			if p.seq > 0 {
				e.kind = l.addNode(p)
			}
		}
	}
	e.s, e.n = l.curS, l.curN

	if l.n == len(l.buf) {
		if len(l.buf) < l.size {
			l.grow()
		} else {
			l.popOldest()
		}
	}
	j := l.head + l.n
	if j >= len(l.buf) {
		j -= len(l.buf)
	}
	l.buf[j] = e
	l.n++
	l.bytes += msgCost(m)
	return true
}

// addNode places a node id in the epoch records and advances curN; it
// returns kindOther for an id that breaks the order (an old epoch coming
// back, a seq not above the epoch's last).
func (l *chanLog) addNode(p parsedID) idKind {
	if k := len(l.epochs); k > 0 {
		last := &l.epochs[k-1]
		if last.name == p.epoch {
			if p.seq <= last.last {
				return kindOther
			}
			last.last = p.seq
			l.curN = nkey{last.ord, p.seq}
			return kindNode
		}
		for i := range l.epochs[:k-1] {
			if l.epochs[i].name == p.epoch {
				return kindOther
			}
		}
	}
	ord := l.curN.ord + 1
	if len(l.epochs) == maxEpochs {
		copy(l.epochs, l.epochs[1:])
		l.epochs = l.epochs[:maxEpochs-1]
	}
	l.epochs = append(l.epochs, epochRec{name: p.epoch, ord: ord, first: p.seq, last: p.seq})
	l.curN = nkey{ord, p.seq}
	return kindNode
}

func (l *chanLog) grow() {
	c := 2 * len(l.buf)
	if c < 8 {
		c = 8
	}
	if c > l.size {
		c = l.size
	}
	nb := make([]entry, c)
	for i := 0; i < l.n; i++ {
		nb[i] = *l.at(i)
	}
	l.bytes += int64(c-len(l.buf)) * entrySize
	l.buf, l.head = nb, 0
}

func (l *chanLog) epoch(name string) *epochRec {
	for i := range l.epochs {
		if l.epochs[i].name == name {
			return &l.epochs[i]
		}
	}
	return nil
}

// place returns the index of the first retained entry after position p.
//
// A position sits right after the last message of its own shape (stream
// or node) whose key is at or below it, and everything the log received
// after that message follows it. In a channel fed both ways, messages of
// the other shape between that message and the next one of p's shape
// are thus counted as after p: at least once, never a silent gap.
func (l *chanLog) place(p parsedID) (int, error) {
	switch p.kind {
	case kindStream:
		q := skey{p.ms, p.seq}
		return seek(l, q, kindStream, func(e *entry) skey { return e.s }, ErrNoLog)

	case kindNode:
		rec := l.epoch(p.epoch)
		if rec == nil {
			if l.lost != nil {
				return 0, l.lost
			}
			return 0, ErrUnknownID
		}
		if p.seq > rec.last {
			return 0, ErrUnknownID
		}
		// Nothing trimmed: the epoch's first message is retained and
		// nothing of this shape precedes p. p is the position just before
		// that message ("p.<epoch>.0" for an epoch starting at 1), or an
		// id the log never saw.
		var untrimmed error
		if p.seq+1 < rec.first {
			untrimmed = ErrUnknownID
		}
		q := nkey{rec.ord, p.seq}
		return seek(l, q, kindNode, func(e *entry) nkey { return e.n }, untrimmed)
	}
	return 0, ErrUnknownID
}

// prefixKey is the prefix key place searches by: skey or nkey.
type prefixKey[K any] interface {
	comparable
	less(K) bool
}

// seek is place for a position with key q among the messages of one
// shape: kind, whose prefix key key picks out of an entry (s or n).
// untrimmed is the answer when no message of that shape is at or below q
// and the log has lost nothing from its start.
func seek[K prefixKey[K]](l *chanLog, q K, kind idKind, key func(*entry) K, untrimmed error) (int, error) {
	// First entry past q; the candidate message is the one where the
	// prefix key reached its value just before that entry.
	i := sort.Search(l.n, func(i int) bool { return q.less(key(l.at(i))) })
	if i > 0 {
		v := key(l.at(i - 1))
		j := sort.Search(i, func(j int) bool { return !key(l.at(j)).less(v) })
		if e := l.at(j); e.kind == kind && key(e) == v {
			return j + 1, nil
		}
	}
	if l.anyDropped {
		if d := &l.lastDropped; d.kind == kind && !q.less(key(d)) {
			return 0, nil
		}
		return 0, ErrExpired
	}
	if l.lost != nil {
		return 0, l.lost
	}
	return 0, untrimmed
}
