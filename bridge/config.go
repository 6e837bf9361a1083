package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/schemas"
)

// Defaults of Config (see DefaultConfig).
const (
	DefaultShareGroup       = "iotpipe"
	DefaultSessionExpiry    = 24 * time.Hour
	DefaultReceiveMaximum   = 1000
	DefaultAckInterval      = 0
	DefaultKeepAlive        = 30 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultReconnectMin     = 500 * time.Millisecond
	DefaultReconnectMax     = 5 * time.Second
	DefaultCompression      = "lz4"
	DefaultLinger           = 20 * time.Millisecond
	DefaultBatchMaxBytes    = 1 << 20
	DefaultDLQMaxValueBytes = 512 << 10
	DefaultShutdownTimeout  = 30 * time.Second
	// DefaultCatchAll is the default of MQTTConfig.CatchAll in the
	// command: on. The zero Config has it off (false means off).
	DefaultCatchAll = true
)

// ClientIDPrefix is the start of the default MQTT client id; the host name
// follows it, so that a restarted bridge resumes its own session.
const ClientIDPrefix = "iotpipe-bridge-"

// DefaultClientID returns ClientIDPrefix followed by the host name.
func DefaultClientID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "local"
	}
	return ClientIDPrefix + h
}

// MQTTConfig is how the bridge reaches the MQTT broker.
type MQTTConfig struct {
	// URLs are the broker addresses (mqtt://host:port, or mqtts://host:port
	// for TLS), tried in order.
	URLs []string
	// ClientID must be stable across restarts of one bridge and unique
	// among the bridges: the broker keeps the session (subscriptions and
	// unacknowledged messages) under it.
	ClientID string
	// Username and Password authenticate the bridge; empty means none.
	// With a client certificate the broker usually takes the user name
	// from it (Mosquitto's use_identity_as_username) and ignores these.
	Username, Password string
	// CAFile, CertFile, KeyFile and ServerName are for mqtts:// URLs: the
	// CA the broker's certificate must chain to (empty: the system's
	// roots), the bridge's client certificate and key (PEM, both or
	// neither), and the name the broker's certificate must hold (empty:
	// the URL's host). The files are read again on every (re)connect, so
	// replacing them rotates the identity without a restart.
	CAFile, CertFile, KeyFile, ServerName string
	// ShareGroup is the shared-subscription group: bridges of one group
	// split the messages ($share/<group>/<filter>).
	ShareGroup string
	// PlainSubscription subscribes to the filters themselves instead of
	// $share/<ShareGroup>/<filter>: for a single bridge on a broker that
	// does not keep shared subscriptions across its own restart
	// (every Mosquitto 2.0.x), where a plain subscription of a
	// persistent session survives the restart and nothing published
	// before the bridge reconnects is dropped. Every bridge with a plain
	// subscription receives every message, so run only one.
	PlainSubscription bool
	// Filters are the MQTT topic filters subscribed to (without the
	// $share prefix). Empty subscribes to the filter of the topic template.
	Filters []string
	// CatchAll subscribes to the template's static prefix followed by '#'
	// (devices/# for devices/{device_id}/telemetry) in place of the
	// Filters it covers, and sends what matches no route to the DLQ as
	// unexpected_topic, so that nothing a device publishes under the
	// prefix is dropped unseen (see routes.go).
	CatchAll bool
	// SessionExpiry is how long the broker keeps the session, and queues
	// QoS 1 messages for it, while the bridge is disconnected.
	SessionExpiry time.Duration
	// ReceiveMaximum is the MQTT v5 Receive Maximum sent in CONNECT: the
	// most QoS 1 messages the broker sends without a PUBACK. It is the
	// bridge's in-flight limit, bounding memory while Kafka is slow or
	// down, and the bound on duplicates after a crash. It also bounds the
	// rate: a message is in flight from its receipt until Kafka
	// acknowledged its record, so the bridge moves at most ReceiveMaximum
	// / that time messages per second. While half the slots or more are
	// taken the producer does not linger (flushIfBusy), so that time is
	// Kafka's acknowledgement alone (~2 ms here) at full speed. 4,000 made
	// Mosquitto 2.0.11 redeliver thousands of acknowledged messages in 6
	// of 20 benchmark drains (its in-flight bookkeeping, docs/brokers.md);
	// 1,000 in none.
	ReceiveMaximum int
	// AckInterval is how often acknowledgements (PUBACKs), released in
	// receive order once Kafka stored their records, are sent: 0 writes
	// them as soon as they are released, together with those released
	// while the previous write was under way; a positive interval waits
	// that long after each write to the broker so that more go out
	// together (fewer writes, later PUBACKs).
	AckInterval time.Duration
	// KeepAlive is the MQTT keep-alive period.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts.
	ReconnectMin, ReconnectMax time.Duration
}

// Config configures a Bridge. Start from DefaultConfig: a zero field means
// zero (or is refused by Validate), never a default.
type Config struct {
	MQTT  MQTTConfig
	Kafka kafkax.Config

	// TopicRaw and TopicDLQ are the Kafka topics of accepted readings and
	// of rejected messages.
	TopicRaw, TopicDLQ string
	// TopicShadow receives the devices' shadow requests
	// (devices/<id>/shadow/update and /get, see ShadowFilters); empty:
	// no shadow route (those topics are then unexpected).
	TopicShadow string
	// TopicTemplate maps MQTT topics to device ids
	// (default schemas.DefaultTopicTemplate).
	TopicTemplate string
	// Decode holds the payload limits; Decode.Topic is ignored: New sets
	// it from TopicTemplate.
	Decode schemas.DecodeOptions

	// Compression is the Kafka batch compression: none, gzip, snappy, lz4
	// or zstd.
	Compression string
	// Linger is how long the producer waits to fill a batch while fewer
	// than half the in-flight slots are taken (beyond, it sends at once).
	// 20 ms (was 5): at 12,000 msg/s the broker spent ~8 µs less CPU per
	// message (#19); a device's PUBACK waits up to this much longer.
	Linger time.Duration
	// BatchMaxBytes is the largest record batch the producer builds.
	BatchMaxBytes int
	// DLQMaxValueBytes caps the original bytes kept in a dead letter; a
	// longer payload is cut and the error header says so, because a record
	// the DLQ topic refuses would stop the bridge.
	DLQMaxValueBytes int

	// Registry is the strict mode: readings of devices that are not in
	// the registry or not active go to the DLQ (unknown_device).
	Registry RegistryConfig

	// ShutdownTimeout bounds the drain on shutdown: in-flight records are
	// flushed and their acknowledgements sent within it; what is left is
	// not acknowledged, and the broker redelivers it.
	ShutdownTimeout time.Duration

	// HeartbeatInterval is how often the bridge writes a heartbeat to
	// every partition of TopicRaw (see heartbeat.go): the processor's
	// clock for device silence, which stops while the ingest path is
	// stalled. 0 writes none (the processor then judges silence by its
	// wall clock). Default 1s.
	HeartbeatInterval time.Duration
}

// RegistryConfig is the bridge's strict mode (--require-registered).
type RegistryConfig struct {
	// Require turns the check on.
	Require bool
	// DSN is the database URL of a role that may read the registry (the
	// reader role is enough); Schema holds it.
	DSN, Schema string
	// Refresh is how often the set of active devices is reloaded even
	// without a change notice (LISTEN iotpipe_registry brings changes at
	// once).
	Refresh time.Duration
}

// DefaultConfig returns every default of Config: the local broker and
// Kafka, client id from the host name, the standard topics and template.
func DefaultConfig() Config {
	return Config{
		MQTT: MQTTConfig{
			URLs:           []string{"mqtt://localhost:1883"},
			ClientID:       DefaultClientID(),
			ShareGroup:     DefaultShareGroup,
			SessionExpiry:  DefaultSessionExpiry,
			ReceiveMaximum: DefaultReceiveMaximum,
			AckInterval:    DefaultAckInterval,
			KeepAlive:      DefaultKeepAlive,
			ConnectTimeout: DefaultConnectTimeout,
			ReconnectMin:   DefaultReconnectMin,
			ReconnectMax:   DefaultReconnectMax,
			CatchAll:       DefaultCatchAll,
		},
		Kafka:            kafkax.DefaultConfig("iotpipe-bridge"),
		TopicRaw:         schemas.TopicRaw,
		TopicDLQ:         schemas.TopicDLQ,
		TopicTemplate:    schemas.DefaultTopicTemplate,
		Decode:           schemas.DefaultDecodeOptions(),
		Compression:      DefaultCompression,
		Linger:           DefaultLinger,
		BatchMaxBytes:    DefaultBatchMaxBytes,
		DLQMaxValueBytes: DefaultDLQMaxValueBytes,
		Registry:         RegistryConfig{DSN: "postgres://grafana@localhost:5432/iotpipe?sslmode=verify-full", Schema: "iotpipe", Refresh: time.Minute},
		ShutdownTimeout:  DefaultShutdownTimeout,

		HeartbeatInterval: DefaultHeartbeatInterval,
	}
}

// filters are the topic filters subscribed to: MQTT.Filters, or the
// filter of the topic template when there are none.
func (c *Config) filters() []string {
	var out []string
	if len(c.MQTT.Filters) > 0 {
		out = append(out, c.MQTT.Filters...)
	} else if tt, err := schemas.ParseTopicTemplate(c.TopicTemplate); err == nil {
		out = append(out, tt.Filter())
	}
	if c.TopicShadow != "" {
		for _, f := range ShadowFilters {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// Validate reports every invalid field of c as a *config.FieldError.
// A zero is never replaced by a default: where zero is not a valid value
// it is reported.
func (c *Config) Validate() error {
	var p config.Problems
	m := &c.MQTT
	p.Check(len(m.URLs) == 0, "MQTT.URLs", "no broker URL given")
	anyTLS := false
	for _, s := range m.URLs {
		u, err := parseBrokerURL(s)
		if err != nil {
			p.Add("MQTT.URLs", "%v", err)
		} else if u.Scheme == "mqtts" {
			anyTLS = true
		}
	}
	if anyTLS {
		var fe *certs.FileError
		for _, err := range flatten(m.tlsFiles().Check()) {
			if errors.As(err, &fe) {
				p.Add("MQTT."+fe.Field, "%v", fe.Err)
			}
		}
	} else if len(m.URLs) > 0 && (m.CAFile != "" || m.CertFile != "" || m.KeyFile != "" || m.ServerName != "") {
		p.Add("MQTT.URLs", "TLS files or a server name are set but no URL is mqtts://; use mqtts://host:port (or unset {MQTT.CAFile}, {MQTT.CertFile}, {MQTT.KeyFile}, {MQTT.ServerName})")
	}
	if m.ClientID == "" || len(m.ClientID) > 256 || strings.ContainsAny(m.ClientID, "/+#\x00") {
		p.Add("MQTT.ClientID", "%q must be 1 to 256 bytes without '/', '+', '#' or NUL", m.ClientID)
	}
	if m.ShareGroup == "" || strings.ContainsAny(m.ShareGroup, "/+#\x00") {
		p.Add("MQTT.ShareGroup", "%q must be non-empty without '/', '+', '#' or NUL", m.ShareGroup)
	}
	for _, f := range m.Filters {
		if err := validFilter(f); err != nil {
			p.Add("MQTT.Filters", "%v", err)
		}
	}
	c.checkCatchAll(&p)
	if m.SessionExpiry < time.Second || m.SessionExpiry > time.Duration(1<<32-1)*time.Second {
		p.Add("MQTT.SessionExpiry", "%s must be between 1s and 2^32-1 seconds", m.SessionExpiry)
	}
	if m.ReceiveMaximum < 1 || m.ReceiveMaximum > 65535 {
		p.Add("MQTT.ReceiveMaximum", "%d must be between 1 and 65535", m.ReceiveMaximum)
	}
	if m.AckInterval < 0 || m.AckInterval > 10*time.Second {
		p.Add("MQTT.AckInterval", "%s must be between 0 and 10s", m.AckInterval)
	}
	if m.KeepAlive < time.Second || m.KeepAlive > 65535*time.Second {
		p.Add("MQTT.KeepAlive", "%s must be between 1s and 65535s", m.KeepAlive)
	}
	p.Check(m.ConnectTimeout <= 0, "MQTT.ConnectTimeout", "must be positive")
	p.Check(m.ReconnectMin <= 0, "MQTT.ReconnectMin", "must be positive")
	p.Check(m.ReconnectMax < m.ReconnectMin, "MQTT.ReconnectMax", "must be at least {MQTT.ReconnectMin}")
	p.Nested("Kafka", c.Kafka.Validate())
	if err := validTopic(c.TopicRaw); err != nil {
		p.Add("TopicRaw", "%v", err)
	}
	if err := validTopic(c.TopicDLQ); err != nil {
		p.Add("TopicDLQ", "%v", err)
	}
	if c.TopicShadow != "" {
		if err := validTopic(c.TopicShadow); err != nil {
			p.Add("TopicShadow", "%v", err)
		} else if c.TopicShadow == c.TopicRaw || c.TopicShadow == c.TopicDLQ {
			p.Add("TopicShadow", "must differ from {TopicRaw} and {TopicDLQ}")
		}
	}
	if c.TopicRaw == c.TopicDLQ {
		p.Add("TopicDLQ", "must differ from {TopicRaw} (%q)", c.TopicRaw)
	}
	if _, err := schemas.ParseTopicTemplate(c.TopicTemplate); err != nil {
		p.Add("TopicTemplate", "%v", err)
	} else if len(c.filters()) == 0 {
		p.Add("MQTT.Filters", "no topic filter (and the topic template gives none)")
	}
	d := c.Decode
	d.Topic = schemas.MustParseTopicTemplate(schemas.DefaultTopicTemplate) // New sets it from TopicTemplate
	p.Nested("Decode", d.Validate())
	if _, err := compressionCodec(c.Compression); err != nil {
		p.Add("Compression", "%v", err)
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		p.Add("Linger", "%s must be between 0 and 1m", c.Linger)
	}
	if c.BatchMaxBytes < 1<<10 || c.BatchMaxBytes > 1<<30 {
		p.Add("BatchMaxBytes", "%d must be between 1 KiB and 1 GiB", c.BatchMaxBytes)
	}
	if c.DLQMaxValueBytes < 1<<10 || c.DLQMaxValueBytes > c.BatchMaxBytes-(16<<10) {
		p.Add("DLQMaxValueBytes", "%d must be between 1 KiB and {BatchMaxBytes} - 16KiB (%d)", c.DLQMaxValueBytes, c.BatchMaxBytes-(16<<10))
	}
	if r := c.Registry; r.Require {
		if _, err := pgx.ParseConfig(r.DSN); err != nil {
			p.Add("Registry.DSN", "invalid database URL: %v", err)
		}
		p.Check(r.Schema == "", "Registry.Schema", "must not be empty")
		p.Check(r.Refresh < time.Second, "Registry.Refresh", "must be at least 1s")
	}
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	if h := c.HeartbeatInterval; h != 0 && (h < 10*time.Millisecond || h > time.Minute) {
		p.Add("HeartbeatInterval", "%s must be 0 (off) or between 10ms and 1m", h)
	}
	return p.Err()
}

func parseBrokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", s, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
	case "mqtts", "ssl", "tls":
		u.Scheme = "mqtts"
	default:
		return nil, fmt.Errorf("broker URL %q: scheme must be mqtt:// (plain) or mqtts:// (TLS)", s)
	}
	if u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("broker URL %q: want mqtt://host:port or mqtts://host:port", s)
	}
	return u, nil
}

// tlsFiles are the TLS client files of the MQTT connection.
func (m *MQTTConfig) tlsFiles() certs.ClientFiles {
	return certs.ClientFiles{CAFile: m.CAFile, CertFile: m.CertFile, KeyFile: m.KeyFile, ServerName: m.ServerName}
}

// flatten lists the errors of an errors.Join tree.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func validFilter(f string) error {
	if f == "" || strings.ContainsRune(f, 0) {
		return fmt.Errorf("topic filter %q is empty or holds NUL", f)
	}
	if strings.HasPrefix(f, "$share/") {
		return fmt.Errorf("topic filter %q: give it without $share/<group>/ (see ShareGroup)", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("topic filter %q: '#' must be the whole last level", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("topic filter %q: '+' must be a whole level", f)
		}
	}
	return nil
}

func validTopic(t string) error {
	if t == "" || len(t) > 249 {
		return fmt.Errorf("topic %q must be 1 to 249 characters", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic %q may hold only [a-zA-Z0-9._-]", t)
		}
	}
	return nil
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("compression %q: want none, gzip, snappy, lz4 or zstd", name)
}

// Subscriptions are the topic filters the bridge subscribes to:
// $share/<ShareGroup>/<filter> for each filter (with MQTT.CatchAll, the
// catch-all in place of the filters it covers), or the filters themselves
// with MQTT.PlainSubscription.
func (c *Config) Subscriptions() []string {
	filters := c.subscribedFilters()
	out := make([]string, len(filters))
	for i, f := range filters {
		if c.MQTT.PlainSubscription {
			out[i] = f
		} else {
			out[i] = "$share/" + c.MQTT.ShareGroup + "/" + f
		}
	}
	return out
}
