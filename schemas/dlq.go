package schemas

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DLQ header names. Every dead letter carries reason, error, stage, time and
// schema-version; source-mqtt-topic when it came from MQTT; source-topic,
// source-partition and source-offset when it came from Kafka.
const (
	HeaderReason          = "reason"
	HeaderError           = "error"
	HeaderStage           = "stage"
	HeaderSourceMQTTTopic = "source-mqtt-topic"
	HeaderSourceTopic     = "source-topic"
	HeaderSourcePartition = "source-partition"
	HeaderSourceOffset    = "source-offset"
	HeaderTime            = "time"
)

// Stage names, the values of the DLQ "stage" header.
const (
	StageBridge        = "bridge"
	StageProcessor     = "processor"
	StageSinkLake      = "sink-lake"
	StageSinkTimescale = "sink-timescale"
)

// MaxErrorLen is the longest DLQ "error" header value, in bytes; longer
// messages are cut at a UTF-8 boundary and end with "…".
const MaxErrorLen = 1024

// deadLetterTimeFormat is RFC 3339 in UTC with exactly six fraction digits.
const deadLetterTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// DeadLetter is a telemetry.dlq record: input that a stage could not accept,
// kept with its original bytes and the cause, so that nothing is dropped
// silently. The record value is Value, its key Key, its timestamp Time, and
// everything else travels in headers (see Headers).
type DeadLetter struct {
	// Value holds the original bytes: the MQTT payload, or the Kafka record
	// value.
	Value []byte
	// Key is the original Kafka record key, or the device id when known at
	// the bridge; nil when there is none.
	Key []byte
	// Reason is why the input was rejected.
	Reason Reason
	// Error is the human-readable cause; it is cut to MaxErrorLen bytes.
	Error string
	// Stage is the stage that rejected the input (StageBridge, ...).
	Stage string
	// SourceMQTTTopic is the MQTT topic of input rejected by the bridge;
	// empty otherwise.
	SourceMQTTTopic string
	// SourceTopic, SourcePartition and SourceOffset locate input that came
	// from Kafka; SourceTopic is empty and the other two -1 otherwise.
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	// Time is when the input was rejected (UTC, microseconds).
	Time time.Time
}

// truncateError cuts s to at most MaxErrorLen bytes of valid UTF-8.
func truncateError(s string) string {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes by U+FFFD
	}
	if len(s) <= MaxErrorLen {
		return s
	}
	const ell = "…"
	cut := MaxErrorLen - len(ell)
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

// Headers returns the DLQ headers of d, in the order of the Header*
// constants (reason, error, stage, source..., time, schema-version). The
// source headers are present only when set (see DeadLetter).
func (d *DeadLetter) Headers() []kgo.RecordHeader {
	h := make([]kgo.RecordHeader, 0, 9)
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(HeaderReason, string(d.Reason))
	add(HeaderError, truncateError(d.Error))
	add(HeaderStage, d.Stage)
	if d.SourceMQTTTopic != "" {
		add(HeaderSourceMQTTTopic, d.SourceMQTTTopic)
	}
	if d.SourceTopic != "" {
		add(HeaderSourceTopic, d.SourceTopic)
		add(HeaderSourcePartition, strconv.FormatInt(int64(d.SourcePartition), 10))
		add(HeaderSourceOffset, strconv.FormatInt(d.SourceOffset, 10))
	}
	add(HeaderTime, d.Time.UTC().Format(deadLetterTimeFormat))
	add(HeaderSchemaVersion, strconv.Itoa(SchemaVersion))
	return h
}

// Record returns the Kafka record for d on TopicDLQ: key d.Key, value
// d.Value (not copied), timestamp d.Time, and d.Headers().
func (d *DeadLetter) Record() *kgo.Record {
	return &kgo.Record{
		Topic:     TopicDLQ,
		Key:       d.Key,
		Value:     d.Value,
		Timestamp: d.Time,
		Headers:   d.Headers(),
	}
}

// ParseDeadLetter reads a dead letter back from the key, value and headers
// of a telemetry.dlq record. Value and Key are not copied. Unknown headers
// are ignored. It fails with a *RejectError of ReasonInvalidRecord when
// reason, stage or time is missing or empty, when a number or time does not
// parse, when schema-version is present and not "1", or when a header occurs
// twice.
func ParseDeadLetter(key, value []byte, headers []kgo.RecordHeader) (*DeadLetter, error) {
	d := &DeadLetter{Key: key, Value: value, SourcePartition: -1, SourceOffset: -1}
	seen := make(map[string]bool, len(headers))
	for _, h := range headers {
		switch h.Key {
		case HeaderReason, HeaderError, HeaderStage, HeaderSourceMQTTTopic, HeaderSourceTopic,
			HeaderSourcePartition, HeaderSourceOffset, HeaderTime, HeaderSchemaVersion:
		default:
			continue
		}
		if seen[h.Key] {
			return nil, invalidRecord("DLQ header %q occurs twice", h.Key)
		}
		seen[h.Key] = true
		v := string(h.Value)
		switch h.Key {
		case HeaderReason:
			d.Reason = Reason(v)
		case HeaderError:
			d.Error = v
		case HeaderStage:
			d.Stage = v
		case HeaderSourceMQTTTopic:
			d.SourceMQTTTopic = v
		case HeaderSourceTopic:
			d.SourceTopic = v
		case HeaderSourcePartition:
			p, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, invalidRecord("DLQ header %s %s is not an int32", HeaderSourcePartition, quote(v))
			}
			d.SourcePartition = int32(p)
		case HeaderSourceOffset:
			o, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, invalidRecord("DLQ header %s %s is not an int64", HeaderSourceOffset, quote(v))
			}
			d.SourceOffset = o
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, invalidRecord("DLQ header %s %s is not an RFC 3339 time", HeaderTime, quote(v))
			}
			d.Time = truncMicro(t)
		case HeaderSchemaVersion:
			if v != strconv.Itoa(SchemaVersion) {
				return nil, invalidRecord("unsupported DLQ schema-version %s: this build reads only version %d", quote(v), SchemaVersion)
			}
		}
	}
	switch {
	case d.Reason == "":
		return nil, invalidRecord("DLQ header %q is missing or empty", HeaderReason)
	case d.Stage == "":
		return nil, invalidRecord("DLQ header %q is missing or empty", HeaderStage)
	case !seen[HeaderTime]:
		return nil, invalidRecord("DLQ header %q is missing", HeaderTime)
	}
	return d, nil
}

// RecordDeadLetter is ParseDeadLetter for a whole Kafka record.
func RecordDeadLetter(r *kgo.Record) (*DeadLetter, error) {
	return ParseDeadLetter(r.Key, r.Value, r.Headers)
}

// deadLetterJSON is the JSON view of a dead letter described by
// jsonschema/telemetry-dlq.v1.schema.json.
type deadLetterJSON struct {
	Headers map[string]string `json:"headers"`
	Key     []byte            `json:"key,omitempty"`
	Value   []byte            `json:"value"`
}

// MarshalJSON encodes d as the JSON view of a DLQ record, for tools and
// golden files (the Kafka record itself is not JSON):
//
//	{"headers":{"reason":"...","error":"...",...},"key":"<base64>","value":"<base64>"}
//
// headers maps each header of Headers() to its value; key is omitted when
// nil; key and value use standard base64 with padding.
func (d DeadLetter) MarshalJSON() ([]byte, error) {
	v := deadLetterJSON{Headers: map[string]string{}, Key: d.Key, Value: d.Value}
	if v.Value == nil {
		v.Value = []byte{}
	}
	for _, h := range d.Headers() {
		v.Headers[h.Key] = string(h.Value)
	}
	return json.Marshal(v)
}

// UnmarshalJSON decodes the JSON view written by MarshalJSON, with the
// checks of ParseDeadLetter.
func (d *DeadLetter) UnmarshalJSON(b []byte) error {
	var v deadLetterJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("decode DLQ JSON view: %w", err)
	}
	hs := make([]kgo.RecordHeader, 0, len(v.Headers))
	for k, val := range v.Headers {
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(val)})
	}
	p, err := ParseDeadLetter(v.Key, v.Value, hs)
	if err != nil {
		return err
	}
	*d = *p
	return nil
}
