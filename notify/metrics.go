package notify

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	records       prometheus.Counter
	enqueued      prometheus.Counter
	rejected      *prometheus.CounterVec
	messages      *prometheus.CounterVec // sent OK, by channel and kind (single, digest)
	attempts      *prometheus.CounterVec // by channel and result
	delivered     *prometheus.CounterVec // notifications delivered, by channel
	undeliverable *prometheus.CounterVec // notifications given up on, by channel
	rateLimited   prometheus.Counter
	dbUp          prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "notify"
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Alert records consumed from Kafka (replays included)."}),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "enqueued_total",
			Help: "Notifications (event, recipient) enqueued, each once."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_total",
			Help: "Input not enqueued, by reason: invalid_record (to the DLQ), bad_recipient, no_recipients."}, []string{"reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_total",
			Help: "Messages delivered, by channel and kind (single, digest)."}, []string{"channel", "kind"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "attempts_total",
			Help: "Delivery attempts, by channel and result (ok, error)."}, []string{"channel", "result"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "delivered_total",
			Help: "Notifications delivered, by channel."}, []string{"channel"}),
		undeliverable: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "undeliverable_total",
			Help: "Notifications given up on after the retry budget (state failed in notifications), by channel."}, []string{"channel"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Deliveries postponed by the per-recipient rate limit (they go out later as a digest)."}),
		dbUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "db_up",
			Help: "1 when the last database operation succeeded."}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.enqueued, m.rejected, m.messages, m.attempts, m.delivered, m.undeliverable, m.rateLimited, m.dbUp)
	}
	return m
}
