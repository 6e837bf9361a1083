//go:build integration

package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// This file tests, against the real Mosquitto and Kafka, what used to be
// dropped without a trace: ignored payload fields (now counted, or
// rejected in strict mode) and topics outside the template (now in the
// DLQ through the catch-all subscription).

// silentCases are payloads whose fields the bridge used to ignore without
// a count, each with the field's IgnoreReason.
var silentCases = []struct {
	name, field string
	why         schemas.IgnoreReason
	extra       string // the ignored member(s), added to a valid payload
}{
	{"numeric string", "humidity", schemas.IgnoredNumericString, `"humidity":"21.5"`},
	{"string", "fw", schemas.IgnoredStringValue, `"fw":"1.4.2"`},
	{"bool", "door_open", schemas.IgnoredBoolValue, `"door_open":true`},
	{"nested object", "gps", schemas.IgnoredObjectValue, `"gps":{"lat":48.1,"lon":11.5}`},
	{"NaN string", "pressure", schemas.IgnoredNonFiniteString, `"pressure":"NaN"`},
	{"array", "samples", schemas.IgnoredArrayValue, `"samples":[1,2,3]`},
	{"null", "note", schemas.IgnoredNullValue, `"note":null`},
	{"beside metrics", "battery", schemas.IgnoredBesideMetrics, `"battery":3.7`},
}

// silentPayload is the payload of silentCases[i] with sequence number seq.
func silentPayload(i int, seq int) string {
	c := silentCases[i]
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	if c.why == schemas.IgnoredBesideMetrics {
		return fmt.Sprintf(`{"ts":%q,"seq":%d,"metrics":{"temp":21.5},%s}`, ts, seq, c.extra)
	}
	return fmt.Sprintf(`{"ts":%q,"seq":%d,"temp":21.5,%s}`, ts, seq, c.extra)
}

// publisher is a QoS 1 MQTT client that checks every PUBACK.
type publisher struct {
	t *testing.T
	c *paho.Client
}

func newPublisher(t *testing.T, env *testenv.Env) *publisher {
	return &publisher{t: t, c: env.MQTTClient(t, env.MQTTUsername, env.MQTTPassword, nil)}
}

// publish sends payload at QoS 1 and fails unless the broker answered
// 0x00: "no matching subscribers" (0x10) means it dropped the message.
func (p *publisher) publish(topic, payload string) {
	p.t.Helper()
	ctx := testenv.Context(p.t, 10*time.Second)
	resp, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if err != nil {
		p.t.Fatalf("publish to %s: %v", topic, err)
	}
	if resp.ReasonCode != 0 {
		p.t.Fatalf("publish to %s: PUBACK reason 0x%02x (0x10: no subscriber matched, the broker dropped it)", topic, resp.ReasonCode)
	}
}

// consumed is one record read back from the raw or DLQ topic.
type consumed struct {
	topic   string
	reading schemas.Reading
	dl      *schemas.DeadLetter
}

// consume reads the setup's raw and DLQ topics from the start until want
// records arrived and nothing more came for a second (to catch
// duplicates), or fails after timeout.
func (s *setup) consume(t *testing.T, want int, timeout time.Duration) []consumed {
	t.Helper()
	cl := s.env.Kafka(t, kgo.ConsumeTopics(s.raw, s.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []consumed
	var dec schemas.RawDecoder
	deadline := time.Now().Add(timeout)
	var quietSince time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(rec *kgo.Record) {
			if schemas.IsHeartbeat(rec.Headers) {
				return
			}
			n++
			c := consumed{topic: rec.Topic}
			if rec.Topic == s.raw {
				if err := dec.Decode(rec.Value, &c.reading); err != nil {
					t.Fatalf("raw record does not decode: %v", err)
				}
				c.reading = *c.reading.Clone()
			} else {
				dl, err := schemas.RecordDeadLetter(rec)
				if err != nil {
					t.Fatalf("dlq record: %v", err)
				}
				c.dl = dl
			}
			out = append(out, c)
		})
		switch {
		case n > 0:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = time.Now()
		}
		if len(out) >= want && !quietSince.IsZero() && time.Since(quietSince) > time.Second {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d records, want %d", timeout, len(out), want)
		}
	}
}

// counter returns the value of a counter with the given label in reg.
func counter(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// Each formerly silent case is accepted, arrives once in telemetry.raw
// with its ignored_fields count, and is counted by reason in
// iotpipe_bridge_ignored_fields_total.
func TestBridgeIgnoredFieldsCounted(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	r := startBridge(t, s.config(t, ""))
	pub := newPublisher(t, env)
	const per = 3
	for round := range per {
		for i := range silentCases {
			pub.publish(s.prefix+"/dev-"+strconv.Itoa(i)+"/telemetry", silentPayload(i, round))
		}
	}
	got := s.consume(t, per*len(silentCases), time.Minute)
	seen := map[string]int{}
	for _, c := range got {
		if c.topic != s.raw {
			t.Fatalf("dead letter %s: %s", c.dl.Reason, c.dl.Error)
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(c.reading.DeviceID, "dev-"))
		if c.reading.IgnoredFields != 1 {
			t.Errorf("%s: ignored_fields %d, want 1", silentCases[i].name, c.reading.IgnoredFields)
		}
		if v, ok := c.reading.Value("temp"); !ok || v != 21.5 || len(c.reading.Measurements) != 1 {
			t.Errorf("%s: measurements %v", silentCases[i].name, c.reading.Measurements)
		}
		seen[fmt.Sprint(c.reading.DeviceID, "/", c.reading.Seq)]++
	}
	if len(seen) != per*len(silentCases) || len(got) != len(seen) {
		t.Errorf("%d records, %d distinct messages, want %d once each", len(got), len(seen), per*len(silentCases))
	}
	for _, c := range silentCases {
		if n := counter(t, r.reg, "iotpipe_bridge_ignored_fields_total", "reason", c.why.String()); n != per {
			t.Errorf("iotpipe_bridge_ignored_fields_total{reason=%q} = %v, want %d", c.why, n, per)
		}
	}
}

// With strict payloads every formerly silent case goes to the DLQ as
// ignored_field, naming the field, once; a clean payload still passes.
func TestBridgeStrictPayloads(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	cfg.Decode.Strict = true
	r := startBridge(t, cfg)
	pub := newPublisher(t, env)
	for i := range silentCases {
		pub.publish(s.prefix+"/dev-"+strconv.Itoa(i)+"/telemetry", silentPayload(i, 1))
	}
	pub.publish(s.prefix+"/clean/telemetry", `{"ts":"`+time.Now().UTC().Format(time.RFC3339)+`","seq":1,"temp":21.5,"tags":{"fw":"1.4.2"}}`)
	got := s.consume(t, len(silentCases)+1, time.Minute)
	dead := map[string]int{}
	for _, c := range got {
		if c.topic == s.raw {
			if c.reading.DeviceID != "clean" {
				t.Errorf("strict bridge accepted %+v", c.reading)
			}
			continue
		}
		dev := strings.Split(c.dl.SourceMQTTTopic, "/")[1]
		i, _ := strconv.Atoi(strings.TrimPrefix(dev, "dev-"))
		want := silentCases[i]
		if c.dl.Reason != schemas.ReasonIgnoredField || !strings.Contains(c.dl.Error, strconv.Quote(want.field)) ||
			!strings.Contains(c.dl.Error, want.why.String()) || string(c.dl.Key) != dev {
			t.Errorf("%s: dead letter %s %q (key %q)", want.name, c.dl.Reason, c.dl.Error, c.dl.Key)
		}
		if string(c.dl.Value) == "" || !strings.Contains(string(c.dl.Value), want.extra) {
			t.Errorf("%s: dead letter value %q is not the original payload", want.name, c.dl.Value)
		}
		dead[dev]++
	}
	if len(dead) != len(silentCases) || len(got) != len(silentCases)+1 {
		t.Errorf("%d records, dead letters by device %v; want each case once and the clean one", len(got), dead)
	}
	if n := counter(t, r.reg, "iotpipe_bridge_rejected_total", "reason", string(schemas.ReasonIgnoredField)); n != float64(len(silentCases)) {
		t.Errorf("rejected_total{ignored_field} = %v, want %d", n, len(silentCases))
	}
}

// --accept-bools and --numeric-strings make measurements of booleans and
// numeric strings; a "NaN" string then rejects the message.
func TestBridgeAcceptBoolsNumericStrings(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	cfg.Decode.AcceptBools, cfg.Decode.NumericStrings = true, true
	startBridge(t, cfg)
	pub := newPublisher(t, env)
	ts := time.Now().UTC().Format(time.RFC3339)
	pub.publish(s.prefix+"/flat/telemetry", `{"ts":"`+ts+`","temp":"21.5","door_open":true,"alarm":false}`)
	pub.publish(s.prefix+"/nested/telemetry", `{"ts":"`+ts+`","metrics":{"temp":"-3e1","on":true}}`)
	pub.publish(s.prefix+"/nan/telemetry", `{"ts":"`+ts+`","temp":21.5,"humidity":"NaN"}`)
	got := s.consume(t, 3, time.Minute)
	want := map[string]map[string]float64{
		"flat":   {"temp": 21.5, "door_open": 1, "alarm": 0},
		"nested": {"temp": -30, "on": 1},
	}
	for _, c := range got {
		if c.topic == s.dlq {
			if c.dl.Reason != schemas.ReasonNonFinite || !strings.HasSuffix(c.dl.SourceMQTTTopic, "/nan/telemetry") {
				t.Errorf("dead letter %s %q from %s", c.dl.Reason, c.dl.Error, c.dl.SourceMQTTTopic)
			}
			continue
		}
		w := want[c.reading.DeviceID]
		if len(c.reading.Measurements) != len(w) || c.reading.IgnoredFields != 0 {
			t.Errorf("%s: %v (ignored %d), want %v", c.reading.DeviceID, c.reading.Measurements, c.reading.IgnoredFields, w)
		}
		for name, v := range w {
			if got, ok := c.reading.Value(name); !ok || got != v {
				t.Errorf("%s: %s = %v, want %v", c.reading.DeviceID, name, got, v)
			}
		}
		delete(want, c.reading.DeviceID)
	}
	if len(want) != 0 || len(got) != 3 {
		t.Errorf("%d records; missing %v", len(got), want)
	}
}

// With the catch-all (the default), a message on a topic under the
// prefix that is not the template's reaches the bridge (the device gets
// PUBACK 0x00, not 0x10 "no matching subscribers") and goes to the DLQ
// as unexpected_topic, once, with its topic and bytes; telemetry still
// arrives exactly once.
func TestBridgeCatchAllUnexpectedTopic(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	if !cfg.MQTT.CatchAll {
		t.Fatal("the test setup runs without the catch-all")
	}
	r := startBridge(t, cfg)
	rc := r.b.Config()
	if subs := rc.Subscriptions(); len(subs) != 1 || subs[0] != "$share/"+s.group+"/"+s.prefix+"/#" {
		t.Fatalf("subscriptions %v, want the catch-all alone", subs)
	}
	pub := newPublisher(t, env)
	unexpected := map[string]string{
		s.prefix + "/d1/status":          `{"online":true}`,
		s.prefix + "/d1/shadow/update":   `{"state":{"reported":{"fw":"1.4.2"}}}`,
		s.prefix + "/d1/telemetry/extra": `{"ts":"2026-11-27T14:00:00Z","temp":1}`,
		s.prefix + "/d1":                 "\x00\x01binary",
		s.prefix:                         `prefix level itself`,
	}
	for topic, payload := range unexpected {
		pub.publish(topic, payload)
	}
	const telemetry = 50
	for i := range telemetry {
		pub.publish(s.prefix+"/d"+strconv.Itoa(i%5)+"/telemetry", fmt.Sprintf(`{"ts":%q,"seq":%d,"temp":%d}`, time.Now().UTC().Format(time.RFC3339Nano), i, i))
	}
	got := s.consume(t, len(unexpected)+telemetry, time.Minute)
	raw := map[string]int{}
	for _, c := range got {
		if c.topic == s.raw {
			raw[fmt.Sprint(c.reading.DeviceID, "/", c.reading.Seq)]++
			continue
		}
		want, ok := unexpected[c.dl.SourceMQTTTopic]
		if !ok || c.dl.Reason != schemas.ReasonUnexpectedTopic || string(c.dl.Value) != want || c.dl.Stage != schemas.StageBridge {
			t.Errorf("dead letter %s from %q, value %q", c.dl.Reason, c.dl.SourceMQTTTopic, c.dl.Value)
		}
		delete(unexpected, c.dl.SourceMQTTTopic)
	}
	if len(unexpected) != 0 {
		t.Errorf("unexpected topics not in the DLQ (or twice): %v", unexpected)
	}
	if len(raw) != telemetry || len(got) != telemetry+5 {
		t.Errorf("%d telemetry messages in raw (%d records in all), want %d once each", len(raw), len(got), telemetry)
	}
	if n := counter(t, r.reg, "iotpipe_bridge_rejected_total", "reason", string(schemas.ReasonUnexpectedTopic)); n != 5 {
		t.Errorf("rejected_total{unexpected_topic} = %v, want 5", n)
	}
}

// Mosquitto delivers a message once per matching subscription of a
// session: with the template's filter and the catch-all both subscribed,
// a telemetry message would reach the bridge twice. This is why the
// bridge subscribes to the catch-all alone and matches its routes itself.
func TestMosquittoOverlappingSubscriptionsDeliverTwice(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	for _, shared := range []bool{true, false} {
		var got atomic.Int64
		c := env.MQTTClient(t, env.MQTTUsername, env.MQTTPassword, func(paho.PublishReceived) (bool, error) {
			got.Add(1)
			return true, nil
		})
		prefix := s.prefix + "/" + strconv.FormatBool(shared)
		filters := []string{prefix + "/+/telemetry", prefix + "/#"}
		var subs []paho.SubscribeOptions
		for _, f := range filters {
			if shared {
				f = "$share/" + s.group + "/" + f
			}
			subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		if _, err := c.Subscribe(testenv.Context(t, 10*time.Second), &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatal(err)
		}
		newPublisher(t, env).publish(prefix+"/d1/telemetry", `{}`)
		testenv.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if n := got.Load(); n < 2 {
				return fmt.Errorf("shared=%v: %d deliveries", shared, n)
			}
			return nil
		})
		t.Logf("shared=%v: one message, subscriptions %v: %d deliveries", shared, filters, got.Load())
	}
}

// A bridge whose persistent session still holds the template's
// subscription from a run without the catch-all removes it when it
// resumes the session, so that telemetry is not delivered twice.
func TestBridgeCatchAllRemovesStaleSubscription(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	// The session of an earlier bridge without the catch-all.
	old := cfg
	old.MQTT.CatchAll = false
	r := startBridge(t, old)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	r = startBridge(t, cfg)
	pub := newPublisher(t, env)
	const n = 40
	for i := range n {
		pub.publish(s.prefix+"/d1/telemetry", fmt.Sprintf(`{"ts":%q,"seq":%d,"temp":1}`, time.Now().UTC().Format(time.RFC3339Nano), i))
	}
	got := s.consume(t, n, time.Minute)
	if len(got) != n {
		t.Errorf("%d records for %d messages: the stale subscription delivered duplicates", len(got), n)
	}
	if st := r.b.Stats(); st.Received != n {
		t.Errorf("bridge received %d messages for %d published", st.Received, n)
	}
}

// A dead letter of an unexpected topic is acknowledged to the broker only
// after Kafka has it: a bridge SIGKILLed while the record waits in its
// producer (linger 5 s) never sent the PUBACK, so the broker redelivers
// the message to the restarted bridge, and it lands in the DLQ exactly
// once.
func TestBridgeUnexpectedTopicAckedAfterKafka(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	addr := "127.0.0.1:" + freeTCPPort(t)
	p := startProc(t, cfg, "--kafka-linger", "5s", "--http-addr", addr)
	pub := newPublisher(t, env)
	topic, payload := s.prefix+"/d1/shadow/update", `{"state":{"reported":{"on":true}}}`
	pub.publish(topic, payload)
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		m := scrape(t, "http://"+addr+"/metrics")
		if m[`iotpipe_bridge_received_total`] < 1 {
			return fmt.Errorf("bridge has not received the message yet")
		}
		if m[`iotpipe_bridge_produced_total{topic="dlq"}`] != 0 {
			t.Fatal("the record reached Kafka before the kill: linger too short to test")
		}
		return nil
	})
	p.kill(t)
	startProc(t, cfg) // same client id: resumes the session
	got := s.consume(t, 1, time.Minute)
	if len(got) != 1 || got[0].dl == nil || got[0].dl.Reason != schemas.ReasonUnexpectedTopic ||
		got[0].dl.SourceMQTTTopic != topic || string(got[0].dl.Value) != payload {
		t.Fatalf("got %d records, first %+v; want the dead letter once", len(got), got[0].dl)
	}
}

func freeTCPPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// scrape returns the samples of a Prometheus text endpoint by series, as
// written (name{labels}), or an empty map while it is not up.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: sample line %q", url, line)
		}
		out[line[:i]] = v
	}
	return out
}
