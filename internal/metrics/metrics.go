// Package metrics keeps the module's Prometheus collectors, registered
// into the registry of Caddy's admin endpoint (realtime_* metrics; the
// names are part of the contract).
package metrics

import (
	"errors"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are process-wide collectors, registered into the registry of
// each config that uses the module (registering again is harmless), so
// counts survive a reload.
var m = struct {
	once sync.Once

	connections      *prometheus.GaugeVec
	received         *prometheus.CounterVec
	deliveries       *prometheus.CounterVec
	deliverySeconds  *batchHistogram
	slowDisconnects  prometheus.Counter
	resets           *prometheus.CounterVec
	refusals         *prometheus.CounterVec
	redisUp          prometheus.Gauge
	redisReconnects  prometheus.Counter
	resumes          *prometheus.CounterVec
	resumeCache      prometheus.Counter
	resumeRedis      prometheus.Counter
	deliveredSSE     prometheus.Counter
	deliveredWS      prometheus.Counter
	deliveredPoll    prometheus.Counter
	connSSE, connWS  prometheus.Gauge
	connPoll         prometheus.Gauge
	receivedBySource [4]prometheus.Counter
	presence         *prometheus.CounterVec
	webhookEvents    *prometheus.CounterVec
}{}

// Init creates the collectors once per process and registers them into
// reg (again: harmless, so counts survive a reload).
func Init(reg *prometheus.Registry) error {
	m.once.Do(newMetrics)
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		m.connections, m.received, m.deliveries, m.deliverySeconds,
		m.slowDisconnects, m.resets, m.refusals, m.redisUp,
		m.redisReconnects, m.resumes, m.presence, m.webhookEvents,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// newMetrics creates the collectors, and the children of the labelled
// ones the hot paths use, so that those never look a label up.
func newMetrics() {
	m.connections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "connections",
		Help: "Open hub subscriptions on this node, by transport.",
	}, []string{"transport"})
	m.received = counterVec("messages_received_total",
		"Messages that reached this node, by the way they first reached it.", "source")
	m.deliveries = counterVec("deliveries_total",
		"Messages written to clients, by transport.", "transport")
	m.deliverySeconds = newBatchHistogram(prometheus.BuildFQName(metricsNamespace, "", "delivery_seconds"),
		"Time from a message reaching the node to its write to a client.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5})
	m.slowDisconnects = counter("slow_consumer_disconnects_total",
		"Subscribers dropped because they fell too far behind.")
	m.resets = counterVec("resets_total", "Reset signals sent, by reason.", "reason")
	m.refusals = counterVec("refusals_total", "Refused requests, by reason.", "reason")
	m.redisUp = gauge("redis_up", "1 when Redis is reachable, 0 when not.")
	m.redisReconnects = counter("redis_reconnects_total",
		"Times Redis became reachable again after being down.")
	m.resumes = counterVec("resumes_total",
		"Channels resumed from a client's id, by where the missed messages came from (cache, redis); ids that could not be placed are counted in resets_total.",
		"from")
	m.resumeCache = m.resumes.WithLabelValues("cache")
	m.resumeRedis = m.resumes.WithLabelValues("redis")
	m.deliveredSSE = m.deliveries.WithLabelValues("sse")
	m.deliveredWS = m.deliveries.WithLabelValues("ws")
	m.deliveredPoll = m.deliveries.WithLabelValues("longpoll")
	m.connSSE = m.connections.WithLabelValues("sse")
	m.connWS = m.connections.WithLabelValues("ws")
	m.connPoll = m.connections.WithLabelValues("longpoll")
	for _, src := range []broker.Source{broker.SourcePubSub, broker.SourceStream, broker.SourceHTTP, broker.SourceWS} {
		m.receivedBySource[src] = m.received.WithLabelValues(src.String())
	}
	for _, r := range []string{"origin", "ticket", "scope", "limit", "bad_request"} {
		m.refusals.WithLabelValues(r)
	}
	m.presence = counterVec("presence_transitions_total",
		"Presence transitions of the deployment this node decided (and announced), by type: channel_occupied, member_added, member_removed, channel_vacated.", "type")
	m.webhookEvents = counterVec("webhook_events_total",
		"Lifecycle webhook events, by result: delivered (2xx), refused (another status below 500, not retried), failed (given up after a minute of retries), dropped (queue full).", "result")
	for _, r := range []string{"delivered", "refused", "failed", "dropped"} {
		m.webhookEvents.WithLabelValues(r)
	}
}

// PresenceTransition counts a presence transition this node decided.
func PresenceTransition(kind string) { m.presence.WithLabelValues(kind).Inc() }

// WebhookEvents counts n lifecycle webhook events with result.
func WebhookEvents(result string, n int) { m.webhookEvents.WithLabelValues(result).Add(float64(n)) }

// metricsNamespace prefixes every metric name: realtime_<name>.
const metricsNamespace = "realtime"

// counter, counterVec and gauge create the collectors of newMetrics in
// the metrics namespace; counterVec's have a single label.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help})
}

func counterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, []string{label})
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help})
}

// Observer feeds the hub's events into the metrics.
type Observer struct{}

func (Observer) MessageReceived(src broker.Source) {
	if int(src) < len(m.receivedBySource) {
		m.receivedBySource[src].Inc()
	}
}

func (Observer) SlowConsumer() { m.slowDisconnects.Inc() }

func (Observer) Reset(reason string) { m.resets.WithLabelValues(reason).Inc() }

func (Observer) Refused(reason string) { Refuse(reason) }

func (Observer) Resumed(from string) {
	if from == "redis" {
		m.resumeRedis.Inc()
	} else {
		m.resumeCache.Inc()
	}
}

func (Observer) Delivered(transport string, e *hub.Envelope, n int) {
	switch transport {
	case "sse":
		m.deliveredSSE.Add(float64(n))
	case "ws":
		m.deliveredWS.Add(float64(n))
	default:
		m.deliveredPoll.Add(float64(n))
	}
	if !e.Msg.Received.IsZero() {
		m.deliverySeconds.observe(time.Since(e.Msg.Received).Seconds(), uint64(n))
	}
}

// batchHistogram is a Prometheus histogram that takes n observations of
// one value at once: the hub's fan-out reports its writes in batches
// (see the hub's tally), and client_golang's histograms take one at a time.
type batchHistogram struct {
	desc    *prometheus.Desc
	bounds  []float64       // upper bounds, ascending
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumBits atomic.Uint64   // float64 bits
}

func newBatchHistogram(name, help string, bounds []float64) *batchHistogram {
	return &batchHistogram{
		desc:   prometheus.NewDesc(name, help, nil, nil),
		bounds: bounds,
		counts: make([]atomic.Uint64, len(bounds)+1),
	}
}

func (h *batchHistogram) observe(v float64, n uint64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)].Add(n)
	for {
		old := h.sumBits.Load()
		sum := math.Float64frombits(old) + v*float64(n)
		if h.sumBits.CompareAndSwap(old, math.Float64bits(sum)) {
			return
		}
	}
}

func (h *batchHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *batchHistogram) Collect(ch chan<- prometheus.Metric) {
	buckets := make(map[float64]uint64, len(h.bounds))
	var count uint64
	for i, b := range h.bounds {
		count += h.counts[i].Load()
		buckets[b] = count
	}
	count += h.counts[len(h.bounds)].Load()
	ch <- prometheus.MustNewConstHistogram(h.desc, count, math.Float64frombits(h.sumBits.Load()), buckets)
}

// Connections is the open connections gauge of transport.
func Connections(transport string) prometheus.Gauge {
	switch transport {
	case "sse":
		return m.connSSE
	case "ws":
		return m.connWS
	}
	return m.connPoll
}

// Refuse counts a refused request under reason.
func Refuse(reason string) { m.refusals.WithLabelValues(reason).Inc() }

var (
	_ hub.Observer = Observer{}
)

// RedisUp sets realtime_redis_up, and counts a reconnection when Redis
// comes back after being down.
func RedisUp(up, reconnected bool) {
	if up {
		m.redisUp.Set(1)
		if reconnected {
			m.redisReconnects.Inc()
		}
		return
	}
	m.redisUp.Set(0)
}
