package main

// `iotpipe notify`: flags → notify.Config → notify.New → service.Run.

import (
	"context"
	"fmt"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/notify"
)

const notifySummary = "deliver alert events (telemetry.alerts) to webhooks, ntfy, email and MQTT, at least once per (event, recipient)"

var notifyCmd = stageCmd[notify.Config, *notify.Notifier]{
	name: "notify",
	help: `Deliver alert events from telemetry.alerts to the recipients their rule names:
  webhook:<url>      POST, signed per Standard Webhooks (webhook-id = event id,
                     webhook-timestamp, webhook-signature v1 with --webhook-secret)
  ntfy:<topic>       HTTP publish to --ntfy-url with title, priority, tags, token
  email:<address>    SMTP through --smtp-addr
  mqtt:<topic>       QoS 1 publish through --mqtt-url
Each (event, recipient) is enqueued exactly once in PostgreSQL (table
notifications, with the Kafka offsets in notify_offsets in the same
transaction) and delivered at least once, retried with exponential backoff;
every attempt is recorded (notification_attempts). Storm control: a
recipient that got no message in the last --group-wait is told at once; after
a message, its next notifications wait --group-wait and go out as one digest;
and at most --rate-limit messages per --rate-period go to one recipient (the
rest follow as one digest). Run 'iotpipe init' first.
SIGTERM/SIGINT: stops consuming, finishes the deliveries in flight, exits 0.`,
	addr:     ":9106",
	config:   notify.DefaultConfig,
	newFunc:  notify.New,
	shutdown: func(c *notify.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *notify.Config) {
		bindKafka(f, &c.Kafka)
		f.Group("Consumer group")
		f.String(&c.Group, "group", "Kafka consumer group; also the key of the stage's offsets in notify_offsets")
		f.String(&c.InstanceID, "instance-id", "static group member id (KIP-345), unique and stable per replica; empty: dynamic membership")
		f.Duration(&c.SessionTimeout, "session-timeout", "consumer group session timeout: how soon a dead member's partitions move")
		f.Group("Topics")
		f.String(&c.TopicAlerts, "topic-alerts", "topic of alert events to deliver")
		f.String(&c.TopicDLQ, "topic-dlq", "dead-letter topic for alert records that do not decode")
		f.Group("PostgreSQL")
		f.Secret(&c.DSN, "pg-writer-dsn", "database URL of a member of the writer role")
		f.String(&c.Schema, "pg-schema", "schema that holds the notifications tables")
		f.Group("Delivery")
		f.Duration(&c.PollInterval, "poll-interval", "how often due notifications are looked for")
		f.Duration(&c.GroupWait, "group-wait", "grouping: a recipient that got a message less than this ago has its next notifications wait until this old, then sent together as one digest; a recipient without one is told at once (0: never wait)")
		f.Bool(&c.Digest, "digest", "send a recipient's due notifications as one digest message (false: one message per event)")
		f.Int(&c.RateLimit, "rate-limit", "at most this many messages per --rate-period to one recipient, per notify process; the rest wait and go out as one digest (0: no limit)")
		f.Duration(&c.RatePeriod, "rate-period", "period of --rate-limit")
		f.Duration(&c.RetryMin, "retry-min", "wait after a first failed attempt (doubles up to --retry-max, jittered)")
		f.Duration(&c.RetryMax, "retry-max", "longest wait between attempts")
		f.Int(&c.MaxAttempts, "max-attempts", "retry budget: after this many failed attempts a notification is marked failed and counted (iotpipe_notify_undeliverable_total)")
		f.Duration(&c.SendTimeout, "send-timeout", "bound of one delivery attempt")
		f.Int(&c.Concurrency, "concurrency", "recipients delivered to at once")
		f.Group("Channels")
		f.Secret(&c.WebhookSecret, "webhook-secret", "Standard Webhooks signing secret, whsec_<base64 key> (receivers verify webhook-signature with it); empty: webhooks are not sent")
		f.String(&c.NtfyURL, "ntfy-url", "ntfy server for ntfy:<topic> recipients")
		f.Secret(&c.NtfyToken, "ntfy-token", "ntfy access token (Authorization: Bearer); empty: none")
		f.String(&c.SMTPAddr, "smtp-addr", "SMTP server host:port for email:<address> recipients (STARTTLS when offered); empty: email is not sent")
		f.String(&c.SMTPUser, "smtp-user", "SMTP user (PLAIN auth); empty: no auth")
		f.Secret(&c.SMTPPassword, "smtp-password", "SMTP password")
		f.String(&c.SMTPFrom, "smtp-from", "sender address of alert emails")
		f.String(&c.MQTTURL, "mqtt-url", "MQTT broker for mqtt:<topic> recipients, mqtt://host:port; empty: MQTT is not sent")
		f.String(&c.MQTTUser, "mqtt-username", "MQTT user name")
		f.Secret(&c.MQTTPassword, "mqtt-password", "MQTT password")
	},
	kafka: func(c *notify.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *notify.Config, o *service.Options) string {
		return fmt.Sprintf("kafka %v group %s, topic %s, postgres schema %s, group wait %s, rate %d per %s, retries %d (%s..%s), http %q",
			c.Kafka.Brokers, c.Group, c.TopicAlerts, c.Schema, c.GroupWait, c.RateLimit, c.RatePeriod, c.MaxAttempts, c.RetryMin, c.RetryMax, listenAddr(o))
	},
}

func runNotify(ctx context.Context, env Env, args []string) error {
	return runStage(ctx, &notifyCmd, env, args)
}
