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
