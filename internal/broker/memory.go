package broker

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is the embedded in-process broker of a single node: Publish
// hands the message straight to the Handler. It keeps no history (the
// hub's replay cache does) and runs no goroutine.
type Memory struct {
	h Handler

	mu     sync.RWMutex
	chans  map[string]*memChan
	closed bool
}

type memChan struct {
	mu    sync.Mutex // serialises the channel's deliveries, in id order
	epoch string
	seq   uint64
	// gone is set without mu: the hub calls Unsubscribe under locks that
	// its Deliver takes, and Publish calls Deliver under mu.
	gone atomic.Bool
}

// NewMemory returns an embedded broker that delivers to h.
func NewMemory(h Handler) *Memory {
	return &Memory{h: h, chans: make(map[string]*memChan)}
}

// Subscribe starts delivering channel's messages with a fresh epoch. It
// returns the channel's position: the id of its newest message, or the
// start of its epoch.
func (b *Memory) Subscribe(ctx context.Context, channel string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return "", fmt.Errorf("subscribing to %s: %w", channel, ErrUnavailable)
	}
	c := b.chans[channel]
	if c == nil {
		c = &memChan{epoch: newEpoch()}
		b.chans[channel] = c
	}
	return formatNodeID(c.epoch, c.seq), nil
}

// Unsubscribe forgets channel; a later Subscribe starts a new epoch.
func (b *Memory) Unsubscribe(channel string) {
	b.mu.Lock()
	c := b.chans[channel]
	delete(b.chans, channel)
	b.mu.Unlock()
	if c != nil {
		c.gone.Store(true)
	}
}

// Publish delivers a copy of data to the Handler before it returns and
// returns the message's node-assigned id; a Handler that blocks holds up
// Publish. A message for a channel nobody subscribes gets an id of a
// throwaway epoch and is handed to the Handler all the same: the hub
// counts it and keeps it in its replay cache like any other message.
func (b *Memory) Publish(ctx context.Context, channel, event string, data []byte, src Source) (string, error) {
	b.mu.RLock()
	c := b.chans[channel]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return "", fmt.Errorf("publishing to %s: %w", channel, ErrUnavailable)
	}
	m := &Message{Channel: channel, Event: event, Data: bytes.Clone(data), Source: src, Received: time.Now(), Arrival: nextArrival()}
	if m.Data == nil {
		m.Data = []byte{}
	}
	if c == nil {
		m.ID = formatNodeID(newEpoch(), 1)
		b.h.Deliver(m)
		return m.ID, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone.Load() {
		// unsubscribed meanwhile: as if nobody had subscribed
		m.ID = formatNodeID(newEpoch(), 1)
	} else {
		c.seq++
		m.ID = formatNodeID(c.epoch, c.seq)
	}
	b.h.Deliver(m)
	return m.ID, nil
}

// History always fails with errNoHistory.
func (b *Memory) History(ctx context.Context, channel, afterID string, limit int) ([]*Message, error) {
	return nil, errNoHistory
}

// Recent returns nothing: the embedded broker keeps no history (the
// node's replay cache holds every message published through it).
func (b *Memory) Recent(ctx context.Context, channel string, n int) ([]*Message, error) {
	return nil, nil
}

// Broadcast does nothing: the embedded broker serves one node.
func (b *Memory) Broadcast(ctx context.Context, payload []byte) error { return nil }

// Healthy is true until Close.
func (b *Memory) Healthy() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return !b.closed
}

// Close stops delivery; Subscribe and Publish fail afterwards.
func (b *Memory) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for name, c := range b.chans {
		c.gone.Store(true)
		delete(b.chans, name)
	}
	return nil
}

var _ Broker = (*Memory)(nil)
