package schemas

import (
	"strings"
	"testing"
	"time"
)

// The names of IgnoreReason label a metric: they must not change.
func TestIgnoreReasonNames(t *testing.T) {
	want := []string{"string_value", "numeric_string", "non_finite_string", "bool_value", "null_value",
		"object_value", "array_value", "top_level_beside_metrics"}
	all := AllIgnoreReasons()
	if len(all) != len(want) {
		t.Fatalf("%d reasons, want %d", len(all), len(want))
	}
	for i, r := range all {
		if r.String() != want[i] {
			t.Errorf("IgnoreReason(%d) = %q, want %q", i, r, want[i])
		}
	}
	if IgnoreReason(200).String() != "unknown" {
		t.Error("out-of-range IgnoreReason has a name")
	}
	c := IgnoredCounts{IgnoredBoolValue: 2, IgnoredBesideMetrics: 3}
	if c.Total() != 5 {
		t.Errorf("Total() = %d", c.Total())
	}
}

func TestNumericString(t *testing.T) {
	for s, want := range map[string]bool{
		"21.5": true, "-3": true, "0": true, "1e3": true, "-0.5E-2": true, "1795787998123": true,
		"": false, "-": false, "+1": false, "01": false, "1.": false, ".5": false, "1e": false, " 1": false,
		"1 ": false, "21,5": false, "0x10": false, "NaN": false, "1_000": false, "１": false,
	} {
		var d decimal
		if got := numericString([]byte(s), &d); got != want {
			t.Errorf("numericString(%q) = %v, want %v", s, got, want)
		}
	}
}

// Each option, on a payload with every kind of ignored field, at the top
// level and beside metrics, and the reuse of one decoder between them.
func TestDecodeIgnoredOptions(t *testing.T) {
	received := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	const topic = "devices/d1/telemetry"
	flat := `{"ts":"2026-11-27T13:59:58Z","temp":21.5,"s":"x","n":"40.5","nan":"nan","b":true,"z":null,"o":{},"a":[]}`
	for _, tc := range []struct {
		name    string
		opts    DecodeOptions
		payload string
		reason  Reason // "" = accepted
		ignored map[IgnoreReason]uint32
		values  map[string]float64
	}{
		{"default", DecodeOptions{}, flat, "", map[IgnoreReason]uint32{IgnoredStringValue: 1, IgnoredNumericString: 1,
			IgnoredNonFiniteString: 1, IgnoredBoolValue: 1, IgnoredNullValue: 1, IgnoredObjectValue: 1, IgnoredArrayValue: 1},
			map[string]float64{"temp": 21.5}},
		{"bools", DecodeOptions{AcceptBools: true}, flat, "", map[IgnoreReason]uint32{IgnoredStringValue: 1, IgnoredNumericString: 1,
			IgnoredNonFiniteString: 1, IgnoredNullValue: 1, IgnoredObjectValue: 1, IgnoredArrayValue: 1},
			map[string]float64{"temp": 21.5, "b": 1}},
		{"numeric strings reject nan", DecodeOptions{NumericStrings: true}, flat, ReasonNonFinite, nil, nil},
		{"numeric strings", DecodeOptions{NumericStrings: true, AcceptBools: true}, strings.Replace(flat, `"nan":"nan",`, ``, 1), "",
			map[IgnoreReason]uint32{IgnoredStringValue: 1, IgnoredNullValue: 1, IgnoredObjectValue: 1, IgnoredArrayValue: 1},
			map[string]float64{"temp": 21.5, "b": 1, "n": 40.5}},
		{"strict", DecodeOptions{Strict: true}, flat, ReasonIgnoredField, nil, nil},
		{"strict clean", DecodeOptions{Strict: true}, `{"ts":"2026-11-27T13:59:58Z","temp":21.5,"device_id":"x"}`, "", nil,
			map[string]float64{"temp": 21.5}},
		{"beside metrics", DecodeOptions{AcceptBools: true, NumericStrings: true},
			`{"ts":"2026-11-27T13:59:58Z","x":1,"metrics":{"temp":"21.5","b":false},"s":"x","o":{}}`, "",
			map[IgnoreReason]uint32{IgnoredBesideMetrics: 3}, map[string]float64{"temp": 21.5, "b": 0}},
		{"metrics bool without option", DecodeOptions{}, `{"ts":"2026-11-27T13:59:58Z","metrics":{"b":true}}`, ReasonInvalidMeasurement, nil, nil},
		{"metrics numeric string without option", DecodeOptions{}, `{"ts":"2026-11-27T13:59:58Z","metrics":{"t":"1"}}`, ReasonInvalidMeasurement, nil, nil},
		{"metrics null with options", DecodeOptions{AcceptBools: true, NumericStrings: true}, `{"ts":"2026-11-27T13:59:58Z","metrics":{"t":null}}`, ReasonInvalidMeasurement, nil, nil},
		{"numeric string overflow", DecodeOptions{NumericStrings: true}, `{"ts":"2026-11-27T13:59:58Z","t":"1e999"}`, ReasonNonFinite, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDecoder(withDefaults(tc.opts))
			if err != nil {
				t.Fatal(err)
			}
			var r Reading
			// Twice: the second call must not see the first one's counts.
			for range 2 {
				err = d.Decode(topic, []byte(tc.payload), received, &r)
			}
			if tc.reason != "" {
				if got, _ := ReasonOf(err); got != tc.reason {
					t.Fatalf("err %v, want reason %s", err, tc.reason)
				}
				if tc.reason == ReasonIgnoredField && !strings.Contains(err.Error(), `field "s"`) {
					t.Errorf("strict error %q does not name the first ignored field", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want IgnoredCounts
			for k, v := range tc.ignored {
				want[k] = v
			}
			if r.IgnoredBy != want || r.IgnoredFields != want.Total() {
				t.Errorf("ignored %v (total %d), want %v", r.IgnoredBy, r.IgnoredFields, want)
			}
			if len(r.Measurements) != len(tc.values) {
				t.Errorf("measurements %v, want %v", r.Measurements, tc.values)
			}
			for name, v := range tc.values {
				if got, ok := r.Value(name); !ok || got != v {
					t.Errorf("%s = %v, %v; want %v", name, got, ok, v)
				}
			}
		})
	}
}

func TestRawIgnoredFields(t *testing.T) {
	base := `{"schema_version":1,"device_id":"d","event_time_us":1,"received_time_us":2,"measurements":{"t":1}`
	var r Reading
	if err := DecodeRaw([]byte(base+`,"ignored_fields":4}`), &r); err != nil || r.IgnoredFields != 4 {
		t.Fatalf("ignored_fields 4: %v, %d", err, r.IgnoredFields)
	}
	if err := DecodeRaw([]byte(base+`}`), &r); err != nil || r.IgnoredFields != 0 {
		t.Fatalf("no ignored_fields: %v, %d (a reused Reading must be reset)", err, r.IgnoredFields)
	}
	for _, bad := range []string{`-1`, `1.5`, `"3"`, `null`, `4294967296`} {
		if err := DecodeRaw([]byte(base+`,"ignored_fields":`+bad+`}`), &r); err == nil {
			t.Errorf("ignored_fields %s accepted", bad)
		} else if reason, _ := ReasonOf(err); reason != ReasonInvalidRecord {
			t.Errorf("ignored_fields %s: %v", bad, err)
		}
	}
	bad := Reading{DeviceID: "d", Measurements: []Measurement{{"t", 1}}, IgnoredFields: 1, IgnoredBy: IgnoredCounts{IgnoredBoolValue: 2}}
	if err := bad.Validate(); err == nil {
		t.Error("IgnoredBy not summing to IgnoredFields passes Validate")
	}
}

// withDefaults is DefaultDecodeOptions with the payload settings of o
// (AcceptBools, NumericStrings, Strict, and MaxDepth when set).
func withDefaults(o DecodeOptions) DecodeOptions {
	d := DefaultDecodeOptions()
	d.AcceptBools, d.NumericStrings, d.Strict = o.AcceptBools, o.NumericStrings, o.Strict
	if o.MaxDepth != 0 {
		d.MaxDepth = o.MaxDepth
	}
	return d
}
