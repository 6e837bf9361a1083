//go:build integration

package e2e

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// logWriter sends progress lines to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b[:len(b)-min(1, len(b))]))
	return len(b), nil
}

// TestRunTiny runs the whole benchmark with tiny sizes against the shared
// services and checks that the count check passes and every figure is
// filled. IOTPIPE_E2E_SIZE=quick or full runs DefaultOptions(true or
// false) instead; the result is logged as JSON either way.
func TestRunTiny(t *testing.T) {
	env := testenv.Load(t)
	o := Options{Binary: testenv.Binary(t), Devices: 50, CeilingDuration: 5 * time.Second,
		StepDuration: 5 * time.Second, Steps: []float64{0.05, 0.1}, MaxBacklog: 200_000, DrainTimeout: 30 * time.Second,
		FixedDuration: 12 * time.Second, FixedOfSustained: 0.9, Log: logWriter{t}}
	if size := os.Getenv("IOTPIPE_E2E_SIZE"); size != "" {
		if size != "quick" && size != "full" {
			t.Fatalf("IOTPIPE_E2E_SIZE=%q: want quick or full", size)
		}
		o = DefaultOptions(size == "quick")
		o.Binary, o.Log = testenv.Binary(t), logWriter{t}
	}
	// Profiling runs: a fixed load of IOTPIPE_E2E_FIXED_RATE msg/s for
	// IOTPIPE_E2E_FIXED_DURATION, with CPU profiles of
	// IOTPIPE_E2E_PROFILE_SECONDS of each stage (Options.ProfileSeconds).
	if v := os.Getenv("IOTPIPE_E2E_FIXED_RATE"); v != "" {
		rate, err := strconv.ParseFloat(v, 64)
		if err != nil || rate <= 0 {
			t.Fatalf("IOTPIPE_E2E_FIXED_RATE=%q: want msg/s > 0", v)
		}
		o.FixedRate = rate
	}
	if v := os.Getenv("IOTPIPE_E2E_FIXED_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("IOTPIPE_E2E_FIXED_DURATION=%q: want a positive duration", v)
		}
		o.FixedDuration = d
	}
	if v := os.Getenv("IOTPIPE_E2E_PROFILE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("IOTPIPE_E2E_PROFILE_SECONDS=%q: want seconds > 0", v)
		}
		o.ProfileSeconds = n
	}
	if v := os.Getenv("IOTPIPE_E2E_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("IOTPIPE_E2E_DEVICES=%q: want a fleet size > 0", v)
		}
		o.Devices = n
	}
	// IOTPIPE_E2E_STAGE_ARGS="bridge=--kafka-linger=20ms;processor=--commit-interval=250ms"
	// passes extra arguments to stages (Options.StageArgs).
	if v := os.Getenv("IOTPIPE_E2E_STAGE_ARGS"); v != "" {
		o.StageArgs = map[string][]string{}
		for _, part := range strings.Split(v, ";") {
			name, args, ok := strings.Cut(part, "=")
			if !ok {
				t.Fatalf("IOTPIPE_E2E_STAGE_ARGS: %q is not stage=--flag=value,...", part)
			}
			o.StageArgs[name] = append(o.StageArgs[name], strings.Split(args, ",")...)
		}
	}
	ctx := testenv.Context(t, 2*time.Hour)
	res, err := Run(ctx, o)
	if res != nil {
		b, _ := json.MarshalIndent(res, "", "  ")
		t.Logf("result:\n%s", b)
	}
	if res != nil {
		checkCleanedUp(t, env, res.RunID)
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.Count.OK {
		t.Fatalf("count check: %s", res.Count.Mismatch)
	}
	for name, v := range map[string]float64{
		"broker_ceiling_msgs_per_s": res.BrokerCeilingMsgsPerS, "fixed_offered_msgs_per_s": res.FixedOfferedMsgsPerS,
		"fixed_msgs_per_s": res.FixedMsgsPerS, "fixed_ratio_to_ceiling": res.FixedRatioToCeiling,
		"latency_p50_s": res.LatencyP50S, "latency_p99_s": res.LatencyP99S, "fixed_duration_s": res.FixedDurationS,
		"broker_ceiling_acked_msgs_per_s": res.BrokerCeilingAckedMsgsPerS,
	} {
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if res.LatencySamples == 0 || res.BrokerCeilingReceived < res.BrokerCeilingAcked || res.BrokerCeilingReceived > res.BrokerCeilingAcked+res.BrokerCeilingUnconfirmed || res.BrokerCeilingAcked == 0 {
		t.Errorf("latency samples %d, ceiling received %d acked %d", res.LatencySamples, res.BrokerCeilingReceived, res.BrokerCeilingAcked)
	}
	// The stepped search comes first: at least its first step ran.
	if len(res.Steps) == 0 || res.Steps[0].OfferedMsgsPerS <= 0 || res.Steps[0].AchievedMsgsPerS <= 0 || res.FixedBasis == "" {
		t.Errorf("steps = %+v, fixed basis %q", res.Steps, res.FixedBasis)
	}
	if res.FixedSustained != res.Fixed.Sustained {
		t.Errorf("fixed_sustained %t ≠ fixed.sustained %t", res.FixedSustained, res.Fixed.Sustained)
	}
	if len(res.BridgeMQTTEvents) > 0 {
		t.Logf("bridge MQTT events: %q", res.BridgeMQTTEvents)
	}
	if res.Fixed.Phase != "fixed" || res.Fixed.MachineCPUBusy <= 0 || res.Fixed.DurationS <= 0 {
		t.Errorf("fixed = %+v", res.Fixed)
	}
	want := map[string]bool{"bridge": true, "processor": true, "sink timescale": true, "sink lake": true, "simulator": true,
		"mosquitto": true, "kafka": true, "postgresql": true, "versitygw": true}
	for _, p := range res.Processes {
		if p.PeakRSSBytes <= 0 {
			t.Errorf("process %s: peak RSS %d", p.Name, p.PeakRSSBytes)
		}
		delete(want, p.Name)
	}
	if len(want) > 0 {
		t.Errorf("processes not measured: %v", want)
	}
	if len(res.BrokerCeilingProcesses) < 3 || res.BrokerCeilingLimitedBy == "" {
		t.Errorf("ceiling processes %+v limited by %q", res.BrokerCeilingProcesses, res.BrokerCeilingLimitedBy)
	}
	if res.MaxSustainableMsgsPerS <= 0 {
		t.Logf("no step sustained (noisy machine?): %+v", res.Steps)
	}
}

// checkCleanedUp checks that the run's schema, topics and bucket are gone.
func checkCleanedUp(t *testing.T, env *testenv.Env, id string) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	var n int
	schema := "bench_" + strings.ReplaceAll(id, "-", "_")
	if err := env.PG(t).QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n); err != nil || n != 0 {
		t.Errorf("schema %s left behind (count %d, err %v)", schema, n, err)
	}
	topics, err := env.KafkaAdmin(t).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, id+".") {
			t.Errorf("topic %s left behind", name)
		}
	}
	if ok, err := env.S3(t).BucketExists(ctx, id); err != nil || ok {
		t.Errorf("bucket %s left behind (err %v)", id, err)
	}
}
