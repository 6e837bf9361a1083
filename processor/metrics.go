package processor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/schemas"
)

// metrics are the processor's Prometheus collectors (prefix
// iotpipe_processor_); those of its transactions, restores and sessions
// (transactions_total, transaction_end_seconds, restore_seconds,
// restored_records_total, partitions_assigned, session_restarts_total)
// and its consumer lag are the exactly-once runtime's, under the same
// prefix. records_in_total, readings_accepted_total, duplicates_total and
// ignored_fields_total grow once per poll of a partition (by its records),
// not per record (saving an atomic operation per record and counter).
type metrics struct {
	recordsIn      prometheus.Counter
	accepted       prometheus.Counter
	duplicates     prometheus.Counter
	seqResets      prometheus.Counter
	ignoredFields  prometheus.Counter
	dropped        *prometheus.CounterVec // by reason: what went to the DLQ
	emitted        *prometheus.CounterVec // by kind
	emitDelay      prometheus.Histogram
	windowsOpen    prometheus.Gauge
	deviceWindows  prometheus.Gauge
	devices        prometheus.Gauge
	stateBytes     prometheus.Gauge
	capReached     prometheus.Gauge
	capEvents      prometheus.Counter
	changelogBytes prometheus.Counter
	watermarkLag   prometheus.Gauge
	heartbeats     *prometheus.CounterVec // by result: read, invalid
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "processor"
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: ns, Subsystem: sub, Name: name, Help: help}
	}
	m := &metrics{
		recordsIn:     prometheus.NewCounter(prometheus.CounterOpts(f("records_in_total", "Input records read from the raw topic (committed or not)."))),
		accepted:      prometheus.NewCounter(prometheus.CounterOpts(f("readings_accepted_total", "Readings aggregated into a window."))),
		duplicates:    prometheus.NewCounter(prometheus.CounterOpts(f("duplicates_total", "Readings dropped because their identity (device, event time, seq) — (device, event time) without seq — was already counted in the window."))),
		seqResets:     prometheus.NewCounter(prometheus.CounterOpts(f("seq_resets_total", "Accepted readings that reused the seq of another reading of their device window with a different event time (device counter restarted); counted when the window's activity record is emitted."))),
		ignoredFields: prometheus.NewCounter(prometheus.CounterOpts(f("ignored_fields_total", "Payload fields the bridge ignored (telemetry.raw ignored_fields) in accepted readings; duplicates and rejected readings add nothing. By reason: the bridge's iotpipe_bridge_ignored_fields_total."))),
		dropped:       prometheus.NewCounterVec(prometheus.CounterOpts(f("dlq_total", "Input records sent to the DLQ, by reason (late, invalid_record, timestamp_skew).")), []string{"reason"}),
		emitted:       prometheus.NewCounterVec(prometheus.CounterOpts(f("emitted_total", "telemetry.metrics records emitted, by kind (metric, activity), re-emissions included.")), []string{"kind"}),
		emitDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "emit_delay_seconds",
			Help:    "Wall-clock time from a window's end to its first emission.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)}),
		windowsOpen:    prometheus.NewGauge(prometheus.GaugeOpts(f("windows_open", "Metric windows (device × metric × window) whose state is held."))),
		deviceWindows:  prometheus.NewGauge(prometheus.GaugeOpts(f("device_windows", "Device windows held, open or as late-counting summaries."))),
		devices:        prometheus.NewGauge(prometheus.GaugeOpts(f("devices", "Devices whose clock (watermark) is held; a silent device's is kept for the raw topic's retention."))),
		stateBytes:     prometheus.NewGauge(prometheus.GaugeOpts(f("state_bytes_estimate", "Estimated in-memory bytes of window state (windows_open × measured bytes per key)."))),
		capReached:     prometheus.NewGauge(prometheus.GaugeOpts(f("state_cap_reached", "1 while open windows are at --max-keys (the oldest are being closed early)."))),
		capEvents:      prometheus.NewCounter(prometheus.CounterOpts(f("state_cap_early_closes_total", "Windows closed before their time because open windows reached --max-keys."))),
		changelogBytes: prometheus.NewCounter(prometheus.CounterOpts(f("changelog_bytes_total", "Bytes of state written to the changelog topic."))),
		watermarkLag:   prometheus.NewGauge(prometheus.GaugeOpts(f("watermark_lag_seconds", "Wall clock minus the oldest device watermark of the owned partitions."))),
		heartbeats:     prometheus.NewCounterVec(prometheus.CounterOpts(f("heartbeats_total", "Bridge heartbeat records read from the raw topic, by result (read, invalid: skipped); they set the partitions' ingest clock, on which device silence is measured, and are not readings.")), []string{"result"}),
	}
	reg.MustRegister(m.recordsIn, m.accepted, m.duplicates, m.seqResets, m.ignoredFields, m.dropped, m.emitted, m.emitDelay, m.windowsOpen,
		m.deviceWindows, m.devices, m.stateBytes, m.capReached, m.capEvents, m.changelogBytes,
		m.watermarkLag, m.heartbeats)
	m.heartbeats.WithLabelValues("read")
	m.heartbeats.WithLabelValues("invalid")
	for _, r := range []schemas.Reason{schemas.ReasonLate, schemas.ReasonInvalidRecord, schemas.ReasonTimestampSkew} {
		m.dropped.WithLabelValues(string(r))
	}
	for _, k := range []string{"metric", "activity"} {
		m.emitted.WithLabelValues(k)
	}
	return m
}

func (m *metrics) rejected(r schemas.Reason) { m.dropped.WithLabelValues(string(r)).Inc() }
