package main

// `iotpipe alert`: flags → alert.Config → alert.New → service.Run.

import (
	"context"
	"fmt"
	"time"

	"github.com/iotpipe/iotpipe/alert"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
)

const alertSummary = "evaluate alert rules over telemetry.raw and telemetry.metrics; FIRING/RESOLVED events to telemetry.alerts, exactly once per crossing"

var alertCmd = stageCmd[alert.Config, *alert.Stage]{
	name: "alert",
	help: `Evaluate the alert rules stored in PostgreSQL (iotpipe alerts rules ...) over
every reading of telemetry.raw (reading and no_data rules) and every window
aggregate of telemetry.metrics (window rules: mean, min, max, p50, p95, p99),
per series (rule, device, metric): OK → PENDING → FIRING → OK with hysteresis
(trigger and clear thresholds), for-count and for-duration in event time;
readings not newer than their series' last one are ignored and counted. A
FIRING event when a series crosses its trigger threshold, a RESOLVED event
when it falls back past its clear threshold, go to telemetry.alerts (key =
device id; stable event ids), read by iotpipe notify and sink timescale.

Exactly once per crossing: every transaction holds the events, the input
offsets and the changelog records of the series' state (--topic-alert-changelog,
compacted, as many partitions as the larger input topic); on assignment a
partition's state is restored from it. Rules are reloaded on every change
(NOTIFY iotpipe_alert_rules) and every --rules-refresh; a rule that cannot be
evaluated is left out and logged. Run several with the same --group and
distinct --instance-id to split the partitions. SIGTERM/SIGINT commits the
transaction in progress, leaves the group and exits 0.`,
	addr:     ":9108",
	config:   alert.DefaultConfig,
	newFunc:  alert.New,
	shutdown: func(c *alert.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *alert.Config) {
		bindKafka(f, &c.Kafka)
		bindKafkaFetch(f, &c.Kafka.Fetch)
		f.Group("Consumer group")
		f.String(&c.Group, "group", "consumer group; alert stages in one group split the input partitions")
		f.String(&c.InstanceID, "instance-id", "name of this alert stage in the group, unique among running ones and stable across its restarts (static membership; also names its transactional id)")
		f.Duration(&c.SessionTimeout, "session-timeout", "how long a vanished alert stage keeps its partitions before the group moves them")
		f.Duration(&c.TransactionTimeout, "transaction-timeout", "broker-side timeout of a transaction left open by a vanished alert stage")
		f.Group("Topics")
		f.String(&c.Topics.Raw, "topic-raw", "input topic of canonical readings (reading and no_data rules)")
		f.String(&c.Topics.Metrics, "topic-metrics", "input topic of window aggregates (window rules; - reads none)")
		f.String(&c.Topics.Alerts, "topic-alerts", "output topic of FIRING and RESOLVED events")
		f.String(&c.Topics.Changelog, "topic-alert-changelog", "compacted topic holding every series' state (as many partitions as the larger input topic)")
		f.Group("Rules (PostgreSQL)")
		f.Secret(&c.DSN, "pg-reader-dsn", "database URL of a member of the reader role (reads alert_rules and the device groups)")
		f.String(&c.Schema, "pg-schema", "schema that holds the alert_rules table")
		f.Duration(&c.RulesRefresh, "rules-refresh", "read the rules again this often, besides on every change notice")
		f.Group("Processing")
		f.Duration(&c.NoDataResolution, "no-data-resolution", "step of the partition's ingest clock (bridge heartbeats) at which silent devices are looked for (no_data rules); the FIRING's event time is always the last reading's received time + silence")
		f.Duration(&c.HeartbeatExpiry, "heartbeat-expiry", "a bridge whose latest heartbeat on a partition is this far behind another bridge's newest no longer holds the partition's clock for no_data rules (a bridge scaled away); within it, a stalled bridge holds it")
		f.Duration(&c.CommitInterval, "commit-interval", "longest a transaction stays open (latency of events vs. transaction overhead)")
		f.Int(&c.MaxPollRecords, "max-poll-records", "records taken from Kafka per poll")
		f.Int(&c.MaxSeries, "max-series", "cap on the series (rule × device × metric) held; memory guard: at the cap values of new series are not evaluated (counted in iotpipe_alert_series_refused_total)")
		f.Duration(&c.RestoreTimeout, "restore-timeout", "longest time to restore a partition's state from the changelog")
		f.Duration(&c.StallAfter, "stall-after", "report a stall (iotpipe_alert_stalled, readiness \"progress\") when input waits on a partition and no transaction committed progress on it for this long (0: never)")
		f.Duration(&c.DebugCommitDelay, "debug-commit-delay", "testing only: sleep this long inside every transaction commit (after \"transaction commit started\" is logged)")
	},
	kafka: func(c *alert.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *alert.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %v, group %s, instance %s (transactional id %s), %s + %s → %s (changelog %s), postgres schema %s, rules refresh %s, commit interval %s, max series %d, http %q",
			c.Kafka.Describe(), c.Group, c.InstanceID, c.TransactionalID(), c.Topics.Raw, c.Topics.Metrics, c.Topics.Alerts,
			c.Topics.Changelog, c.Schema, c.RulesRefresh, c.CommitInterval, c.MaxSeries, listenAddr(o))
	},
}

func runAlert(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &alertCmd, env, args)
}
