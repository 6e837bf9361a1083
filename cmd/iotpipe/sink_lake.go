package main

// `iotpipe sink lake`: flags → lake.Config → lake.New → service.Run.

import (
	"context"
	"fmt"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"strconv"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/sink/lake"
)

var sinkLakeCmd = stageCmd[lake.Config, *lake.Sink]{
	name: "sink lake",
	help: `Write telemetry.readings (readings: the processor's accepted readings, each
device message once) and telemetry.metrics (window metrics and device
activity) as Parquet files to S3-compatible storage, exactly once.

Keys: <prefix><dataset>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<startoffset>.parquet
with dataset readings, metrics or activity. A partition's file closes at
--max-rows or --max-bytes, or --max-age after its first record. Offsets are
committed only after the files are stored; a crash at any moment neither
loses nor duplicates a row (see the sink/lake package documentation).
Records that do not decode go to the DLQ topic. --topic-readings - (or
--topic-metrics -) skips that topic. SIGTERM/SIGINT flushes open files,
uploads, commits and exits 0.`,
	addr:     ":9103",
	config:   lake.DefaultConfig,
	newFunc:  lake.New,
	shutdown: func(c *lake.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *lake.Config) {
		bindKafka(f, &c.Kafka)
		bindKafkaFetch(f, &c.Kafka.Fetch)
		f.Group("Consumer group")
		f.String(&c.Group, "group", "Kafka consumer group; run more copies with the same group to scale out")
		f.String(&c.RawTopic, "topic-readings", "topic of the processor's accepted readings (each device message once), written to the readings dataset (- to skip; naming the raw topic stores every raw record, re-sends and redeliveries included)")
		retireTopicRaw(f, &c.RawTopic, "-")
		f.String(&c.MetricsTopic, "topic-metrics", "topic of window metrics and activity, written to the metrics and activity datasets (- to skip)")
		f.String(&c.DLQTopic, "topic-dlq", "dead-letter topic for records that do not decode")
		f.String(&c.InstanceID, "instance-id", "static group member id, unique per copy and stable across its restarts (a restarted sink takes its partitions back at once); empty: dynamic membership")
		f.Alias("kafka-instance-id", "instance-id")
		f.Duration(&c.SessionTimeout, "session-timeout", "consumer group session timeout: how soon a dead member's partitions move")
		f.Alias("kafka-session-timeout", "session-timeout")
		f.Duration(&c.RebalanceTimeout, "rebalance-timeout", "consumer group rebalance timeout; half of it is spent flushing revoked partitions")
		f.Alias("kafka-rebalance-timeout", "rebalance-timeout")
		bindS3(f, &c.S3)
		f.String(&c.Prefix, "prefix", "key prefix of the lake inside the bucket (empty: bucket root)")
		f.Int(&c.PartSize, "s3-part-size", "multipart upload part size in bytes; larger files are uploaded in parts (>= 5MiB)")
		f.Group("Files")
		f.Int(&c.MaxRows, "max-rows", "close a partition's files when they hold this many rows")
		f.Int(&c.MaxBytes, "max-bytes", "close a partition's files when they hold this many bytes (compressed plus not yet encoded)")
		f.Duration(&c.MaxAge, "max-age", "close a partition's files this long after their first record: the most a row waits before reaching the lake")
		f.Int(&c.RowGroupRows, "row-group-rows", "rows per Parquet row group")
		f.Int(&c.ZstdLevel, "zstd-level", "zstd compression level, 1 (fast) to 22 (small)")
		f.Int(&c.MaxBuffered, "max-buffered", "bytes of closed files waiting for upload before consumption pauses (bounds memory while S3 is down)")
		f.Duration(&c.RetryMin, "retry-min", "first backoff after a failed S3 operation or commit")
		f.Duration(&c.RetryMax, "retry-max", "largest backoff between retries (retries go on until shutdown)")
		f.Duration(&c.StallAfter, "stall-after", "report a stall (iotpipe_lake_stalled, readiness \"progress\") when input waits on a partition and no batch was committed on it for --max-age plus this long (0: never)")
		f.Var((*failpoints)(&c.Failpoints), &c.Failpoints, "test-failpoints", "crash tests only: name=pause[@n] items (mid-upload, before-commit, after-commit): pause at the n-th arrival at that point")
	},
	kafka: func(c *lake.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *lake.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %s group %s instance %q, topics %s %s → s3 %s bucket %s prefix %q; files close at %d rows, %d bytes or %s; http %q",
			c.Kafka.Describe(), c.Group, c.InstanceID, c.RawTopic, c.MetricsTopic, c.S3.Endpoint, c.S3.Bucket,
			c.Prefix, c.MaxRows, c.MaxBytes, c.MaxAge, listenAddr(o))
	},
}

func runSinkLake(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &sinkLakeCmd, env, args)
}

// failpoints is the flag value of --test-failpoints: name=pause[@hit],...
type failpoints map[string]lake.Failpoint

func (f *failpoints) String() string {
	var parts []string
	for name, fp := range *f {
		parts = append(parts, fmt.Sprintf("%s=%s@%d", name, fp.Pause, fp.Hit))
	}
	return strings.Join(parts, ",")
}

func (f *failpoints) Set(s string) error {
	out := map[string]lake.Failpoint{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		name, spec, ok := strings.Cut(p, "=")
		d, hit, hasHit := strings.Cut(spec, "@")
		pause, perr := time.ParseDuration(d)
		n, nerr := 1, error(nil)
		if hasHit {
			n, nerr = strconv.Atoi(hit)
		}
		if !ok || perr != nil || nerr != nil || n < 1 {
			return fmt.Errorf("%q: want name=duration[@hit]", p)
		}
		out[name] = lake.Failpoint{Hit: n, Pause: pause}
	}
	*f = out
	return nil
}
