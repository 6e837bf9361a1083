package main

// `iotpipe sink timescale`: flags → timescale.Config → timescale.New →
// service.Run.

import (
	"context"
	"errors"
	"fmt"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"strconv"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/sink/timescale"
)

var sinkTimescaleCmd = stageCmd[timescale.Config, *timescale.Sink]{
	name: "sink timescale",
	help: `Write Kafka records to TimescaleDB or plain PostgreSQL ≥ 15, exactly once:
  - telemetry.readings → readings (one row per measurement of each device
                        message the processor accepted; --topic-readings - skips it)
  - telemetry.metrics → device_metrics (window aggregates, upserted: a lower
                        revision never overwrites a higher one) and device_activity.
  - telemetry.alerts  → alert_events (the alert stage's FIRING/RESOLVED events,
                        once per event id; --topic-alerts - skips it)
Rows and the consumed Kafka offsets are committed in the same transaction
(table sink_offsets); on partition assignment the sink resumes from there.
Records that do not decode or that the database refuses go to the DLQ topic.
While the database is down the sink stops consuming, retries with backoff and
resumes by itself. Run 'iotpipe init' first to create the schema.
SIGTERM/SIGINT: writes the batch in hand (or rolls it back), exits 0.`,
	addr:     ":9104",
	config:   timescale.DefaultConfig,
	newFunc:  timescale.New,
	shutdown: func(c *timescale.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *timescale.Config) {
		f.Alias("drain-timeout", "shutdown-timeout")
		bindKafka(f, &c.Kafka)
		bindKafkaFetch(f, &c.Kafka.Fetch)
		f.Group("Consumer group")
		f.String(&c.Group, "group", "Kafka consumer group; also the key of the sink's offsets in sink_offsets")
		f.String(&c.InstanceID, "instance-id", "static group member id (KIP-345), unique and stable per replica (a restart takes its partitions back at once); empty: dynamic membership")
		f.Alias("group-instance-id", "instance-id")
		f.Duration(&c.SessionTimeout, "session-timeout", "consumer group session timeout: how soon a dead member's partitions move")
		f.Group("Topics")
		f.String(&c.TopicRaw, "topic-readings", "topic of the processor's accepted readings (each device message once), written to the readings table (- to skip; naming the raw topic stores every raw record, re-sends and redeliveries included)")
		retireTopicRaw(f, &c.TopicRaw, timescale.SkipTopic)
		f.Legacy(readingsFlag{c}, "readings", "--readings=false is --topic-readings -")
		f.String(&c.TopicMetrics, "topic-metrics", "topic of window aggregates and activity records")
		f.String(&c.TopicDLQ, "topic-dlq", "dead-letter topic for records that do not decode or that the database refuses")
		f.String(&c.TopicAlerts, "topic-alerts", "topic of alert events (iotpipe alert), written to alert_events once per event id (- to skip); needs schema migration 12 and Kafka READ on the topic")
		f.Group("PostgreSQL / TimescaleDB")
		f.Secret(&c.DSN, "pg-writer-dsn", "database URL of the sink's login role, a member of the writer role (not the schema owner)")
		f.String(&c.Schema, "pg-schema", "schema that holds the tables")
		f.Group("Batching and retries")
		f.Int(&c.BatchRows, "batch-rows", "write a batch once it holds this many rows")
		f.Duration(&c.BatchDelay, "batch-delay", "longest time a record waits before its batch is written")
		f.Duration(&c.RetryMin, "retry-min", "first wait after a failed database attempt (doubles up to --retry-max)")
		f.Duration(&c.RetryMax, "retry-max", "longest wait between database attempts")
		f.Duration(&c.StallAfter, "stall-after", "report a stall (iotpipe_sink_timescale_stalled, readiness \"progress\") when input waits on a partition and no batch was committed for this long (0: never)")
	},
	kafka: func(c *timescale.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *timescale.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %v group %s instance %q, topics readings=%s metrics=%s alerts=%s dlq=%s, postgres schema %s, batch %d rows / %s, http %q",
			c.Kafka.Describe(), c.Group, c.InstanceID, c.TopicRaw, c.TopicMetrics, c.TopicAlerts, c.TopicDLQ, c.Schema, c.BatchRows, c.BatchDelay, listenAddr(o))
	},
}

func runSinkTimescale(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &sinkTimescaleCmd, env, args)
}

// readingsFlag keeps the old --readings=false (IOTPIPE_READINGS=false)
// working for one release: it sets TopicRaw to "-".
type readingsFlag struct{ c *timescale.Config }

func (r readingsFlag) String() string {
	if r.c == nil {
		return "true"
	}
	return strconv.FormatBool(r.c.TopicRaw != timescale.SkipTopic)
}

func (r readingsFlag) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	if !on {
		r.c.TopicRaw = timescale.SkipTopic
	}
	return nil
}

func (readingsFlag) IsBoolFlag() bool { return true }

// topicRawWarning is the warning of a sink given --topic-raw
// (IOTPIPE_TOPIC_RAW) other than "-".
const topicRawWarning = "--topic-raw (IOTPIPE_TOPIC_RAW) is no longer read by the sinks: they store --topic-readings (IOTPIPE_TOPIC_READINGS, default telemetry.readings)"

// retireTopicRaw defines the sinks' retired --topic-raw. It used to be the
// readings topic's old name, but a pipeline-wide environment sets
// IOTPIPE_TOPIC_RAW for the bridge and the processor, and a sink that read
// it stored the raw topic (re-sends and redeliveries included) instead of
// the processor's readings. So a sink ignores it, with a warning, except
// the value "-", which still skips the readings (deprecated, for one
// release).
func retireTopicRaw(f *Flags, topic *string, skip string) {
	f.Retired(&topicRawFlag{topic: topic, skip: skip}, "topic-raw",
		"ignored by the sinks, which store --topic-readings (- still skips the readings: use --topic-readings -)",
		func(v string) string {
			if v == skip {
				return "--topic-raw - (IOTPIPE_TOPIC_RAW=-) is deprecated: use --topic-readings - (IOTPIPE_TOPIC_READINGS=-) to skip the readings; the old name goes in the next release"
			}
			return topicRawWarning
		})
}

// topicRawFlag is the value of the sinks' retired --topic-raw: "-" sets
// the readings topic to skip, any other value is ignored.
type topicRawFlag struct {
	topic *string
	skip  string
	given string
}

func (r *topicRawFlag) String() string {
	if r == nil {
		return ""
	}
	return r.given
}

func (r *topicRawFlag) Set(s string) error {
	r.given = s
	if s == r.skip {
		*r.topic = r.skip
	}
	return nil
}
