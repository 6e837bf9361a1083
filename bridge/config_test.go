package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

func validConfig() Config {
	c := DefaultConfig()
	c.MQTT.URLs = []string{"mqtt://127.0.0.1:1883"}
	c.MQTT.ClientID = "b1"
	c.Kafka.Brokers = []string{"127.0.0.1:9092"}
	return c
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.Subscriptions(); len(got) != 1 || got[0] != "$share/iotpipe/devices/#" { // the catch-all is on by default
		t.Fatalf("default subscription %v", got)
	}
	if c.TopicRaw != schemas.TopicRaw || c.TopicDLQ != schemas.TopicDLQ || c.MQTT.ReceiveMaximum != DefaultReceiveMaximum ||
		c.MQTT.SessionExpiry != 24*time.Hour || c.MQTT.ShareGroup != "iotpipe" || c.HeartbeatInterval != time.Second {
		t.Fatalf("defaults %+v", c)
	}
	if !strings.HasPrefix(DefaultClientID(), ClientIDPrefix) {
		t.Fatal(DefaultClientID())
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"MQTT.URLs", func(c *Config) { c.MQTT.URLs = []string{"ws://x:1"} }},
		{"MQTT.URLs", func(c *Config) { c.MQTT.URLs = nil }},
		{"MQTT.ShareGroup", func(c *Config) { c.MQTT.ShareGroup = "a/b" }},
		{"MQTT.Filters", func(c *Config) { c.MQTT.Filters = []string{"a/#/b"} }},
		{"MQTT.Filters", func(c *Config) { c.MQTT.Filters = []string{"$share/g/a"} }},
		{"MQTT.ReceiveMaximum", func(c *Config) { c.MQTT.ReceiveMaximum = 70000 }},
		{"MQTT.SessionExpiry", func(c *Config) { c.MQTT.SessionExpiry = time.Millisecond }},
		{"Kafka.Brokers", func(c *Config) { c.Kafka.Brokers = []string{"nohost"} }},
		{"TopicDLQ", func(c *Config) { c.TopicDLQ = "t"; c.TopicRaw = "t" }},
		{"TopicRaw", func(c *Config) { c.TopicRaw = "bad topic" }},
		{"TopicTemplate", func(c *Config) { c.TopicTemplate = "devices/#" }},
		{"Compression", func(c *Config) { c.Compression = "brotli" }},
		{"HeartbeatInterval", func(c *Config) { c.HeartbeatInterval = time.Millisecond }},
		{"HeartbeatInterval", func(c *Config) { c.HeartbeatInterval = time.Hour }},
		{"Decode.MaxDepth", func(c *Config) { c.Decode.MaxDepth = 1 }},
		{"Decode.MaxFutureSkew", func(c *Config) { c.Decode.MaxFutureSkew = 0 }},
		{"MQTT.ReceiveMaximum", func(c *Config) { c.MQTT.ReceiveMaximum = 0 }},
		{"Kafka.DialTimeout", func(c *Config) { c.Kafka.DialTimeout = 0 }},
		{"DLQMaxValueBytes", func(c *Config) { c.DLQMaxValueBytes = 10 }},
	} {
		c := validConfig()
		tc.mod(&c)
		err := c.Validate()
		found := false
		for _, fe := range config.Fields(err) {
			found = found || fe.Field == tc.field
		}
		if !found {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

// A rejected message becomes a dead letter with the original bytes (cut
// when too long), the reason, the device id as key and the source topic.
func TestDeadLetterRecord(t *testing.T) {
	cfg := validConfig()
	cfg.TopicDLQ = "dlq"
	cfg.DLQMaxValueBytes = 1 << 10
	b, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		topic   string
		payload string
		reason  schemas.Reason
		key     string
		cut     bool
	}{
		{"devices/d1/telemetry", `{"ts":`, schemas.ReasonMalformedJSON, "d1", false},
		{"devices/d1/telemetry", ``, schemas.ReasonEmptyPayload, "d1", false},
		{"devices/d1/x", `{"ts":1,"a":1}`, schemas.ReasonNoDeviceID, "", false},
		{"devices/d2/telemetry", `{"ts":1764252000,"t":1,"pad":"` + strings.Repeat("x", 70<<10) + `"}`, schemas.ReasonPayloadTooLarge, "d2", true},
	} {
		var r schemas.Reading
		derr := b.dec.Decode(tc.topic, []byte(tc.payload), now, &r)
		if derr == nil {
			t.Fatalf("%s: decoded", tc.payload)
		}
		rec := b.deadLetter(&paho.Publish{Topic: tc.topic, Payload: []byte(tc.payload)}, derr, now)
		dl, err := schemas.RecordDeadLetter(rec)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Topic != "dlq" || dl.Reason != tc.reason || string(dl.Key) != tc.key || dl.Stage != schemas.StageBridge ||
			dl.SourceMQTTTopic != tc.topic || !dl.Time.Equal(now) {
			t.Errorf("%.30q: dead letter %+v", tc.payload, dl)
		}
		if tc.cut {
			if len(dl.Value) != 1<<10 || !strings.Contains(dl.Error, "cut") {
				t.Errorf("long payload kept %d bytes, error %q", len(dl.Value), dl.Error)
			}
		} else if string(dl.Value) != tc.payload {
			t.Errorf("value %q, want %q", dl.Value, tc.payload)
		}
	}
}
