package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden expected files from current output")

// payloadCase is one folder of testdata/payloads.
type payloadCase struct {
	name    string
	dir     string
	topic   string
	payload []byte
	opts    DecodeOptions
}

// caseOptions is the optional options.json of a payload case.
type caseOptions struct {
	Template        string `json:"template"`
	MaxPayloadBytes int    `json:"max_payload_bytes"`
	MaxMeasurements int    `json:"max_measurements"`
	MaxDepth        int    `json:"max_depth"`
	MaxFutureSkew   string `json:"max_future_skew"`
	MaxPastSkew     string `json:"max_past_skew"`
	AcceptBools     bool   `json:"accept_bools"`
	NumericStrings  bool   `json:"numeric_strings"`
	Strict          bool   `json:"strict"`
}

// goldenReceived is the received time of every payload golden case.
func goldenReceived(tb testing.TB) time.Time {
	tb.Helper()
	b, err := os.ReadFile("testdata/payloads/received.txt")
	if err != nil {
		tb.Fatal(err)
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func loadPayloadCases(tb testing.TB) []payloadCase {
	tb.Helper()
	entries, err := os.ReadDir("testdata/payloads")
	if err != nil {
		tb.Fatal(err)
	}
	var cases []payloadCase
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", "payloads", e.Name())
		c := payloadCase{name: e.Name(), dir: dir, opts: DefaultDecodeOptions()}
		topic, err := os.ReadFile(filepath.Join(dir, "topic.txt"))
		if err != nil {
			tb.Fatal(err)
		}
		c.topic = strings.TrimSuffix(string(topic), "\n")
		if c.payload, err = os.ReadFile(filepath.Join(dir, "payload.json")); errors.Is(err, os.ErrNotExist) {
			c.payload, err = os.ReadFile(filepath.Join(dir, "payload.bin"))
		}
		if err != nil {
			tb.Fatalf("%s: %v", dir, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "options.json")); err == nil {
			var o caseOptions
			if err := json.Unmarshal(b, &o); err != nil {
				tb.Fatalf("%s/options.json: %v", dir, err)
			}
			if o.Template != "" {
				if c.opts.Topic, err = ParseTopicTemplate(o.Template); err != nil {
					tb.Fatalf("%s/options.json: %v", dir, err)
				}
			}
			// A setting the case file leaves out keeps its default.
			if o.MaxPayloadBytes != 0 {
				c.opts.MaxPayloadBytes = o.MaxPayloadBytes
			}
			if o.MaxMeasurements != 0 {
				c.opts.MaxMeasurements = o.MaxMeasurements
			}
			if o.MaxDepth != 0 {
				c.opts.MaxDepth = o.MaxDepth
			}
			if o.MaxFutureSkew != "" {
				c.opts.MaxFutureSkew, _ = time.ParseDuration(o.MaxFutureSkew)
			}
			if o.MaxPastSkew != "" {
				c.opts.MaxPastSkew, _ = time.ParseDuration(o.MaxPastSkew)
			}
			c.opts.AcceptBools, c.opts.NumericStrings, c.opts.Strict = o.AcceptBools, o.NumericStrings, o.Strict
		}
		cases = append(cases, c)
	}
	if len(cases) == 0 {
		tb.Fatal("no payload cases")
	}
	return cases
}

// rejection is the expected.json of a rejected case.
type rejection struct {
	Reason Reason `json:"reason"`
	Detail string `json:"detail"`
}

// decodeResult renders the outcome of Decode as the expected.json content:
// the indented telemetry.raw record, or the rejection.
func decodeResult(tb testing.TB, r *Reading, err error) []byte {
	tb.Helper()
	if err != nil {
		var re *RejectError
		if !errors.As(err, &re) {
			tb.Fatalf("error is not a *RejectError: %T %v", err, err)
		}
		b, err := json.MarshalIndent(rejection{Reason: re.Reason, Detail: re.Detail}, "", "  ")
		if err != nil {
			tb.Fatal(err)
		}
		return append(b, '\n')
	}
	return indentJSON(tb, AppendRaw(nil, r))
}

func indentJSON(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		tb.Fatalf("invalid JSON %q: %v", b, err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// ignoredResult renders r.IgnoredBy as the ignored.json content: reason
// name to count, for the reasons with a count.
func ignoredResult(tb testing.TB, r *Reading) []byte {
	tb.Helper()
	m := map[string]uint32{}
	for _, why := range AllIgnoreReasons() {
		if n := r.IgnoredBy[why]; n > 0 {
			m[why.String()] = n
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	return append(b, '\n')
}

// checkGoldenAbsent fails when the file at path exists, or removes it with
// -update.
func checkGoldenAbsent(t *testing.T, path string) {
	t.Helper()
	if *update {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists, but the decoder ignored no field", path)
	}
}

// checkGolden compares got with the file at path, or rewrites it with -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./schemas -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the decoder's output\n got: %s\nwant: %s", path, got, want)
	}
}

func TestDecodeGolden(t *testing.T) {
	received := goldenReceived(t)
	shared, err := NewDecoder(DefaultDecodeOptions())
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[Reason]int{}
	accepted := 0
	for _, c := range loadPayloadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			dec := shared
			if c.opts != DefaultDecodeOptions() {
				if dec, err = NewDecoder(c.opts); err != nil {
					t.Fatal(err)
				}
			}
			var r Reading
			err := dec.Decode(c.topic, c.payload, received, &r)
			got := decodeResult(t, &r, err)
			checkGolden(t, filepath.Join(c.dir, "expected.json"), got)

			accept := strings.HasPrefix(c.name, "ok_")
			if accept != (err == nil) {
				t.Errorf("case name says accept=%v, got error %v", accept, err)
			}
			if reason, ok := ReasonOf(err); ok {
				reasons[reason]++
				return
			}
			accepted++
			checkAccepted(t, &r, received)
			ignoredPath := filepath.Join(c.dir, "ignored.json")
			if r.IgnoredFields > 0 {
				checkGolden(t, ignoredPath, ignoredResult(t, &r))
			} else {
				checkGoldenAbsent(t, ignoredPath)
			}
			if r.IgnoredBy.Total() != r.IgnoredFields {
				t.Errorf("IgnoredBy %v does not sum to IgnoredFields %d", r.IgnoredBy, r.IgnoredFields)
			}
			if c.opts.Strict && r.IgnoredFields > 0 {
				t.Errorf("strict decoder accepted a payload with %d ignored fields", r.IgnoredFields)
			}

			// A fresh decoder and a reused Reading give the same result.
			fresh, _ := NewDecoder(dec.Options())
			r2 := Reading{Measurements: make([]Measurement, 7), Tags: map[string]string{"stale": "x"}}
			if err := fresh.Decode(c.topic, c.payload, received, &r2); err != nil {
				t.Fatalf("fresh decoder: %v", err)
			}
			if !readingsIdentical(&r, &r2) || r.IgnoredBy != r2.IgnoredBy {
				t.Errorf("fresh decoder differs:\n%+v\n%+v", r, r2)
			}
		})
	}
	if accepted == 0 {
		t.Error("no accepted case")
	}
	for _, reason := range allReasons {
		switch reason {
		case ReasonLate, ReasonInvalidRecord, ReasonRejectedByDatabase:
			continue // later stages
		case ReasonUnexpectedTopic:
			continue // the bridge's route table, before decoding
		}
		if reasons[reason] == 0 {
			t.Errorf("no golden case for reason %s", reason)
		}
	}
}

// checkAccepted asserts the invariants of an accepted reading, and that it
// round-trips through the telemetry.raw encoding.
func checkAccepted(tb testing.TB, r *Reading, received time.Time) {
	tb.Helper()
	if err := r.Validate(); err != nil {
		tb.Fatalf("accepted reading is invalid: %v", err)
	}
	for _, tm := range []time.Time{r.EventTime, r.ReceivedTime} {
		if tm.Location() != time.UTC || tm.Nanosecond()%1000 != 0 {
			tb.Errorf("time %v is not UTC with microsecond precision", tm)
		}
	}
	if !r.ReceivedTime.Equal(truncMicro(received)) {
		tb.Errorf("ReceivedTime %v, want %v", r.ReceivedTime, received)
	}
	enc := AppendRaw(nil, r)
	var back Reading
	if err := DecodeRaw(enc, &back); err != nil {
		tb.Fatalf("DecodeRaw(AppendRaw(r)) = %v\nrecord: %s", err, enc)
	}
	if !readingsIdentical(r, &back) {
		tb.Fatalf("round trip differs:\n got %+v\nwant %+v", back, *r)
	}
	if enc2 := AppendRaw(nil, &back); !bytes.Equal(enc, enc2) {
		tb.Fatalf("re-encoding differs:\n%s\n%s", enc, enc2)
	}
}
