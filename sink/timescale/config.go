package timescale

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Defaults of Config, used by DefaultConfig.
const (
	DefaultGroup           = "iotpipe-sink-timescale"
	DefaultBatchRows       = 20000
	DefaultBatchDelay      = 100 * time.Millisecond
	DefaultRetryMin        = 200 * time.Millisecond
	DefaultRetryMax        = 10 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultTopicAlerts is the alert stage's output topic.
	DefaultTopicAlerts = "telemetry.alerts"
)

// Config configures a Sink. Start from DefaultConfig.
type Config struct {
	// Kafka is how the sink reaches Kafka.
	Kafka kafkax.Config
	// Group is the Kafka consumer group. It is also the key of the sink's
	// offsets in sink_offsets: two sinks with different groups each write
	// every record.
	Group string
	// InstanceID, when set, makes this process a static member of the group
	// (KIP-345): a restart with the same id takes its partitions back at
	// once instead of waiting for the session timeout. Give each replica its
	// own stable id (e.g. the pod name), never two running processes the
	// same one. Default the host name; empty: dynamic membership.
	InstanceID string
	// SessionTimeout is the consumer group session timeout: how soon a
	// vanished member's partitions move.
	SessionTimeout time.Duration
	// TopicRaw, TopicMetrics and TopicDLQ name the input topics and the
	// dead-letter topic. TopicRaw is stored in the readings table; default
	// schemas.TopicReadings, the processor's accepted readings (each device
	// message once; naming telemetry.raw stores every raw record, device
	// re-sends and MQTT redeliveries included). "-" (SkipTopic) skips it:
	// the readings table is then not written.
	TopicRaw, TopicMetrics, TopicDLQ string
	// TopicAlerts is the alert stage's topic of FIRING/RESOLVED events
	// (schemas.Alert), written to alert_events once per event id; default
	// DefaultTopicAlerts. "-" (SkipTopic) skips it. Consuming it needs
	// migration 0012 (iotpipe init) and Kafka READ on the topic.
	TopicAlerts string
	// DSN is the database URL of the sink's login role (a member of the
	// writer role).
	DSN string
	// Schema holds the tables (created by `iotpipe init`, package
	// migrations).
	Schema string
	// BatchRows: a batch is written once it holds this many rows (readings
	// rows count one per measurement, metrics and activity records one each).
	BatchRows int
	// BatchDelay is the longest a row waits in memory before its batch is
	// written. Its input arrives in chunks, one per processor transaction
	// (read_committed), so waiting longer than it takes a chunk to arrive
	// adds latency without making batches larger; at high rates BatchRows
	// ends batches first. (It was 500 ms: 400 ms of a reading's way to a
	// queryable row, #19.)
	BatchDelay time.Duration
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// when the database or Kafka fails.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the soft stop: on cancel the sink writes the
	// batch it holds within this time, then rolls back what is left and
	// exits.
	ShutdownTimeout time.Duration
	// StallAfter is how long input may wait on a partition with no batch
	// committing progress on it before the sink reports a stall
	// (iotpipe_sink_timescale_stalled, readiness check "progress"). Zero
	// never reports one.
	StallAfter time.Duration
}

// SkipTopic as TopicRaw skips the raw topic (the readings table).
const SkipTopic = "-"

// DefaultSessionTimeout is the default consumer group session timeout.
const DefaultSessionTimeout = 45 * time.Second

// DefaultDSN is the local database as the sink's login role.
const DefaultDSN = "postgres://iotpipe_sink@localhost:5432/iotpipe?sslmode=verify-full"

// DefaultConfig returns the documented defaults: the local Kafka and
// database, group iotpipe-sink-timescale, the host name as static member
// id, the standard topic names (readings from telemetry.readings, alert
// events from telemetry.alerts), schema iotpipe, batches of 20000 rows or
// 100 ms.
func DefaultConfig() Config {
	return Config{
		Kafka:           kafkax.DefaultConfig("iotpipe-sink-timescale"),
		Group:           DefaultGroup,
		InstanceID:      kafkax.HostInstanceID(),
		SessionTimeout:  DefaultSessionTimeout,
		TopicRaw:        schemas.TopicReadings,
		TopicMetrics:    schemas.TopicMetrics,
		TopicDLQ:        schemas.TopicDLQ,
		TopicAlerts:     DefaultTopicAlerts,
		DSN:             DefaultDSN,
		Schema:          migrations.DefaultSchema,
		BatchRows:       DefaultBatchRows,
		BatchDelay:      DefaultBatchDelay,
		RetryMin:        DefaultRetryMin,
		RetryMax:        DefaultRetryMax,
		ShutdownTimeout: DefaultShutdownTimeout,
		StallAfter:      kafkax.DefaultStallAfter,
	}
}

// readings tells whether the raw topic is consumed into the readings
// table.
func (c *Config) readings() bool { return c.TopicRaw != SkipTopic }

// alerts tells whether the alerts topic is consumed into alert_events.
func (c *Config) alerts() bool { return c.TopicAlerts != SkipTopic }

// Validate reports every invalid field as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.SessionTimeout <= 0, "SessionTimeout", "must be positive")
	p.Check(c.TopicRaw == "", "TopicRaw", "must not be empty (- skips the topic)")
	p.Check(c.TopicMetrics == "" || c.TopicMetrics == SkipTopic, "TopicMetrics", "must name a topic")
	p.Check(c.TopicDLQ == "" || c.TopicDLQ == SkipTopic, "TopicDLQ", "must name a topic")
	if c.TopicRaw == c.TopicMetrics || c.TopicRaw == c.TopicDLQ {
		p.Add("TopicRaw", "must differ from the metrics and DLQ topics")
	}
	p.Check(c.TopicMetrics == c.TopicDLQ, "TopicDLQ", "must differ from {TopicMetrics}")
	p.Check(c.TopicAlerts == "", "TopicAlerts", "must not be empty (- skips the topic)")
	if c.alerts() && (c.TopicAlerts == c.TopicRaw || c.TopicAlerts == c.TopicMetrics || c.TopicAlerts == c.TopicDLQ) {
		p.Add("TopicAlerts", "must differ from the readings, metrics and DLQ topics")
	}
	if c.DSN == "" {
		p.Add("DSN", "must not be empty")
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		p.Add("DSN", "invalid database URL: %v", err)
	}
	p.Check(!validIdent(c.Schema), "Schema", fmt.Sprintf("%q is not a lower-case SQL identifier", c.Schema))
	if c.BatchRows < 1 || c.BatchRows > 1_000_000 {
		p.Add("BatchRows", "%d is not between 1 and 1000000", c.BatchRows)
	}
	p.Check(c.BatchDelay <= 0, "BatchDelay", "must be positive")
	p.Check(c.RetryMin <= 0, "RetryMin", "must be positive")
	p.Check(c.RetryMax < c.RetryMin, "RetryMax", "must be at least {RetryMin}")
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(c.StallAfter < 0, "StallAfter", "must not be negative (0: never report a stall)")
	return p.Err()
}

func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
