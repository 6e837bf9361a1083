package result

import (
	"os"
	"reflect"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want Bench
		ok   bool
	}{
		{"BenchmarkBridgeVsPipeline/bridge-lz4-2         \t       1\t        47.70 allocs/msg\t        12.00 cpu-µs/msg\t     36852 msgs/s",
			Bench{Name: "BenchmarkBridgeVsPipeline/bridge-lz4", Procs: 2, N: 1, Metrics: map[string]float64{"allocs/msg": 47.7, "cpu-µs/msg": 12, "msgs/s": 36852}}, true},
		// -cpu 1: no suffix; a name ending in a word after a dash keeps it.
		{"BenchmarkKafkaCeilingDecode \t       1\t 734918099 ns/op\t   1068060 readings/s",
			Bench{Name: "BenchmarkKafkaCeilingDecode", Procs: 1, N: 1, Metrics: map[string]float64{"ns/op": 734918099, "readings/s": 1068060}}, true},
		{"BenchmarkEncode/sensor-resolution \t 1\t 5.3e+08 ns/op",
			Bench{Name: "BenchmarkEncode/sensor-resolution", Procs: 1, N: 1, Metrics: map[string]float64{"ns/op": 5.3e8}}, true},
		{"BenchmarkDecode/metrics_object/epoch_ms-8  2512345  471.2 ns/op  254.66 MB/s  0 B/op  0 allocs/op",
			Bench{Name: "BenchmarkDecode/metrics_object/epoch_ms", Procs: 8, N: 2512345, Metrics: map[string]float64{"ns/op": 471.2, "MB/s": 254.66, "B/op": 0, "allocs/op": 0}}, true},
		{"BenchmarkSink-2", Bench{}, false},                     // name printed, result not (yet)
		{"BenchmarkX-2 \t 1 \t 12 ns/op extra", Bench{}, false}, // odd field count
		{"BenchmarkX-2 \t one \t 12 ns/op", Bench{}, false},
		{"--- BENCH: BenchmarkReadings/sink_e2e-2", Bench{}, false},
		{"    bench_integration_test.go:223: sink_e2e: steady 0 rows/s", Bench{}, false},
		{"PASS", Bench{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseLine(tt.line)
		if ok != tt.ok || (ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestUnitKey(t *testing.T) {
	for unit, want := range map[string]string{
		"ns/op": "ns_per_op", "B/op": "bytes_per_op", "allocs/op": "allocs_per_op", "MB/s": "mb_per_s",
		"cpu-µs/msg": "cpu_us_per_msg", "µs/reading": "us_per_reading", "parquet_B/reading": "parquet_bytes_per_reading",
		"rows/cpu-s": "rows_per_cpu_s", "x_smaller": "x_smaller", "changelog-B/reading": "changelog_b_per_reading",
		"bytes/key": "bytes_per_key",
	} {
		if got := UnitKey(unit); got != want {
			t.Errorf("UnitKey(%q) = %q, want %q", unit, got, want)
		}
	}
}

func parseFile(t *testing.T, name string) []Bench {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bs, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}
