package alert

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Defaults of Config.
const (
	DefaultGroup = "iotpipe-alert"
	// DefaultChangelogTopic is the compacted topic of the series' states
	// (created by `iotpipe init` with as many partitions as the larger of
	// the raw and metrics topics).
	DefaultChangelogTopic     = "iotpipe.alert.changelog"
	DefaultTopicAlerts        = "telemetry.alerts"
	DefaultDSN                = "postgres://grafana@localhost:5432/iotpipe?sslmode=verify-full"
	DefaultRulesRefresh       = time.Minute
	DefaultNoDataResolution   = time.Second
	DefaultHeartbeatExpiry    = 2 * time.Minute
	DefaultCommitInterval     = 500 * time.Millisecond
	DefaultMaxPollRecords     = 10000
	DefaultMaxSeries          = 2_000_000
	DefaultTransactionTimeout = 30 * time.Second
	DefaultSessionTimeout     = 20 * time.Second
	DefaultRestoreTimeout     = 5 * time.Minute
	DefaultShutdownTimeout    = 15 * time.Second
)

// SkipTopic as Topics.Metrics reads no window aggregates (window rules
// then never fire).
const SkipTopic = "-"

// Topics names the topics the stage reads and writes.
type Topics struct {
	// Raw is the input of reading and no_data rules (telemetry.raw).
	Raw string
	// Metrics is the input of window rules (telemetry.metrics); SkipTopic
	// reads none.
	Metrics string
	// Alerts receives the FIRING and RESOLVED events (telemetry.alerts).
	Alerts string
	// Changelog is the compacted topic holding every series' state, with
	// as many partitions as the larger input topic.
	Changelog string
}

// Config configures a Stage. Start from DefaultConfig: a zero field means
// zero (or is refused by Validate), never a default.
type Config struct {
	// Kafka is how to reach the cluster.
	Kafka kafkax.Config
	// Group is the consumer group; alert stages in one group split the
	// input partitions.
	Group string
	// InstanceID names this process in the group (static membership) and,
	// prefixed, is its transactional id: unique among the running alert
	// stages of a group, stable across restarts of the same one.
	InstanceID string
	Topics     Topics
	// DSN is the database URL of a member of the reader role (the stage
	// only reads alert_rules and the device groups); Schema holds the
	// tables (iotpipe init).
	DSN, Schema string
	// RulesRefresh is how often the rules are read again besides on every
	// change notice (NOTIFY iotpipe_alert_rules).
	RulesRefresh time.Duration
	// NoDataResolution is the step of no_data checks: a partition's
	// silent devices are looked for each time its clock (the ingest clock
	// of the bridges' heartbeats; see the package comment) passes into a
	// new step. The event time of a no_data FIRING is always last
	// reading's received time + silence; only when it is emitted depends
	// on the step.
	NoDataResolution time.Duration
	// HeartbeatExpiry: a bridge whose latest heartbeat on a partition is
	// more than this behind another bridge's newest no longer holds the
	// partition's clock (scaled away); within it a stalled bridge holds
	// it, so its devices' silences do not count while it is stalled.
	HeartbeatExpiry time.Duration
	// CommitInterval is the longest a transaction stays open.
	CommitInterval time.Duration
	// MaxPollRecords bounds the records taken per poll.
	MaxPollRecords int
	// MaxSeries caps the series (rule × device × metric; rule × device for
	// no_data) the process holds, as a memory guard: at the cap a value of
	// a series not held yet is not evaluated and is counted
	// (iotpipe_alert_series_refused_total, iotpipe_alert_state_cap_reached).
	MaxSeries int
	// TransactionTimeout, SessionTimeout, RestoreTimeout, ShutdownTimeout,
	// StallAfter: as the processor's.
	TransactionTimeout time.Duration
	SessionTimeout     time.Duration
	RestoreTimeout     time.Duration
	ShutdownTimeout    time.Duration
	StallAfter         time.Duration
	// DebugCommitDelay, for crash tests only: see eos.Config.
	DebugCommitDelay time.Duration
}

// DefaultConfig returns every default of Config; InstanceID is the host
// name.
func DefaultConfig() Config {
	return Config{
		Kafka:      kafkax.DefaultConfig("iotpipe-alert"),
		Group:      DefaultGroup,
		InstanceID: kafkax.HostInstanceID(),
		Topics: Topics{Raw: schemas.TopicRaw, Metrics: schemas.TopicMetrics, Alerts: DefaultTopicAlerts,
			Changelog: DefaultChangelogTopic},
		DSN:                DefaultDSN,
		Schema:             migrations.DefaultSchema,
		RulesRefresh:       DefaultRulesRefresh,
		NoDataResolution:   DefaultNoDataResolution,
		HeartbeatExpiry:    DefaultHeartbeatExpiry,
		CommitInterval:     DefaultCommitInterval,
		MaxPollRecords:     DefaultMaxPollRecords,
		MaxSeries:          DefaultMaxSeries,
		TransactionTimeout: DefaultTransactionTimeout,
		SessionTimeout:     DefaultSessionTimeout,
		RestoreTimeout:     DefaultRestoreTimeout,
		ShutdownTimeout:    DefaultShutdownTimeout,
		StallAfter:         kafkax.DefaultStallAfter,
	}
}

// TransactionalIDPrefix is the start of the transactional ids of the
// alert stages of group (what their Kafka principal is granted).
func TransactionalIDPrefix(group string) string { return "iotpipe-alert." + group + "." }

// TransactionalID is the transactional id the stage uses.
func (c *Config) TransactionalID() string { return TransactionalIDPrefix(c.Group) + c.InstanceID }

// Validate reports every field out of range as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.InstanceID == "", "InstanceID", "required: a name unique to this alert stage and stable across its restarts")
	p.Check(c.Group == "", "Group", "must not be empty")
	t := c.Topics
	p.Check(t.Raw == "" || t.Raw == SkipTopic, "Topics.Raw", "must name a topic")
	p.Check(t.Metrics == "", "Topics.Metrics", "must name a topic (- reads none: window rules never fire)")
	p.Check(t.Metrics == t.Raw, "Topics.Metrics", "must be a topic other than {Topics.Raw}")
	p.Check(t.Alerts == "" || t.Alerts == SkipTopic, "Topics.Alerts", "must name a topic")
	p.Check(t.Alerts != "" && (t.Alerts == t.Raw || t.Alerts == t.Metrics), "Topics.Alerts", "must be a topic of its own")
	p.Check(t.Changelog == "" || t.Changelog == SkipTopic, "Topics.Changelog", "must name a topic")
	p.Check(t.Changelog != "" && (t.Changelog == t.Raw || t.Changelog == t.Metrics || t.Changelog == t.Alerts),
		"Topics.Changelog", "must be a topic of its own")
	if c.DSN == "" {
		p.Add("DSN", "must not be empty")
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		p.Add("DSN", "invalid database URL: %v", err)
	}
	p.Check(c.Schema == "" || strings.ToLower(c.Schema) != c.Schema || len(c.Schema) > 63, "Schema", fmt.Sprintf("%q is not a lower-case SQL identifier", c.Schema))
	p.Check(c.RulesRefresh < time.Second, "RulesRefresh", "must be at least 1s")
	p.Check(c.NoDataResolution < time.Millisecond, "NoDataResolution", "must be at least 1ms")
	p.Check(c.HeartbeatExpiry <= 0, "HeartbeatExpiry", "must be positive")
	p.Check(c.MaxSeries < 1, "MaxSeries", "must be at least 1")
	rc := c.runtimeConfig()
	rc.CheckSettings(&p)
	return p.Err()
}

// runtimeConfig is the exactly-once runtime's Config from c.
func (c *Config) runtimeConfig() eos.Config {
	return eos.Config{
		Kafka: c.Kafka, Group: c.Group, InstanceID: c.InstanceID, TransactionalID: c.TransactionalID(),
		Inputs: c.inputs(), Changelog: c.Topics.Changelog,
		CommitInterval: c.CommitInterval, MaxPollRecords: c.MaxPollRecords,
		TransactionTimeout: c.TransactionTimeout, SessionTimeout: c.SessionTimeout,
		RestoreTimeout: c.RestoreTimeout, ShutdownTimeout: c.ShutdownTimeout,
		StallAfter: c.StallAfter, DebugCommitDelay: c.DebugCommitDelay,
		Namespace: "iotpipe", Subsystem: "alert",
	}
}

// inputs are the topics consumed.
func (c *Config) inputs() []string {
	if c.Topics.Metrics == SkipTopic {
		return []string{c.Topics.Raw}
	}
	return []string{c.Topics.Raw, c.Topics.Metrics}
}
