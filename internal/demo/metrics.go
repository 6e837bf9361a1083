package demo

import (
	"fmt"
	"io"
	"maps"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one sample of a metric: its labels and value.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape: samples by metric name.
type Metrics map[string][]Sample

// Parse reads a page in the Prometheus text exposition format (with
// prometheus/common/expfmt). A malformed page is an error. Histograms come
// as their _bucket (label le), _sum and _count series and summaries as
// their quantile series, _sum and _count, as on the page.
func Parse(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics page: %w", err)
	}
	m := Metrics{}
	for name, f := range fams {
		for _, x := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range x.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			with := func(k, v string) map[string]string {
				l := maps.Clone(labels)
				l[k] = v
				return l
			}
			add := func(n string, l map[string]string, v float64) {
				m[n] = append(m[n], Sample{Labels: l, Value: v})
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, labels, x.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, labels, x.GetGauge().GetValue())
			case dto.MetricType_SUMMARY:
				sm := x.GetSummary()
				for _, q := range sm.GetQuantile() {
					add(name, with(model.QuantileLabel, formatFloat(q.GetQuantile())), q.GetValue())
				}
				add(name+"_sum", labels, sm.GetSampleSum())
				add(name+"_count", labels, float64(sm.GetSampleCount()))
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := x.GetHistogram()
				count := float64(h.GetSampleCount()) + h.GetSampleCountFloat()
				inf := false
				for _, b := range h.GetBucket() {
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					add(name+"_bucket", with(model.BucketLabel, formatFloat(b.GetUpperBound())),
						float64(b.GetCumulativeCount())+b.GetCumulativeCountFloat())
				}
				if !inf {
					add(name+"_bucket", with(model.BucketLabel, "+Inf"), count)
				}
				add(name+"_sum", labels, h.GetSampleSum())
				add(name+"_count", labels, count)
			default: // untyped
				add(name, labels, x.GetUntyped().GetValue())
			}
		}
	}
	return m, nil
}

// formatFloat writes a le or quantile label value as Prometheus does.
func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Has reports whether the scrape holds metric name.
func (m Metrics) Has(name string) bool { _, ok := m[name]; return ok }

// Sum adds the samples of name whose labels include every key=value pair
// of match (pairs given as "k", "v", ...).
func (m Metrics) Sum(name string, match ...string) float64 {
	var t float64
	for _, s := range m[name] {
		if matches(s.Labels, match) {
			t += s.Value
		}
	}
	return t
}

func matches(l map[string]string, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if l[match[i]] != match[i+1] {
			return false
		}
	}
	return true
}

// By sums name's samples by the value of label.
func (m Metrics) By(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m[name] {
		out[s.Labels[label]] += s.Value
	}
	return out
}

// Stage names, as the demo shows them.
const (
	Bridge        = "bridge"
	Processor     = "processor"
	SinkTimescale = "sink timescale"
	SinkLake      = "sink lake"
)

// Snapshot is one scrape of every stage (a nil Metrics: that stage did
// not answer) and when it was taken.
type Snapshot struct {
	At     time.Time
	Stages map[string]Metrics
}

// Progress formats the progress lines for the interval prev → cur, prev
// may be the zero Snapshot (then totals are shown without rates). elapsed
// is the time since the demo started.
func Progress(prev, cur Snapshot, elapsed time.Duration) []string {
	dt := cur.At.Sub(prev.At).Seconds()
	rate := func(stage, name string, match ...string) string {
		c := cur.Stages[stage]
		if c == nil {
			return "-"
		}
		v := c.Sum(name, match...)
		p := prev.Stages[stage]
		if p == nil || dt <= 0 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.1f/s", math.Max(0, v-p.Sum(name, match...))/dt)
	}
	total := func(stage, name string, match ...string) string {
		c := cur.Stages[stage]
		if c == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f", c.Sum(name, match...))
	}
	lines := []string{
		fmt.Sprintf("[%4.0fs] bridge %s in, %s to raw | processor %s readings, windows emitted %s (%s) | timescale %s rows | lake %s rows, %s files",
			elapsed.Seconds(),
			rate(Bridge, "iotpipe_bridge_received_total"),
			rate(Bridge, "iotpipe_bridge_produced_total", "topic", "raw"),
			rate(Processor, "iotpipe_processor_readings_accepted_total"),
			total(Processor, "iotpipe_processor_emitted_total", "kind", "metric"),
			rate(Processor, "iotpipe_processor_emitted_total", "kind", "metric"),
			rate(SinkTimescale, "iotpipe_sink_timescale_rows_total"),
			rate(SinkLake, "iotpipe_lake_rows_total"),
			total(SinkLake, "iotpipe_lake_files_total")),
	}
	var lag []string
	for _, st := range []struct{ stage, name, metric string }{
		{Processor, "processor", "iotpipe_processor_consumer_lag_records"},
		{SinkTimescale, "timescale sink", "iotpipe_sink_timescale_consumer_lag_records"},
		{SinkLake, "lake sink", "iotpipe_lake_consumer_lag_records"},
	} {
		if c := cur.Stages[st.stage]; c.Has(st.metric) {
			lag = append(lag, fmt.Sprintf("%s %.0f records", st.name, c.Sum(st.metric)))
		}
	}
	if c := cur.Stages[Processor]; c.Has("iotpipe_processor_watermark_lag_seconds") {
		lag = append(lag, fmt.Sprintf("processor watermark %.1fs behind", c.Sum("iotpipe_processor_watermark_lag_seconds")))
	}
	if len(lag) > 0 {
		lines = append(lines, "        lag: "+strings.Join(lag, ", "))
	}
	var dlq []string
	add := func(stage, name, label, prefix string) {
		for reason, v := range cur.Stages[stage].By(name, label) {
			if v > 0 {
				dlq = append(dlq, fmt.Sprintf("%s%s %.0f", prefix, reason, v))
			}
		}
	}
	add(Bridge, "iotpipe_bridge_rejected_total", "reason", "bridge/")
	add(Processor, "iotpipe_processor_dlq_total", "reason", "processor/")
	add(SinkTimescale, "iotpipe_sink_timescale_rejected_total", "reason", "timescale/")
	add(SinkLake, "iotpipe_lake_dlq_records_total", "reason", "lake/")
	sort.Strings(dlq)
	if len(dlq) == 0 {
		dlq = []string{"none"}
	}
	lines = append(lines, "        dlq: "+strings.Join(dlq, ", "))
	if c := cur.Stages[Processor]; c != nil {
		if d := c.Sum("iotpipe_processor_duplicates_total"); d > 0 {
			lines[len(lines)-1] += fmt.Sprintf(" | duplicates dropped %.0f", d)
		}
	}
	return lines
}
