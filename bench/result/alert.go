package result

// The alert stage's benchmarks (alert/kafka_bench_integration_test.go),
// run with -cpu 1.
const (
	AlertBench        = "BenchmarkAlertExactlyOnce"
	AlertCeilingBench = "BenchmarkAlertCeiling"
	// GoalAlertPerCore: alert stage readings per core-second with 1,000
	// rules (issue 17).
	GoalAlertPerCore = 300_000
)

// Alert: BenchmarkAlertExactlyOnce (the stage with 1,000 rules, exactly
// once) against BenchmarkAlertCeiling (consume + decode of the same
// input), in the same run, with GOMAXPROCS=1. Per core is per CPU-second
// of the process (readings/cpu-s): on a shared machine the wall-clock
// readings/s (also kept) is depressed by other load.
type Alert struct {
	Readings                       int        `json:"readings"`
	Rules                          float64    `json:"rules"`
	ReadingsPerCPUSecond           float64    `json:"readings_per_cpu_s"`
	ReadingsPerS                   float64    `json:"readings_per_s"`
	CPUMicrosPerReading            float64    `json:"cpu_us_per_reading"`
	Events                         float64    `json:"events"`
	CeilingReadingsPerCPUSecond    float64    `json:"ceiling_readings_per_cpu_s"`
	CeilingReadingsPerS            float64    `json:"ceiling_readings_per_s"`
	CeilingCPUMicrosPerReading     float64    `json:"ceiling_cpu_us_per_reading"`
	Ratio                          float64    `json:"ratio"` // readings/cpu-s over the ceiling's
	GoalReadingsPerCPUSecondOnCore float64    `json:"goal_readings_per_cpu_s"`
	GoalMet                        bool       `json:"goal_met"`
	Benchmarks                     Benchmarks `json:"benchmarks,omitempty"`
	Error                          string     `json:"error,omitempty"`
}

// AlertFrom fills the alert stage figures.
func AlertFrom(bs []Bench, readings int) *Alert {
	var m missing
	a := &Alert{Readings: readings, GoalReadingsPerCPUSecondOnCore: GoalAlertPerCore, Benchmarks: Collect(bs)}
	a.ReadingsPerCPUSecond = m.get(bs, AlertBench, "readings/cpu-s")
	a.ReadingsPerS = m.get(bs, AlertBench, "readings/s")
	a.CPUMicrosPerReading = m.get(bs, AlertBench, "cpu-µs/reading")
	a.Rules, _ = Get(bs, AlertBench, "rules")
	a.Events, _ = Get(bs, AlertBench, "events")
	a.CeilingReadingsPerCPUSecond = m.get(bs, AlertCeilingBench, "readings/cpu-s")
	a.CeilingReadingsPerS = m.get(bs, AlertCeilingBench, "readings/s")
	a.CeilingCPUMicrosPerReading = m.get(bs, AlertCeilingBench, "cpu-µs/reading")
	a.Ratio = ratio(a.ReadingsPerCPUSecond, a.CeilingReadingsPerCPUSecond)
	a.Error = m.err()
	a.GoalMet = a.Error == "" && a.ReadingsPerCPUSecond >= GoalAlertPerCore
	return a
}

// rows are the alert stage's lines of the summary table (none when nil).
func (a *Alert) rows() []Row {
	if a == nil {
		return nil
	}
	var rows []Row
	if a.Error != "" {
		rows = append(rows, Row{Stage: "alert", Figure: "stage failed (error below)", Met: "FAILED"})
	}
	return append(rows,
		Row{"alert", "readings per core-second (CPU), exactly-once, " + Num(a.Rules) + " rules, vs consume+decode", Num(a.ReadingsPerCPUSecond), Num(a.CeilingReadingsPerCPUSecond), times(a.Ratio), "≥ " + Num(GoalAlertPerCore) + "/s", met(a.GoalMet)},
		Row{"alert", "readings/s (wall, -cpu 1)", Num(a.ReadingsPerS), Num(a.CeilingReadingsPerS), times(ratio(a.ReadingsPerS, a.CeilingReadingsPerS)), "", ""},
		Row{"alert", "CPU µs/reading (lower is better)", Num(a.CPUMicrosPerReading), Num(a.CeilingCPUMicrosPerReading), "", "", ""},
	)
}

// The alert latency benchmark (alert/latency_bench_integration_test.go).
const (
	AlertLatencyBench = "BenchmarkAlertLatency"
	// GoalAlertLatencyP99Ms: p99 from a reading's arrival in Kafka to the
	// webhook received, under 10,000 readings/s (issue 17).
	GoalAlertLatencyP99Ms = 1000
	// AlertLatencyLoad is the background load asked, readings/s.
	AlertLatencyLoad = 10_000
)

// AlertLatency: from a reading's append to telemetry.raw to the webhook
// received by a local HTTP receiver, through `iotpipe alert` and `iotpipe
// notify` as processes (the settings of make demo and docker compose),
// under background load on the raw topic. The ceiling is Kafka alone: a
// plain consumer of the raw topic seeing the same probes in the same run.
type AlertLatency struct {
	Probes         float64    `json:"probes"`
	LoadReadingsPS float64    `json:"load_readings_per_s"`
	P50Ms          float64    `json:"p50_ms"`
	P99Ms          float64    `json:"p99_ms"`
	MaxMs          float64    `json:"max_ms"`
	AlertP50Ms     float64    `json:"alert_p50_ms"`  // append → FIRING visible read_committed
	AlertP99Ms     float64    `json:"alert_p99_ms"`  //
	NotifyP50Ms    float64    `json:"notify_p50_ms"` // FIRING visible → webhook received
	NotifyP99Ms    float64    `json:"notify_p99_ms"` //
	KafkaP50Ms     float64    `json:"kafka_p50_ms"`  // the ceiling: append → seen by a plain consumer
	KafkaP99Ms     float64    `json:"kafka_p99_ms"`  //
	GoalP99Ms      float64    `json:"goal_p99_ms"`
	GoalMet        bool       `json:"goal_met"`
	Benchmarks     Benchmarks `json:"benchmarks,omitempty"`
	Error          string     `json:"error,omitempty"`
}

// AlertLatencyFrom fills the alert latency figures.
func AlertLatencyFrom(bs []Bench) *AlertLatency {
	var m missing
	a := &AlertLatency{GoalP99Ms: GoalAlertLatencyP99Ms, Benchmarks: Collect(bs)}
	a.Probes = m.get(bs, AlertLatencyBench, "probes")
	a.LoadReadingsPS = m.get(bs, AlertLatencyBench, "load-readings/s")
	a.P50Ms = m.get(bs, AlertLatencyBench, "p50-ms")
	a.P99Ms = m.get(bs, AlertLatencyBench, "p99-ms")
	a.MaxMs = m.get(bs, AlertLatencyBench, "max-ms")
	a.AlertP50Ms = m.get(bs, AlertLatencyBench, "alert-p50-ms")
	a.AlertP99Ms = m.get(bs, AlertLatencyBench, "alert-p99-ms")
	a.NotifyP50Ms = m.get(bs, AlertLatencyBench, "notify-p50-ms")
	a.NotifyP99Ms = m.get(bs, AlertLatencyBench, "notify-p99-ms")
	a.KafkaP50Ms = m.get(bs, AlertLatencyBench, "kafka-p50-ms")
	a.KafkaP99Ms = m.get(bs, AlertLatencyBench, "kafka-p99-ms")
	a.Error = m.err()
	a.GoalMet = a.Error == "" && a.Probes > 0 && a.P99Ms <= GoalAlertLatencyP99Ms && a.LoadReadingsPS >= 0.9*AlertLatencyLoad
	return a
}

// rows are the alert latency lines of the summary table (none when nil).
func (a *AlertLatency) rows() []Row {
	if a == nil {
		return nil
	}
	var rows []Row
	if a.Error != "" {
		rows = append(rows, Row{Stage: "alert-latency", Figure: "stage failed (error below)", Met: "FAILED"})
	}
	under := "under " + Num(a.LoadReadingsPS) + " readings/s, " + Num(a.Probes) + " probes"
	return append(rows,
		Row{"alert-latency", "p99 ms, reading in Kafka → webhook received (alert + notify), vs Kafka alone, " + under, Num(a.P99Ms), Num(a.KafkaP99Ms), "", "≤ " + Num(GoalAlertLatencyP99Ms) + " ms", met(a.GoalMet)},
		Row{"alert-latency", "p50 ms, same", Num(a.P50Ms), Num(a.KafkaP50Ms), "", "", ""},
		Row{"alert-latency", "p50 / p99 ms, alert part (→ FIRING visible read_committed)", Num(a.AlertP50Ms) + " / " + Num(a.AlertP99Ms), "", "", "", ""},
		Row{"alert-latency", "p50 / p99 ms, notify part (→ webhook)", Num(a.NotifyP50Ms) + " / " + Num(a.NotifyP99Ms), "", "", "", ""},
	)
}
