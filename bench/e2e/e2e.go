package e2e

import (
	"io"
	"time"
)

// Options configure a run. DefaultOptions gives the full or quick sizes.
type Options struct {
	// Binary is the path of the iotpipe binary that runs the stages and
	// the simulator.
	Binary string
	// Quick selects the small sizes used by `make bench-quick`.
	Quick bool
	// Devices is the size of the simulated fleet.
	Devices int
	// CeilingDuration is how long the broker-only ceiling is measured.
	CeilingDuration time.Duration
	// StepDuration is how long each step of the stepped search lasts.
	StepDuration time.Duration
	// Steps are the offered loads of the stepped search, as fractions of
	// the ceiling, in increasing order. The search stops at the first step
	// that is not sustained; small increments near the expected top keep
	// the overload of that step (and the backlog it leaves) small.
	Steps []float64
	// MaxBacklog ends a step early when the bridge backlog (messages the
	// broker acknowledged to the devices that are not in Kafka yet, i.e.
	// Mosquitto's queue for the bridge) exceeds it, far below Mosquitto's
	// max_queued_messages (1,000,000 in scripts/services.sh).
	MaxBacklog int64
	// DrainTimeout bounds the wait, after the stepped search, for the
	// pipeline to work off the last step's backlog before the fixed phase.
	DrainTimeout time.Duration
	// FixedDuration is how long the pipeline runs at the fixed offered
	// load (at least 5 minutes for the full run).
	FixedDuration time.Duration
	// FixedOfSustained sets the fixed offered load as this fraction of the
	// highest sustained step's offered load (0.75), so that the fixed phase
	// runs at a load the stepped search showed to be sustainable.
	FixedOfSustained float64
	// FixedRate, when > 0, is the fixed offered load in messages/s
	// instead; a note says so when it exceeds the highest sustained step.
	FixedRate float64
	// ProfileSeconds, when > 0, starts the stages with --debug-pprof and
	// takes a CPU profile of this many seconds of each stage (bridge,
	// processor, both sinks) during the fixed phase, starting a quarter of
	// the way in; the files are LogDir/cpu-<stage>.pprof (Result.Profiles).
	ProfileSeconds int
	// StageArgs are extra command-line arguments by stage name ("bridge",
	// "processor", "sink timescale", "sink lake"), after the benchmark's
	// own: for trying a setting (e.g. "--kafka-linger", "20ms").
	StageArgs map[string][]string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Result is one run's figures. JSON field names are stable: results are
// compared across runs by name.
type Result struct {
	Devices               int     `json:"devices"`
	BrokerCeilingMsgsPerS float64 `json:"broker_ceiling_msgs_per_s"`
	FixedDurationS        float64 `json:"fixed_duration_s"`
	FixedOfferedMsgsPerS  float64 `json:"fixed_offered_msgs_per_s"`
	FixedMsgsPerS         float64 `json:"fixed_msgs_per_s"`
	FixedRatioToCeiling   float64 `json:"fixed_ratio_to_ceiling"`
	// LatencyP50S and LatencyP99S are the fixed phase's; 0 (not measured)
	// when LatencySamples is 0.
	LatencyP50S            float64 `json:"latency_p50_s"`
	LatencyP99S            float64 `json:"latency_p99_s"`
	MaxSustainableMsgsPerS float64 `json:"max_sustainable_msgs_per_s"`
	MaxSustainableRatio    float64 `json:"max_sustainable_ratio_to_ceiling"`
	Steps                  []Step  `json:"steps"`
	Processes              []Proc  `json:"processes"`
	// PipelineCPUMicrosPerMsg is the CPU µs per device message at the
	// fixed load of the pipeline's own processes together: bridge,
	// processor, both sinks, Kafka, PostgreSQL and the object store (not
	// the simulator, not Mosquitto: both are in the ceiling too).
	// PipelineCPUCores is their CPU cores. Goal (#19): ≤ 60 µs.
	PipelineCPUMicrosPerMsg float64 `json:"pipeline_cpu_us_per_msg"`
	PipelineCPUCores        float64 `json:"pipeline_cpu_cores"`
	// Profiles are the CPU profiles taken with Options.ProfileSeconds, by
	// stage name.
	Profiles map[string]string `json:"profiles,omitempty"`
	Count    Count             `json:"count_check"`

	// RunID names everything the run created (topics, schema, bucket,
	// groups, MQTT topics and client ids, device ids).
	RunID string `json:"run_id"`
	// LogDir holds every child process's log (kept after the run).
	LogDir    string    `json:"log_dir"`
	Quick     bool      `json:"quick"`
	StartedAt time.Time `json:"started_at"`
	Cores     int       `json:"cores"`
	// DevicesPerConn is the simulator's --devices-per-conn in every phase.
	DevicesPerConn int `json:"devices_per_conn"`

	// Broker-only ceiling: what mosquitto_sub received and what the
	// simulator got PUBACKs for, over the whole ceiling phase, and the
	// simulator's acked rate over the same steady window as the ceiling.
	BrokerCeilingDurationS     float64 `json:"broker_ceiling_duration_s"`
	BrokerCeilingAckedMsgsPerS float64 `json:"broker_ceiling_acked_msgs_per_s"`
	BrokerCeilingAcked         int64   `json:"broker_ceiling_acked"`
	BrokerCeilingReceived      int64   `json:"broker_ceiling_received"`
	// BrokerCeilingUnconfirmed were in flight when the rate-0 simulator was
	// stopped (SIGTERM): they may or may not have reached the broker, so
	// received lies between acked and acked + unconfirmed.
	BrokerCeilingUnconfirmed int64 `json:"broker_ceiling_unconfirmed"`
	BrokerCeilingConnections int   `json:"broker_ceiling_connections"`
	// BrokerCeilingProcesses is the CPU and memory of the simulator,
	// mosquitto_sub and mosquitto during the ceiling phase.
	BrokerCeilingProcesses []Proc `json:"broker_ceiling_processes"`
	// BrokerCeilingMachineCPUBusy is the share of all cores' time that was
	// busy during the ceiling phase, whoever used it (other tests too).
	BrokerCeilingMachineCPUBusy float64 `json:"broker_ceiling_machine_cpu_busy"`
	// BrokerCeilingLimitedBy names what bounds the ceiling, from the CPU
	// shares: "mosquitto", "simulator", "mosquitto_sub", "machine (all
	// cores busy)" or "no process CPU-bound (…)".
	BrokerCeilingLimitedBy string `json:"broker_ceiling_limited_by"`

	// Fixed is the fixed-load phase as a step (it counts for
	// MaxSustainableMsgsPerS when sustained).
	Fixed Step `json:"fixed"`
	// FixedSustained is Fixed.Sustained: the fixed phase met the same
	// rule as the steps.
	FixedSustained bool `json:"fixed_sustained"`
	// FixedBasis says how the fixed offered load was chosen.
	FixedBasis string `json:"fixed_basis"`
	// StepsDrainS is how long the pipeline took, after the stepped
	// search, to work off its backlog before the fixed phase.
	StepsDrainS float64 `json:"steps_drain_s"`
	// BridgeMQTTEvents are the bridge's log lines about its MQTT
	// connection after the first connect (lost, broker disconnect,
	// connect failures): a lost connection makes Mosquitto redeliver.
	BridgeMQTTEvents []string `json:"bridge_mqtt_events"`
	// LatencySamples is the number of latency samples of the fixed phase;
	// with 0, latency_p50_s and latency_p99_s are not measured (0).
	LatencySamples       int     `json:"latency_samples"`
	LatencyMaxS          float64 `json:"latency_max_s"`
	LatencyPollIntervalS float64 `json:"latency_poll_interval_s"`
	// GoalMet: the pipeline sustained at least half of the broker ceiling
	// and the count check passed (the goal).
	GoalMet bool `json:"goal_met"`
	// Notes are remarks on this run's figures (what limited what).
	Notes []string `json:"notes"`
}

// Step is one offered load of the stepped search (or the fixed phase).
type Step struct {
	OfferedMsgsPerS  float64 `json:"offered_msgs_per_s"`
	AchievedMsgsPerS float64 `json:"achieved_msgs_per_s"`
	MaxLagRecords    int64   `json:"max_lag_records"`
	EndLagRecords    int64   `json:"end_lag_records"`
	Sustained        bool    `json:"sustained"`

	Phase    string  `json:"phase"`    // "fixed", "step 1", …
	Fraction float64 `json:"fraction"` // offered load / broker ceiling
	// DurationS is the measured length (simulator ready to stop).
	DurationS float64 `json:"duration_s"`
	// LagGrowthRecords is the end minus the start lag of the bridge,
	// processor and TimescaleDB sink (see the package doc).
	LagGrowthRecords int64 `json:"lag_growth_records"`
	// Reason says why the step was not sustained.
	Reason string `json:"reason,omitempty"`
	// StoppedEarly: the step ended before its duration because the bridge
	// backlog exceeded Options.MaxBacklog.
	StoppedEarly bool `json:"stopped_early,omitempty"`
	// LatencyP50S and LatencyP99S are 0 (not measured) when
	// LatencySamples is 0.
	LatencyP50S    float64 `json:"latency_p50_s"`
	LatencyP99S    float64 `json:"latency_p99_s"`
	LatencySamples int     `json:"latency_samples"`
	// MachineCPUBusy is the share of all cores' time that was busy during
	// the step, whoever used it (other tests on the machine too).
	MachineCPUBusy float64 `json:"machine_cpu_busy"`
}

// Proc is the resource use of one process over the fixed-load phase.
type Proc struct {
	Name     string  `json:"name"`
	CPUCores float64 `json:"cpu_cores"` // CPU seconds per wall second
	// CPUMicrosPerMsg is CPU µs per device message at the fixed load
	// (CPUCores / fixed_msgs_per_s; 0 for the ceiling's processes).
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg,omitempty"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	// Pids is how many processes were added up (PostgreSQL: postmaster
	// and backends).
	Pids int `json:"pids"`
	// Note says how the memory was measured when it is not the process's
	// own peak RSS.
	Note string `json:"note,omitempty"`
}

// Count is the end-to-end count check: what the devices got a PUBACK
// for against what every stage wrote.
type Count struct {
	PublishedAcked     int64 `json:"published_acked"`
	RawRecords         int64 `json:"raw_records"`
	DLQRecords         int64 `json:"dlq_records"`
	ReadingsRows       int64 `json:"readings_rows"`
	MeasurementsPerMsg int   `json:"measurements_per_msg"`
	LakeRows           int64 `json:"lake_rows"`
	ProcessorReadings  int64 `json:"processor_readings"`
	OK                 bool  `json:"ok"`

	// Published is what the simulators sent (acked or not); Unconfirmed
	// what had no PUBACK when they stopped.
	Published   int64 `json:"published"`
	Unconfirmed int64 `json:"unconfirmed"`
	// ProcessorDuplicates are readings the processor dropped as repeats.
	ProcessorDuplicates int64 `json:"processor_duplicates"`
	// ReadingsDuplicateRows are rows beyond one per (device, metric, seq),
	// computed per (device, metric) as rows − (max seq − min seq + 1).
	ReadingsDuplicateRows int64 `json:"readings_duplicate_rows"`
	// LakeRowsSource says where LakeRows comes from.
	LakeRowsSource string `json:"lake_rows_source"`
	// DrainS is how long the pipeline took to catch up after the last
	// simulator stopped.
	DrainS float64 `json:"drain_s"`
	// Mismatch lists what differs, empty when OK.
	Mismatch string `json:"mismatch,omitempty"`
}

// DefaultOptions returns the full (quick=false) or quick sizes.
func DefaultOptions(quick bool) Options {
	o := Options{Quick: quick, Devices: 1000, CeilingDuration: 30 * time.Second,
		StepDuration: 20 * time.Second,
		Steps:        []float64{0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0},
		MaxBacklog:   200_000, DrainTimeout: 3 * time.Minute,
		FixedDuration: 5 * time.Minute, FixedOfSustained: 0.75}
	if quick {
		o.Devices, o.CeilingDuration, o.StepDuration, o.FixedDuration = 200, 8*time.Second, 8*time.Second, 30*time.Second
		o.Steps = []float64{0.05, 0.1, 0.2, 0.3, 0.4}
		o.DrainTimeout = time.Minute
	}
	return o
}
