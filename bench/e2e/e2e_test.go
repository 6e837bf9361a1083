package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {99, 10}, {100, 10}, {10, 1}, {1, 1}, {90, 9}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
	if xs[0] != 5 {
		t.Error("percentile sorted its input")
	}
}

func samples(n int, f func(i int) lagSample) []lagSample {
	out := make([]lagSample, n)
	for i := range out {
		out[i] = f(i)
		out[i].At = time.Duration(i+1) * time.Second
	}
	return out
}

func TestDecide(t *testing.T) {
	r := stepRule{MinAchieved: 0.95, Growth: 0.05, Bound: 5 * time.Second, LakeBound: 15 * time.Second}
	dur := 30 * time.Second
	steady := samples(30, func(i int) lagSample {
		// saw-tooth of the lake sink: up to 10 s of input, then committed.
		return lagSample{Bridge: 10, Processor: 200, Timescale: 500 + int64(i%2)*300, Lake: int64(i%10) * 1000}
	})
	growing := samples(30, func(i int) lagSample { return lagSample{Bridge: int64(i) * 300, Processor: 100} })
	stuckEnd := samples(30, func(i int) lagSample {
		if i >= 20 {
			return lagSample{Timescale: 6000}
		}
		return lagSample{Timescale: 5500}
	})
	lakeBehind := samples(30, func(i int) lagSample { return lagSample{Lake: 20000} })
	for _, c := range []struct {
		name              string
		offered, achieved float64
		s                 []lagSample
		want              bool
		reason            string
	}{
		{"steady", 1000, 990, steady, true, ""},
		{"slow simulator", 1000, 900, steady, false, "achieved"},
		{"growing backlog", 1000, 1000, growing, false, "lag grew"},
		{"end lag above bound", 1000, 1000, stuckEnd, false, "TimescaleDB sink lag"},
		{"lake behind", 1000, 1000, lakeBehind, false, "lake sink lag"},
		{"no samples", 1000, 1000, nil, false, "too few"},
		{"no load", 0, 0, steady, false, "no offered"},
	} {
		v := decide(r, c.offered, c.achieved, dur, c.s)
		if v.Sustained != c.want || !strings.Contains(v.Reason, c.reason) {
			t.Errorf("%s: sustained=%t reason %q, want %t %q", c.name, v.Sustained, v.Reason, c.want, c.reason)
		}
	}
	v := decide(r, 1000, 1000, dur, growing)
	if v.MaxLag != 29*300+100 || v.EndLag != 19*300+100 || v.Growth != 19*300 {
		t.Errorf("growing: max %d end %d growth %d", v.MaxLag, v.EndLag, v.Growth)
	}
}

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 12 0 98765 1234567 890 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != 1 || st.CPUTicks != 325 || st.StartTicks != 98765 {
		t.Errorf("parseStat = %+v, want ppid 1, ticks 325, start 98765", st)
	}
	if _, err := parseStat([]byte("12 (x) S 1 2")); err == nil {
		t.Error("short stat: no error")
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Error("garbage: no error")
	}
}

func TestParseKB(t *testing.T) {
	status := "Name:\tiotpipe\nVmPeak:\t 1300000 kB\nVmHWM:\t   54063 kB\nVmRSS:\t   50000 kB\nThreads:\t9\n"
	for _, c := range []struct {
		key  string
		want int64
		ok   bool
	}{{"VmHWM", 54063 * 1024, true}, {"VmRSS", 50000 * 1024, true}, {"Threads", 9, true}, {"Pss", 0, false}} {
		got, ok := parseKB([]byte(status), c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("parseKB(%s) = %d %t, want %d %t", c.key, got, ok, c.want, c.ok)
		}
	}
}

func TestParseSimSummary(t *testing.T) {
	log := "simulate: 2 devices at 1 msg/s each (2 msg/s), format realistic\n" +
		"simulate: done after 3.0s: published 7 (2.3 msg/s), acked 6 (valid 6, invalid 0), duplicates 0, out-of-order 0, late 0, unconfirmed 1, refused 0, no-subscribers 0, connections 1, cpu 632.3µs/msg\n"
	s, err := parseSimSummary(log)
	if err != nil {
		t.Fatal(err)
	}
	if (s != simSummary{Published: 7, Acked: 6, Unconfirmed: 1}) {
		t.Errorf("summary = %+v", s)
	}
	if _, err := parseSimSummary("simulate: 2 devices\n"); err == nil {
		t.Error("no summary line: no error")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, quick := range []bool{true, false} {
		o := DefaultOptions(quick)
		o.Binary = "/bin/iotpipe"
		if err := o.validate(); err != nil {
			t.Errorf("DefaultOptions(%t): %v", quick, err)
		}
	}
	o := DefaultOptions(true)
	o.Steps = []float64{0.8, 0.6}
	o.Devices = 0
	err := o.validate()
	for _, want := range []string{"Binary", "Devices", "Steps"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate() = %v, want it to name %s", err, want)
		}
	}
	if full := DefaultOptions(false); full.FixedDuration < 5*time.Minute {
		t.Errorf("full fixed duration %s < 5m", full.FixedDuration)
	}
	o = DefaultOptions(false)
	o.Binary, o.FixedOfSustained, o.FixedRate, o.MaxBacklog, o.Steps = "/bin/iotpipe", 1.5, -1, 0, nil
	err = o.validate()
	for _, want := range []string{"FixedOfSustained", "FixedRate", "MaxBacklog", "Steps: empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate() = %v, want it to name %s", err, want)
		}
	}
}

// TestDefaultStepsBoundOverload checks that the full run's steps rise in
// small increments: one step above a sustainable load over-offers at most
// 0.1 × ceiling for StepDuration, i.e. a backlog far below Mosquitto's
// 1,000,000-message queue even for a 50k msg/s ceiling.
func TestDefaultStepsBoundOverload(t *testing.T) {
	for _, quick := range []bool{true, false} {
		o := DefaultOptions(quick)
		prev := o.Steps[0]
		for _, f := range o.Steps[1:] {
			if f-prev > 0.1+1e-9 {
				t.Errorf("quick=%t: step %.2f → %.2f rises by more than 0.1", quick, prev, f)
			}
			prev = f
		}
		if backlog := 0.1 * 50_000 * o.StepDuration.Seconds(); backlog > float64(o.MaxBacklog) {
			t.Errorf("quick=%t: worst backlog of one step %.0f > MaxBacklog %d", quick, backlog, o.MaxBacklog)
		}
		if o.MaxBacklog > 250_000 {
			t.Errorf("quick=%t: MaxBacklog %d", quick, o.MaxBacklog)
		}
	}
}

func TestMQTTEvent(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{`{"time":"t","level":"INFO","msg":"mqtt connected","session_present":false,"connection":1}`, false},
		{`{"time":"t","level":"INFO","msg":"mqtt connected","session_present":true,"connection":2}`, true},
		{`{"time":"t","level":"WARN","msg":"mqtt connection lost; reconnecting"}`, true},
		{`{"time":"t","level":"WARN","msg":"mqtt client error","err":"PINGRESP timed out"}`, true},
		{`{"time":"t","level":"WARN","msg":"mqtt broker disconnected us","reason_code":142}`, true},
		{`{"time":"t","level":"INFO","msg":"records produced"}`, false},
		{`not json mqtt connection lost`, false},
	} {
		if got := mqttEvent(c.line); got != c.want {
			t.Errorf("mqttEvent(%s) = %t, want %t", c.line, got, c.want)
		}
	}
}

func TestLatencyText(t *testing.T) {
	if got := latencyText(0, 0, 0); !strings.Contains(got, "n/a") {
		t.Errorf("no samples: %q", got)
	}
	if got := latencyText(0.5, 1.25, 10); got != "p50 0.50s p99 1.25s (n=10)" {
		t.Errorf("latencyText = %q", got)
	}
}

func TestCPUTimes(t *testing.T) {
	busy, total, err := cpuTimes([]byte("cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if total != 981 || busy != 161 {
		t.Errorf("cpuTimes = busy %d total %d, want 161 981", busy, total)
	}
	if _, _, err := cpuTimes([]byte("intr 1 2 3")); err == nil {
		t.Error("no cpu line: no error")
	}
}

func TestLimitedBy(t *testing.T) {
	ps := []Proc{{Name: "simulator", CPUCores: 0.4}, {Name: "mosquitto", CPUCores: 0.95}}
	if got := limitedBy(ps, 0.7); got != "mosquitto" {
		t.Errorf("limitedBy = %q, want mosquitto", got)
	}
	ps[1].CPUCores = 0.5
	if got := limitedBy(ps, 0.95); !strings.HasPrefix(got, "machine") {
		t.Errorf("limitedBy = %q, want machine", got)
	}
	if got := limitedBy(ps, 0.5); !strings.HasPrefix(got, "no process") {
		t.Errorf("limitedBy = %q, want no process", got)
	}
}

func TestBrokerDrops(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "mqtt", "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := "2026-11-27T18:25:07: Outgoing messages are being dropped for client e2e-1-ceiling-sub.\n" +
		"2026-11-27T18:33:18: Outgoing messages are being dropped for client e2e-1-bridge.\n" +
		"2026-11-27T18:33:19: Outgoing messages are being dropped for client e2e-1-bridge.\n"
	if err := os.WriteFile(filepath.Join(dir, "mqtt", "logs", "mosquitto.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	n, first := brokerDrops(dir, "e2e-1-bridge")
	if n != 2 || !strings.HasPrefix(first, "2026-11-27T18:33:18") {
		t.Fatalf("brokerDrops = %d, %q", n, first)
	}
	if n, _ := brokerDrops(dir, "e2e-2-bridge"); n != 0 {
		t.Fatalf("another client's drops counted: %d", n)
	}
}

// servicePids finds PostgreSQL where services.sh put its files: under the
// state directory, or (when the postgres user cannot enter it) at the
// base recorded in postgres/base.
func TestServicePidsPostgresElsewhere(t *testing.T) {
	state, elsewhere := t.TempDir(), t.TempDir()
	self := fmt.Sprint(os.Getpid())
	for _, f := range []string{"mqtt/pid", "kafka/pid", "s3/pid"} {
		writeFile(t, filepath.Join(state, f), self+"\n")
	}
	writeFile(t, filepath.Join(elsewhere, "data", "postmaster.pid"), self+"\n/data\n")
	writeFile(t, filepath.Join(state, "postgres", "base"), elsewhere+"\n")
	pids, err := servicePids(state)
	if err != nil {
		t.Fatal(err)
	}
	if pids["postgresql"] != os.Getpid() || len(pids) != 4 {
		t.Fatalf("pids %v, want postgresql = %d from %s", pids, os.Getpid(), elsewhere)
	}
	if err := os.Remove(filepath.Join(state, "postgres", "base")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(state, "postgres", "data", "postmaster.pid"), self+"\n")
	if pids, err := servicePids(state); err != nil || pids["postgresql"] != os.Getpid() {
		t.Fatalf("under the state dir: %v, %v", pids, err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
