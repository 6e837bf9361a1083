package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iotpipe/iotpipe/bench/e2e"
	"github.com/iotpipe/iotpipe/bench/result"
)

// Stage names, as --skip and --only take them.
// bridgeTLSRounds: BenchmarkBridgeTLS's interleaved rounds (its figures are
// their medians).
const bridgeTLSRounds = 5

var stageNames = []string{"bridge", "processor", "alert", "alert-latency", "timescale", "lake", "micro", "e2e"}

// sizes are the loads of one run.
type sizes struct {
	BridgeMessages    int
	ProcessorReadings int
	TimescaleReadings int
	LakeReadings      int
	EncodeBenchtime   string // lake ceiling (BenchmarkEncode: 200k readings per op)
	// AlertLatencyProbes: alerts timed by BenchmarkAlertLatency (one
	// every 500 ms).
	AlertLatencyProbes int
	MicroBenchtime     string
}

// defaultSizes: the full sizes are the stage issues' acceptance figures;
// the quick ones keep `make bench-quick` (with the quick end-to-end run of
// about 100 s) under 3 minutes on the 2-core machine.
func defaultSizes(quick bool) sizes {
	if quick {
		return sizes{BridgeMessages: 20_000, ProcessorReadings: 300_000, TimescaleReadings: 50_000,
			LakeReadings: 100_000, EncodeBenchtime: "1x", MicroBenchtime: "100ms", AlertLatencyProbes: 40}
	}
	return sizes{BridgeMessages: 100_000, ProcessorReadings: 1_500_000, TimescaleReadings: 250_000,
		LakeReadings: 1_000_000, EncodeBenchtime: "3x", MicroBenchtime: "1s", AlertLatencyProbes: 200}
}

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("bench/run", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "small sizes (make bench-quick: under 3 minutes)")
	outDir := fs.String("out", "bench/results", "directory of the result file (relative to the repository root)")
	skip := fs.String("skip", "", "comma-separated stages to skip: "+strings.Join(stageNames, ","))
	only := fs.String("only", "", "comma-separated stages to run (default: all)")
	binary := fs.String("binary", "", "iotpipe binary for the end-to-end run (default: build one into a temporary directory)")
	goCmd := fs.String("go", "go", "the go command")
	bridgeMsgs := fs.Int("bridge-messages", 0, "bridge load in messages, a multiple of 1000 (0: the quick/full default)")
	procReadings := fs.Int("processor-readings", 0, "processor input readings (0: default)")
	tsReadings := fs.Int("timescale-readings", 0, "TimescaleDB sink readings, 4 rows each (0: default)")
	lakeReadings := fs.Int("lake-readings", 0, "lake sink readings, 3 rows each (0: default)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench/run [flags]\n\nRuns the benchmark suite on the local services and writes <out>/<UTC timestamp>.json.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	selected, err := selectStages(*only, *skip)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	sz := defaultSizes(*quick)
	for _, o := range []struct {
		flag int
		dst  *int
	}{{*bridgeMsgs, &sz.BridgeMessages}, {*procReadings, &sz.ProcessorReadings}, {*tsReadings, &sz.TimescaleReadings}, {*lakeReadings, &sz.LakeReadings}} {
		if o.flag > 0 {
			*o.dst = o.flag
		}
	}
	if sz.BridgeMessages%1000 != 0 {
		fmt.Fprintln(os.Stderr, "bench: --bridge-messages must be a multiple of 1000 (1000 devices)")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := repoRoot(*goCmd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if err := loadServiceEnv(ctx, root); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	start := time.Now()
	f := &result.File{SchemaVersion: result.SchemaVersion, StartedAt: start.UTC().Truncate(time.Second), Quick: *quick,
		StageDurationS: map[string]float64{}, Machine: machine(), Versions: versions(ctx, root, *goCmd)}
	printHeader(os.Stdout, f, sz)

	r := &runner{goCmd: *goCmd, root: root, log: os.Stderr, timeout: 60 * time.Minute}
	if *quick {
		r.timeout = 10 * time.Minute
	}
	// Compile everything first (in parallel), so that compiling does not
	// run inside a stage's measurement and a build error shows up early.
	bin := *binary
	tmp, err := os.MkdirTemp("", "iotpipe-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	var buildErr error
	if bin == "" {
		bin = filepath.Join(tmp, "iotpipe")
		buildErr = r.command(ctx, "build", *goCmd, "build", "-o", bin, "./cmd/iotpipe")
	} else if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	r.testBins = filepath.Join(tmp, "tests")
	if err := r.command(ctx, "compile the benchmarks", *goCmd, "test", "-tags", "integration", "-c", "-o", r.testBins+"/",
		"./bridge/", "./processor/", "./alert/", "./sink/timescale/", "./sink/lake/", "./schemas/"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v (the stages that do not compile will fail)\n", err)
	}

	timed := func(name string, fn func()) {
		if ctx.Err() != nil {
			return
		}
		t0 := time.Now()
		fn()
		f.StageDurationS[name] = round(time.Since(t0).Seconds())
		fmt.Fprintf(r.log, "bench: %s done in %s\n", name, time.Since(t0).Round(100*time.Millisecond))
	}
	if selected["bridge"] {
		timed("bridge", func() {
			// The bridge against its ceiling, then over mutual TLS against
			// itself over plaintext (interleaved rounds, medians).
			bs, err := r.goTest(ctx, goBench{pkg: "./bridge/", pattern: "^(" + result.BridgeBench + "|" + result.BridgeTLSBench + "|" + result.BridgeDrainSecBench + ")$", benchtime: "1x",
				env: []string{"IOTPIPE_BENCH_MESSAGES=" + strconv.Itoa(sz.BridgeMessages), "IOTPIPE_BENCH_REPEATS=" + strconv.Itoa(bridgeTLSRounds)}})
			f.Bridge = result.BridgeFrom(bs, sz.BridgeMessages, result.DefaultBridgeVariant)
			result.WithRunError(err, &f.Bridge.Error, &f.Bridge.GoalMet)
		})
	}
	if selected["processor"] {
		timed("processor", func() {
			// -cpu 1: GOMAXPROCS=1, so readings/s is per core.
			bs, err := r.goTest(ctx, goBench{pkg: "./processor/", pattern: "^(" + result.ProcessorCeilingBench + "|" + result.ProcessorBench + "|" + result.ProcessorSecBench + ")$",
				benchtime: "1x", cpu: "1", env: []string{"IOTPIPE_BENCH_READINGS=" + strconv.Itoa(sz.ProcessorReadings)}})
			f.Processor = result.ProcessorFrom(bs, sz.ProcessorReadings)
			result.WithRunError(err, &f.Processor.Error, &f.Processor.GoalMet)
		})
	}
	if selected["alert"] {
		timed("alert", func() {
			// The alert stage with 1,000 rules against consume+decode of
			// the same input, -cpu 1; the readings of the processor's load.
			bs, err := r.goTest(ctx, goBench{pkg: "./alert/", pattern: "^(" + result.AlertCeilingBench + "|" + result.AlertBench + ")$",
				benchtime: "1x", cpu: "1", env: []string{"IOTPIPE_BENCH_READINGS=" + strconv.Itoa(sz.ProcessorReadings)}})
			f.Alert = result.AlertFrom(bs, sz.ProcessorReadings)
			result.WithRunError(err, &f.Alert.Error, &f.Alert.GoalMet)
		})
	}
	if selected["alert-latency"] {
		timed("alert-latency", func() {
			// Reading in Kafka → webhook received, through iotpipe alert
			// and iotpipe notify as processes, under 10,000 readings/s.
			bs, err := r.goTest(ctx, goBench{pkg: "./alert/", pattern: "^" + result.AlertLatencyBench + "$", benchtime: "1x",
				env: []string{"IOTPIPE_BENCH_PROBES=" + strconv.Itoa(sz.AlertLatencyProbes), "IOTPIPE_BENCH_LOAD=" + strconv.Itoa(result.AlertLatencyLoad)}})
			f.AlertLatency = result.AlertLatencyFrom(bs)
			result.WithRunError(err, &f.AlertLatency.Error, &f.AlertLatency.GoalMet)
		})
	}
	if selected["timescale"] {
		timed("timescale", func() {
			bs, err := r.goTest(ctx, goBench{pkg: "./sink/timescale/", pattern: "^" + result.TimescaleBench + "$", benchtime: "1x",
				env: []string{"IOTPIPE_BENCH_READINGS=" + strconv.Itoa(sz.TimescaleReadings)}})
			f.Timescale = result.TimescaleFrom(bs, sz.TimescaleReadings)
			result.WithRunError(err, &f.Timescale.Error, &f.Timescale.GoalMet, &f.Timescale.DBPathGoalMet)
		})
	}
	if selected["lake"] {
		timed("lake", func() {
			bs, err := r.goTest(ctx, goBench{pkg: "./sink/lake/", pattern: "^" + result.LakeBench + "$", benchtime: "1x",
				env: []string{"IOTPIPE_BENCH_READINGS=" + strconv.Itoa(sz.LakeReadings)}})
			// The ceiling: decode + Parquet encode on one core, no I/O.
			bs2, err2 := r.goTest(ctx, goBench{pkg: "./sink/lake/", pattern: "^BenchmarkEncode$", benchtime: sz.EncodeBenchtime, cpu: "1"})
			f.Lake = result.LakeFrom(append(bs, bs2...), sz.LakeReadings)
			result.WithRunError(errors.Join(err, err2), &f.Lake.Error, &f.Lake.GoalMet)
		})
	}
	if selected["micro"] {
		timed("micro", func() {
			bs, err := r.goTest(ctx, goBench{pkg: "./schemas/", pattern: ".", benchtime: sz.MicroBenchtime, benchmem: true})
			bs2, err2 := r.goTest(ctx, goBench{pkg: "./processor/", pattern: "^(BenchmarkWindowUpdate|BenchmarkTaskHandle|BenchmarkStateBytesPerKey|BenchmarkStateBytesPerKey10Hz)$",
				benchtime: sz.MicroBenchtime, benchmem: true})
			f.Micro = result.MicroFrom(append(bs, bs2...))
			result.WithRunError(errors.Join(err, err2), &f.Micro.Error)
		})
	}
	if selected["e2e"] {
		timed("end_to_end", func() {
			fmt.Fprintf(r.log, "\n=== end_to_end: e2e.Run (quick=%v) with %s\n", *quick, bin)
			if buildErr != nil {
				f.EndToEnd = result.EndToEndFrom(nil, buildErr)
				return
			}
			// A bound, so that a stuck run cannot hang the suite: well
			// above the planned phases (quick ≈ 1.5 min, full ≈ 10 min).
			ectx, cancel := context.WithTimeout(ctx, 4*r.timeout/5)
			defer cancel()
			res, err := runE2E(ectx, *quick, bin, r.log)
			f.EndToEnd = result.EndToEndFrom(res, err)
		})
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; writing what was measured")
	}

	f.Machine.LoadAvgEnd = loadAvg()
	f.DurationS = round(time.Since(start).Seconds())
	f.Finish()
	if ctx.Err() != nil {
		f.Failed = append(f.Failed, "interrupted")
	}
	dir := *outDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(root, dir)
	}
	path, werr := f.Write(dir)
	fmt.Println()
	fmt.Printf("bench: %s run, %s, load average %.2f at start, %.2f at end (%d cores)\n", mode(*quick),
		time.Duration(f.DurationS*float64(time.Second)).Round(time.Second), f.Machine.LoadAvgStart[0], f.Machine.LoadAvgEnd[0], f.Machine.Cores)
	_ = f.PrintTable(os.Stdout)
	if werr != nil {
		fmt.Fprintln(os.Stderr, "bench: write result:", werr)
		return 1
	}
	fmt.Printf("\nbench: result %s\n", rel(root, path))
	if len(f.Failed) > 0 {
		fmt.Printf("bench: FAILED: %s\n", strings.Join(f.Failed, ", "))
		return 1
	}
	return 0
}

// runE2E runs the end-to-end benchmark; a panic in it becomes the stage's
// error, so that the other stages' figures are still written.
func runE2E(ctx context.Context, quick bool, bin string, log io.Writer) (res *e2e.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("e2e panicked: %v", p)
		}
	}()
	o := e2e.DefaultOptions(quick)
	o.Binary, o.Log = bin, log
	return e2e.Run(ctx, o)
}

func selectStages(only, skip string) (map[string]bool, error) {
	valid := map[string]bool{}
	for _, s := range stageNames {
		valid[s] = true
	}
	parse := func(list string) ([]string, error) {
		var out []string
		for _, s := range strings.Split(list, ",") {
			s = strings.TrimSpace(s)
			if s == "end_to_end" {
				s = "e2e"
			}
			if s == "" {
				continue
			}
			if !valid[s] {
				return nil, fmt.Errorf("unknown stage %q (stages: %s)", s, strings.Join(stageNames, ","))
			}
			out = append(out, s)
		}
		return out, nil
	}
	sel := map[string]bool{}
	o, err := parse(only)
	if err != nil {
		return nil, fmt.Errorf("--only: %w", err)
	}
	if len(o) == 0 {
		o = stageNames
	}
	for _, s := range o {
		sel[s] = true
	}
	sk, err := parse(skip)
	if err != nil {
		return nil, fmt.Errorf("--skip: %w", err)
	}
	for _, s := range sk {
		delete(sel, s)
	}
	return sel, nil
}

func mode(quick bool) string {
	if quick {
		return "quick"
	}
	return "full"
}

func round(s float64) float64 { return float64(int64(s*10+0.5)) / 10 }

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

func printHeader(w io.Writer, f *result.File, sz sizes) {
	m, v := f.Machine, f.Versions
	dirty := ""
	if v.Dirty {
		dirty = " (dirty)"
	}
	fmt.Fprintf(w, "bench: %s run started %s\n", mode(f.Quick), f.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d cores (GOMAXPROCS %d), %.1f GiB, %s, Linux %s, load average %.2f %.2f %.2f\n",
		m.Cores, m.GOMAXPROCS, float64(m.MemoryBytes)/(1<<30), m.CPUModel, m.Kernel, m.LoadAvgStart[0], m.LoadAvgStart[1], m.LoadAvgStart[2])
	fmt.Fprintf(w, "versions: %s, commit %.12s%s, Kafka %s (Java %s), Mosquitto %s, kcat %s, PostgreSQL %s, TimescaleDB %s, versitygw %s\n",
		v.Go, v.Commit, dirty, v.Kafka, v.Java, v.Mosquitto, v.Kcat, v.PostgreSQL, v.TimescaleDB, v.Versitygw)
	fmt.Fprintf(w, "sizes: bridge %d messages, processor %d readings, alert latency %d probes, timescale %d readings, lake %d readings, micro -benchtime %s\n",
		sz.BridgeMessages, sz.ProcessorReadings, sz.AlertLatencyProbes, sz.TimescaleReadings, sz.LakeReadings, sz.MicroBenchtime)
}

// repoRoot is the directory of the main module's go.mod.
func repoRoot(goCmd string) (string, error) {
	out, err := exec.Command(goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the iotpipe module")
	}
	return filepath.Dir(mod), nil
}

// loadServiceEnv sets the IOTPIPE_* service variables from
// `scripts/services.sh env` when they are not set already (make bench sets
// them; a bare `go run ./bench/run` does not).
func loadServiceEnv(ctx context.Context, root string) error {
	if os.Getenv("IOTPIPE_KAFKA_BROKERS") != "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "services.sh"), "env")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("scripts/services.sh env: %w (start the services with make services-up)", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "IOTPIPE_") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	return nil
}
