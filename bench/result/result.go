package result

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/bench/e2e"
)

// SchemaVersion is the version of the File layout. It rises only when a
// field changes meaning; added fields do not change it.
const SchemaVersion = 1

// Goals from the stage issues, next to each figure in the file and table.
const (
	GoalBridgeRatio            = 1.2     // bridge msgs/s ≥ 1.2× the mosquitto_sub | kcat -P pipeline, warm, default codec (#3: 1.0×, #19: 1.2×)
	GoalBridgeTLSRatio         = 0.85    // bridge msgs/s over mutual TLS ≥ 0.85× over plaintext: TLS costs ≤ 15 % (#14)
	GoalProcessorPerCore       = 500_000 // processor readings/s on one core, exactly-once (#4)
	GoalProcessorRatio         = 0.8     // processor readings/s ≥ 0.8× its consume+decode ceiling (#19)
	GoalProcessorCPURatio      = 0.8     // processor readings per CPU-second ≥ 0.8× its consume+decode ceiling's (#19)
	GoalLakeRowsPerCPUSecond   = 300_000 // lake sink rows per CPU-second (#5)
	GoalLakeSmallerThanRawJSON = 8.0     // lake Parquet ≥ 8× smaller than telemetry.raw JSON (#5)
	GoalTimescaleRatio         = 0.8     // TimescaleDB sink rows/s ≥ 0.8× psql \copy (#6)
	GoalEndToEndRatio          = 0.5     // pipeline ≥ 0.5× the broker-only ceiling, nothing lost (#8)
	GoalEndToEndCPUMicros      = 60      // CPU µs per message of the pipeline's processes at the fixed load (#19)
	GoalEndToEndLatencyP99S    = 1.0     // p99 event time → queryable reading row at the fixed load, seconds (#19)
)

// File is one run of the suite.
type File struct {
	SchemaVersion int       `json:"schema_version"`
	StartedAt     time.Time `json:"started_at"`
	DurationS     float64   `json:"duration_s"`
	Quick         bool      `json:"quick"`
	// StageDurationS is the wall time of each stage that ran, by stage
	// name (bridge, processor, timescale, lake, micro, end_to_end).
	StageDurationS map[string]float64 `json:"stage_duration_s"`
	Machine        Machine            `json:"machine"`
	Versions       Versions           `json:"versions"`
	// Stages; nil when skipped.
	Bridge    *Bridge    `json:"bridge,omitempty"`
	Processor *Processor `json:"processor,omitempty"`
	Alert     *Alert     `json:"alert,omitempty"`
	// AlertLatency: stage name alert-latency.
	AlertLatency *AlertLatency `json:"alert_latency,omitempty"`
	Timescale    *Timescale    `json:"timescale,omitempty"`
	Lake         *Lake         `json:"lake,omitempty"`
	Micro        *Micro        `json:"micro,omitempty"`
	EndToEnd     *EndToEnd     `json:"end_to_end,omitempty"`
	// Failed lists the stages that failed (their "error" fields say why)
	// and "end_to_end.count_check" when the count check failed.
	Failed []string `json:"failed"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores        int        `json:"cores"`
	GOMAXPROCS   int        `json:"gomaxprocs"`
	MemoryBytes  int64      `json:"memory_bytes"`
	CPUModel     string     `json:"cpu_model"`
	Kernel       string     `json:"kernel"`
	LoadAvgStart [3]float64 `json:"load_avg_start"` // 1, 5, 15 minutes
	LoadAvgEnd   [3]float64 `json:"load_avg_end"`
}

// Versions are the software versions the figures were measured with.
type Versions struct {
	Go          string `json:"go"`
	Commit      string `json:"commit"`
	Dirty       bool   `json:"dirty"`
	Kafka       string `json:"kafka"`
	Java        string `json:"java"`
	Mosquitto   string `json:"mosquitto"`
	Kcat        string `json:"kcat"`
	PostgreSQL  string `json:"postgresql"`
	TimescaleDB string `json:"timescaledb"` // extension version, or "plain PostgreSQL"
	Versitygw   string `json:"versitygw"`
}

// Benchmarks holds every metric of every parsed benchmark line of a stage,
// by benchmark name (without the -GOMAXPROCS suffix) and unit key (see
// UnitKey), so that figures the stage benchmarks add later are kept and
// compared without a change here.
type Benchmarks map[string]map[string]float64

// Bridge: BenchmarkBridgeVsPipeline. The bridge (QoS 1, PUBACK after the
// Kafka ack, default compression) and the no-guarantee pipeline
// `mosquitto_sub -q 1 | kcat -P` drain the same queued load.
type Bridge struct {
	Messages            int     `json:"messages"`
	Compression         string  `json:"compression"`
	MsgsPerS            float64 `json:"msgs_per_s"`
	CPUMicrosPerMsg     float64 `json:"cpu_us_per_msg"`
	AllocsPerMsg        float64 `json:"allocs_per_msg"`
	CeilingMsgsPerS     float64 `json:"ceiling_msgs_per_s"`
	CeilingCPUMicrosMsg float64 `json:"ceiling_cpu_us_per_msg"`
	Ratio               float64 `json:"ratio"`     // msgs_per_s / ceiling_msgs_per_s
	CPURatio            float64 `json:"cpu_ratio"` // cpu_us_per_msg / ceiling_cpu_us_per_msg (lower is better)
	GoalRatio           float64 `json:"goal_ratio"`
	GoalMet             bool    `json:"goal_met"`
	// Rounds is the number of warm rounds (after a warm-up, in rotating
	// order) whose medians the figures are; SpreadPct and
	// CeilingSpreadPct are (max − min) / median of msgs/s over them, in %.
	Rounds           int     `json:"rounds"`
	SpreadPct        float64 `json:"spread_pct"`
	CeilingSpreadPct float64 `json:"ceiling_spread_pct"`
	// Variants: the same figures for every compression codec measured.
	Variants map[string]BridgeVariant `json:"variants,omitempty"`
	// TLS: the bridge over mutual TLS against itself over plaintext
	// (BenchmarkBridgeTLS, same run).
	TLS *BridgeTLS `json:"tls,omitempty"`
	// KafkaSec: BenchmarkBridgeDrainKafkaSec, the bridge over SASL_SSL
	// against PLAINTEXT (one broker, interleaved rounds).
	KafkaSec   *KafkaSec  `json:"kafka_sec,omitempty"`
	Benchmarks Benchmarks `json:"benchmarks,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// BridgeTLS: BenchmarkBridgeTLS. The bridge drains the same queued load over
// the broker's mutual-TLS listener and over its plaintext listener, in
// interleaved rounds (alternating which goes first); every figure is the
// median of the rounds. The simulator's figures are its CPU per published
// message with one connection per device, over TLS each with its own
// certificate, and over plaintext with the device password user.
type BridgeTLS struct {
	Messages          int     `json:"messages"` // per round
	Rounds            int     `json:"rounds"`
	PlaintextMsgsPerS float64 `json:"plaintext_msgs_per_s"`
	TLSMsgsPerS       float64 `json:"tls_msgs_per_s"`
	Ratio             float64 `json:"ratio"`           // tls_msgs_per_s / plaintext_msgs_per_s
	ThroughputCost    float64 `json:"throughput_cost"` // 1 - ratio
	// The same from the bridge's MQTT connection on (its process started
	// and the TLS handshake done): the per-message cost alone.
	PlaintextDrainMsgsPerS   float64 `json:"plaintext_drain_msgs_per_s"`
	TLSDrainMsgsPerS         float64 `json:"tls_drain_msgs_per_s"`
	DrainRatio               float64 `json:"drain_ratio"`
	PlaintextCPUMicrosPerMsg float64 `json:"plaintext_cpu_us_per_msg"`
	TLSCPUMicrosPerMsg       float64 `json:"tls_cpu_us_per_msg"`
	CPURatio                 float64 `json:"cpu_ratio"` // tls / plaintext (lower is better)
	SimPlainCPUMicrosPerMsg  float64 `json:"simulator_plaintext_cpu_us_per_msg"`
	SimTLSCPUMicrosPerMsg    float64 `json:"simulator_tls_cpu_us_per_msg"`
	GoalRatio                float64 `json:"goal_ratio"`
	GoalMet                  bool    `json:"goal_met"` // ratio and drain_ratio ≥ goal_ratio
}

// BridgeVariant is the bridge with one compression codec.
type BridgeVariant struct {
	MsgsPerS        float64 `json:"msgs_per_s"`
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg"`
	AllocsPerMsg    float64 `json:"allocs_per_msg"`
	Ratio           float64 `json:"ratio"`
	SpreadPct       float64 `json:"spread_pct"`
}

// Processor: BenchmarkKafkaExactlyOnce against BenchmarkKafkaCeilingDecode,
// both with GOMAXPROCS=1 (-cpu 1), so that readings/s is per core.
type Processor struct {
	Readings                   int     `json:"readings"`
	ReadingsPerSPerCore        float64 `json:"readings_per_s_per_core"`
	MicrosPerReading           float64 `json:"us_per_reading"`
	ChangelogBytesPerReading   float64 `json:"changelog_bytes_per_reading"`
	Transactions               float64 `json:"transactions"`
	CeilingReadingsPerSPerCore float64 `json:"ceiling_readings_per_s_per_core"`
	CeilingMicrosPerReading    float64 `json:"ceiling_us_per_reading"`
	Ratio                      float64 `json:"ratio"`
	GoalReadingsPerSPerCore    float64 `json:"goal_readings_per_s_per_core"`
	// GoalRatio is the #19 goal on Ratio; GoalRatioMet says whether it
	// holds (GoalMet is the per-core goal of #4).
	GoalRatio    float64 `json:"goal_ratio"`
	GoalRatioMet bool    `json:"goal_ratio_met"`
	GoalMet      bool    `json:"goal_met"`
	// KafkaSec: BenchmarkKafkaExactlyOnceSec, the processor over SASL_SSL
	// against PLAINTEXT (one broker, interleaved rounds).
	KafkaSec   *KafkaSec  `json:"kafka_sec,omitempty"`
	Benchmarks Benchmarks `json:"benchmarks,omitempty"`
	Error      string     `json:"error,omitempty"`

	// Readings per CPU-second of the benchmark's process (medians of warm,
	// interleaved rounds), which other load on the shared machine disturbs
	// far less than readings/s; CPURatio is the median of each round's
	// ceiling cpu-µs/reading over the processor's (0 in older runs).
	ReadingsPerCPUSecond        float64 `json:"readings_per_cpu_s,omitempty"`
	CeilingReadingsPerCPUSecond float64 `json:"ceiling_readings_per_cpu_s,omitempty"`
	CPURatio                    float64 `json:"cpu_ratio,omitempty"`
}

// Timescale: BenchmarkReadings of sink/timescale. The whole sink (Kafka
// fetch, decode, write, commit) and its database path alone, against psql
// \copy of the same rows into the same table.
type Timescale struct {
	Readings        int     `json:"readings"`
	Rows            int     `json:"rows"`
	RowsPerS        float64 `json:"rows_per_s"`         // whole sink, Kafka → PostgreSQL (sink_e2e)
	CeilingRowsPerS float64 `json:"ceiling_rows_per_s"` // psql \copy (psql_copy)
	Ratio           float64 `json:"ratio"`
	// The database path (binary COPY + offsets, one transaction per
	// batch) and psql \copy run alternately (interleaved).
	DBPathRowsPerS        float64    `json:"db_path_rows_per_s"`
	DBPathCeilingRowsPerS float64    `json:"db_path_ceiling_rows_per_s"`
	DBPathRatio           float64    `json:"db_path_ratio"`
	DBPathGoalMet         bool       `json:"db_path_goal_met"`
	GoalRatio             float64    `json:"goal_ratio"`
	GoalMet               bool       `json:"goal_met"` // on ratio (the whole sink)
	Benchmarks            Benchmarks `json:"benchmarks,omitempty"`
	Error                 string     `json:"error,omitempty"`
}

// Lake: BenchmarkSink of sink/lake (the whole sink against real Kafka and
// versitygw) and BenchmarkEncode (the CPU ceiling: decode + Parquet encode
// on one core, no I/O).
type Lake struct {
	Readings               int        `json:"readings"`
	RowsPerS               float64    `json:"rows_per_s"`
	RowsPerCPUSecond       float64    `json:"rows_per_cpu_s"`
	CeilingRowsPerS        float64    `json:"ceiling_rows_per_s"` // encode only, one core
	Ratio                  float64    `json:"ratio"`              // rows_per_cpu_s / ceiling_rows_per_s
	ParquetBytesPerReading float64    `json:"parquet_bytes_per_reading"`
	RawJSONBytesPerReading float64    `json:"rawjson_bytes_per_reading"`
	TimesSmaller           float64    `json:"x_smaller"`
	WorstCaseTimesSmaller  float64    `json:"worst_case_x_smaller"` // full-precision random doubles (encode only)
	GoalRowsPerCPUSecond   float64    `json:"goal_rows_per_cpu_s"`
	GoalTimesSmaller       float64    `json:"goal_x_smaller"`
	GoalMet                bool       `json:"goal_met"` // both goals
	Benchmarks             Benchmarks `json:"benchmarks,omitempty"`
	Error                  string     `json:"error,omitempty"`
}

// Micro: the in-process micro benchmarks (schemas decoders and encoders,
// the processor's window engine). No ceiling; tracked across runs.
type Micro struct {
	DecodeNsPerOp           float64    `json:"decode_ns_per_op"` // device payload, metrics object, epoch ms, 5 measurements
	DecodeAllocsPerOp       float64    `json:"decode_allocs_per_op"`
	DecodeRawNsPerOp        float64    `json:"decode_raw_ns_per_op"` // telemetry.raw record, RawDecoder
	WindowUpdateNsPerOp     float64    `json:"window_update_ns_per_op"`
	WindowUpdateAllocsPerOp float64    `json:"window_update_allocs_per_op"`
	TaskHandleNsPerOp       float64    `json:"task_handle_ns_per_op"`
	StateBytesPerKey        float64    `json:"state_bytes_per_key"`
	Benchmarks              Benchmarks `json:"benchmarks,omitempty"`
	Error                   string     `json:"error,omitempty"`

	// The state per key in the changelog, and both figures at 10 Hz
	// (issue 19; StateBytesPerKey: 1 Hz, two metrics per device, 60 s
	// windows).
	StateChangelogBytesPerKey     float64 `json:"state_changelog_bytes_per_key"`
	StateBytesPerKey10Hz          float64 `json:"state_bytes_per_key_10hz"`
	StateChangelogBytesPerKey10Hz float64 `json:"state_changelog_bytes_per_key_10hz"`
	// StateEngineBytes is the empty engine's memory, the same whatever
	// the keys (state_bytes_per_key counts what grows with them).
	StateEngineBytes float64 `json:"state_engine_bytes,omitempty"`
}

// EndToEnd is the e2e benchmark's result as it is, plus the ratio to the
// broker-only ceiling and the goal.
type EndToEnd struct {
	*e2e.Result
	// Ratio is max_sustainable_ratio_to_ceiling: the highest offered load
	// the pipeline sustained, over the broker-only ceiling.
	Ratio     float64 `json:"ratio"`
	GoalRatio float64 `json:"goal_ratio"`
	// GoalMet: ratio ≥ goal_ratio and the count check passed.
	GoalMet bool `json:"goal_met"`
	// The #19 goals at the fixed load: the pipeline's CPU µs per message
	// (pipeline_cpu_us_per_msg) and the p99 latency to a queryable row.
	GoalCPUMicrosPerMsg float64 `json:"goal_pipeline_cpu_us_per_msg"`
	CPUGoalMet          bool    `json:"pipeline_cpu_goal_met"`
	GoalLatencyP99S     float64 `json:"goal_latency_p99_s"`
	LatencyGoalMet      bool    `json:"latency_goal_met"`
	Error               string  `json:"error,omitempty"`
}

// Write stores f as indented JSON in dir/<UTC start time>.json and
// returns the path.
func (f *File) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode result: %w", err)
	}
	path := filepath.Join(dir, FileName(f.StartedAt))
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// FileName is the result file name of a run started at t: the UTC time,
// so that names sort in time order.
func FileName(t time.Time) string { return t.UTC().Format("20060102T150405Z") + ".json" }

// Read loads a result file.
func Read(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// Newest returns the paths of the n newest result files in dir (by name,
// oldest first).
func Newest(dir string, n int) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(m)
	if len(m) < n {
		return nil, fmt.Errorf("%s holds %d result files, need %d", dir, len(m), n)
	}
	return m[len(m)-n:], nil
}

// UnitKey turns a benchmark unit into a JSON key: "ns/op" → "ns_per_op",
// "cpu-µs/msg" → "cpu_us_per_msg", "B/op" → "bytes_per_op".
func UnitKey(unit string) string {
	r := strings.NewReplacer("µ", "u", "/", "_per_", "-", "_", ".", "_")
	u := unit
	switch {
	case strings.HasPrefix(u, "B/"):
		u = "bytes" + u[1:]
	case strings.Contains(u, "_B/"):
		u = strings.Replace(u, "_B/", "_bytes/", 1)
	case u == "MB/s":
		u = "mb/s"
	}
	return strings.ToLower(r.Replace(u))
}
