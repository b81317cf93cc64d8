package realtime

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
var metrics = struct {
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
}{}

// initMetrics creates the collectors once per process and registers
// them into reg.
func initMetrics(reg *prometheus.Registry) error {
	metrics.once.Do(newMetrics)
	if reg == nil {
		return nil
	}
	m := &metrics
	for _, c := range []prometheus.Collector{
		m.connections, m.received, m.deliveries, m.deliverySeconds,
		m.slowDisconnects, m.resets, m.refusals, m.redisUp,
		m.redisReconnects, m.resumes,
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
	m := &metrics
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
}

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

// observer feeds the hub's and transports' events into the metrics.
type observer struct{}

func (observer) MessageReceived(src broker.Source) {
	if int(src) < len(metrics.receivedBySource) {
		metrics.receivedBySource[src].Inc()
	}
}

func (observer) SlowConsumer() { metrics.slowDisconnects.Inc() }

func (observer) Reset(reason string) { metrics.resets.WithLabelValues(reason).Inc() }

func (observer) Resumed(from string) {
	if from == "redis" {
		metrics.resumeRedis.Inc()
	} else {
		metrics.resumeCache.Inc()
	}
}

func (observer) Delivered(transport string, e *hub.Envelope, n int) {
	switch transport {
	case "sse":
		metrics.deliveredSSE.Add(float64(n))
	case "ws":
		metrics.deliveredWS.Add(float64(n))
	default:
		metrics.deliveredPoll.Add(float64(n))
	}
	if !e.Msg.Received.IsZero() {
		metrics.deliverySeconds.observe(time.Since(e.Msg.Received).Seconds(), uint64(n))
	}
}

// batchHistogram is a Prometheus histogram that takes n observations of
// one value at once: the hub's fan-out reports its writes in batches
// (see hub.Tally), and client_golang's histograms take one at a time.
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

// connGauge is the open connections gauge of transport.
func connGauge(transport string) prometheus.Gauge {
	switch transport {
	case "sse":
		return metrics.connSSE
	case "ws":
		return metrics.connWS
	}
	return metrics.connPoll
}

func refuse(reason string) { metrics.refusals.WithLabelValues(reason).Inc() }

var (
	_ hub.Observer = observer{}
)
