package result

import (
	"strings"
	"testing"
)

func TestAlertLatencyFrom(t *testing.T) {
	line := "BenchmarkAlertLatency-2   	       1	20000355707 ns/op	       158.6 alert-p50-ms	       928.1 alert-p99-ms	         3.939 kafka-p50-ms	       109.8 kafka-p99-ms	     10070 load-readings/s	       934.7 max-ms	         9.782 notify-p50-ms	       390.7 notify-p99-ms	       170.7 p50-ms	       934.7 p99-ms	        40.00 probes"
	bs, err := Parse(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	a := AlertLatencyFrom(bs)
	if a.Error != "" || a.P99Ms != 934.7 || a.P50Ms != 170.7 || a.KafkaP99Ms != 109.8 || a.AlertP50Ms != 158.6 || a.NotifyP99Ms != 390.7 || a.Probes != 40 || !a.GoalMet {
		t.Fatalf("%+v", a)
	}
	slow := strings.Replace(line, "934.7 p99-ms", "1200 p99-ms", 1)
	bs, _ = Parse(strings.NewReader(slow))
	if a := AlertLatencyFrom(bs); a.GoalMet {
		t.Fatalf("p99 1200 ms: goal met")
	}
	light := strings.Replace(line, "10070 load-readings/s", "5000 load-readings/s", 1)
	bs, _ = Parse(strings.NewReader(light))
	if a := AlertLatencyFrom(bs); a.GoalMet {
		t.Fatalf("under half the load: goal met")
	}
	if a := AlertLatencyFrom(nil); a.Error == "" || a.GoalMet {
		t.Fatalf("no lines: %+v", a)
	}
	f := &File{AlertLatency: AlertLatencyFrom(nil)}
	f.Finish()
	if len(f.Failed) != 1 || f.Failed[0] != "alert-latency" {
		t.Fatalf("failed %v", f.Failed)
	}
}
