package timescale

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/schemas"
)

// Table names, the values of the "table" label.
const (
	tableReadings = "readings"
	tableMetrics  = "device_metrics"
	tableActivity = "device_activity"
	tableAlerts   = "alert_events"
)

// metrics are the sink's Prometheus collectors.
type metrics struct {
	records   *prometheus.CounterVec // records consumed, by topic
	rows      *prometheus.CounterVec // rows committed, by table
	batchRows prometheus.Histogram   // rows per committed batch
	commit    prometheus.Histogram   // BEGIN..COMMIT of one batch
	retries   *prometheus.CounterVec // failed attempts, by cause
	rejected  *prometheus.CounterVec // records sent to the DLQ, by reason
	skipped   prometheus.Counter     // replayed records already in the database
	// alertRepeats counts alert records whose event id was already stored.
	alertRepeats prometheus.Counter
	dbUp         prometheus.Gauge // 1 when the last database operation succeeded
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "sink_timescale"
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "records_total", Help: "Kafka records consumed, by topic (replays included)."}, []string{"topic"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rows_total", Help: "Rows committed to the database, by table; rate() gives rows/s. Upserts that a higher revision already superseded count too."}, []string{"table"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "batch_rows", Help: "Rows per committed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "commit_seconds", Help: "Time from BEGIN to COMMIT of one batch transaction that committed.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "retries_total", Help: "Batch attempts that failed and were retried, by cause (database, dlq, conflict, offsets)."}, []string{"cause"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rejected_total", Help: "Records sent to the dead-letter topic, by reason (invalid_record, db_rejected)."}, []string{"reason"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "replayed_skipped_total", Help: "Records received again that the database already held (offset below sink_offsets); not written twice."}),
		alertRepeats: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "alert_repeats_total", Help: "Alert records whose event id alert_events already held (a repeat of the same crossing from the alert stage); not stored twice."}),
		dbUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "db_up", Help: "1 when the last database operation succeeded, 0 while the sink is retrying."}),
	}
	for _, r := range []schemas.Reason{schemas.ReasonInvalidRecord, schemas.ReasonRejectedByDatabase} {
		m.rejected.WithLabelValues(string(r))
	}
	for _, t := range []string{tableReadings, tableMetrics, tableActivity, tableAlerts} {
		m.rows.WithLabelValues(t)
	}
	for _, c := range []string{"database", "dlq", "conflict"} {
		m.retries.WithLabelValues(c)
	}
	if reg != nil {
		reg.MustRegister(m.records, m.rows, m.batchRows, m.commit, m.retries, m.rejected, m.skipped, m.alertRepeats, m.dbUp)
	}
	return m
}
