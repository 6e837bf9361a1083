package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var t0 = time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

// Golden record values; their encodings live in testdata/records.
func goldenRaw() map[string]*Reading {
	return map[string]*Reading{
		"raw.json": {
			DeviceID:     "sensor-1",
			EventTime:    t0.Add(-2*time.Second + 123456*time.Microsecond),
			ReceivedTime: t0,
			Seq:          42, HasSeq: true,
			Measurements: []Measurement{{"battery", 3.7}, {"humidity", 40.5}, {"pressure", 1013.25}, {"rssi", -67}, {"temp", 21.5}},
		},
		"raw-tags-no-seq.json": {
			DeviceID:     "café/ü\"1",
			EventTime:    t0.Add(-time.Second),
			ReceivedTime: t0.Add(time.Microsecond),
			Measurements: []Measurement{{"big", 1.7976931348623157e308}, {"neg_zero", math.Copysign(0, -1)}, {"tenth", 0.1}, {"tiny", 5e-324}, {"温度", -40}},
			Tags:         map[string]string{"site": "plant-a", "fw": "1.4.2", "note": `a "quoted" \ value`},
		},
		"raw-ignored-fields.json": {
			DeviceID:     "sensor-1",
			EventTime:    t0.Add(-time.Second),
			ReceivedTime: t0,
			Seq:          43, HasSeq: true,
			Measurements:  []Measurement{{"temp", 21.5}},
			IgnoredFields: 3,
		},
	}
}

func goldenMetric() *WindowMetric {
	start := t0
	return &WindowMetric{
		DeviceID: "sensor-1", Metric: "temp",
		WindowStart: start, WindowEnd: start.Add(time.Minute),
		Count: 4, Sum: 86, Min: 21, Max: 22.5, Mean: 21.5, Stddev: 0.6123724356957945,
		First: 21, Last: 22.5, P50: 21.25, P95: 22.5, P99: 22.5,
		FirstTime: start.Add(1500 * time.Millisecond), LastTime: start.Add(59*time.Second + 999999*time.Microsecond),
		Revision: 2, EmittedAt: start.Add(75*time.Second + 250*time.Microsecond),
	}
}

func goldenActivity() map[string]*Activity {
	return map[string]*Activity{
		"activity.json": {
			DeviceID: "sensor-1", WindowStart: t0, WindowEnd: t0.Add(time.Minute),
			Messages: 58, SeqGaps: 2, SeqResets: 1, Late: 1, Duplicates: 3, IgnoredFields: 7,
			FirstSeen: t0.Add(time.Second), LastSeen: t0.Add(59 * time.Second),
			Revision: 1, EmittedAt: t0.Add(70 * time.Second),
		},
		"activity-no-messages.json": {
			DeviceID: "sensor-2", WindowStart: t0, WindowEnd: t0.Add(time.Minute),
			Late: 4, Revision: 1, EmittedAt: t0.Add(70 * time.Second),
		},
	}
}

func goldenDeadLetters() map[string]*DeadLetter {
	return map[string]*DeadLetter{
		"dlq-bridge.json": {
			Value: []byte(`{"ts":"2026-11-27T14:10:00Z","temp":21.5}`), Key: []byte("sensor-1"),
			Reason: ReasonTimestampSkew, Stage: StageBridge,
			Error:           "timestamp_skew: event time 2026-11-27T14:10:00Z is 10m0s in the future of received time 2026-11-27T14:00:00Z (maximum 5m0s)",
			SourceMQTTTopic: "devices/sensor-1/telemetry", SourcePartition: -1, SourceOffset: -1,
			Time: t0.Add(123 * time.Microsecond),
		},
		"dlq-processor.json": {
			Value:  []byte{0x89, 'P', 'N', 'G', 0, 1, 2},
			Reason: ReasonInvalidRecord, Stage: StageProcessor,
			Error:       "invalid_record: malformed JSON at byte 0: unexpected non-ASCII byte (binary data or invalid UTF-8?)",
			SourceTopic: TopicRaw, SourcePartition: 3, SourceOffset: 1234567,
			Time: t0,
		},
	}
}

func recordPath(name string) string { return filepath.Join("testdata", "records", name) }

func TestRecordGoldens(t *testing.T) {
	for name, r := range goldenRaw() {
		t.Run(name, func(t *testing.T) {
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, recordPath(name), indentJSON(t, AppendRaw(nil, r)))
			b, err := os.ReadFile(recordPath(name))
			if err != nil {
				t.Fatal(err)
			}
			var got Reading
			if err := DecodeRaw(b, &got); err != nil {
				t.Fatal(err)
			}
			if !readingsIdentical(&got, r) {
				t.Errorf("decoded %+v\nwant %+v", got, *r)
			}
		})
	}
	metricCases := map[string]func() ([]byte, MetricsRecord){
		"metric.json": func() ([]byte, MetricsRecord) {
			m := goldenMetric()
			return AppendMetric(nil, m), MetricsRecord{Kind: KindMetric, Metric: *m}
		},
	}
	for name, a := range goldenActivity() {
		metricCases[name] = func() ([]byte, MetricsRecord) {
			return AppendActivity(nil, a), MetricsRecord{Kind: KindActivity, Activity: *a}
		}
	}
	for name, mk := range metricCases {
		t.Run(name, func(t *testing.T) {
			enc, want := mk()
			checkGolden(t, recordPath(name), indentJSON(t, enc))
			b, err := os.ReadFile(recordPath(name))
			if err != nil {
				t.Fatal(err)
			}
			var got MetricsRecord
			if err := DecodeMetricsRecord(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %+v\nwant %+v", got, want)
			}
		})
	}
	for name, d := range goldenDeadLetters() {
		t.Run(name, func(t *testing.T) {
			enc, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, recordPath(name), indentJSON(t, enc))
			b, err := os.ReadFile(recordPath(name))
			if err != nil {
				t.Fatal(err)
			}
			var got DeadLetter
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, d) {
				t.Errorf("decoded %+v\nwant %+v", got, *d)
			}
			// And through a Kafka record.
			back, err := RecordDeadLetter(d.Record())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, d) {
				t.Errorf("via kgo.Record %+v\nwant %+v", *back, *d)
			}
		})
	}
}

func TestRawRecord(t *testing.T) {
	r := goldenRaw()["raw.json"]
	value := AppendRaw(nil, r)
	rec := RawRecord(value, r, "devices/sensor-1/telemetry")
	if rec.Topic != TopicRaw || string(rec.Key) != r.DeviceID || !rec.Timestamp.Equal(r.EventTime) || !bytes.Equal(rec.Value, value) {
		t.Errorf("RawRecord = %+v", rec)
	}
	want := []kgo.RecordHeader{
		{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
		{Key: HeaderSchemaVersion, Value: []byte("1")},
		{Key: HeaderMQTTTopic, Value: []byte("devices/sensor-1/telemetry")},
	}
	if !reflect.DeepEqual(rec.Headers, want) {
		t.Errorf("headers = %v, want %v", rec.Headers, want)
	}
	if h := RecordHeaders(""); len(h) != 2 {
		t.Errorf("RecordHeaders(\"\") = %v, want no mqtt-topic", h)
	}
}

func TestDecodeRawErrors(t *testing.T) {
	valid := string(AppendRaw(nil, goldenRaw()["raw.json"]))
	swap := func(old, new string) string {
		if !strings.Contains(valid, old) {
			t.Fatalf("%q not in %s", old, valid)
		}
		return strings.Replace(valid, old, new, 1)
	}
	for name, tc := range map[string]struct {
		in      string
		wantErr string // substring; "" means accepted
	}{
		"valid":                {valid, ""},
		"unknown field":        {swap(`"seq":42`, `"seq":42,"future":{"x":[1,2]}`), ""},
		"unsorted":             {swap(`"battery":3.7,"humidity":40.5`, `"humidity":40.5,"battery":3.7`), ""},
		"seq null":             {swap(`"seq":42`, `"seq":null`), ""},
		"tags null":            {swap(`"seq":42`, `"seq":42,"tags":null`), ""},
		"version 2":            {swap(`"schema_version":1`, `"schema_version":2`), "unsupported schema_version 2"},
		"version 2 and broken": {swap(`"schema_version":1,"device_id":"sensor-1"`, `"schema_version":2,"device_id":7`), "unsupported schema_version 2"},
		"version string":       {swap(`"schema_version":1`, `"schema_version":"1"`), "schema_version is a string"},
		"version missing":      {swap(`"schema_version":1,`, ``), "missing schema_version"},
		"no device":            {swap(`"device_id":"sensor-1",`, ``), `missing required field "device_id"`},
		"bad device":           {swap(`"sensor-1"`, `""`), "not a valid device id"},
		"device number":        {swap(`"sensor-1"`, `1`), "device_id is a number"},
		"float time":           {swap(`"received_time_us":1795788000000000`, `"received_time_us":1.5`), "want an integer in int64 range"},
		"seq negative":         {swap(`"seq":42`, `"seq":-1`), "negative"},
		"dup key":              {swap(`"seq":42`, `"seq":42,"seq":43`), "occurs twice"},
		"dup measurement":      {swap(`"battery":3.7`, `"battery":3.7,"battery":3.8`), "not sorted by name with unique names"},
		"no measurements":      {swap(`"battery":3.7,"humidity":40.5,"pressure":1013.25,"rssi":-67,"temp":21.5`, ``), "no measurements"},
		"string value":         {swap(`"battery":3.7`, `"battery":"3.7"`), `measurement "battery" is a string`},
		"overflow":             {swap(`"battery":3.7`, `"battery":1e999`), "not finite"},
		"null value":           {swap(`"battery":3.7`, `"battery":null`), "is null, want a number"},
		"tag number":           {swap(`"seq":42`, `"seq":42,"tags":{"a":1}`), `tag "a" is a number`},
		"not json":             {`{"schema_version":1,`, "malformed JSON"},
		"array":                {`[1]`, "record is an array"},
		"trailing":             {valid + "x", "unexpected data after the top-level value"},
		"deep":                 {swap(`"seq":42`, `"seq":42,"x":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)), "nesting deeper than 32"},
	} {
		t.Run(name, func(t *testing.T) {
			var r Reading
			err := DecodeRaw([]byte(tc.in), &r)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeRaw: %v", err)
				}
				if err := r.Validate(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("DecodeRaw error = %v, want %q", err, tc.wantErr)
			}
			if reason, _ := ReasonOf(err); reason != ReasonInvalidRecord {
				t.Errorf("reason = %q, want %q", reason, ReasonInvalidRecord)
			}
		})
	}
}

func TestDecodeMetricsErrors(t *testing.T) {
	metric := string(AppendMetric(nil, goldenMetric()))
	activity := string(AppendActivity(nil, goldenActivity()["activity.json"]))
	swap := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	for name, tc := range map[string]struct {
		in, wantErr string
	}{
		"metric":              {metric, ""},
		"activity":            {activity, ""},
		"unknown fields":      {swap(metric, `"count":4`, `"count":4,"messages":"x","extra":[]`), ""},
		"version 2":           {swap(metric, `"schema_version":1`, `"schema_version":2`), "unsupported schema_version 2"},
		"unknown kind":        {swap(metric, `"kind":"metric"`, `"kind":"gauge"`), `unknown kind "gauge"`},
		"no kind":             {swap(metric, `"kind":"metric",`, ``), `"kind" is nothing`},
		"missing p99":         {swap(metric, `,"p99":22.5`, ``), `missing required field "p99"`},
		"null mean":           {swap(metric, `"mean":21.5`, `"mean":null`), "mean is null"},
		"count 0":             {swap(metric, `"count":4`, `"count":0`), "count 0 is less than 1"},
		"revision 0":          {swap(metric, `"revision":2`, `"revision":0`), "revision 0 is less than 1"},
		"min > max":           {swap(metric, `"min":21`, `"min":23`), "greater than max"},
		"empty window":        {swap(metric, `"window_end_us":1795788060000000`, `"window_end_us":1795788000000000`), "not before"},
		"first outside":       {swap(metric, `"first_time_us":1795788001500000`, `"first_time_us":1795787999000000`), "outside the window"},
		"dup":                 {swap(metric, `"count":4`, `"count":4,"count":5`), "occurs twice"},
		"negative late":       {swap(activity, `"late":1`, `"late":-1`), "negative"},
		"only first seen":     {swap(activity, `,"last_seen_us":1795788059000000`, ``), "both present or both absent"},
		"activity float":      {swap(activity, `"messages":58`, `"messages":58.5`), "want an integer"},
		"overflow float":      {swap(metric, `"sum":86`, `"sum":1e400`), "NaN, infinite or missing"},
		"metric name invalid": {swap(metric, `"metric":"temp"`, `"metric":""`), "not a valid measurement name"},
	} {
		t.Run(name, func(t *testing.T) {
			var rec MetricsRecord
			err := DecodeMetricsRecord([]byte(tc.in), &rec)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
			if reason, _ := ReasonOf(err); reason != ReasonInvalidRecord {
				t.Errorf("reason = %q", reason)
			}
		})
	}
}

func TestDeadLetterHeaders(t *testing.T) {
	d := &DeadLetter{
		Reason: ReasonLate, Stage: StageProcessor, Error: strings.Repeat("é", 600) + "\xff",
		SourceTopic: TopicRaw, SourcePartition: 0, SourceOffset: 0, Time: t0.Add(time.Nanosecond * 1500),
	}
	hs := d.Headers()
	var keys []string
	for _, h := range hs {
		keys = append(keys, h.Key)
	}
	wantKeys := []string{HeaderReason, HeaderError, HeaderStage, HeaderSourceTopic, HeaderSourcePartition, HeaderSourceOffset, HeaderTime, HeaderSchemaVersion}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("header keys = %v, want %v", keys, wantKeys)
	}
	errVal := string(hs[1].Value)
	if len(errVal) > MaxErrorLen || !strings.HasSuffix(errVal, "…") || !strings.HasPrefix(errVal, "éé") {
		t.Errorf("error header not truncated to valid UTF-8 within %d bytes: %d bytes", MaxErrorLen, len(errVal))
	}
	if got := string(hs[6].Value); got != "2026-11-27T14:00:00.000001Z" {
		t.Errorf("time header = %s", got)
	}
	back, err := ParseDeadLetter(nil, nil, hs)
	if err != nil {
		t.Fatal(err)
	}
	if back.SourcePartition != 0 || back.SourceOffset != 0 || back.SourceMQTTTopic != "" || back.Reason != ReasonLate {
		t.Errorf("parsed %+v", back)
	}
	bridge, err := ParseDeadLetter(nil, nil, (&DeadLetter{Reason: ReasonEmptyPayload, Stage: StageBridge, Time: t0}).Headers())
	if err != nil {
		t.Fatal(err)
	}
	if bridge.SourcePartition != -1 || bridge.SourceOffset != -1 {
		t.Errorf("bridge dead letter source = %d/%d, want -1/-1", bridge.SourcePartition, bridge.SourceOffset)
	}

	for name, hs := range map[string][]kgo.RecordHeader{
		"no reason":   {{Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}},
		"no stage":    {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}},
		"no time":     {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}},
		"bad time":    {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("now")}},
		"bad offset":  {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}, {Key: HeaderSourceOffset, Value: []byte("x")}},
		"version 2":   {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}, {Key: HeaderSchemaVersion, Value: []byte("2")}},
		"dup reason":  {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}},
		"bad part":    {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: []byte("bridge")}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}, {Key: HeaderSourcePartition, Value: []byte("99999999999")}},
		"empty stage": {{Key: HeaderReason, Value: []byte("late")}, {Key: HeaderStage, Value: nil}, {Key: HeaderTime, Value: []byte("2026-11-27T14:00:00Z")}},
	} {
		if _, err := ParseDeadLetter(nil, nil, hs); err == nil {
			t.Errorf("%s: ParseDeadLetter accepted %v", name, hs)
		} else if r, _ := ReasonOf(err); r != ReasonInvalidRecord {
			t.Errorf("%s: reason %q", name, r)
		}
	}
}

func TestReasons(t *testing.T) {
	all := AllReasons()
	seen := map[Reason]bool{}
	for _, r := range all {
		if seen[r] || r == "" || !r.Known() {
			t.Errorf("reason %q duplicate, empty or unknown", r)
		}
		seen[r] = true
	}
	all[0] = "mutated"
	if AllReasons()[0] == "mutated" {
		t.Error("AllReasons returns shared storage")
	}
	if Reason("nope").Known() {
		t.Error("unknown reason is Known")
	}
	err := fmtWrap(&RejectError{Reason: ReasonLate, Detail: "window closed"})
	if r, ok := ReasonOf(err); !ok || r != ReasonLate {
		t.Errorf("ReasonOf(wrapped) = %q, %v", r, ok)
	}
	if _, ok := ReasonOf(errors.New("x")); ok {
		t.Error("ReasonOf(plain error) = ok")
	}
	if got := (&RejectError{Reason: ReasonLate}).Error(); got != "late" {
		t.Errorf("Error() = %q", got)
	}
	// The DLQ JSON Schema lists every reason as an example.
	b, _ := JSONSchema(SchemaFileDLQ)
	for _, r := range AllReasons() {
		if !bytes.Contains(b, []byte(`"`+string(r)+`"`)) {
			t.Errorf("DLQ schema does not list reason %s", r)
		}
	}
}
