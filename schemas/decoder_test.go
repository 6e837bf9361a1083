package schemas

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/iotpipe/iotpipe/internal/config"
)

func TestTopicTemplate(t *testing.T) {
	for _, tc := range []struct {
		template, filter string
		topics           map[string]string // topic -> id, "" = no match
	}{
		{DefaultTopicTemplate, "devices/+/telemetry", map[string]string{
			"devices/d1/telemetry":       "d1",
			"devices/café/telemetry":     "café",
			"devices//telemetry":         "",
			"devices/d1/telemetry/x":     "",
			"devices/d1":                 "",
			"devices/d1/status":          "",
			"Devices/d1/telemetry":       "",
			"devices/a\x01b/telemetry":   "",
			"devices/a\u0085b/telemetry": "",
			"devices/a b/telemetry":      "a b",
			"devices/\xff/telemetry":     "",
			"":                           "",
			"devices/" + strings.Repeat("x", 128) + "/telemetry": strings.Repeat("x", 128),
			"devices/" + strings.Repeat("x", 129) + "/telemetry": "",
		}},
		{"tenants/+/{device_id}/+/telemetry", "tenants/+/+/+/telemetry", map[string]string{
			"tenants/acme/d7/v1/telemetry": "d7",
			"tenants/acme/d7/telemetry":    "",
			"tenants//d7//telemetry":       "d7",
		}},
		{"{device_id}", "+", map[string]string{
			"d1":     "d1",
			"d1/x":   "",
			"$SYS":   "",
			"$share": "",
		}},
		{"{device_id}/up", "+/up", map[string]string{"$SYS/up": "", "d/up": "d"}},
		{"x/$y/{device_id}", "x/$y/+", map[string]string{"x/$y/d": "d"}},
	} {
		tt, err := ParseTopicTemplate(tc.template)
		if err != nil {
			t.Fatalf("ParseTopicTemplate(%q): %v", tc.template, err)
		}
		if tt.Filter() != tc.filter || tt.String() != tc.template {
			t.Errorf("%q: Filter() = %q, String() = %q", tc.template, tt.Filter(), tt.String())
		}
		for topic, want := range tc.topics {
			got, ok := tt.DeviceID(topic)
			if got != want || ok != (want != "") {
				t.Errorf("%q.DeviceID(%q) = %q, %v; want %q", tc.template, topic, got, ok, want)
			}
		}
	}
	for _, bad := range []string{
		"", "devices/telemetry", "devices/{device_id}/{device_id}", "devices/dev-{device_id}/x",
		"devices/{device_id}/#", "devices/a+/{device_id}", "devices/{site}/{device_id}", "a\x00/{device_id}",
		"\xff/{device_id}",
	} {
		if _, err := ParseTopicTemplate(bad); err == nil {
			t.Errorf("ParseTopicTemplate(%q) succeeded", bad)
		}
	}
}

func TestValidNames(t *testing.T) {
	for s, want := range map[string]bool{
		"temp": true, "t": true, "温度": true, "a b": true, "": false, "a\tb": false, "a\x7fb": false,
		"a\u009fb": false, "a\u00a0b": true, "\xff": false, strings.Repeat("n", 128): true, strings.Repeat("n", 129): false,
	} {
		if ValidName(s) != want || ValidDeviceID(s) != want || validNameBytes([]byte(s)) != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, ValidName(s), want)
		}
	}
}

func TestParseRFC3339(t *testing.T) {
	for in, want := range map[string]string{
		"2026-11-27T14:00:00Z":                "2026-11-27T14:00:00Z",
		"2026-11-27t14:00:00z":                "2026-11-27T14:00:00Z",
		"2026-11-27T14:00:00.1Z":              "2026-11-27T14:00:00.1Z",
		"2026-11-27T14:00:00.123456789Z":      "2026-11-27T14:00:00.123456Z",
		"2026-11-27T14:00:00.1234567891234Z":  "2026-11-27T14:00:00.123456Z",
		"2026-11-27T15:30:00+01:30":           "2026-11-27T14:00:00Z",
		"2026-11-27T00:00:00-23:59":           "2026-11-27T23:59:00Z",
		"2026-11-27T14:00:00-00:00":           "2026-11-27T14:00:00Z",
		"2024-02-29T00:00:00Z":                "2024-02-29T00:00:00Z",
		"2000-02-29T00:00:00Z":                "2000-02-29T00:00:00Z",
		"0001-01-01T00:00:00Z":                "0001-01-01T00:00:00Z",
		"9999-12-31T23:59:59.999999999+00:00": "9999-12-31T23:59:59.999999Z",
		"2026-12-31T23:59:59Z":                "2026-12-31T23:59:59Z",
	} {
		us, msg := parseRFC3339([]byte(in))
		if msg != "" {
			t.Errorf("parseRFC3339(%q): %s", in, msg)
			continue
		}
		if got := microTime(us).Format(time.RFC3339Nano); got != want {
			t.Errorf("parseRFC3339(%q) = %s, want %s", in, got, want)
		}
		// Agrees with the standard library where it accepts the input.
		if ref, err := time.Parse(time.RFC3339Nano, in); err == nil && !truncMicro(ref).Equal(microTime(us)) {
			t.Errorf("parseRFC3339(%q) = %v, time.Parse = %v", in, microTime(us), ref)
		}
	}
	for _, in := range []string{
		"", "2026-11-27", "2026-11-27T14:00:00", "2026-11-27 14:00:00Z", "2026-11-27T14:00:00+0100",
		"2026-11-27T14:00:00+01", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-02-29T00:00:00Z",
		"1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T14:60:00Z",
		"2026-11-27T14:00:60Z", "2026-11-27T14:00:00.Z", "2026-11-27T14:00:00+24:00", "2026-11-27T14:00:00+01:60",
		"2026-11-27T14:00:00Zjunk", "+2026-11-27T14:00:00Z", "2026-1a-27T14:00:00Z", "２026-11-27T14:00:00Z",
	} {
		if _, msg := parseRFC3339([]byte(in)); msg == "" {
			t.Errorf("parseRFC3339(%q) accepted", in)
		}
	}
}

func TestParseEpoch(t *testing.T) {
	for in, want := range map[string]int64{
		"0":                   0,
		"1":                   1_000_000,
		"1.5":                 1_500_000,
		"1795787998":          1795787998_000000,
		"1795787998.1234567":  1795787998_123456,
		"99999999999":         99999999999_000000, // < 1e11: seconds
		"99999999999.9999999": 99999999999_999999, // still seconds
		"100000000000":        100000000_000000,   // 1e11: milliseconds
		"1795787998123":       1795787998_123000,  // ms
		"1795787998123.9":     1795787998_123900,  // fractional ms
		"99999999999999":      99999999999_999000, // < 1e14: ms
		"100000000000000":     100000000_000000,   // 1e14: µs
		"1795787998123456":    1795787998_123456,  // µs
		"1795787998123456.7":  1795787998_123456,  // fractional µs truncated
		"99999999999999999":   99999999999_999999, // < 1e17: µs
		"100000000000000000":  100000000_000000,   // 1e17: ns
		"1795787998123456789": 1795787998_123456,  // ns
		"9999999999999999999": 9999999999_999999,  // just below 1e19
		"1.795787998e9":       1795787998_000000,  // exponent form
		"1795787998123e-3":    1795787998_123000,  // seconds, as mantissa and exponent
		"17957879981234567e2": 1795787998_123456,  // ns from exponent
		"0.0000001":           0,
		"-0":                  0,
	} {
		var d decimal
		_, err := scanDecimal([]byte(in), 0, &d)
		if err != nil {
			t.Fatalf("%s: %v", in, err.msg)
		}
		got, msg := parseEpoch(d)
		if msg != "" || got != want {
			t.Errorf("parseEpoch(%s) = %d, %q; want %d", in, got, msg, want)
		}
	}
	for _, in := range []string{"-1", "-0.5", "1e19", "10000000000000000000", "1e400"} {
		var d decimal
		_, _ = scanDecimal([]byte(in), 0, &d)
		if _, msg := parseEpoch(d); msg == "" {
			t.Errorf("parseEpoch(%s) accepted", in)
		}
	}
}

func TestDecodeOptionsValidate(t *testing.T) {
	d := DefaultDecodeOptions()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Topic.String() != DefaultTopicTemplate || d.MaxPayloadBytes != 64<<10 || d.MaxMeasurements != 256 ||
		d.MaxFutureSkew != 5*time.Minute || d.MaxPastSkew != 7*24*time.Hour || d.MaxDepth != 16 {
		t.Errorf("defaults = %+v", d)
	}
	for field, edit := range map[string]func(*DecodeOptions){
		"MaxPayloadBytes": func(o *DecodeOptions) { o.MaxPayloadBytes = -1 },
		"MaxMeasurements": func(o *DecodeOptions) { o.MaxMeasurements = 0 },
		"MaxFutureSkew":   func(o *DecodeOptions) { o.MaxFutureSkew = -time.Second },
		"MaxPastSkew":     func(o *DecodeOptions) { o.MaxPastSkew = 0 },
		"MaxDepth":        func(o *DecodeOptions) { o.MaxDepth = 1 },
		"Topic":           func(o *DecodeOptions) { o.Topic = nil },
	} {
		o := DefaultDecodeOptions()
		edit(&o)
		err := o.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: Validate() = %v, want an error naming the field", field, err)
		}
		if _, err := NewDecoder(o); err == nil {
			t.Errorf("%s: NewDecoder accepted invalid options", field)
		}
	}
	if o := DefaultDecodeOptions(); func() error { o.MaxDepth = 301; return o.Validate() }() == nil {
		t.Error("MaxDepth 301 accepted")
	}
}

// TestDecodeNoAllocs guards the steady-state zero-allocation property.
func TestDecodeNoAllocs(t *testing.T) {
	received := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	d, _ := NewDecoder(DefaultDecodeOptions())
	for _, bc := range benchPayloads {
		payload := []byte(bc.payload)
		var r Reading
		if err := d.Decode("devices/sensor-1/telemetry", payload, received, &r); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() {
			_ = d.Decode("devices/sensor-1/telemetry", payload, received, &r)
		}); n != 0 {
			t.Errorf("%s: Decode allocates %.1f times per call", bc.name, n)
		}
	}
	rec := AppendRaw(nil, benchReading())
	var rd RawDecoder
	var r Reading
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() {
		_ = rd.Decode(rec, &r)
		buf = AppendRaw(buf[:0], &r)
	}); n != 0 {
		t.Errorf("RawDecoder.Decode + AppendRaw allocate %.1f times per call", n)
	}
	mrec := AppendMetric(nil, benchMetric())
	var md MetricsDecoder
	var mr MetricsRecord
	if n := testing.AllocsPerRun(100, func() {
		_ = md.Decode(mrec, &mr)
		buf = AppendMetric(buf[:0], &mr.Metric)
	}); n != 0 {
		t.Errorf("MetricsDecoder.Decode + AppendMetric allocate %.1f times per call", n)
	}
}

// TestReaderMatchesEncodingJSON checks the strict reader against
// encoding/json on hand-picked edge cases.
func TestReaderMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{}`, `[]`, `""`, `0`, `-0`, `-0.0e-0`, `1E+2`, `01`, `1.`, `.1`, `-`, `+1`, `1e`, `1e+`,
		`"\u00e9"`, `"\u00G9"`, `"\x"`, `"\/"`, "\"\t\"", `"\ud800"`, `nul`, `true `, ` false`, `[1,]`,
		`{"a":1,}`, `{"a" 1}`, `{1:1}`, `[1 2]`, `{"a":[{"b":null}]}`, `"abc`, `"a\"`, `{"a":"b"}}`,
		"\"\xff\"", "\"\xed\xa0\x80\"", "{}\x00", "\x00{}", `NaN`, `Infinity`, `[-Infinity]`, "\u2028", `"` + "\u2028" + `"`,
	} {
		want := json.Valid([]byte(in)) && utf8.ValidString(in)
		end, _, jerr := scanValue([]byte(in), 0, 100, nil)
		got := jerr == nil && skipWS([]byte(in), end) == len(in)
		if got != want {
			t.Errorf("scanValue(%q) valid = %v, encoding/json says %v", in, got, want)
		}
	}
}

func TestReadingValueAndClone(t *testing.T) {
	r := goldenRaw()["raw-tags-no-seq.json"]
	if v, ok := r.Value("tenth"); !ok || v != 0.1 {
		t.Errorf("Value(tenth) = %v, %v", v, ok)
	}
	if _, ok := r.Value("nope"); ok {
		t.Error("Value(nope) found")
	}
	c := r.Clone()
	if !readingsIdentical(c, r) {
		t.Fatal("clone differs")
	}
	c.Measurements[0].Value = 1
	c.Tags["site"] = "b"
	if r.Measurements[0].Value == 1 || r.Tags["site"] == "b" {
		t.Error("Clone shares storage")
	}
}

func TestStringEscapes(t *testing.T) {
	received := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	d, _ := NewDecoder(DefaultDecodeOptions())
	payload := `{"ts":"2026-11-27T14:00:00Z","metrics":{` +
		`"\ud83d\ude00":1,"lone\ud800":2,"low\udc00x":3,"pair\ud800\u0041":4,"esc\/\"\\\b":5,"\u00e9\u4e2d":6}}`
	var r Reading
	err := d.Decode("devices/d/telemetry", []byte(payload), received, &r)
	if err == nil || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("\\b in a name: err = %v, want invalid name", err)
	}
	payload = strings.Replace(payload, `\b`, ``, 1)
	if err := d.Decode("devices/d/telemetry", []byte(payload), received, &r); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range r.Measurements {
		names = append(names, m.Name)
	}
	want := []string{"esc/\"\\", "lone\ufffd", "low\ufffdx", "pair\ufffdA", "é中", "😀"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("names = %q, want %q", names, want)
	}
	// The encoder keeps output valid JSON whatever the strings hold.
	bad := &Reading{DeviceID: "a\x00\"\\\n\r\t\x7f\xff", Measurements: []Measurement{{"\x01", 1}},
		Tags: map[string]string{"\u2028": "\xc3"}}
	out := AppendRaw(nil, bad)
	if !json.Valid(out) || !utf8.Valid(out) {
		t.Errorf("AppendRaw output is not valid JSON: %q", out)
	}
	var back struct {
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(out, &back); err != nil || back.DeviceID != "a\x00\"\\\n\r\t\x7f\ufffd" {
		t.Errorf("device_id = %q, %v", back.DeviceID, err)
	}
}
