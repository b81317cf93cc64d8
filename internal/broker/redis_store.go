package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Publish appends the message to the channel's stream (XADD MAXLEN ~
// StreamMaxLen, then EXPIRE StreamTTL) and returns its stream id. This
// node's subscribers get it from the stream reader, with Source src.
func (r *Redis) Publish(ctx context.Context, channel, event string, data []byte, src Source) (string, error) {
	if !r.Healthy() {
		return "", fmt.Errorf("publishing to %s: %w", channel, ErrUnavailable)
	}
	c := r.lookup(channel)
	if c != nil {
		c.mu.Lock()
		c.inflight++
		c.mu.Unlock()
	}
	id, err := r.xadd(ctx, channel, event, data)
	if c != nil {
		c.mu.Lock()
		c.inflight--
		if err == nil && !c.gone.Load() {
			if c.self == nil {
				c.self = make(map[string]Source)
			}
			c.self[id] = src
		}
		r.drain(c)
		c.mu.Unlock()
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

func (r *Redis) xadd(ctx context.Context, channel, event string, data []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	key := r.key(channel)
	values := []any{"data", data}
	if event != "" {
		values = append(values, "event", event)
	}
	maxLen, ttl := r.streamLimits(channel)
	pipe := r.uc.Pipeline()
	add := pipe.XAdd(ctx, &redis.XAddArgs{
		Stream: key,
		MaxLen: maxLen,
		Approx: true,
		Values: values,
	})
	if ttl > 0 {
		pipe.Expire(ctx, key, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if add.Err() == nil && add.Val() != "" {
			// stored; only the EXPIRE failed
			r.log.Warn("setting the stream ttl", zap.String("channel", channel), zap.Error(err))
			return add.Val(), nil
		}
		return "", fmt.Errorf("publishing to %s: %w", channel, unavailable(err))
	}
	return add.Val(), nil
}

// streamLimits returns the cap and ttl of channel's stream.
func (r *Redis) streamLimits(channel string) (int64, time.Duration) {
	maxLen, ttl := r.opts.StreamMaxLen, r.opts.StreamTTL
	if r.opts.PerChannel != nil {
		if n, t := r.opts.PerChannel(channel); n > 0 || t > 0 {
			if n > 0 {
				maxLen = n
			}
			if t > 0 {
				ttl = t
			}
		}
	}
	return maxLen, ttl
}

// Recent returns up to n of the newest messages of channel's stream,
// oldest first (XREVRANGE key + - COUNT n). A channel without a stream
// gives none.
func (r *Redis) Recent(ctx context.Context, channel string, n int) ([]*Message, error) {
	if n <= 0 {
		return nil, nil
	}
	if !r.Healthy() {
		return nil, fmt.Errorf("recent messages of %s: %w", channel, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	xs, err := r.uc.XRevRangeN(ctx, r.key(channel), "+", "-", int64(n)).Result()
	if err != nil {
		if isWrongType(err) {
			return nil, nil // a key of another type: no stream of ours
		}
		return nil, fmt.Errorf("recent messages of %s: %w", channel, unavailable(err))
	}
	now := time.Now()
	out := make([]*Message, len(xs))
	for i, x := range xs {
		out[len(xs)-1-i] = streamMessage(channel, x, now)
	}
	return out, nil
}

// History returns up to limit messages of channel's stream after afterID
// (XRANGE key (afterID + COUNT limit), oldest first. afterID "" means
// from the start; a node-assigned id gets errNoHistory; an id after the
// stream's last one, or not an id, errUnknownID; an id older than what
// the stream retains (or a stream that expired), ErrTrimmed. limit <= 0
// means 1000.
func (r *Redis) History(ctx context.Context, channel, afterID string, limit int) ([]*Message, error) {
	if _, _, ok := parseNodeID(afterID); ok {
		return nil, errNoHistory
	}
	if afterID == "" {
		afterID = "0-0"
	}
	if !IsStreamID(afterID) {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, errUnknownID)
	}
	if limit <= 0 {
		limit = defaultHistoryLimit
	}
	if !r.Healthy() {
		return nil, fmt.Errorf("history of %s: %w", channel, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return r.readHistory(ctx, channel, afterID, limit)
}

// readHistory reads the entries of History with XRANGE, and the stream's
// XINFO in the same transaction: it tells whether afterID can be placed
// and whether entries after it were lost.
func (r *Redis) readHistory(ctx context.Context, channel, afterID string, limit int) ([]*Message, error) {
	key := r.key(channel)
	pipe := r.uc.TxPipeline()
	rng := pipe.XRangeN(ctx, key, "("+afterID, "+", int64(limit))
	inf := pipe.XInfoStream(ctx, key)
	_, _ = pipe.Exec(ctx)
	info, err := inf.Result()
	switch {
	case err == nil:
	case isNoSuchKey(err):
		if afterID == "0-0" {
			return nil, nil
		}
		return nil, fmt.Errorf("history of %s: %w", channel, ErrTrimmed)
	case isWrongType(err):
		return nil, fmt.Errorf("history of %s: %w", channel, errNoHistory)
	default:
		return nil, fmt.Errorf("history of %s: %w", channel, unavailable(err))
	}
	if CompareStreamIDs(afterID, info.LastGeneratedID) > 0 {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, errUnknownID)
	}
	if afterID != "0-0" && trimmedAfter(info, afterID) {
		return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, ErrTrimmed)
	}
	xs, err := rng.Result()
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return nil, fmt.Errorf("history of %s after %q: %w", channel, afterID, errUnknownID)
		}
		return nil, fmt.Errorf("history of %s: %w", channel, unavailable(err))
	}
	msgs := make([]*Message, 0, len(xs))
	for _, x := range xs {
		m := streamMessage(channel, x, time.Time{})
		if ms, _, ok := parseStreamID(x.ID); ok {
			m.Received = time.UnixMilli(int64(ms))
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// trimmedAfter reports whether an entry after id may have been deleted
// from the stream. XDEL raises max-deleted-entry-id (Redis 7); trimming
// (MAXLEN) removes the oldest entries, leaving no trace but the first
// entry and entries-added, so an id older than the first entry is taken
// as trimmed as soon as anything was removed: the entry that followed it
// may be gone. (An id that was itself the last one trimmed is reported
// too: nothing tells it apart.)
func trimmedAfter(info *redis.XInfoStream, id string) bool {
	if IsStreamID(info.MaxDeletedEntryID) && CompareStreamIDs(id, info.MaxDeletedEntryID) < 0 {
		return true
	}
	if info.EntriesAdded > 0 && info.EntriesAdded <= info.Length {
		return false // Redis 7: nothing was ever removed
	}
	if info.Length == 0 {
		return CompareStreamIDs(id, info.LastGeneratedID) < 0
	}
	return CompareStreamIDs(id, info.FirstEntry.ID) < 0
}

func streamMessage(channel string, x redis.XMessage, now time.Time) *Message {
	m := &Message{Channel: channel, ID: x.ID, Source: SourceStream, Received: now, Data: []byte{}}
	if v, ok := x.Values["data"]; ok {
		m.Data = toBytes(v)
	}
	if v, ok := x.Values["event"]; ok {
		m.Event = string(toBytes(v))
	}
	return m
}

func toBytes(v any) []byte {
	switch v := v.(type) {
	case string:
		return []byte(v)
	case []byte:
		return bytes.Clone(v)
	case nil:
		return []byte{}
	}
	return fmt.Append(nil, v)
}
