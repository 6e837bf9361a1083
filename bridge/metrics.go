package bridge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/schemas"
)

// metrics are the bridge's Prometheus collectors (prefix iotpipe_bridge_).
type metrics struct {
	received       prometheus.Counter
	redelivered    prometheus.Counter
	producedRaw    prometheus.Counter
	producedDLQ    prometheus.Counter
	rejected       *prometheus.CounterVec
	rejectedBy     map[schemas.Reason]prometheus.Counter
	ignored        *prometheus.CounterVec
	ignoredBy      []prometheus.Counter // by schemas.IgnoreReason
	inFlight       prometheus.Gauge
	produceLatency prometheus.Histogram
	produceErrors  *prometheus.CounterVec
	unacked        prometheus.Counter
	connected      prometheus.Gauge
	connections    prometheus.Counter
	connectErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "bridge"
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "received_total",
			Help: "MQTT messages received (redeliveries included)."}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "redelivered_total",
			Help: "MQTT messages the broker sent again (DUP flag) after a reconnection; most of them are duplicates in Kafka."}),
		producedRaw: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produced_total",
			Help: "Records Kafka acknowledged, by destination.", ConstLabels: prometheus.Labels{"topic": "raw"}}),
		producedDLQ: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produced_total",
			Help: "Records Kafka acknowledged, by destination.", ConstLabels: prometheus.Labels{"topic": "dlq"}}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_total",
			Help: "Messages sent to the DLQ, by reason."}, []string{"reason"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ignored_fields_total",
			Help: "Fields of accepted messages that the bridge ignored instead of making them measurements, by reason (schemas.IgnoreReason: string_value, numeric_string, non_finite_string, bool_value, null_value, object_value, array_value, top_level_beside_metrics)."}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "in_flight",
			Help: "Messages received and not yet acknowledged by Kafka."}),
		produceLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "produce_latency_seconds",
			Help:    "Time from receiving an MQTT message to Kafka acknowledging its record.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produce_errors_total",
			Help: "Records Kafka refused for good (kind=raw: sent to the DLQ instead; kind=dlq: the bridge stops)."}, []string{"kind"}),
		unacked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "unacknowledged_total",
			Help: "Messages left unacknowledged (shutdown, lost connection); the broker redelivers them."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "mqtt_connected",
			Help: "1 while the MQTT connection is up."}),
		connections: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "mqtt_connections_total",
			Help: "MQTT connections made (the first one and every reconnection)."}),
		connectErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "mqtt_connect_errors_total",
			Help: "Failed MQTT connection attempts."}),
	}
	m.rejectedBy = map[schemas.Reason]prometheus.Counter{}
	for _, r := range schemas.AllReasons() {
		m.rejectedBy[r] = m.rejected.WithLabelValues(string(r))
	}
	m.rejectedBy[ReasonKafkaRejected] = m.rejected.WithLabelValues(string(ReasonKafkaRejected))
	for _, r := range schemas.AllIgnoreReasons() {
		m.ignoredBy = append(m.ignoredBy, m.ignored.WithLabelValues(r.String()))
	}
	m.rejectedBy[ReasonUnknownDevice] = m.rejected.WithLabelValues(string(ReasonUnknownDevice))
	if reg != nil {
		reg.MustRegister(m.received, m.redelivered, m.producedRaw, m.producedDLQ, m.rejected, m.ignored, m.inFlight, m.produceLatency,
			m.produceErrors, m.unacked, m.connected, m.connections, m.connectErrors)
	}
	// Export the error series from the start (at 0), so dashboards and
	// alerts see them before the first error.
	for _, k := range []string{"raw", "dlq"} {
		m.produceErrors.WithLabelValues(k)
	}
	return m
}

func (m *metrics) reject(r schemas.Reason) {
	if c, ok := m.rejectedBy[r]; ok {
		c.Inc()
		return
	}
	m.rejected.WithLabelValues(string(r)).Inc()
}

// ignore counts the ignored fields of one accepted message.
func (m *metrics) ignore(c *schemas.IgnoredCounts) {
	for i, n := range c {
		if n > 0 && i < len(m.ignoredBy) {
			m.ignoredBy[i].Add(float64(n))
		}
	}
}
