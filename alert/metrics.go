package alert

import "github.com/prometheus/client_golang/prometheus"

// metrics are the stage's collectors (prefix iotpipe_alert_); its
// transactions, restores, sessions and consumer lag are the exactly-once
// runtime's, under the same prefix.
type metrics struct {
	readings       prometheus.Counter
	windows        prometheus.Counter
	invalid        *prometheus.CounterVec // by topic
	evaluated      prometheus.Counter
	stale          prometheus.Counter
	events         *prometheus.CounterVec // by state
	eventsInvalid  prometheus.Counter
	refused        prometheus.Counter
	series         prometheus.Gauge
	capReached     prometheus.Gauge
	rulesLoaded    prometheus.Gauge
	rulesInvalid   prometheus.Gauge
	reloads        *prometheus.CounterVec // by result
	changelogBytes prometheus.Counter
	heartbeats     *prometheus.CounterVec // by result
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "iotpipe", "alert"
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: ns, Subsystem: sub, Name: name, Help: help}
	}
	m := &metrics{
		readings:       prometheus.NewCounter(prometheus.CounterOpts(f("readings_total", "Readings (telemetry.raw records, heartbeats not included) evaluated against the rules (committed or not)."))),
		windows:        prometheus.NewCounter(prometheus.CounterOpts(f("windows_total", "Window aggregates (telemetry.metrics metric records) evaluated against the window rules."))),
		invalid:        prometheus.NewCounterVec(prometheus.CounterOpts(f("invalid_records_total", "Input records that do not decode, by topic; skipped (the processor dead-letters the raw ones).")), []string{"topic"}),
		evaluated:      prometheus.NewCounter(prometheus.CounterOpts(f("values_evaluated_total", "Values compared with a rule (one per reading or window and matching rule)."))),
		stale:          prometheus.NewCounter(prometheus.CounterOpts(f("values_ignored_older_total", "Values ignored because their event time was not after the last one evaluated for their series (redelivery, disorder, a window's later revision)."))),
		events:         prometheus.NewCounterVec(prometheus.CounterOpts(f("events_total", "Alert events produced to the alerts topic, by state (FIRING, RESOLVED); produced in transactions, so also those of aborted ones.")), []string{"state"}),
		eventsInvalid:  prometheus.NewCounter(prometheus.CounterOpts(f("events_invalid_total", "Alert events that failed validation and were not produced (logged)."))),
		refused:        prometheus.NewCounter(prometheus.CounterOpts(f("series_refused_total", "Values not evaluated because their series was new and the process held --max-series series."))),
		series:         prometheus.NewGauge(prometheus.GaugeOpts(f("series", "Series (rule × device × metric) whose state is held."))),
		capReached:     prometheus.NewGauge(prometheus.GaugeOpts(f("state_cap_reached", "1 while the series held are at --max-series (new series are refused), else 0."))),
		rulesLoaded:    prometheus.NewGauge(prometheus.GaugeOpts(f("rules_loaded", "Enabled rules in use."))),
		rulesInvalid:   prometheus.NewGauge(prometheus.GaugeOpts(f("rules_invalid", "Enabled rules left out because they cannot be evaluated (logged with the reason)."))),
		reloads:        prometheus.NewCounterVec(prometheus.CounterOpts(f("rule_reloads_total", "Rule set reads, by result (ok, error; on error the last set stays in use).")), []string{"result"}),
		changelogBytes: prometheus.NewCounter(prometheus.CounterOpts(f("changelog_bytes_total", "Bytes of series state written to the changelog topic."))),
		heartbeats:     prometheus.NewCounterVec(prometheus.CounterOpts(f("heartbeats_total", "Bridge heartbeats read from the raw topic, by result (read: moved the partition's ingest clock, the no_data rules' clock; invalid: did not decode, skipped).")), []string{"result"}),
	}
	reg.MustRegister(m.readings, m.windows, m.invalid, m.evaluated, m.stale, m.events, m.eventsInvalid, m.refused,
		m.series, m.capReached, m.rulesLoaded, m.rulesInvalid, m.reloads, m.changelogBytes, m.heartbeats)
	for _, s := range []string{"FIRING", "RESOLVED"} {
		m.events.WithLabelValues(s)
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range []string{"read", "invalid"} {
		m.heartbeats.WithLabelValues(r)
	}
	return m
}
