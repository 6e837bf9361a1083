package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"
)

// Seeds come from the golden folders, so every case there is also a fuzz
// starting point; inputs that once crashed live in testdata/fuzz.

func addPayloadSeeds(f *testing.F) {
	for _, c := range loadPayloadCases(f) {
		f.Add(c.topic, c.payload)
	}
}

func recordSeeds(f *testing.F) [][]byte {
	files, err := filepath.Glob("testdata/records/*.json")
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	for _, c := range loadPayloadCases(f) {
		if b, err := os.ReadFile(filepath.Join(c.dir, "expected.json")); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// FuzzDecode checks that Decode never panics, that every error is a
// *RejectError with a bridge reason, and that every accepted reading keeps
// the invariants and round-trips through telemetry.raw unchanged.
func FuzzDecode(f *testing.F) {
	addPayloadSeeds(f)
	received := goldenReceived(f)
	plain, err := NewDecoder(DefaultDecodeOptions())
	if err != nil {
		f.Fatal(err)
	}
	plus, err := NewDecoder(func() DecodeOptions {
		o := DefaultDecodeOptions()
		o.Topic, o.MaxDepth, o.MaxMeasurements = MustParseTopicTemplate("+/{device_id}/+"), 3, 8
		return o
	}())
	if err != nil {
		f.Fatal(err)
	}
	lenient, err := NewDecoder(withDefaults(DecodeOptions{AcceptBools: true, NumericStrings: true}))
	if err != nil {
		f.Fatal(err)
	}
	strict, err := NewDecoder(withDefaults(DecodeOptions{Strict: true, MaxDepth: 4}))
	if err != nil {
		f.Fatal(err)
	}
	bridgeReason := map[Reason]bool{}
	for _, r := range AllReasons() {
		bridgeReason[r] = true
	}
	delete(bridgeReason, ReasonUnexpectedTopic) // the bridge's route table, not the decoder
	delete(bridgeReason, ReasonLate)
	delete(bridgeReason, ReasonInvalidRecord)
	delete(bridgeReason, ReasonRejectedByDatabase)

	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		for _, d := range []*Decoder{plain, plus, lenient, strict} {
			var r Reading
			err := d.Decode(topic, payload, received, &r)
			if err != nil {
				var re *RejectError
				if !errors.As(err, &re) || !bridgeReason[re.Reason] || re.Detail == "" {
					t.Fatalf("Decode error %T %v is not a bridge *RejectError with detail", err, err)
				}
				continue
			}
			if !json.Valid(payload) || !utf8.Valid(payload) {
				t.Fatalf("accepted invalid JSON %q", payload)
			}
			checkInvariants(t, d, &r, received)
			checkAccepted(t, &r, received)

			// Decoding again, with a fresh decoder and a dirty Reading, is
			// identical: no state leaks between calls.
			fresh, _ := NewDecoder(d.Options())
			r2 := Reading{Measurements: []Measurement{{"stale", 1}}, Tags: map[string]string{"stale": "x"}, HasSeq: true, Seq: 9}
			if err := fresh.Decode(topic, payload, received, &r2); err != nil {
				t.Fatalf("fresh decoder rejects what the used one accepted: %v", err)
			}
			if !readingsIdentical(&r, &r2) || r.IgnoredBy != r2.IgnoredBy {
				t.Fatalf("fresh decoder differs:\n%+v\n%+v", r, r2)
			}
		}
	})
}

func checkInvariants(t *testing.T, d *Decoder, r *Reading, received time.Time) {
	t.Helper()
	o := d.Options()
	if id, ok := o.Topic.DeviceID(r.DeviceID); ok && id != r.DeviceID {
		t.Fatalf("device id %q", r.DeviceID)
	}
	if !ValidDeviceID(r.DeviceID) {
		t.Fatalf("invalid device id %q", r.DeviceID)
	}
	if n := len(r.Measurements); n < 1 || n > o.MaxMeasurements {
		t.Fatalf("%d measurements", n)
	}
	for i, m := range r.Measurements {
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) || !ValidName(m.Name) {
			t.Fatalf("bad measurement %+v", m)
		}
		if i > 0 && r.Measurements[i-1].Name >= m.Name {
			t.Fatalf("measurements not sorted and unique: %+v", r.Measurements)
		}
	}
	if skew := r.EventTime.Sub(received); skew > o.MaxFutureSkew || -skew > o.MaxPastSkew {
		t.Fatalf("event time %v outside the skew limits around %v", r.EventTime, received)
	}
	if r.HasSeq && r.Seq < 0 || len(r.Tags) > MaxTags || (r.Tags != nil && len(r.Tags) == 0) {
		t.Fatalf("bad seq or tags: %+v", r)
	}
	if r.IgnoredBy.Total() != r.IgnoredFields || o.Strict && r.IgnoredFields != 0 {
		t.Fatalf("ignored fields %d, by reason %v (strict %v)", r.IgnoredFields, r.IgnoredBy, o.Strict)
	}
}

// FuzzDecodeRaw checks that RawDecoder never panics, rejects only with
// ReasonInvalidRecord, and that whatever it accepts is valid and re-encodes
// to a record that decodes to the same reading.
func FuzzDecodeRaw(f *testing.F) {
	for _, b := range recordSeeds(f) {
		f.Add(b)
	}
	var d RawDecoder
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Reading
		err := d.Decode(b, &r)
		if err != nil {
			if reason, ok := ReasonOf(err); !ok || reason != ReasonInvalidRecord {
				t.Fatalf("error %v is not an invalid_record *RejectError", err)
			}
			return
		}
		if !json.Valid(b) || !utf8.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid reading: %v", err)
		}
		enc := AppendRaw(nil, &r)
		var back Reading
		if err := DecodeRaw(enc, &back); err != nil {
			t.Fatalf("re-encoded record rejected: %v\n%s", err, enc)
		}
		if !readingsIdentical(&r, &back) {
			t.Fatalf("round trip differs:\n%+v\n%+v", r, back)
		}
		if enc2 := AppendRaw(nil, &back); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzDecodeMetrics is FuzzDecodeRaw for telemetry.metrics records.
func FuzzDecodeMetrics(f *testing.F) {
	for _, b := range recordSeeds(f) {
		f.Add(b)
	}
	var d MetricsDecoder
	f.Fuzz(func(t *testing.T, b []byte) {
		var rec MetricsRecord
		err := d.Decode(b, &rec)
		if err != nil {
			if reason, ok := ReasonOf(err); !ok || reason != ReasonInvalidRecord {
				t.Fatalf("error %v is not an invalid_record *RejectError", err)
			}
			return
		}
		var enc []byte
		switch rec.Kind {
		case KindMetric:
			if err := rec.Metric.Validate(); err != nil {
				t.Fatal(err)
			}
			enc = AppendMetric(nil, &rec.Metric)
		case KindActivity:
			if err := rec.Activity.Validate(); err != nil {
				t.Fatal(err)
			}
			enc = AppendActivity(nil, &rec.Activity)
		default:
			t.Fatalf("kind %q", rec.Kind)
		}
		var back MetricsRecord
		if err := DecodeMetricsRecord(enc, &back); err != nil {
			t.Fatalf("re-encoded record rejected: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(rec, back) {
			t.Fatalf("round trip differs:\n%+v\n%+v", rec, back)
		}
	})
}
