package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSelectStages(t *testing.T) {
	tests := []struct {
		only, skip string
		want       []string
		err        string
	}{
		{"", "", stageNames, ""},
		{"", "e2e,bridge", []string{"processor", "alert", "alert-latency", "timescale", "lake", "micro"}, ""},
		{"", "end_to_end", []string{"bridge", "processor", "alert", "alert-latency", "timescale", "lake", "micro"}, ""},
		{"lake, micro", "", []string{"lake", "micro"}, ""},
		{"lake,micro", "micro", []string{"lake"}, ""},
		{"", "brigde", nil, `--skip: unknown stage "brigde"`},
		{"alert-latency", "", []string{"alert-latency"}, ""},
		{"x", "", nil, `--only: unknown stage "x"`},
	}
	for _, tt := range tests {
		got, err := selectStages(tt.only, tt.skip)
		if tt.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Errorf("selectStages(%q, %q) error = %v, want %q", tt.only, tt.skip, err, tt.err)
			}
			continue
		}
		var names []string
		for _, s := range stageNames {
			if got[s] {
				names = append(names, s)
			}
		}
		if err != nil || !reflect.DeepEqual(names, tt.want) {
			t.Errorf("selectStages(%q, %q) = %v, %v; want %v", tt.only, tt.skip, names, err, tt.want)
		}
	}
}

func TestGoBenchArgs(t *testing.T) {
	g := goBench{pkg: "./processor/", pattern: "^BenchmarkKafkaExactlyOnce$", benchtime: "1x", cpu: "1", benchmem: true}
	got := strings.Join(g.args(10*time.Minute), " ")
	want := "test -tags integration -count 1 -run ^$ -bench ^BenchmarkKafkaExactlyOnce$ -benchtime 1x -timeout 10m0s -cpu 1 -benchmem ./processor/"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
}

// fakeGo writes a script that stands in for `go`: it prints out and exits
// with code.
func fakeGo(t *testing.T, out string, code int) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "out.txt"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"IOTPIPE_BENCH_READINGS=$IOTPIPE_BENCH_READINGS\"\ncat '" + filepath.Join(dir, "out.txt") + "'\nexit " + string(rune('0'+code)) + "\n"
	p := filepath.Join(dir, "go")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGoTestParsesAndStreams(t *testing.T) {
	out := "goos: linux\nBenchmarkKafkaCeilingDecode \t 1\t 734918099 ns/op\t 1068060 readings/s\nPASS\nok  \tgithub.com/iotpipe/iotpipe/processor\t2.585s\n"
	var log strings.Builder
	r := &runner{goCmd: fakeGo(t, out, 0), root: t.TempDir(), log: &log, timeout: time.Minute}
	bs, err := r.goTest(context.Background(), goBench{pkg: "./processor/", pattern: ".", benchtime: "1x", env: []string{"IOTPIPE_BENCH_READINGS=42"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Metrics["readings/s"] != 1068060 {
		t.Errorf("benches: %+v", bs)
	}
	if !strings.Contains(log.String(), "IOTPIPE_BENCH_READINGS=42\n") || !strings.Contains(log.String(), "BenchmarkKafkaCeilingDecode") {
		t.Errorf("the output is not streamed with the size variable:\n%s", log.String())
	}
}

func TestGoTestFailureKeepsFiguresAndSaysWhy(t *testing.T) {
	out := "BenchmarkReadings/psql_copy-2 \t 1\t 71189 rows/s\n--- FAIL: BenchmarkReadings/sink_e2e\n    bench_integration_test.go:200: readings = 3, want 4\nFAIL\nexit status 1\nFAIL\tgithub.com/iotpipe/iotpipe/sink/timescale\t5.7s\n"
	r := &runner{goCmd: fakeGo(t, out, 1), root: t.TempDir(), log: io.Discard, timeout: time.Minute}
	bs, err := r.goTest(context.Background(), goBench{pkg: "./sink/timescale/", pattern: "^BenchmarkReadings$", benchtime: "1x"})
	if err == nil || !strings.Contains(err.Error(), "--- FAIL: BenchmarkReadings/sink_e2e | bench_integration_test.go:200: readings = 3, want 4") {
		t.Errorf("err = %v", err)
	}
	if len(bs) != 1 || bs[0].Name != "BenchmarkReadings/psql_copy" {
		t.Errorf("benches before the failure are kept: %+v", bs)
	}
}

func TestGoTestNoBenchmark(t *testing.T) {
	r := &runner{goCmd: fakeGo(t, "PASS\n", 0), root: t.TempDir(), log: io.Discard, timeout: time.Minute}
	if _, err := r.goTest(context.Background(), goBench{pkg: "./x/", pattern: "^BenchmarkNone$", benchtime: "1x"}); err == nil || !strings.Contains(err.Error(), "no benchmark ran") {
		t.Errorf("err = %v", err)
	}
}

func TestGoTestRunsTheCompiledBinary(t *testing.T) {
	root, bins := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "sink", "lake"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"dir=$(pwd) args=$*\"\necho 'BenchmarkSink-2 \t 1\t 794590 rows/cpu-s'\n"
	if err := os.WriteFile(filepath.Join(bins, "lake.test"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	r := &runner{goCmd: "/nonexistent/go", root: root, log: &log, timeout: time.Minute, testBins: bins}
	bs, err := r.goTest(context.Background(), goBench{pkg: "./sink/lake/", pattern: "^BenchmarkSink$", benchtime: "1x", cpu: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Metrics["rows/cpu-s"] != 794590 {
		t.Errorf("benches: %+v", bs)
	}
	want := "dir=" + filepath.Join(root, "sink", "lake") + " args=-test.run ^$ -test.bench ^BenchmarkSink$ -test.benchtime 1x -test.timeout 1m0s -test.cpu 1"
	if !strings.Contains(log.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, log.String())
	}
}
