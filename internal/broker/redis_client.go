package broker

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// newClient returns the client of a single server, or of the master its
// Sentinels name when the URL has a master_name. A poolSize above 0
// overrides the URL's pool_size.
func newClient(urls []string, poolSize int) (*redis.Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("no redis url")
	}
	u, err := url.Parse(urls[0])
	if err != nil {
		return nil, fmt.Errorf("invalid redis url: %w", err)
	}
	if u.Query().Has("master_name") {
		fo, err := redis.ParseFailoverURL(urls[0])
		if err != nil {
			return nil, fmt.Errorf("invalid redis sentinel url: %w", err)
		}
		connDefaults(&fo.DialTimeout, &fo.ContextTimeoutEnabled)
		if poolSize > 0 {
			fo.PoolSize = poolSize
		}
		return redis.NewFailoverClient(fo), nil
	}
	o, err := redis.ParseURL(urls[0])
	if err != nil {
		return nil, fmt.Errorf("invalid redis url: %w", err)
	}
	connDefaults(&o.DialTimeout, &o.ContextTimeoutEnabled)
	o.MaintNotificationsConfig = noMaintNotifications()
	if poolSize > 0 {
		o.PoolSize = poolSize
	}
	return redis.NewClient(o), nil
}

// newClusterClient returns the client of the Redis Cluster whose seed
// nodes urls name. The options of the first URL apply to every node.
func newClusterClient(urls []string) (*redis.ClusterClient, error) {
	var first *redis.Options
	addrs := make([]string, 0, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("invalid redis url: %w", err)
		}
		if u.Query().Has("master_name") {
			return nil, errors.New("a redis cluster url cannot name sentinels (master_name)")
		}
		o, err := redis.ParseURL(s)
		if err != nil {
			return nil, fmt.Errorf("invalid redis url: %w", err)
		}
		if o.DB != 0 {
			return nil, errors.New("a redis cluster has no database but 0")
		}
		if i == 0 {
			first = o
		} else if (o.TLSConfig != nil) != (first.TLSConfig != nil) {
			return nil, errors.New("redis cluster urls mix redis:// and rediss://")
		}
		addrs = append(addrs, o.Addr)
	}
	co := &redis.ClusterOptions{
		Addrs:                    addrs,
		ClientName:               first.ClientName,
		Protocol:                 first.Protocol,
		Username:                 first.Username,
		Password:                 first.Password,
		TLSConfig:                first.TLSConfig,
		DialTimeout:              first.DialTimeout,
		ReadTimeout:              first.ReadTimeout,
		WriteTimeout:             first.WriteTimeout,
		PoolSize:                 first.PoolSize,
		MinIdleConns:             first.MinIdleConns,
		MaxIdleConns:             first.MaxIdleConns,
		ConnMaxIdleTime:          first.ConnMaxIdleTime,
		ConnMaxLifetime:          first.ConnMaxLifetime,
		MaxRetries:               first.MaxRetries,
		MaintNotificationsConfig: noMaintNotifications(),
	}
	connDefaults(&co.DialTimeout, &co.ContextTimeoutEnabled)
	return redis.NewClusterClient(co), nil
}

// connDefaults sets what the broker needs of every client, whatever its
// URL says: a dial timeout when the URL sets none, and context deadlines
// that bound a command's network I/O, on which the Timeout option and
// Close rely.
func connDefaults(dialTimeout *time.Duration, contextTimeoutEnabled *bool) {
	if *dialTimeout == 0 {
		*dialTimeout = defaultDialTimeout
	}
	*contextTimeoutEnabled = true
}

// noMaintNotifications turns off the maintenance-notification handshake:
// its automatic fallback (for servers that do not know it) races between
// a client's pub/sub and command connections in go-redis v9.23.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// redactURLs drops passwords from urls, for logs.
func redactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, s := range urls {
		if u, err := url.Parse(s); err == nil {
			out[i] = u.Redacted()
		} else {
			out[i] = "(invalid url)"
		}
	}
	return out
}

// unavailable wraps err with ErrUnavailable unless Redis answered it (a
// server error such as WRONGTYPE is not an outage).
func unavailable(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func isNoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(strings.ToLower(err.Error()), "no such key")
}

func isWrongType(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
