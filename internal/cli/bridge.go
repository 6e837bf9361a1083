package cli

// This file is owned by the bridge stage: it defines the `iotpipe bridge`
// command (flags → bridge.Config → bridge.New → Run).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/bridge"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

const bridgeSummary = "move device readings from MQTT to Kafka (QoS 1, acknowledged only after Kafka has them)"

const bridgeHelp = `Move device readings from an MQTT broker into Kafka without loss.

The bridge subscribes to $share/<group>/<filter> at QoS 1 with a persistent
session, decodes every message, writes valid readings to the raw topic (key =
device id, timestamp = event time) and rejected ones to the DLQ topic (with
the reason in headers), and acknowledges each MQTT message only after Kafka
acknowledged its record. Several bridges with the same --mqtt-share-group
split the load; each needs its own stable --mqtt-client-id.

SIGTERM/SIGINT: stop taking messages, flush, send the pending acknowledgements,
disconnect, exit 0 (within --shutdown-timeout).`

type bridgeFlags struct {
	kafka kafkaFlags
	http  httpFlags
	log   logFlags

	mqttURL, clientID, username, password, group, filters string
	sessionExpiry, ackInterval, keepAlive, connectTimeout time.Duration
	receiveMax                                            int
	plainSub, catchAll                                    bool

	topicRaw, topicDLQ, topicTemplate string
	maxPayload, maxMeasurements       int
	maxDepth                          int
	futureSkew, pastSkew              time.Duration
	strict, acceptBools, numericStrs  bool

	compression    string
	linger         time.Duration
	batchMaxBytes  int
	dlqMaxValue    int
	shutdownTimout time.Duration
	checkConfig    bool
}

func (o *bridgeFlags) bind(f *Flags) {
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without connecting")
	f.Duration(&o.shutdownTimout, "shutdown-timeout", bridge.DefaultShutdownTimeout, "on SIGTERM, time to flush in-flight records and send their acknowledgements; the rest is redelivered by the broker")
	f.Group("MQTT")
	f.String(&o.mqttURL, "mqtt-url", "mqtt://localhost:1883", "comma-separated broker URLs, mqtt://host:port, tried in order")
	f.String(&o.clientID, "mqtt-client-id", bridge.DefaultClientID(), "client id; must be stable across restarts and unique per bridge (the broker keeps the session under it)")
	f.String(&o.username, "mqtt-username", "", "MQTT user name")
	f.Secret(&o.password, "mqtt-password", "", "MQTT password")
	f.String(&o.group, "mqtt-share-group", bridge.DefaultShareGroup, "shared-subscription group; bridges of one group split the messages")
	f.Bool(&o.plainSub, "mqtt-plain-subscription", false, "subscribe to the filters directly, not through $share/<group>/: for ONE bridge on a broker that loses shared subscriptions when it restarts (every Mosquitto 2.0.x); every bridge subscribed this way gets every message")
	f.String(&o.filters, "mqtt-filters", "", "comma-separated topic filters (without $share/...); default: the filter of --topic-template")
	f.Bool(&o.catchAll, "mqtt-catch-all", bridge.DefaultCatchAll, "subscribe to the template's prefix + '#' (devices/# for devices/{device_id}/telemetry) instead of the filters it covers; messages on topics no route matches go to the DLQ as unexpected_topic instead of vanishing at the broker")
	f.Duration(&o.sessionExpiry, "mqtt-session-expiry", bridge.DefaultSessionExpiry, "how long the broker keeps the session and queues messages while the bridge is away")
	f.Int(&o.receiveMax, "mqtt-receive-maximum", bridge.DefaultReceiveMaximum, "MQTT v5 Receive Maximum: messages in flight (received, not yet acknowledged); bounds memory and duplicates after a crash")
	f.Duration(&o.ackInterval, "mqtt-ack-interval", bridge.DefaultAckInterval, "how often acknowledgements released by Kafka are sent to the broker")
	f.Duration(&o.keepAlive, "mqtt-keepalive", bridge.DefaultKeepAlive, "MQTT keep-alive period")
	f.Duration(&o.connectTimeout, "mqtt-connect-timeout", bridge.DefaultConnectTimeout, "timeout of one connection attempt (reconnects back off from 0.5s up to 5s)")
	o.kafka.bind(f, "iotpipe-bridge")
	f.Group("Kafka producer")
	f.String(&o.topicRaw, "topic-raw", schemas.TopicRaw, "topic of accepted readings (key = device id)")
	f.String(&o.topicDLQ, "topic-dlq", schemas.TopicDLQ, "dead-letter topic of rejected messages")
	f.String(&o.compression, "kafka-compression", bridge.DefaultCompression, "batch compression: none, gzip, snappy, lz4 or zstd")
	f.Duration(&o.linger, "kafka-linger", bridge.DefaultLinger, "how long the producer waits to fill a batch")
	f.Int(&o.batchMaxBytes, "kafka-batch-max-bytes", bridge.DefaultBatchMaxBytes, "largest record batch (keep at most the topic's max.message.bytes)")
	f.Int(&o.dlqMaxValue, "dlq-max-value-bytes", bridge.DefaultDLQMaxValueBytes, "longest original payload kept in a dead letter; longer ones are cut and the error header says so")
	f.Group("Payloads")
	f.String(&o.topicTemplate, "topic-template", schemas.DefaultTopicTemplate, "MQTT topic template; the {device_id} level gives the device id")
	f.Int(&o.maxPayload, "max-payload-bytes", schemas.DefaultMaxPayloadBytes, "larger payloads go to the DLQ (payload_too_large)")
	f.Int(&o.maxMeasurements, "max-measurements", schemas.DefaultMaxMeasurements, "more measurements in one payload go to the DLQ")
	f.Int(&o.maxDepth, "max-json-depth", schemas.DefaultMaxDepth, "deeper JSON nesting goes to the DLQ (malformed_json)")
	f.Duration(&o.futureSkew, "max-future-skew", schemas.DefaultMaxFutureSkew, "readings further in the future than this go to the DLQ (timestamp_skew)")
	f.Duration(&o.pastSkew, "max-past-skew", schemas.DefaultMaxPastSkew, "readings further in the past than this go to the DLQ (timestamp_skew)")
	f.Bool(&o.strict, "strict-payloads", false, "send messages with a field that would be ignored (non-numeric top-level fields, fields beside \"metrics\") to the DLQ (ignored_field) instead of accepting them and counting the field in iotpipe_bridge_ignored_fields_total")
	f.Bool(&o.acceptBools, "accept-bools", false, "make true/false measurements of value 1/0 (otherwise a top-level boolean is ignored and counted, and one under \"metrics\" rejects the message)")
	f.Bool(&o.numericStrs, "numeric-strings", false, "make strings holding exactly a JSON number (\"21.5\") measurements; \"NaN\"/\"Inf\" strings then reject the message (non_finite_value)")
	o.http.bind(f, ":9101")
	o.log.bind(f, "json")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// fieldFlags maps bridge.Config fields (as named by Validate) to flags.
var bridgeFieldFlags = []struct{ field, flag string }{
	{"MQTT.URLs", "mqtt-url"}, {"MQTT.ClientID", "mqtt-client-id"}, {"MQTT.ShareGroup", "mqtt-share-group"}, {"MQTT.PlainSubscription", "mqtt-plain-subscription"},
	{"MQTT.Filters", "mqtt-filters"}, {"MQTT.CatchAll", "mqtt-catch-all"}, {"MQTT.SessionExpiry", "mqtt-session-expiry"},
	{"MQTT.ReceiveMaximum", "mqtt-receive-maximum"}, {"MQTT.AckInterval", "mqtt-ack-interval"},
	{"MQTT.KeepAlive", "mqtt-keepalive"}, {"MQTT.ConnectTimeout", "mqtt-connect-timeout"},
	{"Kafka.Brokers", "kafka-brokers"}, {"TopicRaw", "topic-raw"}, {"TopicDLQ", "topic-dlq"},
	{"TopicTemplate", "topic-template"}, {"Compression", "kafka-compression"}, {"Linger", "kafka-linger"},
	{"BatchMaxBytes", "kafka-batch-max-bytes"}, {"DLQMaxValueBytes", "dlq-max-value-bytes"},
	{"ShutdownTimeout", "shutdown-timeout"},
	{"Decode", "max-payload-bytes/--max-measurements/--max-json-depth/--max-future-skew/--max-past-skew"},
}

func (o *bridgeFlags) config() (bridge.Config, error) {
	kc, err := o.kafka.config()
	if err != nil {
		return bridge.Config{}, err
	}
	cfg := bridge.Config{
		MQTT: bridge.MQTTConfig{
			URLs: splitList(o.mqttURL), ClientID: o.clientID, Username: o.username, Password: o.password,
			ShareGroup: o.group, PlainSubscription: o.plainSub, Filters: splitList(o.filters), SessionExpiry: o.sessionExpiry,
			ReceiveMaximum: o.receiveMax, AckInterval: o.ackInterval, KeepAlive: o.keepAlive,
			ConnectTimeout: o.connectTimeout, CatchAll: o.catchAll,
		},
		Kafka:         kc,
		TopicRaw:      o.topicRaw,
		TopicDLQ:      o.topicDLQ,
		TopicTemplate: o.topicTemplate,
		Decode: schemas.DecodeOptions{
			MaxPayloadBytes: o.maxPayload, MaxMeasurements: o.maxMeasurements, MaxDepth: o.maxDepth,
			MaxFutureSkew: o.futureSkew, MaxPastSkew: o.pastSkew,
			Strict: o.strict, AcceptBools: o.acceptBools, NumericStrings: o.numericStrs,
		},
		Compression:      o.compression,
		Linger:           o.linger,
		BatchMaxBytes:    o.batchMaxBytes,
		DLQMaxValueBytes: o.dlqMaxValue,
		ShutdownTimeout:  o.shutdownTimout,
	}
	if cfg.MQTT.Filters == nil && o.filters != "" {
		cfg.MQTT.Filters = []string{}
	}
	// Zero values would silently mean "default": reject them here.
	var errs []error
	for _, c := range []struct {
		name string
		bad  bool
		val  string
	}{
		{"mqtt-receive-maximum", o.receiveMax <= 0, fmt.Sprint(o.receiveMax)},
		{"mqtt-session-expiry", o.sessionExpiry <= 0, o.sessionExpiry.String()},
		{"shutdown-timeout", o.shutdownTimout <= 0, o.shutdownTimout.String()},
		{"max-payload-bytes", o.maxPayload <= 0, fmt.Sprint(o.maxPayload)},
	} {
		if c.bad {
			errs = append(errs, settingErr(c.name, c.val, errors.New("must be positive")))
		}
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, &UsageError{fmt.Errorf("%w (settings: %s)", err, fieldFlagHint(err.Error()))})
	}
	if len(errs) > 0 {
		return cfg, &UsageError{errors.Join(errs...)}
	}
	return cfg.WithDefaults(), nil
}

// fieldFlagHint names the flags and variables behind the fields an error
// mentions.
func fieldFlagHint(msg string) string {
	var hints []string
	for _, ff := range bridgeFieldFlags {
		if strings.Contains(msg, ff.field+":") || strings.Contains(msg, ff.field+"/") {
			first := strings.SplitN(ff.flag, "/", 2)[0]
			hints = append(hints, fmt.Sprintf("%s → --%s (%s)", ff.field, ff.flag, EnvName(first)))
		}
	}
	if len(hints) == 0 {
		return "see iotpipe bridge --help"
	}
	return strings.Join(hints, ", ")
}

func runBridge(ctx context.Context, env Env, args []string) error {
	var o bridgeFlags
	log, err := parseStage(env, args, "iotpipe bridge", bridgeHelp, o.bind, &o.log)
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: mqtt %s client id %s, subscribing to %s at QoS 1 (receive maximum %d, session expiry %s); kafka %s → %s, dlq %s (%s, linger %s); metrics on %q\n",
			strings.Join(cfg.MQTT.URLs, ","), cfg.MQTT.ClientID, strings.Join(cfg.Subscriptions(), ","), cfg.MQTT.ReceiveMaximum, cfg.MQTT.SessionExpiry,
			strings.Join(cfg.Kafka.Brokers, ","), cfg.TopicRaw, cfg.TopicDLQ, cfg.Compression, cfg.Linger, o.http.c.Addr)
		return nil
	}
	srv := service.New(o.http.c, log)
	b, err := bridge.New(cfg, log, srv.Registry)
	if err != nil {
		return &UsageError{err}
	}
	srv.AddCheck("mqtt", b.MQTTReady)
	srv.AddCheck("kafka", b.KafkaReady)
	if runErr := serveWhile(ctx, srv, o.http.c.Addr, b.Run); runErr != nil {
		if errors.Is(runErr, bridge.ErrMissingTopic) {
			return fmt.Errorf("%w (--topic-raw %s=%q, --topic-dlq %s=%q)", runErr, EnvName("topic-raw"), cfg.TopicRaw, EnvName("topic-dlq"), cfg.TopicDLQ)
		}
		return runErr
	}
	return nil
}
