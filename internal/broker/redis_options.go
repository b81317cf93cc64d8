package broker

import "time"

// RedisOptions configure NewRedis. The zero value of every field but URLs
// means its default.
type RedisOptions struct {
	// URLs of the Redis server: one redis:// or rediss:// URL
	// (redis://[user:password@]host:port[/db][?options], the options of
	// go-redis ParseURL). A URL with a master_name query parameter names
	// Sentinels instead: redis://sentinel1:26379?master_name=mymaster
	// &addr=sentinel2:26379 (go-redis ParseFailoverURL). Several URLs
	// are the nodes of a Redis Cluster (the seed addresses); credentials
	// and TLS come from the first one.
	URLs []string
	// Prefix of every channel and stream key, default DefaultPrefix.
	Prefix string
	// StreamMaxLen caps each channel's stream, as XADD MAXLEN ~ n,
	// default 1000.
	StreamMaxLen int64
	// StreamTTL is set with EXPIRE on a stream after each Publish,
	// default 10m; negative: no EXPIRE.
	StreamTTL time.Duration
	// PerChannel, when set, gives a channel's stream cap and ttl (the
	// `channels` rules) in place of StreamMaxLen and StreamTTL; a zero
	// result takes theirs.
	PerChannel func(channel string) (maxLen int64, ttl time.Duration)
	// Timeout bounds each operation the hub waits for (Subscribe,
	// Publish, History), default 3s.
	Timeout time.Duration
	// HealthCheck is how long an idle connection may stay silent before
	// it is pinged; a connection that does not answer for two periods is
	// replaced. Default 5s.
	HealthCheck time.Duration
	// OnHealth, when set, is called with each change of Healthy, in
	// order, from the broker's goroutines; it must not block.
	OnHealth func(up bool)
}

// DefaultPrefix is put in front of a channel's name to make its Redis
// channel and stream key.
const DefaultPrefix = "realtime:"

// Defaults of RedisOptions and of what a Redis URL leaves unset.
const (
	// A stream keeps by default as many messages, for as long, as a
	// node's replay cache (replay.DefaultSize and replay.DefaultTTL,
	// which the adapter passes on): a resume the cache cannot serve
	// finds the same span in Redis. They are not named from here
	// because the replay package imports this one.
	defaultStreamMaxLen = 1000
	defaultStreamTTL    = 10 * time.Minute
	// defaultTimeout bounds what a caller waits for; a Redis that does
	// not answer within it is as good as down.
	defaultTimeout = 3 * time.Second
	// defaultHealthCheck notices a dead connection within two periods
	// (ten seconds) without pinging a busy one at all.
	defaultHealthCheck = 5 * time.Second
	// defaultDialTimeout replaces go-redis's 5s when a URL sets no
	// dial_timeout: a connection attempt to a server that does not
	// answer (down, or failed over) gives up within the default
	// Timeout, and the reconnect loop moves on.
	defaultDialTimeout = 2 * time.Second
	// defaultHistoryLimit is History's limit when the caller sets none:
	// a whole stream of the default length.
	defaultHistoryLimit = defaultStreamMaxLen
)

func (o *RedisOptions) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.StreamMaxLen <= 0 {
		o.StreamMaxLen = defaultStreamMaxLen
	}
	if o.StreamTTL == 0 {
		o.StreamTTL = defaultStreamTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.HealthCheck <= 0 {
		o.HealthCheck = defaultHealthCheck
	}
}
