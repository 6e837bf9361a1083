package lake

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/schemas"
)

// Defaults of Config.
const (
	DefaultGroup            = "iotpipe-sink-lake"
	DefaultMaxRows          = 4_000_000
	DefaultMaxBytes         = 128 << 20
	DefaultMaxAge           = 5 * time.Minute
	DefaultRowGroupRows     = 256 << 10
	DefaultZstdLevel        = 3
	DefaultMaxBuffered      = 512 << 20
	DefaultPartSize         = 16 << 20
	DefaultRetryMin         = 200 * time.Millisecond
	DefaultRetryMax         = 10 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultSessionTimeout   = 45 * time.Second
	DefaultRebalanceTimeout = 60 * time.Second
)

// Config configures the lake sink. Zero fields take the defaults above
// (see WithDefaults).
type Config struct {
	// Kafka is how to reach the brokers.
	Kafka kafkax.Config
	// S3 is how to reach the object store; S3.Bucket holds the lake.
	S3 objstore.Config
	// Prefix is put in front of every object key ("" = bucket root; a
	// trailing "/" is added when missing).
	Prefix string
	// RawTopic is read into the readings dataset, MetricsTopic into the
	// metrics and activity datasets; either may be "-" to not read it.
	RawTopic, MetricsTopic string
	// DLQTopic receives the records that do not decode.
	DLQTopic string
	// Group is the Kafka consumer group.
	Group string
	// InstanceID, when set, makes this member static (KIP-345): a restarted
	// sink with the same id takes its partitions back at once instead of
	// waiting for the session timeout. Give every copy its own.
	InstanceID string
	// SessionTimeout and RebalanceTimeout are the consumer group timeouts.
	SessionTimeout, RebalanceTimeout time.Duration

	// MaxRows and MaxBytes rotate a partition's batch when its files hold
	// that many rows or bytes (compressed row groups plus rows not yet
	// encoded).
	MaxRows  int
	MaxBytes int
	// MaxAge rotates a batch this long after its first record, so that a
	// quiet partition's rows reach the lake within MaxAge (plus upload).
	MaxAge time.Duration
	// RowGroupRows is the number of rows per Parquet row group.
	RowGroupRows int
	// ZstdLevel is the zstd level (1 … 22).
	ZstdLevel int
	// MaxBuffered is the memory, in bytes, that sealed batches waiting for
	// upload may hold; when exceeded the sink stops fetching until uploads
	// catch up (bounded memory during an S3 outage).
	MaxBuffered int
	// PartSize is the S3 multipart part size; larger files are uploaded in
	// parts.
	PartSize int

	// RetryMin and RetryMax bound the exponential backoff between retries
	// of a failed S3 or commit operation. Retries go on until shutdown.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the clean shutdown: open files are flushed,
	// uploaded and committed within it; what is not is left uncommitted
	// (and is read again by the next run).
	ShutdownTimeout time.Duration

	// Failpoints, for crash tests only: when the sink reaches a named point
	// (see the failpoint constants) for the Hit-th time it logs
	// "failpoint reached" and pauses, so that a test can kill it there.
	Failpoints map[string]Failpoint
}

// Failpoint is a pause at a named point of the upload, for crash tests.
type Failpoint struct {
	// Hit is which arrival at the point pauses (1 = the first).
	Hit int
	// Pause is how long.
	Pause time.Duration
}

// Failpoint names.
const (
	// FailpointMidUpload is after the intent and the first data object of
	// a batch with several objects are stored, before the others.
	FailpointMidUpload = "mid-upload"
	// FailpointBeforeCommit is after every object of a batch is stored,
	// before its offsets are committed.
	FailpointBeforeCommit = "before-commit"
	// FailpointAfterCommit is after the commit, before the intent is
	// deleted.
	FailpointAfterCommit = "after-commit"
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.RawTopic == "" {
		c.RawTopic = schemas.TopicRaw
	}
	if c.MetricsTopic == "" {
		c.MetricsTopic = schemas.TopicMetrics
	}
	if c.DLQTopic == "" {
		c.DLQTopic = schemas.TopicDLQ
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	def(&c.MaxRows, DefaultMaxRows)
	def(&c.MaxBytes, DefaultMaxBytes)
	def(&c.RowGroupRows, DefaultRowGroupRows)
	def(&c.ZstdLevel, DefaultZstdLevel)
	def(&c.MaxBuffered, DefaultMaxBuffered)
	def(&c.PartSize, DefaultPartSize)
	defd(&c.MaxAge, DefaultMaxAge)
	defd(&c.RetryMin, DefaultRetryMin)
	defd(&c.RetryMax, DefaultRetryMax)
	defd(&c.ShutdownTimeout, DefaultShutdownTimeout)
	defd(&c.SessionTimeout, DefaultSessionTimeout)
	defd(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	return c
}

// Validate reports the first invalid field of c (after WithDefaults),
// naming it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(field string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s (%v): %s", field, v, why))
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Kafka: %w", err))
	}
	if err := c.S3.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("S3: %w", err))
	}
	if c.RawTopic == "-" && c.MetricsTopic == "-" {
		bad("RawTopic/MetricsTopic", "-", "at least one topic must be read")
	}
	if strings.HasPrefix(c.Prefix, "/") {
		bad("Prefix", c.Prefix, "must not start with /")
	}
	if c.MaxRows < 1 {
		bad("MaxRows", c.MaxRows, "must be at least 1")
	}
	if c.MaxBytes < 1<<10 {
		bad("MaxBytes", c.MaxBytes, "must be at least 1KiB")
	}
	if c.MaxAge < 100*time.Millisecond {
		bad("MaxAge", c.MaxAge, "must be at least 100ms")
	}
	if c.RowGroupRows < 1 {
		bad("RowGroupRows", c.RowGroupRows, "must be at least 1")
	}
	if c.ZstdLevel < 1 || c.ZstdLevel > 22 {
		bad("ZstdLevel", c.ZstdLevel, "must be between 1 and 22")
	}
	if c.MaxBuffered < c.MaxBytes {
		bad("MaxBuffered", c.MaxBuffered, "must be at least MaxBytes")
	}
	if c.PartSize < 5<<20 {
		bad("PartSize", c.PartSize, "must be at least 5MiB (S3 minimum)")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		bad("RetryMin/RetryMax", fmt.Sprintf("%s/%s", c.RetryMin, c.RetryMax), "need 0 < RetryMin <= RetryMax")
	}
	if c.ShutdownTimeout <= 0 {
		bad("ShutdownTimeout", c.ShutdownTimeout, "must be positive")
	}
	for name := range c.Failpoints {
		switch name {
		case FailpointMidUpload, FailpointBeforeCommit, FailpointAfterCommit:
		default:
			bad("Failpoints", name, "unknown failpoint")
		}
	}
	return errors.Join(errs...)
}
