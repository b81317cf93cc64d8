package realtime

import (
	"errors"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/broker"
	"github.com/caddy-realtime/realtime/hub"
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
	deliverySeconds  prometheus.Histogram
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

func initMetrics(reg *prometheus.Registry) error {
	m := &metrics
	m.once.Do(func() {
		const ns = "realtime"
		m.connections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections",
			Help: "Open hub subscriptions on this node, by transport.",
		}, []string{"transport"})
		m.received = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "messages_received_total",
			Help: "Messages that reached this node, by the way they first reached it.",
		}, []string{"source"})
		m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "deliveries_total",
			Help: "Messages written to clients, by transport.",
		}, []string{"transport"})
		m.deliverySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "delivery_seconds",
			Help:    "Time from a message reaching the node to its write to a client.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		})
		m.slowDisconnects = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "slow_consumer_disconnects_total",
			Help: "Subscribers dropped because they fell too far behind.",
		})
		m.resets = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "resets_total",
			Help: "Reset signals sent, by reason.",
		}, []string{"reason"})
		m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "refusals_total",
			Help: "Refused requests, by reason.",
		}, []string{"reason"})
		m.redisUp = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "redis_up",
			Help: "1 when Redis is reachable, 0 when not.",
		})
		m.redisReconnects = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "redis_reconnects_total",
			Help: "Times Redis became reachable again after being down.",
		})
		m.resumes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "resumes_total",
			Help: "Channels resumed from a client's id, by where the missed messages came from (cache, redis); ids that could not be placed are counted in resets_total.",
		}, []string{"from"})
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
	})
	if reg == nil {
		return nil
	}
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

// observer feeds the hub's and transports' events into the metrics.
type observer struct{}

func (observer) MessageReceived(src broker.Source) {
	if int(src) < len(metrics.receivedBySource) {
		metrics.receivedBySource[src].Inc()
	}
}

func (observer) SlowConsumer() { metrics.slowDisconnects.Inc() }

func (observer) Reset(reason string) { metrics.resets.WithLabelValues(reason).Inc() }

func (observer) Delivered(transport string, e *hub.Envelope) {
	switch transport {
	case "sse":
		metrics.deliveredSSE.Inc()
	case "ws":
		metrics.deliveredWS.Inc()
	default:
		metrics.deliveredPoll.Inc()
	}
	if !e.Msg.Received.IsZero() {
		metrics.deliverySeconds.Observe(time.Since(e.Msg.Received).Seconds())
	}
}

func refuse(reason string) { metrics.refusals.WithLabelValues(reason).Inc() }

var (
	_ hub.Observer         = observer{}
	_ hub.DeliveryObserver = observer{}
)
