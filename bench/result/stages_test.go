package result

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/bench/e2e"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestBridgeFrom(t *testing.T) {
	b := BridgeFrom(parseFile(t, "bridge.txt"), 10000, "lz4")
	if b.Error != "" {
		t.Fatal(b.Error)
	}
	if b.MsgsPerS != 36852 || b.CPUMicrosPerMsg != 12 || b.AllocsPerMsg != 47.7 || b.CeilingMsgsPerS != 7882 || b.CeilingCPUMicrosMsg != 26 {
		t.Errorf("figures: %+v", b)
	}
	if !near(b.Ratio, 36852.0/7882) || !b.GoalMet || b.GoalRatio != GoalBridgeRatio {
		t.Errorf("ratio %v goal %v met %v", b.Ratio, b.GoalRatio, b.GoalMet)
	}
	if len(b.Variants) != 4 || b.Variants["zstd"].MsgsPerS != 17675 {
		t.Errorf("variants: %+v", b.Variants)
	}
	if b.Benchmarks["BenchmarkBridgeVsPipeline/pipeline"]["cpu_us_per_msg"] != 26 {
		t.Errorf("benchmarks: %+v", b.Benchmarks)
	}
	tls := b.TLS
	if tls == nil || tls.TLSMsgsPerS != 51094 || tls.PlaintextMsgsPerS != 56243 || tls.TLSCPUMicrosPerMsg != 14.5 || tls.PlaintextCPUMicrosPerMsg != 13.5 ||
		tls.SimTLSCPUMicrosPerMsg != 12.9 || tls.SimPlainCPUMicrosPerMsg != 8.375 || tls.Rounds != 3 {
		t.Fatalf("tls figures: %+v", tls)
	}
	if tls.TLSDrainMsgsPerS != 54000 || tls.PlaintextDrainMsgsPerS != 60000 || !near(tls.DrainRatio, 0.9) {
		t.Errorf("drain figures: %+v", tls)
	}
	if !near(tls.Ratio, 51094.0/56243) || !near(tls.ThroughputCost, 1-51094.0/56243) || !tls.GoalMet || tls.GoalRatio != 0.85 {
		t.Errorf("tls ratio %v cost %v goal %v met %v", tls.Ratio, tls.ThroughputCost, tls.GoalRatio, tls.GoalMet)
	}
}

// TLS costing more than 15 % of the throughput misses the goal; missing
// TLS figures are an error.
func TestBridgeTLSGoalAndMissing(t *testing.T) {
	var slow, none []Bench
	for _, b := range parseFile(t, "bridge.txt") {
		if b.Name == BridgeTLSBench+"/tls" {
			none = append(none, Bench{Name: "other"})
			b.Metrics = map[string]float64{"msgs/s": 40000, "drain-msgs/s": 59000, "cpu-µs/msg": 20, "rounds": 3}
			slow = append(slow, b)
			continue
		}
		slow, none = append(slow, b), append(none, b)
	}
	if b := BridgeFrom(slow, 10000, "lz4"); b.Error != "" || b.TLS.GoalMet || !b.GoalMet {
		t.Errorf("40000 vs 56243 msg/s: error %q, tls goal met %v, bridge goal met %v", b.Error, b.TLS.GoalMet, b.GoalMet)
	}
	var slowDrain []Bench
	for _, b := range parseFile(t, "bridge.txt") {
		if b.Name == BridgeTLSBench+"/tls" {
			b.Metrics = map[string]float64{"msgs/s": 56000, "drain-msgs/s": 30000, "cpu-µs/msg": 20, "rounds": 3}
		}
		slowDrain = append(slowDrain, b)
	}
	if b := BridgeFrom(slowDrain, 10000, "lz4"); b.Error != "" || b.TLS.GoalMet {
		t.Errorf("drain 30000 vs 60000 msg/s: error %q, tls goal met %v", b.Error, b.TLS.GoalMet)
	}
	if b := BridgeFrom(none, 10000, "lz4"); !strings.Contains(b.Error, "BenchmarkBridgeTLS/tls msgs/s") || b.TLS.GoalMet {
		t.Errorf("without the TLS figures: error %q", b.Error)
	}
}

func TestBridgeFromMissingPipeline(t *testing.T) {
	var bs []Bench
	for _, b := range parseFile(t, "bridge.txt") {
		if b.Name != BridgePipeline {
			bs = append(bs, b)
		}
	}
	b := BridgeFrom(bs, 10000, "lz4")
	if !strings.Contains(b.Error, "missing figures: BenchmarkBridgeVsPipeline/pipeline msgs/s") || b.GoalMet {
		t.Errorf("error %q, goal met %v", b.Error, b.GoalMet)
	}
	if b.MsgsPerS != 36852 {
		t.Errorf("the bridge's own figures are kept: %+v", b)
	}
}

func TestProcessorFrom(t *testing.T) {
	p := ProcessorFrom(parseFile(t, "processor.txt"), 100000)
	if p.Error != "" {
		t.Fatal(p.Error)
	}
	if p.ReadingsPerSPerCore != 192858 || p.CeilingReadingsPerSPerCore != 1068060 || p.MicrosPerReading != 5.185 || p.Transactions != 1 || p.ChangelogBytesPerReading != 6.923 {
		t.Errorf("figures: %+v", p)
	}
	if p.GoalMet || !near(p.Ratio, 192858.0/1068060) {
		t.Errorf("ratio %v met %v", p.Ratio, p.GoalMet)
	}
}

func TestTimescaleFrom(t *testing.T) {
	ts := TimescaleFrom(parseFile(t, "timescale.txt"), 50000)
	if ts.Error != "" {
		t.Fatal(ts.Error)
	}
	if ts.Rows != 200000 || ts.RowsPerS != 129178 || ts.DBPathRatio != 0 && !near(ts.DBPathRatio, ts.DBPathRowsPerS/ts.DBPathCeilingRowsPerS) {
		t.Errorf("figures: %+v", ts)
	}
	if !near(ts.Ratio, ts.RowsPerS/ts.CeilingRowsPerS) || ts.GoalMet != (ts.Ratio >= 0.8) {
		t.Errorf("ratio %v met %v", ts.Ratio, ts.GoalMet)
	}
}

func TestLakeFrom(t *testing.T) {
	l := LakeFrom(parseFile(t, "lake.txt"), 100000)
	if l.Error != "" {
		t.Fatal(l.Error)
	}
	if l.RowsPerCPUSecond != 794590 || l.RowsPerS != 350268 || l.CeilingRowsPerS != 1114537 || l.ParquetBytesPerReading != 14.97 || l.RawJSONBytesPerReading != 200.2 {
		t.Errorf("figures: %+v", l)
	}
	if !near(l.TimesSmaller, 200.2/14.97) || l.WorstCaseTimesSmaller != 7.369 || !l.GoalMet {
		t.Errorf("x smaller %v worst %v met %v", l.TimesSmaller, l.WorstCaseTimesSmaller, l.GoalMet)
	}
}

func TestMicroFrom(t *testing.T) {
	m := MicroFrom(parseFile(t, "micro.txt"))
	if m.Error != "" {
		t.Fatal(m.Error)
	}
	if m.DecodeNsPerOp == 0 || m.DecodeRawNsPerOp == 0 || m.WindowUpdateNsPerOp == 0 || m.TaskHandleNsPerOp == 0 || m.StateBytesPerKey == 0 {
		t.Errorf("figures: %+v", m)
	}
}

func TestWithRunError(t *testing.T) {
	b := BridgeFrom(parseFile(t, "bridge.txt"), 10000, "lz4")
	WithRunError(errors.New("go test ./bridge/: exit status 1"), &b.Error, &b.GoalMet)
	if b.Error != "go test ./bridge/: exit status 1" || b.GoalMet {
		t.Errorf("error %q met %v", b.Error, b.GoalMet)
	}
	ts := TimescaleFrom(nil, 10)
	WithRunError(errors.New("boom"), &ts.Error, &ts.GoalMet)
	if !strings.HasPrefix(ts.Error, "boom; missing figures: ") {
		t.Errorf("error %q", ts.Error)
	}
}

func TestEndToEndFromAndFinish(t *testing.T) {
	f := &File{EndToEnd: EndToEndFrom(nil, errors.New("e2e: not implemented yet")), Bridge: &Bridge{}}
	f.Finish()
	if got := strings.Join(f.Failed, ","); got != "end_to_end" || f.EndToEnd.GoalMet {
		t.Errorf("failed %q", got)
	}
	res := &e2e.Result{BrokerCeilingMsgsPerS: 10000, MaxSustainableMsgsPerS: 6000, MaxSustainableRatio: 0.6, Count: e2e.Count{OK: false}}
	f = &File{EndToEnd: EndToEndFrom(res, nil)}
	f.Finish()
	if got := strings.Join(f.Failed, ","); got != "end_to_end.count_check" || f.EndToEnd.GoalMet || f.EndToEnd.Ratio != 0.6 {
		t.Errorf("failed %q, %+v", got, f.EndToEnd)
	}
	res.Count.OK = true
	f = &File{EndToEnd: EndToEndFrom(res, nil)}
	f.Finish()
	if len(f.Failed) != 0 || !f.EndToEnd.GoalMet {
		t.Errorf("failed %v, %+v", f.Failed, f.EndToEnd)
	}
}

// The SASL_SSL-vs-PLAINTEXT figures come from the two sub-benchmarks;
// without them there are none.
func TestKafkaSecFrom(t *testing.T) {
	k := kafkaSecFrom(parseFile(t, "kafkasec.txt"), ProcessorSecBench, "readings/s", "cpu-µs/reading", GoalKafkaSecProcessor)
	if k == nil {
		t.Fatal("no figures")
	}
	if k.SASLSSL != 45000 || k.Plaintext != 50000 || !near(k.Ratio, 0.9) || !near(k.Cost, 0.1) || k.Rounds != 3 ||
		k.SASLSSLSpreadPct != 8 || k.PairedRatio != 0.92 || k.PlaintextSpreadPct != 4 || k.SASLSSLCPUMicros != 12.5 || k.PlaintextCPUMicros != 11 || !near(k.CPURatio, 12.5/11) {
		t.Errorf("figures: %+v", k)
	}
	if !k.GoalMet {
		t.Errorf("a cost of 10 %% meets the processor's goal (≤ 10 %%): %+v", k)
	}
	if k := kafkaSecFrom(parseFile(t, "kafkasec.txt"), ProcessorSecBench, "readings/s", "cpu-µs/reading", 0.95); k.GoalMet {
		t.Errorf("a cost of 10 %% meets a goal of ≤ 5 %%")
	}
	if k := kafkaSecFrom(parseFile(t, "processor.txt"), ProcessorSecBench, "readings/s", "cpu-µs/reading", GoalKafkaSecProcessor); k != nil {
		t.Errorf("figures without the benchmark: %+v", k)
	}
}

func TestProcessorFromWarm(t *testing.T) {
	p := ProcessorFrom(parseFile(t, "processor_warm.txt"), 1500000)
	if p.Error != "" {
		t.Fatal(p.Error)
	}
	if p.ReadingsPerSPerCore != 466466 || p.CeilingReadingsPerSPerCore != 1140750 || p.Transactions != 6 {
		t.Errorf("figures: %+v", p)
	}
	if p.ReadingsPerCPUSecond != 528037 || p.CeilingReadingsPerCPUSecond != 1147142 || p.CPURatio != 0.462 {
		t.Errorf("per CPU-second: %+v", p)
	}
	if old := ProcessorFrom(parseFile(t, "processor.txt"), 100000); old.ReadingsPerCPUSecond != 0 || old.CPURatio != 0 || old.Error != "" {
		t.Errorf("an older run has no per CPU-second figures: %+v", old)
	}
}
