package cli

// This file is owned by the TimescaleDB sink: `iotpipe sink timescale`.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/sink/timescale"
)

const sinkTimescaleSummary = `Write Kafka records to TimescaleDB or plain PostgreSQL ≥ 15, exactly once:
  - telemetry.raw     → readings (one row per measurement; --readings=false skips it)
  - telemetry.metrics → device_metrics (window aggregates, upserted: a lower
                        revision never overwrites a higher one) and device_activity.
Rows and the consumed Kafka offsets are committed in the same transaction
(table sink_offsets); on partition assignment the sink resumes from there.
Records that do not decode or that the database refuses go to the DLQ topic.
While the database is down the sink stops consuming, retries with backoff and
resumes by itself. Run 'iotpipe init' first to create the schema.
SIGTERM/SIGINT: writes the batch in hand (or rolls it back), exits 0.`

type sinkTimescaleFlags struct {
	kafka kafkaFlags
	http  httpFlags
	log   logFlags

	group, instanceID, topicRaw, topicMetrics, topicDLQ string
	readings                                            bool
	dsn, schema                                         string
	batchRows                                           int
	batchDelay, retryMin, retryMax, drain               time.Duration
	checkConfig                                         bool
}

func (o *sinkTimescaleFlags) bind(f *Flags) {
	d := timescale.DefaultConfig()
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without contacting anything")
	o.kafka.bind(f, "iotpipe-sink-timescale")
	f.String(&o.group, "group", d.Group, "Kafka consumer group; also the key of the sink's offsets in sink_offsets")
	f.String(&o.instanceID, "group-instance-id", "", "static group membership id (KIP-345), unique and stable per replica (e.g. the pod name): a restart takes its partitions back at once; empty: dynamic membership")
	f.Group("Topics")
	f.String(&o.topicRaw, "topic-raw", d.TopicRaw, "topic of canonical readings")
	f.String(&o.topicMetrics, "topic-metrics", d.TopicMetrics, "topic of window aggregates and activity records")
	f.String(&o.topicDLQ, "topic-dlq", d.TopicDLQ, "dead-letter topic for records that do not decode or that the database refuses")
	f.Bool(&o.readings, "readings", d.Readings, "write raw readings into the readings table (false: consume only the metrics topic)")
	f.Group("PostgreSQL / TimescaleDB")
	f.Secret(&o.dsn, "pg-writer-dsn", "postgres://iotpipe_sink@localhost:5432/iotpipe?sslmode=disable", "database URL of the sink's login role, a member of the writer role (not the schema owner)")
	f.String(&o.schema, "pg-schema", d.Schema, "schema that holds the tables")
	f.Group("Batching and retries")
	f.Int(&o.batchRows, "batch-rows", d.BatchRows, "write a batch once it holds this many rows")
	f.Duration(&o.batchDelay, "batch-delay", d.BatchDelay, "longest time a record waits before its batch is written")
	f.Duration(&o.retryMin, "retry-min", d.RetryMin, "first wait after a failed database attempt (doubles up to --retry-max)")
	f.Duration(&o.retryMax, "retry-max", d.RetryMax, "longest wait between database attempts")
	f.Duration(&o.drain, "drain-timeout", d.DrainTimeout, "on SIGTERM, time to write the batch in hand before rolling it back and exiting")
	o.http.bind(f, ":9104")
	o.log.bind(f, "json")
}

func (o *sinkTimescaleFlags) config() (timescale.Config, error) {
	var errs []error
	kc, err := o.kafka.config()
	if err != nil {
		errs = append(errs, err)
	}
	c := timescale.Config{
		Kafka: kc, Group: o.group, InstanceID: o.instanceID,
		TopicRaw: o.topicRaw, TopicMetrics: o.topicMetrics, TopicDLQ: o.topicDLQ,
		Readings: o.readings, DSN: o.dsn, Schema: o.schema,
		BatchRows: o.batchRows, BatchDelay: o.batchDelay,
		RetryMin: o.retryMin, RetryMax: o.retryMax, DrainTimeout: o.drain,
	}
	check := func(ok bool, flag, value, msg string) {
		if !ok {
			errs = append(errs, settingErr(flag, value, errors.New(msg)))
		}
	}
	check(c.Group != "", "group", c.Group, "must not be empty")
	check(c.TopicMetrics != "", "topic-metrics", c.TopicMetrics, "must not be empty")
	check(!c.Readings || c.TopicRaw != "", "topic-raw", c.TopicRaw, "must not be empty while --readings is on")
	check(c.TopicDLQ != "", "topic-dlq", c.TopicDLQ, "must not be empty")
	check(c.BatchRows >= 1 && c.BatchRows <= 1_000_000, "batch-rows", fmt.Sprint(c.BatchRows), "must be between 1 and 1000000")
	check(c.BatchDelay > 0, "batch-delay", c.BatchDelay.String(), "must be positive")
	check(c.RetryMin > 0, "retry-min", c.RetryMin.String(), "must be positive")
	check(c.RetryMax >= c.RetryMin, "retry-max", c.RetryMax.String(), "must be at least --retry-min")
	check(c.DrainTimeout > 0, "drain-timeout", c.DrainTimeout.String(), "must be positive")
	if len(errs) == 0 {
		// Whatever the checks above did not name (DSN syntax, schema name,
		// topics that coincide).
		if err := c.Validate(); err != nil {
			errs = append(errs, &UsageError{fmt.Errorf("--pg-writer-dsn/--pg-schema/--topic-* settings: %w", err)})
		}
	}
	if len(errs) > 0 {
		return c, &UsageError{errors.Join(errs...)}
	}
	return c, nil
}

func runSinkTimescale(ctx context.Context, env Env, args []string) error {
	var o sinkTimescaleFlags
	log, err := parseStage(env, args, "iotpipe sink timescale", sinkTimescaleSummary, o.bind, &o.log)
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: kafka %v group %s, topics raw=%s (readings %t) metrics=%s dlq=%s, postgres schema %s, batch %d rows / %s, http %q\n",
			cfg.Kafka.Brokers, cfg.Group, cfg.TopicRaw, cfg.Readings, cfg.TopicMetrics, cfg.TopicDLQ, cfg.Schema, cfg.BatchRows, cfg.BatchDelay, o.http.c.Addr)
		return nil
	}
	srv := service.New(o.http.c, log)
	sink, err := timescale.New(cfg, log, srv.Registry)
	if err != nil {
		return &UsageError{err}
	}
	srv.AddCheck("postgres", sink.CheckDB)
	srv.AddCheck("kafka", sink.CheckKafka)
	return serveWhile(ctx, srv, o.http.c.Addr, sink.Run)
}
