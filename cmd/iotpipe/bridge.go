package main

// `iotpipe bridge`: flags → bridge.Config → bridge.New → service.Run.

import (
	"context"
	"errors"
	"fmt"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/bridge"
	"github.com/iotpipe/iotpipe/internal/flags"
	"github.com/iotpipe/iotpipe/internal/service"
)

const bridgeSummary = "move device readings from MQTT to Kafka (QoS 1, acknowledged only after Kafka has them)"

var bridgeCmd = stageCmd[bridge.Config, *bridge.Bridge]{
	name: "bridge",
	help: `Move device readings from an MQTT broker into Kafka without loss.

The bridge subscribes to $share/<group>/<filter> at QoS 1 with a persistent
session, decodes every message, writes valid readings to the raw topic (key =
device id, timestamp = event time) and rejected ones to the DLQ topic (with
the reason in headers), and acknowledges each MQTT message only after Kafka
acknowledged its record. Several bridges with the same --mqtt-share-group
split the load; each needs its own stable --mqtt-client-id.

SIGTERM/SIGINT: stop taking messages, flush, send the pending acknowledgements,
disconnect, exit 0 (within --shutdown-timeout).`,
	addr:     ":9101",
	config:   bridge.DefaultConfig,
	newFunc:  bridge.New,
	shutdown: func(c *bridge.Config) *time.Duration { return &c.ShutdownTimeout },
	bind: func(f *Flags, c *bridge.Config) {
		f.Group("MQTT")
		f.List(&c.MQTT.URLs, "mqtt-url", "comma-separated broker URLs, mqtt://host:port or mqtts://host:port (TLS), tried in order")
		f.String(&c.MQTT.ClientID, "mqtt-client-id", "client id; must be stable across restarts and unique per bridge (the broker keeps the session under it)")
		f.String(&c.MQTT.Username, "mqtt-username", "MQTT user name")
		f.Secret(&c.MQTT.Password, "mqtt-password", "MQTT password")
		f.String(&c.MQTT.CAFile, "mqtt-ca-file", "mqtts://: PEM file of the CA the broker's certificate must chain to (empty: the system's roots)")
		f.String(&c.MQTT.CertFile, "mqtt-cert-file", "mqtts://: the bridge's client certificate (PEM); its CN is the bridge's MQTT identity (iotpipe ca client iotpipe-bridge). Reread on every reconnect: replace the files to rotate")
		f.String(&c.MQTT.KeyFile, "mqtt-key-file", "mqtts://: the key of --mqtt-cert-file (PEM); reread on every reconnect")
		f.String(&c.MQTT.ServerName, "mqtt-server-name", "mqtts://: the name the broker's certificate must hold (empty: the URL's host); a broker with another name is refused")
		f.String(&c.MQTT.ShareGroup, "mqtt-share-group", "shared-subscription group; bridges of one group split the messages")
		f.Bool(&c.MQTT.PlainSubscription, "mqtt-plain-subscription", "subscribe to the filters directly, not through $share/<group>/: for ONE bridge on a broker that loses shared subscriptions when it restarts (every Mosquitto 2.0.x); every bridge subscribed this way gets every message")
		f.List(&c.MQTT.Filters, "mqtt-filters", "comma-separated topic filters (without $share/...); empty: the filter of --topic-template")
		f.Bool(&c.MQTT.CatchAll, "mqtt-catch-all", "subscribe to the template's prefix + '#' (devices/# for devices/{device_id}/telemetry) instead of the filters it covers; messages on topics no route matches go to the DLQ as unexpected_topic instead of vanishing at the broker")
		f.Duration(&c.MQTT.SessionExpiry, "mqtt-session-expiry", "how long the broker keeps the session and queues messages while the bridge is away")
		f.Int(&c.MQTT.ReceiveMaximum, "mqtt-receive-maximum", "MQTT v5 Receive Maximum: messages in flight (received, not yet acknowledged); bounds memory and duplicates after a crash")
		f.Duration(&c.MQTT.AckInterval, "mqtt-ack-interval", "how often acknowledgements released by Kafka are sent to the broker (0: as soon as possible)")
		f.Duration(&c.MQTT.KeepAlive, "mqtt-keepalive", "MQTT keep-alive period")
		f.Duration(&c.MQTT.ConnectTimeout, "mqtt-connect-timeout", "timeout of one connection attempt")
		f.Duration(&c.MQTT.ReconnectMin, "mqtt-reconnect-min", "first wait before reconnecting (doubles up to --mqtt-reconnect-max)")
		f.Duration(&c.MQTT.ReconnectMax, "mqtt-reconnect-max", "longest wait between reconnection attempts")
		bindKafka(f, &c.Kafka)
		f.Group("Kafka producer")
		f.String(&c.TopicRaw, "topic-raw", "topic of accepted readings (key = device id)")
		f.String(&c.TopicDLQ, "topic-dlq", "dead-letter topic of rejected messages")
		f.String(&c.TopicShadow, "topic-shadow", "topic of the devices' shadow requests (devices/<id>/shadow/update and /get, key = device id) for the shadow consumer; empty: no shadow route")
		f.String(&c.Compression, "kafka-compression", "batch compression: none, gzip, snappy, lz4 or zstd")
		f.Duration(&c.Linger, "kafka-linger", "how long the producer waits to fill a batch (0: send at once)")
		f.Int(&c.BatchMaxBytes, "kafka-batch-max-bytes", "largest record batch (keep at most the topic's max.message.bytes)")
		f.Duration(&c.HeartbeatInterval, "heartbeat-interval", "how often a heartbeat is written to every partition of the raw topic; the processor measures device silence on them, so a stalled ingest path does not close devices' windows (0: none, silence is measured on the processor's wall clock)")
		f.Int(&c.DLQMaxValueBytes, "dlq-max-value-bytes", "longest original payload kept in a dead letter; longer ones are cut and the error header says so")
		f.Group("Registry (strict mode)")
		f.Bool(&c.Registry.Require, "require-registered", "dead-letter (reason unknown_device) readings of devices that are not in the registry or not active; the set is kept in memory, updated on every registry change (LISTEN/NOTIFY) and every --registry-refresh")
		f.Secret(&c.Registry.DSN, "registry-dsn", "with --require-registered: database URL of a role that may read the registry (the reader role is enough)")
		f.String(&c.Registry.Schema, "pg-schema", "with --require-registered: schema that holds the registry")
		f.Duration(&c.Registry.Refresh, "registry-refresh", "with --require-registered: reload the device set this often even without a change notice")
		f.Group("Payloads")
		f.String(&c.TopicTemplate, "topic-template", "MQTT topic template; the {device_id} level gives the device id")
		f.Int(&c.Decode.MaxPayloadBytes, "max-payload-bytes", "larger payloads go to the DLQ (payload_too_large)")
		f.Int(&c.Decode.MaxMeasurements, "max-measurements", "more measurements in one payload go to the DLQ")
		f.Int(&c.Decode.MaxDepth, "max-json-depth", "deeper JSON nesting goes to the DLQ (malformed_json)")
		f.Duration(&c.Decode.MaxFutureSkew, "max-future-skew", "readings further in the future than this go to the DLQ (timestamp_skew)")
		f.Duration(&c.Decode.MaxPastSkew, "max-past-skew", "readings further in the past than this go to the DLQ (timestamp_skew)")
		f.Bool(&c.Decode.Strict, "strict-payloads", "send messages with a field that would be ignored (non-numeric top-level fields, fields beside \"metrics\") to the DLQ (ignored_field) instead of accepting them and counting the field in iotpipe_bridge_ignored_fields_total")
		f.Bool(&c.Decode.AcceptBools, "accept-bools", "make true/false measurements of value 1/0 (otherwise a top-level boolean is ignored and counted, and one under \"metrics\" rejects the message)")
		f.Bool(&c.Decode.NumericStrings, "numeric-strings", "make strings holding exactly a JSON number (\"21.5\") measurements; \"NaN\"/\"Inf\" strings then reject the message (non_finite_value)")
	},
	kafka: func(c *bridge.Config) *kafkax.Config { return &c.Kafka },
	describe: func(c *bridge.Config, o *service.Options) string {
		return fmt.Sprintf("mqtt %s client id %s, subscribing to %s at QoS 1 (receive maximum %d, session expiry %s); kafka %s → %s, dlq %s (%s, linger %s); metrics on %q",
			strings.Join(c.MQTT.URLs, ","), c.MQTT.ClientID, strings.Join(c.Subscriptions(), ","), c.MQTT.ReceiveMaximum, c.MQTT.SessionExpiry,
			c.Kafka.Describe(), c.TopicRaw, c.TopicDLQ, c.Compression, c.Linger, listenAddr(o))
	},
}

func runBridge(ctx context.Context, env Env, args []string) error {
	err := runStage(ctx, &bridgeCmd, env, args)
	if errors.Is(err, bridge.ErrMissingTopic) {
		return fmt.Errorf("%w (create it with iotpipe init; see %s and %s)", err, flags.Setting("topic-raw"), flags.Setting("topic-dlq"))
	}
	return err
}
