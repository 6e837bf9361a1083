package cli

// This file is owned by the lake sink: `iotpipe sink lake`.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/sink/lake"
)

const sinkLakeSummary = `Write telemetry.raw (readings) and telemetry.metrics (window metrics and
device activity) as Parquet files to S3-compatible storage, exactly once.

Keys: <prefix><dataset>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<startoffset>.parquet
with dataset readings, metrics or activity. A partition's file closes at
--max-rows or --max-bytes, or --max-age after its first record. Offsets are
committed only after the files are stored; a crash at any moment neither
loses nor duplicates a row (see the sink/lake package documentation).
Records that do not decode go to the DLQ topic. SIGTERM/SIGINT flushes open
files, uploads, commits and exits 0.`

type sinkLakeFlags struct {
	kafka kafkaFlags
	s3    s3Flags
	http  httpFlags
	log   logFlags

	instanceID                                      string
	group, topicRaw, topicMetrics, topicDLQ, prefix string
	session, rebalance                              time.Duration
	maxRows, maxBytes, rowGroupRows, zstdLevel      int
	maxBuffered, partSize                           int
	maxAge, retryMin, retryMax, shutdown            time.Duration
	failpoints                                      string
	checkConfig                                     bool
}

func (o *sinkLakeFlags) bind(f *Flags) {
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without contacting anything")
	f.Duration(&o.shutdown, "shutdown-timeout", lake.DefaultShutdownTimeout, "on SIGTERM, time to upload and commit open files before exiting; what is left is read again next time")
	o.kafka.bind(f, "iotpipe-sink-lake")
	f.Group("Consumer")
	f.String(&o.group, "group", lake.DefaultGroup, "Kafka consumer group; run more copies with the same group to scale out")
	f.String(&o.topicRaw, "topic-raw", "telemetry.raw", "topic of canonical readings, written to the readings dataset (- to skip)")
	f.String(&o.topicMetrics, "topic-metrics", "telemetry.metrics", "topic of window metrics and activity, written to the metrics and activity datasets (- to skip)")
	f.String(&o.topicDLQ, "topic-dlq", "telemetry.dlq", "dead-letter topic for records that do not decode")
	f.String(&o.instanceID, "kafka-instance-id", "", "static group member id (e.g. the pod name): a restarted sink takes its partitions back at once; unique per copy")
	f.Duration(&o.session, "kafka-session-timeout", lake.DefaultSessionTimeout, "consumer group session timeout: how soon a dead member's partitions move")
	f.Duration(&o.rebalance, "kafka-rebalance-timeout", lake.DefaultRebalanceTimeout, "consumer group rebalance timeout; half of it is spent flushing revoked partitions")
	o.s3.bind(f)
	f.String(&o.prefix, "prefix", "", "key prefix of the lake inside the bucket (empty: bucket root)")
	f.Int(&o.partSize, "s3-part-size", lake.DefaultPartSize, "multipart upload part size in bytes; larger files are uploaded in parts (>= 5MiB)")
	f.Group("Files")
	f.Int(&o.maxRows, "max-rows", lake.DefaultMaxRows, "close a partition's files when they hold this many rows")
	f.Int(&o.maxBytes, "max-bytes", lake.DefaultMaxBytes, "close a partition's files when they hold this many bytes (compressed plus not yet encoded)")
	f.Duration(&o.maxAge, "max-age", lake.DefaultMaxAge, "close a partition's files this long after their first record: the most a row waits before reaching the lake")
	f.Int(&o.rowGroupRows, "row-group-rows", lake.DefaultRowGroupRows, "rows per Parquet row group")
	f.Int(&o.zstdLevel, "zstd-level", lake.DefaultZstdLevel, "zstd compression level, 1 (fast) to 22 (small)")
	f.Int(&o.maxBuffered, "max-buffered", lake.DefaultMaxBuffered, "bytes of closed files waiting for upload before consumption pauses (bounds memory while S3 is down)")
	f.Duration(&o.retryMin, "retry-min", lake.DefaultRetryMin, "first backoff after a failed S3 operation or commit")
	f.Duration(&o.retryMax, "retry-max", lake.DefaultRetryMax, "largest backoff between retries (retries go on until shutdown)")
	f.String(&o.failpoints, "test-failpoints", "", "crash tests only: name=pause[@n] items (mid-upload, before-commit, after-commit): pause at the n-th arrival at that point")
	o.http.bind(f, ":9103")
	o.log.bind(f, "json")
}

func (o *sinkLakeFlags) config() (lake.Config, error) {
	var errs []error
	kc, err := o.kafka.config()
	if err != nil {
		errs = append(errs, err)
	}
	cfg := lake.Config{
		Kafka: kc, S3: o.s3.c, Prefix: o.prefix,
		RawTopic: o.topicRaw, MetricsTopic: o.topicMetrics, DLQTopic: o.topicDLQ, Group: o.group,
		InstanceID: o.instanceID, SessionTimeout: o.session, RebalanceTimeout: o.rebalance,
		MaxRows: o.maxRows, MaxBytes: o.maxBytes, MaxAge: o.maxAge, RowGroupRows: o.rowGroupRows,
		ZstdLevel: o.zstdLevel, MaxBuffered: o.maxBuffered, PartSize: o.partSize,
		RetryMin: o.retryMin, RetryMax: o.retryMax, ShutdownTimeout: o.shutdown,
	}
	if err := o.s3.c.Validate(); err != nil {
		errs = append(errs, &UsageError{fmt.Errorf("--s3-* settings (IOTPIPE_S3_*): %w", err)})
	}
	if o.failpoints != "" {
		cfg.Failpoints = map[string]lake.Failpoint{}
		for _, p := range strings.Split(o.failpoints, ",") {
			name, spec, ok := strings.Cut(strings.TrimSpace(p), "=")
			d, hit, hasHit := strings.Cut(spec, "@")
			pause, perr := time.ParseDuration(d)
			n := 1
			if hasHit {
				n, err = strconv.Atoi(hit)
			}
			if !ok || perr != nil || err != nil || n < 1 {
				errs = append(errs, settingErr("test-failpoints", o.failpoints, fmt.Errorf("%q: want name=duration[@hit]", p)))
				continue
			}
			cfg.Failpoints[name] = lake.Failpoint{Hit: n, Pause: pause}
		}
	}
	checks := []struct {
		flag  string
		value string
		bad   bool
		why   string
	}{
		{"max-rows", fmt.Sprint(o.maxRows), o.maxRows < 1, "must be at least 1"},
		{"max-bytes", fmt.Sprint(o.maxBytes), o.maxBytes < 1<<10, "must be at least 1024"},
		{"max-age", o.maxAge.String(), o.maxAge < 100*time.Millisecond, "must be at least 100ms"},
		{"row-group-rows", fmt.Sprint(o.rowGroupRows), o.rowGroupRows < 1, "must be at least 1"},
		{"zstd-level", fmt.Sprint(o.zstdLevel), o.zstdLevel < 1 || o.zstdLevel > 22, "must be between 1 and 22"},
		{"max-buffered", fmt.Sprint(o.maxBuffered), o.maxBuffered < o.maxBytes, "must be at least --max-bytes"},
		{"s3-part-size", fmt.Sprint(o.partSize), o.partSize < 5<<20, "must be at least 5MiB (5242880)"},
		{"retry-min", o.retryMin.String(), o.retryMin <= 0, "must be positive"},
		{"retry-max", o.retryMax.String(), o.retryMax < o.retryMin, "must be at least --retry-min"},
		{"shutdown-timeout", o.shutdown.String(), o.shutdown <= 0, "must be positive"},
		{"group", o.group, o.group == "", "must not be empty"},
		{"kafka-session-timeout", o.session.String(), o.session <= 0, "must be positive"},
		{"kafka-rebalance-timeout", o.rebalance.String(), o.rebalance <= 0, "must be positive"},
	}
	for _, c := range checks {
		if c.bad {
			errs = append(errs, settingErr(c.flag, c.value, errors.New(c.why)))
		}
	}
	if len(errs) == 0 {
		if err := cfg.Validate(); err != nil {
			errs = append(errs, &UsageError{err})
		}
	}
	if len(errs) > 0 {
		return cfg, &UsageError{errors.Join(errs...)}
	}
	return cfg, nil
}

func runSinkLake(ctx context.Context, env Env, args []string) error {
	var o sinkLakeFlags
	log, err := parseStage(env, args, "iotpipe sink lake", sinkLakeSummary, o.bind, &o.log)
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: kafka %s group %s, topics %s %s → s3 %s bucket %s prefix %q; files close at %d rows, %d bytes or %s\n",
			strings.Join(cfg.Kafka.Brokers, ","), cfg.Group, cfg.RawTopic, cfg.MetricsTopic, cfg.S3.Endpoint, cfg.S3.Bucket,
			cfg.Prefix, cfg.MaxRows, cfg.MaxBytes, cfg.MaxAge)
		return nil
	}
	srv := service.New(o.http.c, log)
	sink, err := lake.New(cfg, log, srv.Registry)
	if err != nil {
		return &UsageError{err}
	}
	srv.AddCheck("kafka", sink.CheckKafka)
	srv.AddCheck("s3", sink.CheckS3)
	return serveWhile(ctx, srv, o.http.c.Addr, sink.Run)
}
