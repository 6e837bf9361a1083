package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// DefaultChangelogTopic is the default name of the compacted changelog
// topic (created by `iotpipe init` with as many partitions as the raw topic).
const DefaultChangelogTopic = "iotpipe.processor.changelog"

// Config configures a Processor. Start from DefaultConfig: a zero field
// means zero (or is refused by Validate), never a default.
type Config struct {
	// Kafka is how to reach the cluster.
	Kafka kafkax.Config
	// Group is the consumer group; processors in one group split the raw
	// topic's partitions. Default "iotpipe-processor".
	Group string
	// InstanceID identifies this process in the group (static membership)
	// and, prefixed, is its transactional id. It must be unique among the
	// running processors of a group and stable across restarts of the same
	// one: a restarted instance then takes its partitions back at once, and
	// fences its predecessor's producer, aborting a transaction the
	// predecessor left open. Required; default the host name.
	InstanceID string
	// Topics names the input, output and changelog topics (defaults from
	// package schemas and DefaultChangelogTopic), and the topic that gets a
	// copy of every accepted reading (schemas.TopicReadings).
	Topics Topics
	// Window configures the windows (see WindowConfig).
	Window WindowConfig
	// CommitInterval is the longest a transaction stays open: input read
	// within it is committed, with its outputs and state, at its end.
	// Default 500ms.
	CommitInterval time.Duration
	// MaxPollRecords bounds the records taken from the client per poll.
	// Default 10000.
	MaxPollRecords int
	// MaxKeys caps the open metric windows (device × metric × window) the
	// process holds, as a guard against running out of memory: after each
	// poll, while they are at the cap, the oldest open window is closed
	// early (emitted, state dropped); readings that arrive for it later are
	// late (DLQ, counted). The cap can be passed by one poll's worth of new
	// windows. Default 2,000,000.
	MaxKeys int
	// TransactionTimeout is the broker-side timeout of a transaction
	// (bounds how long a transaction of a vanished process blocks
	// read_committed readers). Default 30s.
	TransactionTimeout time.Duration
	// SessionTimeout is the group session timeout: how long a vanished
	// instance keeps its partitions. Default 20s.
	SessionTimeout time.Duration
	// RestoreTimeout bounds reading a partition's changelog on assignment.
	// Default 5m.
	RestoreTimeout time.Duration
	// ShutdownTimeout bounds the soft stop: ending the current transaction
	// and leaving the group. Default 15s.
	ShutdownTimeout time.Duration
	// StallAfter is how long input may wait on a partition with no
	// transaction committing progress on it before the processor reports a
	// stall (iotpipe_processor_stalled, readiness check "progress"). Zero
	// never reports one. Default 2m.
	StallAfter time.Duration
	// DebugCommitDelay, for crash tests only, sleeps inside every
	// transaction commit, after the outputs are flushed and before the
	// offsets and the transaction are committed, and logs
	// "transaction commit started" at its start. Zero disables it.
	DebugCommitDelay time.Duration
}

// Defaults of Config.
const (
	DefaultGroup              = "iotpipe-processor"
	DefaultCommitInterval     = 500 * time.Millisecond
	DefaultMaxPollRecords     = 10000
	DefaultMaxKeys            = 2_000_000
	DefaultTransactionTimeout = 30 * time.Second
	DefaultSessionTimeout     = 20 * time.Second
	DefaultRestoreTimeout     = 5 * time.Minute
	DefaultShutdownTimeout    = 15 * time.Second
)

// DefaultFetch is the processor's fetch tuning: its input is a steady
// stream, and answering each fetch as soon as a byte is there made it
// fetch hundreds of times a second in small pieces (each over TLS, on both
// sides). Gathering up to 64 KiB for at most 50 ms cut the processor's CPU
// per message by ~20 % and Kafka's by ~20 % in the end-to-end benchmark at
// 12,000 msg/s (#19), and adds at most 50 ms to a reading's way, next to
// the commit interval's 500 ms.
var DefaultFetch = kafkax.Fetch{MinBytes: 64 << 10, MaxWait: 50 * time.Millisecond}

func defaultKafka() kafkax.Config {
	k := kafkax.DefaultConfig("iotpipe-processor")
	k.Fetch = DefaultFetch
	return k
}

// DefaultConfig returns every default of Config; InstanceID is the host
// name.
func DefaultConfig() Config {
	return Config{
		Kafka:      defaultKafka(),
		Group:      DefaultGroup,
		InstanceID: kafkax.HostInstanceID(),
		Topics: Topics{Raw: schemas.TopicRaw, Metrics: schemas.TopicMetrics, DLQ: schemas.TopicDLQ,
			Changelog: DefaultChangelogTopic, Readings: schemas.TopicReadings},
		Window:             DefaultWindowConfig(),
		CommitInterval:     DefaultCommitInterval,
		MaxPollRecords:     DefaultMaxPollRecords,
		MaxKeys:            DefaultMaxKeys,
		TransactionTimeout: DefaultTransactionTimeout,
		SessionTimeout:     DefaultSessionTimeout,
		RestoreTimeout:     DefaultRestoreTimeout,
		ShutdownTimeout:    DefaultShutdownTimeout,
		StallAfter:         kafkax.DefaultStallAfter,
	}
}

// Validate reports every field out of range as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.InstanceID == "", "InstanceID", "required: a name unique to this processor and stable across its restarts")
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.Topics.Raw == "", "Topics.Raw", "must not be empty")
	p.Check(c.Topics.Metrics == "", "Topics.Metrics", "must not be empty")
	p.Check(c.Topics.DLQ == "", "Topics.DLQ", "must not be empty")
	p.Check(c.Topics.Changelog == "", "Topics.Changelog", "must not be empty")
	p.Check(c.Topics.Changelog != "" && (c.Topics.Changelog == c.Topics.Raw || c.Topics.Changelog == c.Topics.Metrics || c.Topics.Changelog == c.Topics.DLQ),
		"Topics.Changelog", "must be a topic of its own")
	p.Check(c.Topics.Readings == "", "Topics.Readings", "must not be empty (- writes no copies of accepted readings)")
	p.Check(c.Topics.Readings != "" && (c.Topics.Readings == c.Topics.Raw || c.Topics.Readings == c.Topics.Metrics ||
		c.Topics.Readings == c.Topics.DLQ || c.Topics.Readings == c.Topics.Changelog),
		"Topics.Readings", "must be a topic of its own")
	p.Nested("Window", c.Window.Validate())
	p.Check(c.MaxKeys < 1, "MaxKeys", "must be at least 1")
	rc := c.runtimeConfig()
	rc.CheckSettings(&p)
	return p.Err()
}

// runtimeConfig is the exactly-once runtime's Config from c.
func (c *Config) runtimeConfig() eos.Config {
	return eos.Config{
		Kafka: c.Kafka, Group: c.Group, InstanceID: c.InstanceID, TransactionalID: c.TransactionalID(),
		Inputs: []string{c.Topics.Raw}, Changelog: c.Topics.Changelog,
		CommitInterval: c.CommitInterval, MaxPollRecords: c.MaxPollRecords,
		TransactionTimeout: c.TransactionTimeout, SessionTimeout: c.SessionTimeout,
		RestoreTimeout: c.RestoreTimeout, ShutdownTimeout: c.ShutdownTimeout,
		StallAfter: c.StallAfter, DebugCommitDelay: c.DebugCommitDelay,
		Namespace: "iotpipe", Subsystem: "processor",
	}
}

// TransactionalID is the transactional id the processor uses.
func (c *Config) TransactionalID() string { return "iotpipe-processor." + c.Group + "." + c.InstanceID }

// Processor consumes telemetry.raw in a consumer group and writes window
// aggregates to telemetry.metrics, exactly once (see the package comment).
// The transactions, the changelog restore and the Kafka sessions are the
// shared exactly-once runtime's (internal/eos); the processor is its
// Logic: the tasks, the engines, the cap on open windows and its metrics.
type Processor struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	rt  *eos.Runtime[*task]

	capped   bool // open windows at MaxKeys (Run's goroutine only)
	bytesKey float64
	// devRetention is how long a silent device's state is kept: the raw
	// topic's retention, read at start (Run's goroutine only).
	devRetention time.Duration
}

// New validates cfg (the errors are *config.FieldError) and returns a
// processor; nothing is contacted before Run. deps.Registry receives the
// metrics (nil: a private registry).
func New(cfg Config, deps service.Deps) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("processor config: %w", err)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	p := &Processor{cfg: cfg, log: deps.Logger(), m: newMetrics(reg), bytesKey: BytesPerKeyEstimate, devRetention: DefaultDeviceRetention}
	rt, err := eos.New[*task](cfg.runtimeConfig(), p, p.log, reg)
	if err != nil {
		return nil, err
	}
	p.rt = rt
	return p, nil
}

// Checks are the readiness checks: "processor" passes once the group has
// been joined and the assigned partitions' state restored; "progress"
// fails while the processor is stalled (input waits and no transaction
// committed for StallAfter).
func (p *Processor) Checks() map[string]service.Check {
	return map[string]service.Check{"processor": func(context.Context) error {
		if !p.rt.Ready() {
			return errors.New("not consuming yet (joining the group or restoring state)")
		}
		return nil
	}, "progress": func(context.Context) error { return p.rt.ProgressCheck() }}
}

// BytesPerKeyEstimate is the measured heap size of one open metric window
// with a minute of 1 Hz readings, two metrics per device (see
// BenchmarkStateBytesPerKey: 299 B; 597 B at 10 Hz), used for
// the state_bytes_estimate gauge.
const BytesPerKeyEstimate = 300

// Run consumes until ctx is cancelled, then stops in two phases: it stops
// taking input, commits the transaction in progress (soft, bounded by
// ShutdownTimeout) and leaves the group; it returns nil after a clean stop.
// It returns an error when Kafka fails in a way that retrying within the
// process cannot fix (the transaction then aborts, and a restart resumes
// from the last commit). Each turn of the loop is one Kafka transaction
// holding the metrics, accepted-readings and DLQ records produced, the
// changelog records of every state change, and the input offsets (see
// internal/eos).
func (p *Processor) Run(ctx context.Context) error {
	return p.rt.Run(ctx)
}

// Start (eos.Logic) reads the raw topic's retention once.
func (p *Processor) Start(ctx context.Context, adm *kadm.Client) {
	p.devRetention = p.rawRetention(ctx, adm)
	p.log.Info("processor started", "group", p.cfg.Group, "instance", p.cfg.InstanceID,
		"transactional_id", p.cfg.TransactionalID(), "input", p.cfg.Topics.Raw, "readings", p.cfg.Topics.Readings, "window", p.cfg.Window.Size,
		"lateness", p.cfg.Window.Lateness, "idle_timeout", p.cfg.Window.IdleTimeout, "max_future_skew", p.cfg.Window.MaxFutureSkew,
		"device_retention", p.devRetention)
}

// NewTask (eos.Logic) returns the empty engine of a raw partition.
func (p *Processor) NewTask(part eos.Partition) (*task, error) {
	eng, err := NewEngine(p.cfg.Window)
	if err != nil {
		return nil, err
	}
	eng.SetDeviceRetention(p.devRetention)
	return newTask(part.Partition, eng, p.cfg.Topics, p.m), nil
}

// Restore (eos.Logic) applies one changelog record.
func (p *Processor) Restore(t *task, key, value []byte) error { return t.eng.Restore(key, value) }

// Restored (eos.Logic) ends a partition's restore.
func (p *Processor) Restored(t *task, now time.Time) error { return t.eng.FinishRestore(now) }

// Process (eos.Logic) aggregates one partition's polled records, then
// keeps the open windows under the cap.
func (p *Processor) Process(t *task, recs []*kgo.Record, now time.Time, out func(*kgo.Record)) {
	for _, r := range recs {
		t.handleRec(r, now, out)
	}
	t.flush()
	p.enforceCap(now, out)
}

// EndTurn (eos.Logic) emits what the watermarks allow, then writes the
// state changes: the changelog always describes the state after these
// emissions.
func (p *Processor) EndTurn(now time.Time, out func(*kgo.Record)) {
	tasks := p.rt.Tasks()
	for _, t := range tasks {
		t.advance(now, out)
	}
	for _, t := range tasks {
		t.changes(out)
	}
	p.observeState(now)
}

// rawRetention returns the raw topic's retention.ms, how long a device
// may stay offline and still have its buffered readings counted: the
// processor keeps a silent device's state that long. When it cannot be
// read (or is infinite), DefaultDeviceRetention.
func (p *Processor) rawRetention(ctx context.Context, adm *kadm.Client) time.Duration {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(rctx, p.cfg.Topics.Raw)
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(p.cfg.Topics.Raw, nil); err == nil {
			err = rc.Err
			for _, c := range rc.Configs {
				if c.Key == "retention.ms" && c.Value != nil {
					if ms, perr := strconv.ParseInt(*c.Value, 10, 64); perr == nil && ms > 0 {
						return time.Duration(ms) * time.Millisecond
					}
				}
			}
		}
	}
	if err != nil {
		p.log.Warn("could not read the raw topic's retention; keeping silent devices' state for the default", "topic", p.cfg.Topics.Raw, "err", err, "default", DefaultDeviceRetention)
	}
	return DefaultDeviceRetention
}

func (p *Processor) openKeys() int {
	n := 0
	for _, t := range p.rt.Tasks() {
		n += t.eng.OpenKeys()
	}
	return n
}

func (p *Processor) overCap() bool { return p.openKeys() >= p.cfg.MaxKeys }

// enforceCap keeps the open windows under MaxKeys: while they are at the
// cap it closes the oldest open window of the partition holding it (the
// watermark jumps to that window's end plus the lateness), emitting it now
// and dropping its state. Readings that arrive for it later are late (DLQ,
// counted). It logs once per episode and counts every window closed early.
func (p *Processor) enforceCap(now time.Time, out func(*kgo.Record)) {
	if !p.overCap() {
		return
	}
	tasks := p.rt.Tasks()
	for _, t := range tasks { // first let windows close in their own time
		t.advance(now, out)
	}
	for p.overCap() {
		var victim *task
		var oldest int64
		for _, t := range tasks {
			if st, ok := t.eng.oldestOpen(); ok && (victim == nil || st < oldest) {
				victim, oldest = t, st
			}
		}
		if victim == nil || !victim.eng.CloseOldest() {
			return
		}
		if !p.capped {
			p.capped = true
			p.m.capReached.Set(1)
			p.log.Warn("state cap reached: closing the oldest windows early; readings still to come for them will be late",
				"open_windows", p.openKeys(), "max_keys", p.cfg.MaxKeys)
		}
		p.m.capEvents.Inc()
		victim.advance(now, out)
	}
	if p.capped {
		p.capped = false
		p.m.capReached.Set(0)
		p.log.Info("state back under the cap", "open_windows", p.openKeys(), "max_keys", p.cfg.MaxKeys)
	}
}

func (p *Processor) observeState(now time.Time) {
	keys, dws, devs := 0, 0, 0
	var oldest time.Time
	for _, t := range p.rt.Tasks() {
		keys += t.eng.OpenKeys()
		dws += t.eng.DeviceWindows()
		devs += t.eng.Devices()
		if wm, ok := t.eng.Watermark(); ok && (oldest.IsZero() || wm.Before(oldest)) {
			oldest = wm
		}
	}
	p.m.windowsOpen.Set(float64(keys))
	p.m.deviceWindows.Set(float64(dws))
	p.m.devices.Set(float64(devs))
	p.m.stateBytes.Set(float64(keys) * p.bytesKey)
	if !oldest.IsZero() {
		p.m.watermarkLag.Set(now.Sub(oldest).Seconds())
	}
}
