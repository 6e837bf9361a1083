package main

// `iotpipe processor`: flags → processor.Config → processor.New →
// service.Run.

import (
	"context"
	"fmt"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/processor"
)

const processorSummary = "compute per-device windowed metrics from telemetry.raw, exactly once"

var processorCmd = stageCmd[processor.Config, *processor.Processor]{
	name: "processor",
	help: `Consume telemetry.raw in a consumer group and write, per device × metric and
event-time tumbling window, count/sum/min/max/mean/stddev(population)/first/
last/p50/p95/p99 and a per-device activity record to telemetry.metrics, and
a copy of every reading it counts, each device message once, to
telemetry.readings (what the sinks store); undecodable and too-late readings
go to telemetry.dlq.

Exactly once: every transaction holds the outputs, the input offsets and the
changelog records of the open windows' state; on assignment a partition's
state is restored from the changelog topic before it is processed. Run several
processors with the same --group and distinct --instance-id to split the
partitions. SIGTERM/SIGINT commits the transaction in progress, leaves the
group and exits 0.`,
	addr:     ":9102",
	config:   processor.DefaultConfig,
	newFunc:  processor.New,
	shutdown: func(c *processor.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *processor.Config) {
		bindKafka(f, &c.Kafka)
		bindKafkaFetch(f, &c.Kafka.Fetch)
		f.Group("Consumer group")
		f.String(&c.Group, "group", "consumer group; processors in one group split the raw topic's partitions")
		f.String(&c.InstanceID, "instance-id", "name of this processor in the group, unique among running ones and stable across its restarts (static membership; also names its transactional id)")
		f.Duration(&c.SessionTimeout, "session-timeout", "how long a vanished processor keeps its partitions before the group moves them")
		f.Duration(&c.TransactionTimeout, "transaction-timeout", "broker-side timeout of a transaction left open by a vanished processor")
		f.Group("Topics")
		f.String(&c.Topics.Raw, "topic-raw", "input topic of canonical readings")
		f.String(&c.Topics.Metrics, "topic-metrics", "output topic of window metrics and activity records")
		f.String(&c.Topics.DLQ, "topic-dlq", "dead-letter topic for undecodable and too-late readings")
		f.String(&c.Topics.Readings, "topic-readings", "output topic of the accepted readings: each device message once (no duplicates, no late ones), the input record unchanged, in the same transaction; the sinks store it (- writes none)")
		f.String(&c.Topics.Changelog, "topic-processor-changelog", "compacted topic holding the state of open windows (same partition count as the raw topic)")
		f.Group("Windows")
		f.Duration(&c.Window.Size, "window", "size of the tumbling event-time windows, aligned to the Unix epoch")
		f.Duration(&c.Window.Lateness, "lateness", "allowed lateness (0: none): each device's watermark trails its newest event time by it; a window is emitted when its device's watermark passes its end and re-emitted (higher revision) for readings until end+lateness; later readings go to the DLQ as late")
		f.Duration(&c.Window.IdleTimeout, "idle-timeout", "after a device sent nothing for this long its watermark advances with the clock, so its windows close (its final window by window end + idle timeout); the clock is the bridges' heartbeats, which stop while the ingest path is stalled (the wall clock on a raw topic without heartbeats)")
		f.Duration(&c.Window.MaxFutureSkew, "max-future-skew", "readings further ahead of the processor's clock go to the DLQ (timestamp_skew); no device's watermark is ever ahead of the wall clock plus this; keep it >= the bridge's --max-future-skew (0: no reading may be ahead)")
		f.Duration(&c.Window.HeartbeatExpiry, "heartbeat-expiry", "a bridge whose latest heartbeat on a partition is this far behind another bridge's newest no longer holds the partition's clock for device silence (a bridge scaled away); within it, a stalled bridge holds it")
		f.Duration(&c.Window.LateRetention, "late-retention", "how long a closed window's activity summary is kept to count late readings in it (0: not kept)")
		f.Group("Processing")
		f.Duration(&c.CommitInterval, "commit-interval", "longest a transaction stays open (latency of outputs vs. transaction overhead)")
		f.Int(&c.MaxPollRecords, "max-poll-records", "records taken from Kafka per poll")
		f.Int(&c.MaxKeys, "max-keys", "cap on open metric windows (device × metric × window); memory guard: at the cap the oldest open windows are closed early (emitted; readings still to come for them go to the DLQ as late, counted)")
		f.Duration(&c.RestoreTimeout, "restore-timeout", "longest time to restore a partition's state from the changelog")
		f.Duration(&c.StallAfter, "stall-after", "report a stall (iotpipe_processor_stalled, readiness \"progress\") when input waits on a partition and no transaction committed progress on it for this long (0: never)")
		f.Duration(&c.DebugCommitDelay, "debug-commit-delay", "testing only: sleep this long inside every transaction commit (after \"transaction commit started\" is logged)")
	},
	kafka: func(c *processor.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *processor.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %v, group %s, instance %s (transactional id %s), %s → %s, readings %s (dlq %s, changelog %s), window %s, lateness %s, idle timeout %s, commit interval %s, max keys %d, http %q",
			c.Kafka.Describe(), c.Group, c.InstanceID, c.TransactionalID(), c.Topics.Raw, c.Topics.Metrics, c.Topics.Readings, c.Topics.DLQ,
			c.Topics.Changelog, c.Window.Size, c.Window.Lateness, c.Window.IdleTimeout, c.CommitInterval, c.MaxKeys, listenAddr(o))
	},
}

func runProcessor(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &processorCmd, env, args)
}
