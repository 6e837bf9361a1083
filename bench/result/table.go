package result

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Row is one line of the summary table.
type Row struct {
	Stage, Figure, Value, Ceiling, Ratio, Goal string
	// Met is "yes", "NO", or "" when the figure has no goal.
	Met string
}

// Num formats a figure with 3-4 significant digits and thousands
// separators for large values.
func Num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1000:
		s := strconv.FormatInt(int64(math.Round(v)), 10)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		if neg {
			return "-" + b.String()
		}
		return b.String()
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func times(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// Rows is the summary table of f: every stage figure with its ceiling,
// ratio and goal. A failed stage gets a row with its error.
func (f *File) Rows() []Row {
	var rows []Row
	add := func(r Row) { rows = append(rows, r) }
	failed := func(stage, err string) {
		if err != "" {
			add(Row{Stage: stage, Figure: "stage failed (error below)", Met: "FAILED"})
		}
	}
	if b := f.Bridge; b != nil {
		failed("bridge", b.Error)
		warm := ""
		if b.Rounds > 0 {
			warm = fmt.Sprintf("; medians of %d warm rounds, spread %.0f %% vs %.0f %%", b.Rounds, b.SpreadPct, b.CeilingSpreadPct)
		}
		add(Row{"bridge", "msgs/s (QoS 1, ack after Kafka, " + b.Compression + ") vs mosquitto_sub | kcat -P" + warm, Num(b.MsgsPerS), Num(b.CeilingMsgsPerS), times(b.Ratio), "≥ " + times(b.GoalRatio), met(b.GoalMet)})
		add(Row{"bridge", "CPU µs/msg (lower is better)", Num(b.CPUMicrosPerMsg), Num(b.CeilingCPUMicrosMsg), times(b.CPURatio), "", ""})
		add(Row{"bridge", "allocs/msg", Num(b.AllocsPerMsg), "", "", "", ""})
		if k := b.KafkaSec; k != nil {
			add(Row{"bridge", kafkaSecLabel("msgs/s draining a queued load", k), Num(k.SASLSSL), Num(k.Plaintext), times(k.Ratio), "≥ " + times(k.GoalRatio), met(k.GoalMet)})
			add(Row{"bridge", "CPU µs/msg, Kafka over SASL_SSL vs PLAINTEXT (lower is better)", Num(k.SASLSSLCPUMicros), Num(k.PlaintextCPUMicros), times(k.CPURatio), "", ""})
		}
		if t := b.TLS; t != nil {
			rounds := fmt.Sprintf("median of %d rounds", t.Rounds)
			add(Row{"bridge", "msgs/s over mutual TLS vs plaintext (same run, " + rounds + ")", Num(t.TLSMsgsPerS), Num(t.PlaintextMsgsPerS), times(t.Ratio),
				"≥ " + times(t.GoalRatio) + " (TLS costs ≤ " + Num(100*(1-t.GoalRatio)) + " %)", met(t.GoalMet)})
			add(Row{"bridge", "msgs/s over mutual TLS vs plaintext from the MQTT connection on (the same goal)", Num(t.TLSDrainMsgsPerS), Num(t.PlaintextDrainMsgsPerS), times(t.DrainRatio), "", ""})
			add(Row{"bridge", "CPU µs/msg over mutual TLS vs plaintext (lower is better)", Num(t.TLSCPUMicrosPerMsg), Num(t.PlaintextCPUMicrosPerMsg), times(t.CPURatio), "", ""})
			add(Row{"simulator", "CPU µs/published msg over mutual TLS (a certificate per device) vs plaintext", Num(t.SimTLSCPUMicrosPerMsg), Num(t.SimPlainCPUMicrosPerMsg),
				times(ratio(t.SimTLSCPUMicrosPerMsg, t.SimPlainCPUMicrosPerMsg)), "", ""})
		}
	}
	if p := f.Processor; p != nil {
		failed("processor", p.Error)
		add(Row{"processor", "readings/s per core, exactly-once, vs consume+decode", Num(p.ReadingsPerSPerCore), Num(p.CeilingReadingsPerSPerCore), times(p.Ratio), "≥ " + Num(p.GoalReadingsPerSPerCore) + "/s", met(p.GoalMet)})
		add(Row{"processor", "ratio to consume+decode (the line above)", "", "", times(p.Ratio), "≥ " + times(p.GoalRatio), met(p.GoalRatioMet)})
		if p.ReadingsPerCPUSecond > 0 {
			add(Row{"processor", "readings per CPU-second, exactly-once, vs consume+decode (ratio: median of the rounds' pairs)", Num(p.ReadingsPerCPUSecond), Num(p.CeilingReadingsPerCPUSecond), times(p.CPURatio), "≥ " + times(GoalProcessorCPURatio), met(p.CPURatio >= GoalProcessorCPURatio)})
		}
		if k := p.KafkaSec; k != nil {
			add(Row{"processor", kafkaSecLabel("readings/s per core", k), Num(k.SASLSSL), Num(k.Plaintext), times(k.Ratio), "≥ " + times(k.GoalRatio), met(k.GoalMet)})
			add(Row{"processor", "CPU µs/reading, Kafka over SASL_SSL vs PLAINTEXT (lower is better)", Num(k.SASLSSLCPUMicros), Num(k.PlaintextCPUMicros), times(k.CPURatio), "", ""})
		}
		add(Row{"processor", "µs/reading", Num(p.MicrosPerReading), Num(p.CeilingMicrosPerReading), "", "", ""})
	}
	rows = append(rows, f.Alert.rows()...)
	rows = append(rows, f.AlertLatency.rows()...)
	if t := f.Timescale; t != nil {
		failed("timescale", t.Error)
		add(Row{"timescale", "rows/s, whole sink (Kafka → PostgreSQL) vs psql \\copy", Num(t.RowsPerS), Num(t.CeilingRowsPerS), times(t.Ratio), "≥ " + times(t.GoalRatio), met(t.GoalMet)})
		add(Row{"timescale", "rows/s, DB path vs psql \\copy (interleaved)", Num(t.DBPathRowsPerS), Num(t.DBPathCeilingRowsPerS), times(t.DBPathRatio), "≥ " + times(t.GoalRatio), met(t.DBPathGoalMet)})
	}
	if l := f.Lake; l != nil {
		failed("lake", l.Error)
		add(Row{"lake", "rows per CPU-second vs encode-only on one core", Num(l.RowsPerCPUSecond), Num(l.CeilingRowsPerS), times(l.Ratio), "≥ " + Num(l.GoalRowsPerCPUSecond), met(l.Error == "" && l.RowsPerCPUSecond >= l.GoalRowsPerCPUSecond)})
		add(Row{"lake", "rows/s (wall)", Num(l.RowsPerS), "", "", "", ""})
		add(Row{"lake", "Parquet bytes/reading vs raw JSON bytes/reading", Num(l.ParquetBytesPerReading), Num(l.RawJSONBytesPerReading), times(l.TimesSmaller) + " smaller", "≥ " + times(l.GoalTimesSmaller) + " smaller", met(l.Error == "" && l.TimesSmaller >= l.GoalTimesSmaller)})
	}
	if e := f.EndToEnd; e != nil {
		failed("end_to_end", e.Error)
		if r := e.Result; r != nil {
			add(Row{"end_to_end", "max sustainable msgs/s vs broker-only ceiling", Num(r.MaxSustainableMsgsPerS), Num(r.BrokerCeilingMsgsPerS), times(e.Ratio), "≥ " + times(e.GoalRatio) + ", nothing lost", met(e.GoalMet)})
			add(Row{"end_to_end", fmt.Sprintf("msgs/s at fixed load (%s offered, %.0f s)", Num(r.FixedOfferedMsgsPerS), r.FixedDurationS), Num(r.FixedMsgsPerS), Num(r.BrokerCeilingMsgsPerS), times(r.FixedRatioToCeiling), "", ""})
			lat := Num(r.LatencyP50S) + " / " + Num(r.LatencyP99S)
			if r.LatencySamples == 0 {
				lat = "n/a (0 samples)"
			}
			add(Row{"end_to_end", "latency event → queryable row p50 / p99 (s)", lat, "", "", "p99 ≤ " + Num(e.GoalLatencyP99S) + " s", met(e.LatencyGoalMet)})
			add(Row{"end_to_end", "CPU µs/msg at fixed load: bridge, processor, sinks, Kafka, PostgreSQL, object store", Num(r.PipelineCPUMicrosPerMsg), "", "", "≤ " + Num(e.GoalCPUMicrosPerMsg), met(e.CPUGoalMet)})
			c := r.Count
			add(Row{"end_to_end", "count check: acked → raw + DLQ / readings rows / lake rows", fmt.Sprintf("%s → %s + %s / %s / %s", Num(float64(c.PublishedAcked)), Num(float64(c.RawRecords)), Num(float64(c.DLQRecords)), Num(float64(c.ReadingsRows)), Num(float64(c.LakeRows))), "", "", "input = output", met(c.OK)})
			for _, p := range r.Processes {
				add(Row{"end_to_end", "process " + p.Name + ": CPU cores / CPU µs per msg / peak RSS MiB", Num(p.CPUCores) + " / " + Num(p.CPUMicrosPerMsg) + " / " + Num(float64(p.PeakRSSBytes)/(1<<20)), "", "", "", ""})
			}
		}
	}
	if m := f.Micro; m != nil {
		failed("micro", m.Error)
		add(Row{"micro", "device payload decode ns/op (allocs/op)", fmt.Sprintf("%s (%s)", Num(m.DecodeNsPerOp), Num(m.DecodeAllocsPerOp)), "", "", "", ""})
		add(Row{"micro", "telemetry.raw decode ns/op", Num(m.DecodeRawNsPerOp), "", "", "", ""})
		add(Row{"micro", "window update ns/op (allocs/op)", fmt.Sprintf("%s (%s)", Num(m.WindowUpdateNsPerOp), Num(m.WindowUpdateAllocsPerOp)), "", "", "", ""})
		add(Row{"micro", "processor per-record path ns/op", Num(m.TaskHandleNsPerOp), "", "", "", ""})
	}
	return rows
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// PrintTable writes the summary table, then the error of each failed
// stage.
func (f *File) PrintTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tfigure\tvalue\tceiling\tratio\tgoal\tmet")
	for _, r := range f.Rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Stage, r.Figure, r.Value, r.Ceiling, r.Ratio, r.Goal, r.Met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range f.Errors() {
		if _, err := fmt.Fprintf(w, "%s: %s\n", e[0], oneLine(e[1], 2000)); err != nil {
			return err
		}
	}
	return nil
}

// Errors lists (stage, error) for every failed stage.
func (f *File) Errors() [][2]string {
	var out [][2]string
	add := func(stage, err string) {
		if err != "" {
			out = append(out, [2]string{stage, err})
		}
	}
	if f.Bridge != nil {
		add("bridge", f.Bridge.Error)
	}
	if f.Processor != nil {
		add("processor", f.Processor.Error)
	}
	if f.Alert != nil {
		add("alert", f.Alert.Error)
	}
	if f.AlertLatency != nil {
		add("alert-latency", f.AlertLatency.Error)
	}
	if f.Timescale != nil {
		add("timescale", f.Timescale.Error)
	}
	if f.Lake != nil {
		add("lake", f.Lake.Error)
	}
	if f.EndToEnd != nil {
		add("end_to_end", f.EndToEnd.Error)
	}
	if f.Micro != nil {
		add("micro", f.Micro.Error)
	}
	return out
}

// PrintMarkdown writes the summary table as Markdown (for
// docs/BENCHMARKS.md).
func (f *File) PrintMarkdown(w io.Writer) error {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	if _, err := fmt.Fprintln(w, "| stage | figure | value | ceiling | ratio | goal | met |\n|---|---|---:|---:|---:|---|---|"); err != nil {
		return err
	}
	for _, r := range f.Rows() {
		if _, err := fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Stage, esc(r.Figure), esc(r.Value), r.Ceiling, r.Ratio, r.Goal, r.Met); err != nil {
			return err
		}
	}
	return nil
}

// kafkaSecLabel describes a SASL_SSL-vs-PLAINTEXT row: what, the rounds
// and each side's spread.
func kafkaSecLabel(what string, k *KafkaSec) string {
	return fmt.Sprintf("%s, Kafka over SASL_SSL vs PLAINTEXT (one broker, medians of %d warm interleaved rounds, spread %.0f %% vs %.0f %%; median of the rounds' ratios %.2f)",
		what, k.Rounds, k.SASLSSLSpreadPct, k.PlaintextSpreadPct, k.PairedRatio)
}
