package main

// `iotpipe shadow-consumer`: flags → shadowconsumer.Config → New → service.Run.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/shadowconsumer"
)

const shadowConsumerSummary = "apply devices' shadow reports (from Kafka, via the bridge) to PostgreSQL exactly once and answer them"

var shadowConsumerCmd = stageCmd[shadowconsumer.Config, *shadowconsumer.Consumer]{
	name: "shadow-consumer",
	help: `Apply the devices' shadow requests to PostgreSQL, exactly once.

The bridge (--topic-shadow) writes what devices publish on
devices/<id>/shadow/update (reports) and devices/<id>/shadow/get to a Kafka
topic; this stage applies each to the device's shadow in one transaction with
its Kafka offset, and answers through the outbox (published by iotpipe api):
devices/<id>/shadow/update/accepted, .../rejected (stale_version, malformed,
too_large), devices/<id>/shadow/get/accepted.

SIGTERM/SIGINT: finish the batch in hand, leave the group, exit 0.`,
	addr:     ":9107",
	config:   shadowconsumer.DefaultConfig,
	newFunc:  shadowconsumer.New,
	shutdown: func(c *shadowconsumer.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *shadowconsumer.Config) {
		bindKafka(f, &c.Kafka)
		f.Group("Kafka consumer")
		f.String(&c.Topic, "topic-shadow", "topic of the devices' shadow requests (the bridge's --topic-shadow)")
		f.String(&c.Group, "group", "consumer group")
		f.String(&c.InstanceID, "instance-id", "static group member id (default: the host name); unique per copy")
		f.Duration(&c.SessionTimeout, "session-timeout", "consumer group session timeout")
		f.Int(&c.BatchMax, "batch-max", "most requests applied in one transaction")
		f.Group("Database")
		f.Secret(&c.DSN, "pg-registry-dsn", "database URL of a member of the registry role iotpipe_registry")
		f.String(&c.Schema, "pg-schema", "schema that holds the shadows (created by iotpipe init)")
		f.Duration(&c.RetryMin, "retry-min", "first wait after a failed transaction")
		f.Duration(&c.RetryMax, "retry-max", "longest wait between attempts")
		f.Group("Shadow limits")
		f.Int(&c.Limits.MaxBytes, "shadow-max-bytes", "largest reported document in bytes (a report may be twice that, with its envelope)")
		f.Int(&c.Limits.MaxDepth, "shadow-max-depth", "deepest nesting of objects and arrays in a document")
		f.Int(&c.Limits.MaxKeys, "shadow-max-keys", "most keys in a document, counted through every level")
	},
	kafka: func(c *shadowconsumer.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *shadowconsumer.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %s topic %s group %s → schema %s; metrics on %q", strings.Join(c.Kafka.Brokers, ","), c.Topic, c.Group, c.Schema, listenAddr(o))
	},
}

func runShadowConsumer(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &shadowConsumerCmd, env, args)
}
