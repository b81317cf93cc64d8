package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Commands between nodes (the admin API's disconnect) travel on one
// pub/sub channel under the prefix, whose name no channel of clients can
// have ('#' is not allowed in channel names). It has a connection of its
// own, kept by go-redis: a command sent while a node is reconnecting does
// not reach that node, which an operator repeating the command covers.

// controlSuffix follows the prefix in the name of the control channel.
const controlSuffix = "#control"

func (r *Redis) controlKey() string { return r.opts.Prefix + controlSuffix }

// Broadcast PUBLISHes payload on the control channel. With a Redis
// Cluster, a classic PUBLISH reaches the subscribers on every node.
func (r *Redis) Broadcast(ctx context.Context, payload []byte) error {
	if !r.Healthy() {
		return fmt.Errorf("broadcasting: %w", ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if err := r.uc.Publish(ctx, r.controlKey(), payload).Err(); err != nil {
		return fmt.Errorf("broadcasting: %w", unavailable(err))
	}
	return nil
}

// runControl hands the commands of the control channel to the Handler
// until ctx ends.
func (r *Redis) runControl(ctx context.Context) {
	defer r.wg.Done()
	ps := r.uc.Subscribe(ctx, r.controlKey())
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelHealthCheckInterval(r.opts.HealthCheck), redis.WithChannelSendTimeout(time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			r.h.Control([]byte(m.Payload))
		}
	}
}
