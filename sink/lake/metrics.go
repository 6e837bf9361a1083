package lake

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/schemas"
)

// metrics are the sink's Prometheus collectors (namespace iotpipe_lake).
type metrics struct {
	records   *prometheus.CounterVec // by topic
	rows      *prometheus.CounterVec // by dataset
	files     *prometheus.CounterVec // by dataset
	bytes     *prometheus.CounterVec // by dataset
	dlq       *prometheus.CounterVec // by reason
	batches   *prometheus.CounterVec // by trigger
	retries   *prometheus.CounterVec // by operation
	intents   *prometheus.CounterVec // by action
	upload    prometheus.Histogram
	commits   prometheus.Counter
	openFiles prometheus.Gauge
	buffered  prometheus.Gauge
	fileRows  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "lake"
	cv := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, []string{label})
	}
	m := &metrics{
		records: cv("records_total", "Kafka records consumed, by topic.", "topic"),
		rows:    cv("rows_total", "Rows written to uploaded Parquet files, by dataset.", "dataset"),
		files:   cv("files_total", "Parquet files uploaded, by dataset.", "dataset"),
		bytes:   cv("bytes_total", "Bytes of Parquet files uploaded, by dataset.", "dataset"),
		dlq:     cv("dlq_records_total", "Records sent to the dead-letter topic, by reason.", "reason"),
		batches: cv("batches_total", "Batches (offset ranges) sealed, by what closed them: rows, bytes, age, replay, revoke, shutdown.", "trigger"),
		retries: cv("retries_total", "Retries of failed operations, by operation: put, intent, delete, list, commit, dlq.", "op"),
		intents: cv("recovered_intents_total", "Upload intents found on partition assignment, by action: stale (committed), replay, discarded.", "action"),
		upload: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "upload_seconds",
			Help: "Latency of one successful object upload.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commits_total",
			Help: "Offset commits made after a batch's objects were durable."}),
		openFiles: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "open_files",
			Help: "Parquet files being filled in memory."}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "buffered_bytes",
			Help: "Bytes of sealed files waiting for upload and commit."}),
		fileRows: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "file_rows",
			Help: "Rows per uploaded Parquet file.", Buckets: prometheus.ExponentialBuckets(10, 4, 10)}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.rows, m.files, m.bytes, m.dlq, m.batches, m.retries, m.intents,
			m.upload, m.commits, m.openFiles, m.buffered, m.fileRows)
	}
	for _, op := range []string{"put", "intent", "delete", "list", "commit", "dlq"} {
		m.retries.WithLabelValues(op)
	}
	// Export the dead-letter series from the start (at 0), so dashboards
	// and alerts see them before the first bad record.
	m.dlq.WithLabelValues(string(schemas.ReasonInvalidRecord))
	for ds := range numDatasets {
		m.rows.WithLabelValues(ds.String())
		m.files.WithLabelValues(ds.String())
		m.bytes.WithLabelValues(ds.String())
	}
	return m
}
