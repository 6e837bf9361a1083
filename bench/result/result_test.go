package result

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/bench/e2e"
)

func sampleFile(t *testing.T) *File {
	t.Helper()
	f := &File{SchemaVersion: SchemaVersion, StartedAt: time.Date(2026, 11, 27, 17, 30, 0, 0, time.UTC), DurationS: 170, Quick: true,
		StageDurationS: map[string]float64{"bridge": 12},
		Machine:        Machine{Cores: 2, GOMAXPROCS: 2, MemoryBytes: 24 << 30, CPUModel: "AMD EPYC"},
		Versions:       Versions{Go: "go1.26.8", Commit: "abc", Kafka: "4.1.1", TimescaleDB: "plain PostgreSQL"},
		Bridge:         BridgeFrom(parseFile(t, "bridge.txt"), 10000, "lz4"),
		Processor:      ProcessorFrom(parseFile(t, "processor.txt"), 100000),
		Timescale:      TimescaleFrom(parseFile(t, "timescale.txt"), 50000),
		Lake:           LakeFrom(parseFile(t, "lake.txt"), 100000),
		Micro:          MicroFrom(parseFile(t, "micro.txt")),
		EndToEnd: EndToEndFrom(&e2e.Result{Devices: 200, BrokerCeilingMsgsPerS: 9000, MaxSustainableMsgsPerS: 7200, MaxSustainableRatio: 0.8,
			LatencyP50S: 0.4, LatencyP99S: 1.9, LatencySamples: 250, Processes: []e2e.Proc{{Name: "bridge", CPUCores: 0.3, PeakRSSBytes: 50 << 20}},
			Count: e2e.Count{PublishedAcked: 100, RawRecords: 99, DLQRecords: 1, OK: true}}, nil),
	}
	f.Finish()
	return f
}

func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The field names are the file's contract: results are compared across
// runs by name. This test fails when one is renamed or dropped.
func TestFieldNamesAreStable(t *testing.T) {
	data, err := json.Marshal(sampleFile(t))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"":          "bridge duration_s end_to_end failed lake machine micro processor quick schema_version stage_duration_s started_at timescale versions",
		"machine":   "cores cpu_model gomaxprocs kernel load_avg_end load_avg_start memory_bytes",
		"versions":  "commit dirty go java kafka kcat mosquitto postgresql timescaledb versitygw",
		"bridge":    "allocs_per_msg benchmarks ceiling_cpu_us_per_msg ceiling_msgs_per_s ceiling_spread_pct compression cpu_ratio cpu_us_per_msg goal_met goal_ratio messages msgs_per_s ratio rounds spread_pct tls variants",
		"processor": "benchmarks ceiling_readings_per_s_per_core ceiling_us_per_reading changelog_bytes_per_reading goal_met goal_ratio goal_ratio_met goal_readings_per_s_per_core ratio readings readings_per_s_per_core transactions us_per_reading",
		"timescale": "benchmarks ceiling_rows_per_s db_path_ceiling_rows_per_s db_path_goal_met db_path_ratio db_path_rows_per_s goal_met goal_ratio ratio readings rows rows_per_s",
		"lake":      "benchmarks ceiling_rows_per_s goal_met goal_rows_per_cpu_s goal_x_smaller parquet_bytes_per_reading ratio rawjson_bytes_per_reading readings rows_per_cpu_s rows_per_s worst_case_x_smaller x_smaller",
		"micro":     "benchmarks decode_allocs_per_op decode_ns_per_op decode_raw_ns_per_op state_bytes_per_key task_handle_ns_per_op window_update_allocs_per_op window_update_ns_per_op",
		"end_to_end": "broker_ceiling_msgs_per_s count_check devices fixed_duration_s fixed_msgs_per_s fixed_offered_msgs_per_s fixed_ratio_to_ceiling goal_met goal_ratio " +
			"goal_latency_p99_s goal_pipeline_cpu_us_per_msg latency_goal_met latency_p50_s latency_p99_s max_sustainable_msgs_per_s max_sustainable_ratio_to_ceiling " +
			"pipeline_cpu_cores pipeline_cpu_goal_met pipeline_cpu_us_per_msg processes ratio steps",
	}
	var bridge map[string]json.RawMessage
	if err := json.Unmarshal(top["bridge"], &bridge); err != nil {
		t.Fatal(err)
	}
	top["bridge.tls"] = bridge["tls"]
	want["bridge.tls"] = "cpu_ratio drain_ratio goal_met goal_ratio messages plaintext_cpu_us_per_msg plaintext_drain_msgs_per_s plaintext_msgs_per_s ratio rounds tls_drain_msgs_per_s " +
		"simulator_plaintext_cpu_us_per_msg simulator_tls_cpu_us_per_msg throughput_cost tls_cpu_us_per_msg tls_msgs_per_s"
	for obj, fields := range want {
		raw := json.RawMessage(data)
		if obj != "" {
			raw = top[obj]
		}
		got := strings.Join(keys(t, raw), " ")
		for _, f := range strings.Fields(fields) {
			if !strings.Contains(" "+got+" ", " "+f+" ") {
				t.Errorf("%s: field %q missing (have %s)", obj, f, got)
			}
		}
	}
}

func TestWriteRead(t *testing.T) {
	f := sampleFile(t)
	dir := t.TempDir()
	path, err := f.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "20261127T173000Z.json" {
		t.Errorf("path %s", path)
	}
	g, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.EndToEnd == nil || g.EndToEnd.Result == nil || g.EndToEnd.LatencyP99S != 1.9 || !g.EndToEnd.Count.OK || g.Bridge.MsgsPerS != f.Bridge.MsgsPerS {
		t.Errorf("round trip: %+v", g.EndToEnd)
	}
	newest, err := Newest(dir, 1)
	if err != nil || len(newest) != 1 || newest[0] != path {
		t.Errorf("Newest = %v, %v", newest, err)
	}
	if _, err := Newest(dir, 2); err == nil {
		t.Error("Newest(2) of one file: no error")
	}
}

func TestEndToEndWithoutResult(t *testing.T) {
	data, err := json.Marshal(&File{EndToEnd: EndToEndFrom(nil, errTest("e2e: not implemented yet"))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"end_to_end":{"ratio":0,"goal_ratio":0.5,"goal_met":false,"goal_pipeline_cpu_us_per_msg":60,"pipeline_cpu_goal_met":false,"goal_latency_p99_s":1,"latency_goal_met":false,"error":"e2e: not implemented yet"}`) {
		t.Errorf("json: %s", data)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

func TestTable(t *testing.T) {
	f := sampleFile(t)
	f.Timescale.Error = "go test ./sink/timescale/ -bench ^BenchmarkReadings$: exit status 1: --- FAIL: BenchmarkReadings"
	var buf bytes.Buffer
	if err := f.PrintTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"stage", "ceiling", "bridge", "36,852", "7,882", "4.68×", "≥ 1.20×", "yes",
		"processor", "192,858", "1,068,060", "≥ 500,000/s", "NO", "timescale", "FAILED", "timescale: go test ./sink/timescale/", "lake", "13.37× smaller", "≥ 8.00× smaller",
		"end_to_end", "7,200", "9,000", "0.80×", "input = output", "micro", "0.4 / 1.9", "p99 ≤ 1.00 s", "≤ 60.0", "ratio to consume+decode", "≥ 0.80×"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	// Without latency samples the percentiles are not measured: "n/a",
	// not 0 s.
	f.EndToEnd.LatencyP50S, f.EndToEnd.LatencyP99S, f.EndToEnd.LatencySamples = 0, 0, 0
	buf.Reset()
	if err := f.PrintTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`p50 / p99 \(s\) +n/a \(0 samples\)`).MatchString(buf.String()) {
		t.Errorf("table without latency samples:\n%s", buf.String())
	}
	buf.Reset()
	if err := f.PrintMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "| bridge | msgs/s") || !strings.Contains(buf.String(), `mosquitto_sub \| kcat -P`) {
		t.Errorf("markdown:\n%s", buf.String())
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1234567.8: "1,234,568", -2500: "-2,500", 471.2: "471", 12.34: "12.3", 4.685: "4.68", 0.0123: "0.0123"} {
		if got := Num(v); got != want {
			t.Errorf("Num(%v) = %q, want %q", v, got, want)
		}
	}
}
