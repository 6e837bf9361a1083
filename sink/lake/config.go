package lake

import (
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
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

// Config configures the lake sink. Start from DefaultConfig: a zero field
// means zero (or is refused by Validate), never a default.
type Config struct {
	// Kafka is how to reach the brokers.
	Kafka kafkax.Config
	// S3 is how to reach the object store; S3.Bucket holds the lake.
	S3 objstore.Config
	// Prefix is put in front of every object key ("" = bucket root; a
	// trailing "/" is added when missing).
	Prefix string
	// RawTopic is read into the readings dataset (default
	// schemas.TopicReadings: the processor's accepted readings, each device
	// message once; naming telemetry.raw stores every raw record, device
	// re-sends and MQTT redeliveries included), MetricsTopic into the
	// metrics and activity datasets; either may be "-" to not read it.
	RawTopic, MetricsTopic string
	// DLQTopic receives the records that do not decode.
	DLQTopic string
	// Group is the Kafka consumer group.
	Group string
	// InstanceID, when set, makes this member static (KIP-345): a restarted
	// sink with the same id takes its partitions back at once instead of
	// waiting for the session timeout. Give every copy its own. Default the
	// host name; empty: dynamic membership.
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
	// StallAfter is how long, beyond MaxAge (an open batch waits that long
	// by design), input may wait on a partition with no batch committed on
	// it before the sink reports a stall (iotpipe_lake_stalled,
	// readiness check "progress"). Zero never reports one. Default 2m.
	StallAfter time.Duration

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

// DefaultConfig returns every default of Config: the standard topics, the
// local Kafka and object store, and the host name as static member id.
func DefaultConfig() Config {
	return Config{
		Kafka:            kafkax.DefaultConfig("iotpipe-sink-lake"),
		S3:               objstore.DefaultConfig(),
		RawTopic:         schemas.TopicReadings,
		MetricsTopic:     schemas.TopicMetrics,
		DLQTopic:         schemas.TopicDLQ,
		Group:            DefaultGroup,
		InstanceID:       kafkax.HostInstanceID(),
		SessionTimeout:   DefaultSessionTimeout,
		RebalanceTimeout: DefaultRebalanceTimeout,
		MaxRows:          DefaultMaxRows,
		MaxBytes:         DefaultMaxBytes,
		MaxAge:           DefaultMaxAge,
		RowGroupRows:     DefaultRowGroupRows,
		ZstdLevel:        DefaultZstdLevel,
		MaxBuffered:      DefaultMaxBuffered,
		PartSize:         DefaultPartSize,
		RetryMin:         DefaultRetryMin,
		RetryMax:         DefaultRetryMax,
		ShutdownTimeout:  DefaultShutdownTimeout,
		StallAfter:       kafkax.DefaultStallAfter,
	}
}

// keyPrefix is Prefix with a trailing "/" ("" stays "").
func (c *Config) keyPrefix() string {
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		return c.Prefix + "/"
	}
	return c.Prefix
}

// Validate reports every invalid field of c as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Nested("S3", c.S3.Validate())
	p.Check(c.RawTopic == "", "RawTopic", "must not be empty (- skips the topic)")
	p.Check(c.MetricsTopic == "", "MetricsTopic", "must not be empty (- skips the topic)")
	p.Check(c.RawTopic == "-" && c.MetricsTopic == "-", "MetricsTopic", "at least one topic must be read (both are -)")
	p.Check(c.DLQTopic == "" || c.DLQTopic == "-", "DLQTopic", "must name a topic")
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.SessionTimeout <= 0, "SessionTimeout", "must be positive")
	p.Check(c.RebalanceTimeout <= 0, "RebalanceTimeout", "must be positive")
	p.Check(strings.HasPrefix(c.Prefix, "/"), "Prefix", "must not start with /")
	p.Check(c.MaxRows < 1, "MaxRows", "must be at least 1")
	p.Check(c.MaxBytes < 1<<10, "MaxBytes", "must be at least 1KiB (1024)")
	p.Check(c.MaxAge < 100*time.Millisecond, "MaxAge", "must be at least 100ms")
	p.Check(c.RowGroupRows < 1, "RowGroupRows", "must be at least 1")
	p.Check(c.ZstdLevel < 1 || c.ZstdLevel > 22, "ZstdLevel", "must be between 1 and 22")
	p.Check(c.MaxBuffered < c.MaxBytes, "MaxBuffered", "must be at least {MaxBytes}")
	p.Check(c.PartSize < 5<<20, "PartSize", "must be at least 5MiB (5242880, the S3 minimum)")
	p.Check(c.RetryMin <= 0, "RetryMin", "must be positive")
	p.Check(c.RetryMax < c.RetryMin, "RetryMax", "must be at least {RetryMin}")
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(c.StallAfter < 0, "StallAfter", "must not be negative (0: never report a stall)")
	for name, fp := range c.Failpoints {
		switch name {
		case FailpointMidUpload, FailpointBeforeCommit, FailpointAfterCommit:
		default:
			p.Add("Failpoints", "%q: unknown failpoint", name)
		}
		p.Check(fp.Hit < 1, "Failpoints", "hit must be at least 1")
	}
	return p.Err()
}
