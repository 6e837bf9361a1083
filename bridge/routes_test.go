package bridge

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

func TestMatchFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		topics map[string]bool
	}{
		{"devices/+/telemetry", map[string]bool{
			"devices/d1/telemetry": true, "devices//telemetry": true, "devices/d1/telemetry/x": false,
			"devices/d1": false, "devices/d1/status": false, "Devices/d1/telemetry": false, "": false,
		}},
		{"devices/#", map[string]bool{
			"devices": true, "devices/": true, "devices/d1/telemetry": true, "devices/d1/shadow/update": true,
			"device": false, "devicesX/a": false, "other/devices/a": false,
		}},
		{"+/up", map[string]bool{"d/up": true, "$SYS/up": false, "/up": true, "d/up/x": false}},
		{"#", map[string]bool{"a": true, "a/b": true, "$SYS/x": false}},
		{"a/+/#", map[string]bool{"a/b": true, "a/b/c/d": true, "a": false}},
	} {
		levels := strings.Split(tc.filter, "/")
		for topic, want := range tc.topics {
			if got := matchFilter(levels, topic); got != want {
				t.Errorf("matchFilter(%q, %q) = %v, want %v", tc.filter, topic, got, want)
			}
		}
	}
}

func TestCatchAllFilters(t *testing.T) {
	for tmpl, want := range map[string]string{
		"devices/{device_id}/telemetry":     "devices/#",
		"tenants/+/{device_id}/+/telemetry": "tenants/#",
		"a/b/{device_id}":                   "a/b/#",
		"{device_id}/telemetry":             "",
		"+/{device_id}":                     "",
	} {
		got, ok := catchAllFilter(tmpl)
		if got != want || ok != (want != "") {
			t.Errorf("catchAllFilter(%q) = %q, %v; want %q", tmpl, got, ok, want)
		}
	}
	for _, tc := range []struct {
		f       string
		within  bool
		overlap bool
	}{
		{"devices/+/telemetry", true, true}, {"devices", true, true}, {"devices/#", true, true},
		{"other/+/x", false, false}, {"+/+/telemetry", false, true}, {"#", false, true}, {"$SYS/#", false, false},
		{"devicesX/+", false, false},
	} {
		if got := filterWithin(tc.f, "devices/#"); got != tc.within {
			t.Errorf("filterWithin(%q) = %v", tc.f, got)
		}
		if got := filtersOverlap(tc.f, "devices/#"); got != tc.overlap {
			t.Errorf("filtersOverlap(%q, devices/#) = %v", tc.f, got)
		}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/+/c", "a/b/+", true}, {"a/+", "a/b/c", false}, {"a", "a/#", true}, {"a/b", "+/c", false},
		{"+/x", "$SYS/x", false}, {"$SYS/+", "$SYS/x", true},
	} {
		if got := filtersOverlap(tc.a, tc.b); got != tc.want || filtersOverlap(tc.b, tc.a) != tc.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestCatchAllSubscriptions(t *testing.T) {
	c := validConfig()
	c.MQTT.CatchAll = true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Subscriptions(), ","); got != "$share/iotpipe/devices/#" {
		t.Errorf("subscriptions with the catch-all: %s", got)
	}
	// Stale: the template's filter in both forms, and the plain catch-all.
	if got := strings.Join(c.staleFilters(), ","); got != "devices/+/telemetry,$share/iotpipe/devices/+/telemetry,devices/#" {
		t.Errorf("stale filters: %s", got)
	}
	c.MQTT.Filters = []string{"devices/+/telemetry", "site/+/up"}
	c.MQTT.PlainSubscription = true
	if got := strings.Join(c.Subscriptions(), ","); got != "devices/#,site/+/up" {
		t.Errorf("subscriptions with an extra filter: %s", got)
	}
	off := validConfig()
	off.MQTT.CatchAll = false
	if got := strings.Join(off.Subscriptions(), ","); got != "$share/iotpipe/devices/+/telemetry" {
		t.Errorf("subscriptions without the catch-all: %s", got)
	}
	if got := strings.Join(off.staleFilters(), ","); got != "devices/+/telemetry,devices/#,$share/iotpipe/devices/#" {
		t.Errorf("stale filters without the catch-all: %s", got)
	}
	for _, mod := range []struct {
		field string
		mod   func(*Config)
	}{
		{"MQTT.CatchAll", func(c *Config) { c.TopicTemplate = "{device_id}/telemetry" }},
		{"MQTT.Filters", func(c *Config) { c.MQTT.Filters = []string{"+/+/telemetry"} }},
	} {
		c := validConfig()
		c.MQTT.CatchAll = true
		mod.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), mod.field+":") {
			t.Errorf("%s: Validate() = %v", mod.field, err)
		}
	}
}

// The route table: the template's topics go to the telemetry handler
// (their own reasons when they fail), anything else to the DLQ as
// unexpected_topic with the original bytes and topic; ignored fields are
// counted by reason.
func TestRoutes(t *testing.T) {
	cfg := validConfig()
	cfg.MQTT.CatchAll = true
	cfg.TopicRaw, cfg.TopicDLQ = "raw", "dlq"
	b, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	valid := `{"ts":"2026-11-27T13:59:58Z","temp":21.5,"fw":"1.2.3","online":true}`
	for _, tc := range []struct {
		topic, payload string
		topicOut       string
		reason         schemas.Reason
	}{
		{"devices/d1/telemetry", valid, "raw", ""},
		{"devices/" + strings.Repeat("x", 129) + "/telemetry", valid, "dlq", schemas.ReasonNoDeviceID},
		{"devices/d1/telemetry", `{"ts":"2026-11-27T13:59:58Z"}`, "dlq", schemas.ReasonNoMeasurements},
		{"devices/d1/status", valid, "dlq", schemas.ReasonUnexpectedTopic},
		{"devices/d1/shadow/update", "\x00binary", "dlq", schemas.ReasonUnexpectedTopic},
		{"devices", valid, "dlq", schemas.ReasonUnexpectedTopic},
	} {
		p := &paho.Publish{Topic: tc.topic, Payload: []byte(tc.payload)}
		rt := match(b.rt, tc.topic)
		if rt == nil {
			rt = &route{handle: func(e *inflight, now time.Time) (*kgo.Record, bool) { return b.unexpectedTopic(e.p, now), true }}
		}
		rec, dead := rt.handle(&inflight{p: p}, now)
		if rec.Topic != tc.topicOut || dead != (tc.topicOut == "dlq") {
			t.Errorf("%s: record to %s (dead %v), want %s", tc.topic, rec.Topic, dead, tc.topicOut)
			continue
		}
		if tc.reason == "" {
			continue
		}
		dl, err := schemas.RecordDeadLetter(rec)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Reason != tc.reason || string(dl.Value) != tc.payload || dl.SourceMQTTTopic != tc.topic {
			t.Errorf("%s: dead letter %+v", tc.topic, dl)
		}
		if tc.reason == schemas.ReasonUnexpectedTopic && (dl.Key != nil || !strings.Contains(dl.Error, "telemetry devices/+/telemetry")) {
			t.Errorf("%s: key %q, error %q", tc.topic, dl.Key, dl.Error)
		}
	}
	if n := testutil.ToFloat64(b.m.rejected.WithLabelValues(string(schemas.ReasonUnexpectedTopic))); n != 3 {
		t.Errorf("rejected_total{unexpected_topic} = %v, want 3", n)
	}
	for reason, want := range map[string]float64{"string_value": 1, "bool_value": 1, "numeric_string": 0} {
		if n := testutil.ToFloat64(b.m.ignored.WithLabelValues(reason)); n != want {
			t.Errorf("ignored_fields_total{%s} = %v, want %v", reason, n, want)
		}
	}
}

// The telemetry handler builds in the message's window entry the record
// schemas.RawRecord would make, and the entry's next message reuses its
// room without disturbing a record of another entry.
func TestTelemetryRecordInEntry(t *testing.T) {
	cfg := validConfig()
	cfg.TopicRaw = "raw"
	b, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	want := func(topic, payload string) *kgo.Record {
		var r schemas.Reading
		if err := b.dec.Decode(topic, []byte(payload), now, &r); err != nil {
			t.Fatal(err)
		}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, &r), &r, topic)
		rec.Topic = "raw"
		return rec
	}
	same := func(got, want *kgo.Record) bool {
		return got.Topic == want.Topic && string(got.Key) == string(want.Key) && string(got.Value) == string(want.Value) &&
			got.Timestamp.Equal(want.Timestamp) && reflect.DeepEqual(got.Headers, want.Headers)
	}
	b.win = window{ring: make([]*inflight, 2)}
	msgs := []struct{ topic, payload string }{
		{"devices/d1/telemetry", `{"ts":"2026-11-27T13:59:58Z","temp":21.5}`},
		{"devices/device-two/telemetry", `{"ts":"2026-11-27T13:59:59Z","metrics":{"temp":21.6,"hum":40}}`},
		{"devices/d3/telemetry", `{"ts":"2026-11-27T14:00:00Z","temp":21.7,"fw":"1.2.3"}`},
	}
	var recs []*kgo.Record
	var entries []*inflight
	for i, m := range msgs {
		e := b.win.push(&paho.Publish{Topic: m.topic, Payload: []byte(m.payload), PacketID: uint16(i + 1)}, nil, now)
		rec, dead := b.telemetry(e, now)
		if dead || !same(rec, want(m.topic, m.payload)) {
			t.Fatalf("%s: record %+v (dead %v), want %+v", m.topic, rec, dead, want(m.topic, m.payload))
		}
		recs, entries = append(recs, rec), append(entries, e)
		if i == 0 {
			b.win.complete(e, func(*inflight) {}) // frees the first entry for the third message
		}
	}
	if entries[2] != entries[0] {
		t.Fatalf("the third message did not reuse the released entry")
	}
	if !same(recs[1], want(msgs[1].topic, msgs[1].payload)) {
		t.Fatalf("the second record changed when the third was built: %+v", recs[1])
	}
}
