package timescale

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Defaults of Config, used by DefaultConfig.
const (
	DefaultGroup        = "iotpipe-sink-timescale"
	DefaultBatchRows    = 20000
	DefaultBatchDelay   = 500 * time.Millisecond
	DefaultRetryMin     = 200 * time.Millisecond
	DefaultRetryMax     = 10 * time.Second
	DefaultDrainTimeout = 10 * time.Second
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
	// same one.
	InstanceID string
	// TopicRaw, TopicMetrics and TopicDLQ name the input topics and the
	// dead-letter topic.
	TopicRaw, TopicMetrics, TopicDLQ string
	// Readings writes telemetry.raw into the readings table. When false the
	// raw topic is not consumed at all.
	Readings bool
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
	// written.
	BatchDelay time.Duration
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// when the database or Kafka fails.
	RetryMin, RetryMax time.Duration
	// DrainTimeout bounds the soft stop: on cancel the sink writes the batch
	// it holds within this time, then rolls back what is left and exits.
	DrainTimeout time.Duration
}

// DefaultConfig returns the documented defaults: group
// iotpipe-sink-timescale, the standard topic names, readings on, schema
// iotpipe, batches of 20000 rows or 500 ms.
func DefaultConfig() Config {
	return Config{
		Group:        DefaultGroup,
		TopicRaw:     schemas.TopicRaw,
		TopicMetrics: schemas.TopicMetrics,
		TopicDLQ:     schemas.TopicDLQ,
		Readings:     true,
		Schema:       migrations.DefaultSchema,
		BatchRows:    DefaultBatchRows,
		BatchDelay:   DefaultBatchDelay,
		RetryMin:     DefaultRetryMin,
		RetryMax:     DefaultRetryMax,
		DrainTimeout: DefaultDrainTimeout,
	}
}

// Validate reports every invalid field, each error naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if err := c.Kafka.Validate(); err != nil {
		bad("Kafka", "%v", err)
	}
	if c.Group == "" {
		bad("Group", "must not be empty")
	}
	if c.TopicMetrics == "" {
		bad("TopicMetrics", "must not be empty")
	}
	if c.Readings && c.TopicRaw == "" {
		bad("TopicRaw", "must not be empty when Readings is on")
	}
	if c.TopicDLQ == "" {
		bad("TopicDLQ", "must not be empty")
	}
	if c.TopicRaw != "" && (c.TopicRaw == c.TopicMetrics || c.TopicRaw == c.TopicDLQ) || c.TopicMetrics == c.TopicDLQ {
		bad("TopicRaw/TopicMetrics/TopicDLQ", "must be three different topics")
	}
	if c.DSN == "" {
		bad("DSN", "must not be empty")
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		bad("DSN", "invalid database URL: %v", err)
	}
	if !validIdent(c.Schema) {
		bad("Schema", "%q is not a lower-case SQL identifier", c.Schema)
	}
	if c.BatchRows < 1 || c.BatchRows > 1_000_000 {
		bad("BatchRows", "%d is not between 1 and 1000000", c.BatchRows)
	}
	if c.BatchDelay <= 0 {
		bad("BatchDelay", "must be positive")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		bad("RetryMin/RetryMax", "want 0 < RetryMin <= RetryMax (got %s, %s)", c.RetryMin, c.RetryMax)
	}
	if c.DrainTimeout <= 0 {
		bad("DrainTimeout", "must be positive")
	}
	return errors.Join(errs...)
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
