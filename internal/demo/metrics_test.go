package demo

import (
	"strings"
	"testing"
	"time"
)

const bridgeText = `# HELP iotpipe_bridge_received_total Messages received.
# TYPE iotpipe_bridge_received_total counter
iotpipe_bridge_received_total 1000
iotpipe_bridge_produced_total{topic="raw"} 990
iotpipe_bridge_produced_total{topic="dlq"} 10
iotpipe_bridge_rejected_total{reason="malformed_json"} 6
iotpipe_bridge_rejected_total{reason="timestamp_skew"} 4
iotpipe_bridge_rejected_total{reason="odd \"quoted\", label"} 0
go_gc_duration_seconds{quantile="0.5"} 1.5e-05 1700000000000
iotpipe_bridge_produce_latency_seconds_bucket{le="+Inf"} 990
# HELP iotpipe_bridge_batch_records Records per batch.
# TYPE iotpipe_bridge_batch_records histogram
iotpipe_bridge_batch_records_bucket{le="1"} 2
iotpipe_bridge_batch_records_bucket{le="10"} 5
iotpipe_bridge_batch_records_bucket{le="+Inf"} 6
iotpipe_bridge_batch_records_sum 42.5
iotpipe_bridge_batch_records_count 6
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.99"} 0.25
rpc_seconds_sum 3
rpc_seconds_count 12
`

func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader(bridgeText))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"iotpipe_bridge_received_total", nil, 1000},
		{"iotpipe_bridge_produced_total", nil, 1000},
		{"iotpipe_bridge_produced_total", []string{"topic", "raw"}, 990},
		{"iotpipe_bridge_rejected_total", nil, 10},
		{"go_gc_duration_seconds", []string{"quantile", "0.5"}, 1.5e-05},
		{"iotpipe_bridge_produce_latency_seconds_bucket", []string{"le", "+Inf"}, 990},
		{"iotpipe_bridge_batch_records_bucket", []string{"le", "10"}, 5},
		{"iotpipe_bridge_batch_records_bucket", []string{"le", "+Inf"}, 6},
		{"iotpipe_bridge_batch_records_sum", nil, 42.5},
		{"iotpipe_bridge_batch_records_count", nil, 6},
		{"rpc_seconds", []string{"quantile", "0.99"}, 0.25},
		{"rpc_seconds_count", nil, 12},
		{"missing", nil, 0},
	} {
		if got := m.Sum(c.name, c.match...); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.match, got, c.want)
		}
	}
	by := m.By("iotpipe_bridge_rejected_total", "reason")
	if len(by) != 3 || by["malformed_json"] != 6 || by[`odd "quoted", label`] != 0 {
		t.Errorf("By: %v", by)
	}
	if m.Has("missing") || !m.Has("iotpipe_bridge_received_total") {
		t.Error("Has")
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for _, page := range []string{"garbage line\n", "x{a=\"1\" 2\n", "x not-a-number\n"} {
		if m, err := Parse(strings.NewReader(page)); err == nil {
			t.Errorf("Parse(%q) = %v, nil; want an error", page, m)
		}
	}
}

func snap(at time.Time, bridge, processor, ts, lake string) Snapshot {
	s := Snapshot{At: at, Stages: map[string]Metrics{}}
	for name, text := range map[string]string{Bridge: bridge, Processor: processor, SinkTimescale: ts, SinkLake: lake} {
		if text == "" {
			s.Stages[name] = nil
			continue
		}
		m, _ := Parse(strings.NewReader(text))
		s.Stages[name] = m
	}
	return s
}

func TestProgress(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := snap(t0, "iotpipe_bridge_received_total 100\niotpipe_bridge_produced_total{topic=\"raw\"} 99\n",
		"iotpipe_processor_readings_accepted_total 90\niotpipe_processor_emitted_total{kind=\"metric\"} 0\n",
		"iotpipe_sink_timescale_rows_total{table=\"readings\"} 300\n",
		"iotpipe_lake_rows_total{dataset=\"readings\"} 0\niotpipe_lake_files_total{dataset=\"readings\"} 0\n")
	cur := snap(t0.Add(2*time.Second), "iotpipe_bridge_received_total 200\niotpipe_bridge_produced_total{topic=\"raw\"} 197\niotpipe_bridge_rejected_total{reason=\"malformed_json\"} 2\n",
		"iotpipe_processor_readings_accepted_total 190\niotpipe_processor_emitted_total{kind=\"metric\"} 200\niotpipe_processor_emitted_total{kind=\"activity\"} 50\n"+
			"iotpipe_processor_dlq_total{reason=\"late\"} 3\niotpipe_processor_duplicates_total 1\niotpipe_processor_watermark_lag_seconds 2.25\n"+
			"iotpipe_processor_consumer_lag_records{topic=\"raw\",partition=\"0\"} 11\n",
		"iotpipe_sink_timescale_rows_total{table=\"readings\"} 700\niotpipe_sink_timescale_rows_total{table=\"device_metrics\"} 200\n"+
			"iotpipe_sink_timescale_consumer_lag_records{topic=\"raw\",partition=\"0\"} 4\niotpipe_sink_timescale_consumer_lag_records{topic=\"raw\",partition=\"1\"} 2\n",
		"")
	got := strings.Join(Progress(prev, cur, 12*time.Second), "\n")
	want := `[  12s] bridge 50.0/s in, 49.0/s to raw | processor 50.0/s readings, windows emitted 200 (100.0/s) | timescale 300.0/s rows | lake - rows, - files
        lag: processor 11 records, timescale sink 6 records, processor watermark 2.2s behind
        dlq: bridge/malformed_json 2, processor/late 3 | duplicates dropped 1`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	// The first snapshot: totals, no rates; no lag metric: no lag line.
	first := strings.Join(Progress(Snapshot{}, snap(t0, "iotpipe_bridge_received_total 7\n", "", "", ""), time.Second), "\n")
	wantFirst := `[   1s] bridge 7 in, 0 to raw | processor - readings, windows emitted - (-) | timescale - rows | lake - rows, - files
        dlq: none`
	if first != wantFirst {
		t.Fatalf("got\n%s\nwant\n%s", first, wantFirst)
	}
}
