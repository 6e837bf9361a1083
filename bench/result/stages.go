package result

import (
	"fmt"
	"sort"
	"strings"

	"github.com/iotpipe/iotpipe/bench/e2e"
)

// Names of the stage benchmarks the figures come from.
const (
	BridgeBench    = "BenchmarkBridgeVsPipeline"
	BridgePipeline = BridgeBench + "/pipeline"
	BridgeTLSBench = "BenchmarkBridgeTLS"
	ProcessorBench = "BenchmarkKafkaExactlyOnce"
	// What SASL_SSL costs (#15): each stage over the SASL_SSL and the
	// PLAINTEXT listener of one private broker, warm, interleaved rounds;
	// sub-benchmarks KafkaSecSASL and KafkaSecPlain.
	ProcessorSecBench     = "BenchmarkKafkaExactlyOnceSec"
	BridgeDrainSecBench   = "BenchmarkBridgeDrainKafkaSec"
	KafkaSecSASL          = "/sasl_ssl"
	KafkaSecPlain         = "/plaintext"
	GoalKafkaSecBridge    = 0.85 // SASL_SSL costs the bridge ≤ 15 %
	GoalKafkaSecProcessor = 0.90 // SASL_SSL costs the processor ≤ 10 %
	ProcessorCeilingBench = "BenchmarkKafkaCeilingDecode"
	TimescaleBench        = "BenchmarkReadings"
	LakeBench             = "BenchmarkSink"
	LakeCeilingBench      = "BenchmarkEncode/sensor-resolution"
	LakeWorstCaseBench    = "BenchmarkEncode/full-precision"
	DecodeBench           = "BenchmarkDecode/metrics_object/epoch_ms"
	DecodeRawBench        = "BenchmarkDecodeRaw/RawDecoder"
	WindowUpdateBench     = "BenchmarkWindowUpdate"
	TaskHandleBench       = "BenchmarkTaskHandle"
	StateBytesPerKeyBench = "BenchmarkStateBytesPerKey"
	StateBytes10HzBench   = "BenchmarkStateBytesPerKey10Hz"
	DefaultBridgeVariant  = "lz4" // bridge.DefaultCompression
	bridgeVariantPrefix   = BridgeBench + "/bridge-"
	timescalePsqlCopy     = TimescaleBench + "/psql_copy"
	timescaleInterleaved  = TimescaleBench + "/interleaved"
	timescaleSinkEndToEnd = TimescaleBench + "/sink_e2e"
)

// missing collects the figures a stage could not find.
type missing []string

func (m *missing) get(bs []Bench, name, unit string) float64 {
	v, ok := Get(bs, name, unit)
	if !ok {
		*m = append(*m, name+" "+unit)
	}
	return v
}

func (m missing) err() string {
	if len(m) == 0 {
		return ""
	}
	return "missing figures: " + strings.Join(m, ", ")
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// BridgeFrom fills the bridge figures from BenchmarkBridgeVsPipeline's
// lines. compression names the variant that is the bridge's figure.
func BridgeFrom(bs []Bench, messages int, compression string) *Bridge {
	var m missing
	r := &Bridge{Messages: messages, Compression: compression, GoalRatio: GoalBridgeRatio,
		Variants: map[string]BridgeVariant{}, Benchmarks: Collect(bs)}
	r.CeilingMsgsPerS = m.get(bs, BridgePipeline, "msgs/s")
	r.CeilingCPUMicrosMsg = m.get(bs, BridgePipeline, "cpu-µs/msg")
	for _, b := range bs {
		c, ok := strings.CutPrefix(b.Name, bridgeVariantPrefix)
		if !ok {
			continue
		}
		v := BridgeVariant{MsgsPerS: b.Metrics["msgs/s"], CPUMicrosPerMsg: b.Metrics["cpu-µs/msg"], AllocsPerMsg: b.Metrics["allocs/msg"],
			SpreadPct: b.Metrics["spread-%"]}
		v.Ratio = ratio(v.MsgsPerS, r.CeilingMsgsPerS)
		r.Variants[c] = v
	}
	name := bridgeVariantPrefix + compression
	r.MsgsPerS = m.get(bs, name, "msgs/s")
	r.CPUMicrosPerMsg = m.get(bs, name, "cpu-µs/msg")
	r.AllocsPerMsg = m.get(bs, name, "allocs/msg")
	r.Ratio = ratio(r.MsgsPerS, r.CeilingMsgsPerS)
	r.CPURatio = ratio(r.CPUMicrosPerMsg, r.CeilingCPUMicrosMsg)
	rounds, _ := Get(bs, name, "rounds") // absent in results from before warm rounds
	r.Rounds = int(rounds)
	r.SpreadPct, _ = Get(bs, name, "spread-%")
	r.CeilingSpreadPct, _ = Get(bs, BridgePipeline, "spread-%")
	r.TLS = bridgeTLSFrom(bs, messages, &m)
	r.KafkaSec = kafkaSecFrom(bs, BridgeDrainSecBench, "msgs/s", "cpu-µs/msg", GoalKafkaSecBridge)
	r.Error = m.err()
	r.GoalMet = r.Error == "" && r.Ratio >= r.GoalRatio
	r.TLS.GoalMet = r.Error == "" && r.TLS.Ratio >= r.TLS.GoalRatio && r.TLS.DrainRatio >= r.TLS.GoalRatio
	return r
}

// bridgeTLSFrom fills the TLS figures from BenchmarkBridgeTLS's lines.
func bridgeTLSFrom(bs []Bench, messages int, m *missing) *BridgeTLS {
	t := &BridgeTLS{Messages: messages, GoalRatio: GoalBridgeTLSRatio}
	plain, tls := BridgeTLSBench+"/plaintext", BridgeTLSBench+"/tls"
	t.PlaintextMsgsPerS = m.get(bs, plain, "msgs/s")
	t.TLSMsgsPerS = m.get(bs, tls, "msgs/s")
	t.PlaintextCPUMicrosPerMsg = m.get(bs, plain, "cpu-µs/msg")
	t.TLSCPUMicrosPerMsg = m.get(bs, tls, "cpu-µs/msg")
	t.PlaintextDrainMsgsPerS = m.get(bs, plain, "drain-msgs/s")
	t.TLSDrainMsgsPerS = m.get(bs, tls, "drain-msgs/s")
	t.DrainRatio = ratio(t.TLSDrainMsgsPerS, t.PlaintextDrainMsgsPerS)
	rounds, _ := Get(bs, tls, "rounds")
	t.Rounds = int(rounds)
	t.SimTLSCPUMicrosPerMsg = m.get(bs, BridgeTLSBench+"/simulator-tls", "cpu-µs/msg")
	t.SimPlainCPUMicrosPerMsg, _ = Get(bs, BridgeTLSBench+"/simulator-plaintext", "cpu-µs/msg") // only with 2 rounds or more
	t.Ratio = ratio(t.TLSMsgsPerS, t.PlaintextMsgsPerS)
	if t.Ratio > 0 {
		t.ThroughputCost = 1 - t.Ratio
	}
	t.CPURatio = ratio(t.TLSCPUMicrosPerMsg, t.PlaintextCPUMicrosPerMsg)
	return t
}

// ProcessorFrom fills the processor figures (benchmarks run with -cpu 1).
func ProcessorFrom(bs []Bench, readings int) *Processor {
	var m missing
	r := &Processor{Readings: readings, GoalReadingsPerSPerCore: GoalProcessorPerCore, GoalRatio: GoalProcessorRatio, Benchmarks: Collect(bs)}
	r.ReadingsPerSPerCore = m.get(bs, ProcessorBench, "readings/s")
	r.MicrosPerReading = m.get(bs, ProcessorBench, "µs/reading")
	r.ChangelogBytesPerReading, _ = Get(bs, ProcessorBench, "changelog-B/reading")
	r.Transactions, _ = Get(bs, ProcessorBench, "txns")
	r.KafkaSec = kafkaSecFrom(bs, ProcessorSecBench, "readings/s", "cpu-µs/reading", GoalKafkaSecProcessor)
	r.CeilingReadingsPerSPerCore = m.get(bs, ProcessorCeilingBench, "readings/s")
	r.CeilingMicrosPerReading = m.get(bs, ProcessorCeilingBench, "µs/reading")
	r.Ratio = ratio(r.ReadingsPerSPerCore, r.CeilingReadingsPerSPerCore)
	r.ReadingsPerCPUSecond, _ = Get(bs, ProcessorBench, "readings/cpu-s")
	r.CeilingReadingsPerCPUSecond, _ = Get(bs, ProcessorCeilingBench, "readings/cpu-s")
	r.CPURatio, _ = Get(bs, ProcessorBench, "cpu-ratio")
	r.Error = m.err()
	r.GoalMet = r.Error == "" && r.ReadingsPerSPerCore >= r.GoalReadingsPerSPerCore
	r.GoalRatioMet = r.Error == "" && r.Ratio >= r.GoalRatio
	return r
}

// KafkaSec is a stage over the SASL_SSL listener against itself over
// the PLAINTEXT listener of the same private broker, in the same run:
// medians of warm, interleaved rounds.
type KafkaSec struct {
	SASLSSL   float64 `json:"sasl_ssl"`  // median throughput over SASL_SSL, in Unit
	Plaintext float64 `json:"plaintext"` // the same over PLAINTEXT
	Unit      string  `json:"unit"`
	Ratio     float64 `json:"ratio"` // sasl_ssl / plaintext
	Cost      float64 `json:"cost"`  // 1 − ratio: the share of throughput SASL_SSL costs
	// PairedRatio is the median of each round's sasl_ssl / plaintext (the
	// two run back to back): the figure a drift of the load disturbs least.
	PairedRatio float64 `json:"paired_ratio"`
	// Spread of each side's rounds: (max − min) / median, in %.
	SASLSSLSpreadPct   float64 `json:"sasl_ssl_spread_pct"`
	PlaintextSpreadPct float64 `json:"plaintext_spread_pct"`
	// CPU µs per message or reading of the stage's process, medians.
	SASLSSLCPUMicros   float64 `json:"sasl_ssl_cpu_us"`
	PlaintextCPUMicros float64 `json:"plaintext_cpu_us"`
	CPURatio           float64 `json:"cpu_ratio"` // sasl_ssl / plaintext (lower is better)
	Rounds             int     `json:"rounds"`    // of each side, warm-up not counted
	GoalRatio          float64 `json:"goal_ratio"`
	GoalMet            bool    `json:"goal_met"`
}

// kafkaSecFrom reads bench's sub-benchmarks; nil when the run has not
// both.
func kafkaSecFrom(bs []Bench, bench, unit, cpuUnit string, goal float64) *KafkaSec {
	sn, pn := bench+KafkaSecSASL, bench+KafkaSecPlain
	s, ok1 := Get(bs, sn, unit)
	p, ok2 := Get(bs, pn, unit)
	if !ok1 || !ok2 {
		return nil
	}
	k := &KafkaSec{SASLSSL: s, Plaintext: p, Unit: unit, Ratio: ratio(s, p), GoalRatio: goal}
	if k.Ratio > 0 {
		k.Cost = 1 - k.Ratio
	}
	k.SASLSSLSpreadPct, _ = Get(bs, sn, "spread-%")
	k.PlaintextSpreadPct, _ = Get(bs, pn, "spread-%")
	k.SASLSSLCPUMicros, _ = Get(bs, sn, cpuUnit)
	k.PlaintextCPUMicros, _ = Get(bs, pn, cpuUnit)
	k.CPURatio = ratio(k.SASLSSLCPUMicros, k.PlaintextCPUMicros)
	k.PairedRatio, _ = Get(bs, sn, "paired-ratio")
	rounds, _ := Get(bs, sn, "rounds")
	k.Rounds = int(rounds)
	k.GoalMet = k.Ratio >= goal
	return k
}

// TimescaleFrom fills the TimescaleDB sink figures (4 rows per reading).
func TimescaleFrom(bs []Bench, readings int) *Timescale {
	var m missing
	r := &Timescale{Readings: readings, Rows: 4 * readings, GoalRatio: GoalTimescaleRatio, Benchmarks: Collect(bs)}
	r.RowsPerS = m.get(bs, timescaleSinkEndToEnd, "rows/s")
	r.CeilingRowsPerS = m.get(bs, timescalePsqlCopy, "rows/s")
	r.Ratio = ratio(r.RowsPerS, r.CeilingRowsPerS)
	r.DBPathRowsPerS = m.get(bs, timescaleInterleaved, "sink_rows/s")
	r.DBPathCeilingRowsPerS = m.get(bs, timescaleInterleaved, "psql_rows/s")
	r.DBPathRatio = ratio(r.DBPathRowsPerS, r.DBPathCeilingRowsPerS)
	r.Error = m.err()
	r.GoalMet = r.Error == "" && r.Ratio >= r.GoalRatio
	r.DBPathGoalMet = r.Error == "" && r.DBPathRatio >= r.GoalRatio
	return r
}

// LakeFrom fills the lake sink figures.
func LakeFrom(bs []Bench, readings int) *Lake {
	var m missing
	r := &Lake{Readings: readings, GoalRowsPerCPUSecond: GoalLakeRowsPerCPUSecond, GoalTimesSmaller: GoalLakeSmallerThanRawJSON, Benchmarks: Collect(bs)}
	r.RowsPerS = m.get(bs, LakeBench, "rows/s")
	r.RowsPerCPUSecond = m.get(bs, LakeBench, "rows/cpu-s")
	r.ParquetBytesPerReading = m.get(bs, LakeBench, "parquet_B/reading")
	r.RawJSONBytesPerReading = m.get(bs, LakeBench, "rawjson_B/reading")
	r.TimesSmaller = ratio(r.RawJSONBytesPerReading, r.ParquetBytesPerReading)
	r.CeilingRowsPerS = m.get(bs, LakeCeilingBench, "rows/s")
	r.WorstCaseTimesSmaller, _ = Get(bs, LakeWorstCaseBench, "x_smaller_than_raw")
	r.Ratio = ratio(r.RowsPerCPUSecond, r.CeilingRowsPerS)
	r.Error = m.err()
	r.GoalMet = r.Error == "" && r.RowsPerCPUSecond >= r.GoalRowsPerCPUSecond && r.TimesSmaller >= r.GoalTimesSmaller
	return r
}

// MicroFrom fills the micro-benchmark figures.
func MicroFrom(bs []Bench) *Micro {
	var m missing
	r := &Micro{Benchmarks: Collect(bs)}
	r.DecodeNsPerOp = m.get(bs, DecodeBench, "ns/op")
	r.DecodeAllocsPerOp, _ = Get(bs, DecodeBench, "allocs/op")
	r.DecodeRawNsPerOp = m.get(bs, DecodeRawBench, "ns/op")
	r.WindowUpdateNsPerOp = m.get(bs, WindowUpdateBench, "ns/op")
	r.WindowUpdateAllocsPerOp, _ = Get(bs, WindowUpdateBench, "allocs/op")
	r.TaskHandleNsPerOp, _ = Get(bs, TaskHandleBench, "ns/op")
	r.StateBytesPerKey, _ = Get(bs, StateBytesPerKeyBench, "bytes/key")
	r.StateChangelogBytesPerKey, _ = Get(bs, StateBytesPerKeyBench, "changelog-bytes/key")
	r.StateBytesPerKey10Hz, _ = Get(bs, StateBytes10HzBench, "bytes/key")
	r.StateChangelogBytesPerKey10Hz, _ = Get(bs, StateBytes10HzBench, "changelog-bytes/key")
	r.StateEngineBytes, _ = Get(bs, StateBytesPerKeyBench, "engine-bytes")
	r.Error = m.err()
	return r
}

// EndToEndFrom wraps the e2e result (res may be nil when the run failed).
func EndToEndFrom(res *e2e.Result, runErr error) *EndToEnd {
	r := &EndToEnd{Result: res, GoalRatio: GoalEndToEndRatio, GoalCPUMicrosPerMsg: GoalEndToEndCPUMicros, GoalLatencyP99S: GoalEndToEndLatencyP99S}
	if res != nil {
		r.Ratio = res.MaxSustainableRatio
		if r.Ratio == 0 && res.BrokerCeilingMsgsPerS > 0 {
			r.Ratio = ratio(res.MaxSustainableMsgsPerS, res.BrokerCeilingMsgsPerS)
		}
	}
	if runErr != nil {
		r.Error = runErr.Error()
	}
	r.GoalMet = r.Error == "" && res != nil && res.Count.OK && r.Ratio >= r.GoalRatio
	r.CPUGoalMet = r.Error == "" && res != nil && res.PipelineCPUMicrosPerMsg > 0 && res.PipelineCPUMicrosPerMsg <= r.GoalCPUMicrosPerMsg
	r.LatencyGoalMet = r.Error == "" && res != nil && res.LatencySamples > 0 && res.LatencyP99S <= r.GoalLatencyP99S
	return r
}

// Finish computes f.Failed from the stages' errors and the count check.
func (f *File) Finish() {
	f.Failed = []string{}
	for _, e := range f.Errors() {
		f.Failed = append(f.Failed, e[0])
	}
	if e := f.EndToEnd; e != nil && e.Error == "" && (e.Result == nil || !e.Count.OK) {
		f.Failed = append(f.Failed, "end_to_end.count_check")
	}
	sort.Strings(f.Failed)
}

// stageError joins a run error and a figures error.
func stageError(run error, figures string) string {
	switch {
	case run == nil:
		return figures
	case figures == "":
		return run.Error()
	default:
		return fmt.Sprintf("%v; %s", run, figures)
	}
}

// WithRunError sets a stage's error from the error of its go test run
// (kept together with any missing-figure error) and clears its goal.
func WithRunError(run error, errField *string, goal ...*bool) {
	*errField = stageError(run, *errField)
	if *errField != "" {
		for _, g := range goal {
			*g = false
		}
	}
}
