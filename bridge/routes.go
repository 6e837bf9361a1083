package bridge

import (
	"fmt"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/schemas"
)

// This file holds the bridge's route table and the catch-all subscription.
//
// The bridge matches the topic of every message against its routes, in
// order; the first route whose filter matches handles the message. A
// message that no route matches goes to the DLQ with reason
// unexpected_topic. Today there is one route, "telemetry" (the filter of
// the topic template, decoded into a telemetry.raw record); later routes
// (for example devices/+/shadow/update to a shadow topic) are added in
// routes with their own handler. Only topics that match no route are
// unexpected_topic: a route's own failures have their own reasons (a
// telemetry topic with an invalid device id is no_device_id).
//
// The catch-all (MQTTConfig.CatchAll) subscribes to the static prefix of
// the topic template followed by '#' (devices/# for
// devices/{device_id}/telemetry) instead of the template's filter, so that
// whatever a device publishes under the prefix reaches the bridge and, if
// no route takes it, the DLQ, instead of being dropped by the broker as
// "no matching subscribers". The bridge subscribes to the catch-all alone
// and matches the routes itself: with the template's filter subscribed as
// well, the broker would deliver a telemetry message once per matching
// subscription (Mosquitto 2.x does, see
// TestMosquittoOverlappingSubscriptionsDeliverTwice), and the bridge
// would write it to Kafka twice.

// route sends the messages whose topic matches filter to handle, which
// returns the record to produce and whether it is a dead letter. A handler
// may build the record in the message's window entry (e.rec, e.hdr, e.buf).
type route struct {
	name   string
	filter string
	levels []string
	handle func(e *inflight, now time.Time) (rec *kgo.Record, dead bool)
}

// routes returns the route table of b.
func (b *Bridge) routes() []route {
	rt := []route{newRoute("telemetry", b.tmpl.Filter(), b.telemetry)}
	if b.cfg.TopicShadow != "" {
		for _, f := range ShadowFilters {
			rt = append(rt, newRoute("shadow", f, b.shadowRequest))
		}
	}
	return rt
}

// ShadowFilters are the topics of a device's shadow requests: reports
// (devices/<id>/shadow/update) and requests for the whole shadow
// (devices/<id>/shadow/get). With Config.TopicShadow set they go, as
// published, to that Kafka topic for the shadow consumer.
var ShadowFilters = []string{"devices/+/shadow/update", "devices/+/shadow/get"}

// Headers of a shadow request record.
const (
	// HeaderShadowKind is "update" or "get".
	HeaderShadowKind = "shadow-kind"
)

// shadowRequest is the handler of the shadow routes: the payload goes to
// TopicShadow unchanged (key = device id, the topic's second level, which
// the broker's ACL binds to the device's certificate), for the shadow
// consumer to judge and answer; the same PUBACK-after-Kafka guarantee as
// telemetry.
func (b *Bridge) shadowRequest(e *inflight, now time.Time) (*kgo.Record, bool) {
	p := e.p
	levels := strings.Split(p.Topic, "/")
	id := levels[1]
	if err := certs.CheckDeviceID(id); err != nil {
		return b.deadLetter(p, &schemas.RejectError{Reason: schemas.ReasonNoDeviceID,
			Detail: fmt.Sprintf("shadow topic %q: %v", p.Topic, err)}, now), true
	}
	return &kgo.Record{
		Topic: b.cfg.TopicShadow, Key: []byte(id), Value: p.Payload, Timestamp: now,
		Headers: []kgo.RecordHeader{
			{Key: schemas.HeaderMQTTTopic, Value: []byte(p.Topic)},
			{Key: HeaderShadowKind, Value: []byte(levels[3])},
		},
	}, false
}

func newRoute(name, filter string, handle func(*inflight, time.Time) (*kgo.Record, bool)) route {
	return route{name: name, filter: filter, levels: strings.Split(filter, "/"), handle: handle}
}

// match returns the first route whose filter matches topic, or nil.
func match(routes []route, topic string) *route {
	for i := range routes {
		if matchFilter(routes[i].levels, topic) {
			return &routes[i]
		}
	}
	return nil
}

// routesSummary describes the routes for the unexpected_topic error.
func routesSummary(routes []route) string {
	parts := make([]string, len(routes))
	for i, r := range routes {
		parts[i] = r.name + " " + r.filter
	}
	return strings.Join(parts, ", ")
}

// unexpectedTopic is the dead letter of a message that no route matches.
func (b *Bridge) unexpectedTopic(p *paho.Publish, now time.Time) *kgo.Record {
	return b.deadLetter(p, &schemas.RejectError{Reason: schemas.ReasonUnexpectedTopic,
		Detail: fmt.Sprintf("topic %q matches no route of the bridge (%s)", p.Topic, b.routeNames)}, now)
}

// telemetry is the handler of the telemetry route: decode the payload
// into a telemetry.raw record, or a dead letter with the reason. The raw
// record is schemas.RawRecord's, built in e: its key, MQTT topic header
// and value share e.buf, its headers e.hdr (no allocation once e's
// buffers have grown to the messages' size).
func (b *Bridge) telemetry(e *inflight, now time.Time) (*kgo.Record, bool) {
	p := e.p
	if err := b.dec.Decode(p.Topic, p.Payload, now, &b.reading); err != nil {
		return b.deadLetter(p, err, now), true
	}
	if b.active != nil && !b.active.Has(b.reading.DeviceID) {
		return b.deadLetter(p, &schemas.RejectError{Reason: ReasonUnknownDevice,
			Detail: fmt.Sprintf("device %q is not in the registry or not active", b.reading.DeviceID)}, now), true
	}
	if b.reading.IgnoredFields > 0 {
		b.m.ignore(&b.reading.IgnoredBy)
	}
	buf := e.buf[:0]
	if need := len(b.reading.DeviceID) + len(p.Topic) + 64 + 2*len(p.Payload); cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	buf = append(buf, b.reading.DeviceID...)
	nk := len(buf)
	buf = append(buf, p.Topic...)
	nt := len(buf)
	buf = schemas.AppendRaw(buf, &b.reading)
	e.buf = buf
	e.hdr[0], e.hdr[1] = b.rawHeaders[0], b.rawHeaders[1]
	e.hdr[2] = kgo.RecordHeader{Key: schemas.HeaderMQTTTopic, Value: buf[nk:nt:nt]}
	e.rec = kgo.Record{Topic: b.cfg.TopicRaw, Key: buf[:nk:nk], Value: buf[nt:], Timestamp: b.reading.EventTime, Headers: e.hdr[:]}
	return &e.rec, false
}

// matchFilter reports whether topic matches the filter split into levels,
// as an MQTT broker matches it: '+' matches one level (an empty one too),
// '#' as the last level matches the rest, including nothing (a/# matches
// a), and a wildcard in the first level never matches a topic that starts
// with '$'. It does not allocate.
func matchFilter(levels []string, topic string) bool {
	if len(levels) > 0 && (levels[0] == "+" || levels[0] == "#") && strings.HasPrefix(topic, "$") {
		return false
	}
	rest := topic
	for i, lv := range levels {
		if lv == "#" {
			return true
		}
		j := strings.IndexByte(rest, '/')
		level := rest
		if j >= 0 {
			level = rest[:j]
		}
		if lv != "+" && lv != level {
			return false
		}
		if j < 0 {
			// The topic has no more levels: it matches if the filter has
			// none either, or only a final '#'.
			return i == len(levels)-1 || i == len(levels)-2 && levels[i+1] == "#"
		}
		rest = rest[j+1:]
	}
	return false // the topic has more levels than the filter
}

// catchAllFilter returns the catch-all filter of a topic template: its
// leading literal levels followed by '#' (devices/# for
// devices/{device_id}/telemetry), and false when the template starts with
// '+' or the device id level, so that it has no prefix of its own.
func catchAllFilter(template string) (string, bool) {
	var prefix []string
	for _, lv := range strings.Split(template, "/") {
		if lv == "+" || lv == schemas.DeviceIDPlaceholder {
			break
		}
		prefix = append(prefix, lv)
	}
	if len(prefix) == 0 {
		return "", false
	}
	return strings.Join(prefix, "/") + "/#", true
}

// filterWithin reports whether every topic that filter f matches is also
// matched by the catch-all c (literal levels followed by '#').
func filterWithin(f, c string) bool {
	prefix := strings.TrimSuffix(c, "#") // "devices/"
	return f+"/" == prefix || strings.HasPrefix(f, prefix)
}

// filtersOverlap reports whether some topic matches both filters.
func filtersOverlap(a, b string) bool {
	la, lb := strings.Split(a, "/"), strings.Split(b, "/")
	wild := func(l string) bool { return l == "+" || l == "#" }
	// A wildcard first level never matches a topic that starts with '$'.
	if wild(la[0]) && !wild(lb[0]) && strings.HasPrefix(lb[0], "$") ||
		wild(lb[0]) && !wild(la[0]) && strings.HasPrefix(la[0], "$") {
		return false
	}
	for i := 0; ; i++ {
		switch {
		case i < len(la) && la[i] == "#", i < len(lb) && lb[i] == "#":
			return true
		case i == len(la) || i == len(lb):
			return len(la) == len(lb)
		case la[i] != "+" && lb[i] != "+" && la[i] != lb[i]:
			return false
		}
	}
}

// subscribedFilters are the filters the bridge subscribes to, before the
// $share prefix: with CatchAll, the catch-all and those of MQTT.Filters
// that it does not cover; otherwise MQTT.Filters (or, when there are
// none, the template's filter).
func (c *Config) subscribedFilters() []string {
	if !c.MQTT.CatchAll {
		return c.filters()
	}
	ca, ok := catchAllFilter(c.TopicTemplate)
	if !ok {
		return c.filters()
	}
	out := []string{ca}
	for _, f := range c.MQTT.Filters {
		if !filterWithin(f, ca) {
			out = append(out, f)
		}
	}
	return out
}

// checkCatchAll checks the catch-all settings of c:
// the template must have a prefix to put the catch-all under, and no
// other filter may overlap the catch-all without being inside it (the
// broker would deliver the messages matching both twice).
func (c *Config) checkCatchAll(p *config.Problems) {
	if !c.MQTT.CatchAll {
		return
	}
	ca, ok := catchAllFilter(c.TopicTemplate)
	if !ok {
		p.Add("MQTT.CatchAll", "topic template %q starts with a wildcard level, so it has no prefix to subscribe to a catch-all under; turn the catch-all off or give {TopicTemplate} a literal first level", c.TopicTemplate)
		return
	}
	for _, f := range c.MQTT.Filters {
		if !filterWithin(f, ca) && filtersOverlap(f, ca) {
			p.Add("MQTT.Filters", "%q overlaps the catch-all %s without being inside it, so the broker would deliver some messages twice; narrow the filter or turn {MQTT.CatchAll} off", f, ca)
		}
	}
}

// staleFilters are the subscriptions that other settings of the bridge
// would have made (the template's filters instead of the catch-all or the
// other way round, shared instead of plain or the other way round) and
// that this configuration does not want. A resumed session may still hold
// them from an earlier run, and each would deliver messages a second time.
func (c Config) staleFilters() []string {
	want := map[string]bool{}
	for _, s := range c.Subscriptions() {
		want[s] = true
	}
	cands := append([]string(nil), c.MQTT.Filters...)
	if tt, err := schemas.ParseTopicTemplate(c.TopicTemplate); err == nil {
		cands = append(cands, tt.Filter())
	}
	if ca, ok := catchAllFilter(c.TopicTemplate); ok {
		cands = append(cands, ca)
	}
	var out []string
	seen := map[string]bool{}
	for _, f := range cands {
		for _, s := range []string{f, "$share/" + c.MQTT.ShareGroup + "/" + f} {
			if !want[s] && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}
