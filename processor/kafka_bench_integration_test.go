//go:build integration

package processor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// The Kafka benchmarks each read an input topic of benchN readings
// (IOTPIPE_BENCH_READINGS) from 1000 devices at 1 Hz, two metrics each.
var benchN = 300_000

// benchInput creates the benchmark's own input topic (deleted when the
// benchmark ends) and fills it.
func benchInput(b *testing.B, env *testenv.Env) string {
	var benchTopic string
	func() {
		if n, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_READINGS")); err == nil && n > 0 {
			benchN = n
		}
		benchTopic = env.Topic(b, 3, nil)
		cl := env.Kafka(b, kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
		rs := benchReadings(benchN, 1000)
		ctx := testenv.Context(b, 5*time.Minute)
		var wg sync.WaitGroup
		var perr error
		var mu sync.Mutex
		for _, r := range rs {
			wg.Add(1)
			rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
			rec.Topic = benchTopic
			cl.Produce(ctx, rec, func(rec *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					perr = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		if perr != nil {
			b.Fatal(perr)
		}
	}()
	return benchTopic
}

// BenchmarkKafkaCeilingDecode is the ceiling: a consumer group reading the
// input read_committed and decoding each record, nothing else. Its rounds
// are measured together with BenchmarkKafkaExactlyOnce's, warm and
// interleaved (see procRounds); it reports the ceiling's side. readings/s
// counts from the first record to the last.
func BenchmarkKafkaCeilingDecode(b *testing.B) {
	r := procRounds(b, "ceiling")
	reportSide(b, r.ceiling)
}

// BenchmarkKafkaExactlyOnce runs the processor (exactly once: transactions,
// changelog, read_committed, the copy of every accepted reading to a
// readings topic) over the input until every input offset is committed.
// IOTPIPE_BENCH_NO_READINGS=1 turns the copy off (Topics.Readings "-"), to
// measure what it costs. readings/s counts from the first record processed to the
// commit of the last.
//
// Warm, interleaved, repeated, with BenchmarkKafkaCeilingDecode (see
// procRounds): it reports the processor's side, and cpu-ratio, the median
// over the rounds of the ceiling's cpu-µs/reading over the processor's in
// the same round (the share of the processor's CPU that consuming and
// decoding alone takes; its readings/cpu-s over the ceiling's).
func BenchmarkKafkaExactlyOnce(b *testing.B) {
	r := procRounds(b, "exactly_once")
	reportSide(b, r.eos)
	var txns, cl, pairs []float64
	for i, x := range r.eos {
		txns = append(txns, x.txns)
		cl = append(cl, x.changelogPerReading)
		pairs = append(pairs, r.ceiling[i].cpuPerReading/x.cpuPerReading)
	}
	b.ReportMetric(median(txns), "txns")
	b.ReportMetric(median(cl), "changelog-B/reading")
	b.ReportMetric(median(pairs), "cpu-ratio")
	b.ReportMetric(float64(r.stalls), "stalls")
}

// reportSide reports the medians of one side's rounds: readings/s (wall),
// µs/reading (its inverse), cpu-µs/reading (CPU time of this process),
// readings/cpu-s (its inverse: readings per CPU-second, which other load
// on a shared machine disturbs far less than readings/s), the spread of
// readings/s ((max − min) / median, in %) and the number of rounds.
func reportSide(b *testing.B, rs []roundResult) {
	var rates, cpus []float64
	for _, x := range rs {
		rates = append(rates, x.rate)
		cpus = append(cpus, x.cpuPerReading)
	}
	b.ReportMetric(median(rates), "readings/s")
	b.ReportMetric(1e6/median(rates), "µs/reading")
	b.ReportMetric(median(cpus), "cpu-µs/reading")
	b.ReportMetric(1e6/median(cpus), "readings/cpu-s")
	b.ReportMetric(spread(rates), "spread-%")
	b.ReportMetric(float64(len(rs)), "rounds")
	b.ReportMetric(0, "ns/op")
}

// procMeasurement is one warm, interleaved measurement of the ceiling and
// the exactly-once processor over the same input.
type procMeasurement struct {
	ceiling, eos []roundResult // the counted rounds, in order
	stalls       int
	reported     map[string]bool // the sides a benchmark has reported
}

var procLast struct {
	sync.Mutex
	m *procMeasurement
}

// procRounds measures the ceiling (consume + decode) and the exactly-once
// processor together, warm and interleaved, as BenchmarkKafkaExactlyOnceSec
// does for its two listeners: over one input topic, a warm-up round of
// each first (not counted: JIT and page cache of the broker, the client's
// first connections, the Go heap), then IOTPIPE_BENCH_REPEATS rounds
// (default and minimum 3) of both, the order alternating (ceiling,
// processor, processor, ceiling, ...) so that a drift of the machine's load
// favours neither. A processor that takes no record within 90 s of its
// start is stopped, its round run again and counted (stalls; at most 3).
//
// The first of BenchmarkKafkaCeilingDecode and BenchmarkKafkaExactlyOnce to
// run measures both; the other reports the same measurement's other side
// (a benchmark run alone measures both as well).
func procRounds(b *testing.B, side string) *procMeasurement {
	procLast.Lock()
	defer procLast.Unlock()
	if m := procLast.m; m != nil && !m.reported[side] {
		m.reported[side] = true
		return m
	}
	env := testenv.Load(b)
	topic := benchInput(b, env)
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_REPEATS")); err == nil && v > rounds {
		rounds = v
	}
	m := &procMeasurement{reported: map[string]bool{side: true}}
	eos := func() roundResult {
		for {
			r := exactlyOnceRound(b, env, topic, true)
			if !r.stalled {
				return r
			}
			if m.stalls++; m.stalls > 3 {
				b.Fatalf("the processor stalled %d times", m.stalls)
			}
		}
	}
	c := ceilingRound(b, env, topic)
	b.Logf("warm-up of the ceiling (not counted): %.0f readings/s, %.3f cpu-µs/reading", c.rate, c.cpuPerReading)
	e := eos()
	b.Logf("warm-up of the processor (not counted): %.0f readings/s, %.3f cpu-µs/reading", e.rate, e.cpuPerReading)
	b.ResetTimer()
	for i := range rounds {
		if i%2 == 0 {
			c = ceilingRound(b, env, topic)
			e = eos()
		} else {
			e = eos()
			c = ceilingRound(b, env, topic)
		}
		m.ceiling, m.eos = append(m.ceiling, c), append(m.eos, e)
		b.Logf("round %d: ceiling %.0f readings/s, %.3f cpu-µs/reading; processor %.0f readings/s, %.3f cpu-µs/reading, %.0f transactions; cpu ratio %.3f",
			i+1, c.rate, c.cpuPerReading, e.rate, e.cpuPerReading, e.txns, c.cpuPerReading/e.cpuPerReading)
	}
	b.StopTimer()
	procLast.m = m
	return m
}

// ceilingRound reads the whole input in a new consumer group,
// read_committed, decoding each record.
func ceilingRound(b *testing.B, env *testenv.Env, topic string) (r roundResult) {
	b.Helper()
	pprof.Do(context.Background(), pprof.Labels("round", "ceiling"), func(context.Context) { r = ceilingRun(b, env, topic) })
	return r
}

func ceilingRun(b *testing.B, env *testenv.Env, topic string) roundResult {
	cl := env.Kafka(b, kgo.ConsumerGroup(env.Group(b)), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	ctx := testenv.Context(b, 5*time.Minute)
	var dec schemas.RawDecoder
	var r schemas.Reading
	n := 0
	var start time.Time
	var cpu0 time.Duration
	for n < benchN {
		fs := cl.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			b.Fatal(err)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if start.IsZero() {
				start, cpu0 = time.Now(), cpuTime()
			}
			if err := dec.Decode(rec.Value, &r); err != nil {
				b.Fatal(err)
			}
			n++
		})
	}
	el := time.Since(start)
	return roundResult{rate: float64(n) / el.Seconds(), cpuPerReading: float64((cpuTime() - cpu0).Microseconds()) / float64(n)}
}

// BenchmarkKafkaExactlyOnceSec measures what SASL_SSL costs the
// processor: the same run as BenchmarkKafkaExactlyOnce over the SASL_SSL
// listener (SCRAM-SHA-512, TLS) and over a PLAINTEXT listener of the same
// private broker (testenv.StartKafkaSecBench: one JVM, one page cache, one
// input topic, the same ACLs), so that nothing but the client transport
// differs. Warm, interleaved, repeated: a warm-up round on each listener
// first (not counted: JIT, page cache, TLS session setup), then
// IOTPIPE_BENCH_REPEATS rounds (default and minimum 3) of both, the order
// alternating (SASL_SSL, PLAINTEXT, PLAINTEXT, SASL_SSL, ...) so that a
// drift of the machine's load does not favour either. Reported per
// listener (sub-benchmarks sasl_ssl and plaintext): the median readings/s
// and cpu-µs/reading of the rounds, their spread ((max − min) / median of
// readings/s, in %) and the number of rounds; the cost is 1 − sasl_ssl /
// plaintext readings/s (bench/result). A processor that takes no record
// within 90 s of its start is stopped, its round run again and counted
// (stalls). Such stalls were the broker's time retention emptying the
// input (its readings carry 2026-11-27 timestamps, older than the 7-day
// retention; the check every 5 minutes deleted them, so a new group
// started at the end): testenv.Topic now keeps test topics' records
// regardless of age, and each round checks that its input still starts
// at offset 0.
//
//	go test -tags integration -run '^$' -bench '^BenchmarkKafkaExactlyOnceSec$' -benchtime 1x -cpu 1 ./processor/
func BenchmarkKafkaExactlyOnceSec(b *testing.B) {
	sasl, plain := testenv.StartKafkaSecBench(b)
	topic := benchInput(b, sasl) // written by the admin over SASL_SSL; read by both
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_REPEATS")); err == nil && v > rounds {
		rounds = v
	}
	type variant struct {
		name string
		env  *testenv.Env
	}
	variants := []variant{{"sasl_ssl", sasl}, {"plaintext", plain}}
	stalls := map[string]int{}
	// run is one round over v; a stalled processor is counted and the
	// round run again (at most 3 stalls per listener).
	run := func(v variant) roundResult {
		for {
			r := exactlyOnceRound(b, v.env, topic, true)
			if !r.stalled {
				return r
			}
			if stalls[v.name]++; stalls[v.name] > 3 {
				b.Fatalf("over %s the processor stalled %d times", v.name, stalls[v.name])
			}
		}
	}
	for _, v := range variants {
		r := run(v)
		b.Logf("warm-up over %s (not counted): %.0f readings/s, %.2f cpu-µs/reading", v.name, r.rate, r.cpuPerReading)
	}
	rates, cpus := map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for i := range rounds {
		order := variants
		if i%2 == 1 {
			order = []variant{variants[1], variants[0]}
		}
		for _, v := range order {
			r := run(v)
			rates[v.name] = append(rates[v.name], r.rate)
			cpus[v.name] = append(cpus[v.name], r.cpuPerReading)
			b.Logf("round %d over %s: %.0f readings/s, %.2f cpu-µs/reading, %.0f transactions", i+1, v.name, r.rate, r.cpuPerReading, r.txns)
		}
	}
	b.StopTimer()
	// The ratio of each round's pair (both listeners, back to back), whose
	// median a drift of the machine's load disturbs least.
	var pairs []float64
	for i := range rates["sasl_ssl"] {
		pairs = append(pairs, rates["sasl_ssl"][i]/rates["plaintext"][i])
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			if v.name == "sasl_ssl" {
				b.ReportMetric(median(pairs), "paired-ratio")
			}
			b.ReportMetric(median(rates[v.name]), "readings/s")
			b.ReportMetric(median(cpus[v.name]), "cpu-µs/reading")
			b.ReportMetric(spread(rates[v.name]), "spread-%")
			b.ReportMetric(float64(len(rates[v.name])), "rounds")
			b.ReportMetric(float64(stalls[v.name]), "stalls")
			b.ReportMetric(0, "ns/op")
		})
	}
	s, p := median(rates["sasl_ssl"]), median(rates["plaintext"])
	b.Logf("processor over SASL_SSL / PLAINTEXT: %.3f (median of the rounds' ratios %.3f; %.0f vs %.0f readings/s, medians of %d rounds; spread %.1f %% vs %.1f %%; cpu-µs/reading %.2f vs %.2f): SASL_SSL costs %.1f %%",
		s/p, median(pairs), s, p, rounds, spread(rates["sasl_ssl"]), spread(rates["plaintext"]), median(cpus["sasl_ssl"]), median(cpus["plaintext"]), 100*(1-s/p))
}

// roundResult is one run of the processor over the whole input.
type roundResult struct {
	rate, cpuPerReading, txns, changelogPerReading float64
	// stalled: the processor took no record within firstRecordWait of
	// its start (what it was doing is in the benchmark's log).
	stalled bool
}

// firstRecordWait bounds the wait for a round's first record.
const firstRecordWait = 90 * time.Second

// exactlyOnceRound runs a processor (its own output topics and group)
// over the input topic until every input offset is committed.
// readings/s counts from the first record processed to the commit of the
// last.
//
// stallOK: a processor that takes no record within firstRecordWait is
// stopped and the round reported stalled, instead of failing the
// benchmark after 10 minutes.
func exactlyOnceRound(b *testing.B, env *testenv.Env, topic string, stallOK bool) roundResult {
	b.Helper()
	topics := Topics{Raw: topic, Metrics: env.Topic(b, 3, nil), DLQ: env.Topic(b, 1, nil),
		Changelog: env.Topic(b, 3, map[string]string{"cleanup.policy": "compact"}), Readings: env.Topic(b, 3, nil)}
	if os.Getenv("IOTPIPE_BENCH_NO_READINGS") == "1" {
		topics.Readings = SkipTopic
	}
	group := env.Group(b)
	cfg := DefaultConfig()
	cfg.Kafka, cfg.Group, cfg.InstanceID, cfg.Topics = env.KafkaConfig(b, testenv.Processor), group, "bench", topics
	cfg.Window.Size, cfg.Window.Lateness, cfg.Window.IdleTimeout = time.Minute, 5*time.Second, time.Hour
	if d, err := time.ParseDuration(os.Getenv("IOTPIPE_BENCH_COMMIT_INTERVAL")); err == nil {
		cfg.CommitInterval = d
	}
	p, err := New(cfg, service.Deps{Log: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Labelled (as are the goroutines its Kafka client starts) so that a
	// -cpuprofile of the benchmark tells the processor apart from the
	// ceiling: go tool pprof -tagfocus round=processor.
	go pprof.Do(ctx, pprof.Labels("round", "processor"), func(ctx context.Context) { done <- p.Run(ctx) })
	adm := env.KafkaAdmin(b)
	began := time.Now()
	tctx := testenv.Context(b, 10*time.Minute)
	ends, err := adm.ListEndOffsets(tctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	// The whole input must still be there: records deleted from its start
	// (the broker's time retention, should the topic not keep them) are
	// never read, and a new group starting after them waits for ever.
	starts, err := adm.ListStartOffsets(tctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	starts.Each(func(o kadm.ListedOffset) {
		if o.Offset != 0 {
			b.Fatalf("input %s/%d starts at offset %d (end %d): the broker deleted records of it (retention.ms?)", topic, o.Partition, o.Offset, ends[topic][o.Partition].Offset)
		}
	})
	var start time.Time
	var cpu0 time.Duration
	var offs kadm.OffsetResponses
	// giveUp says what the benchmark was waiting for, and in what state
	// the processor was, before failing.
	giveUp := func(what string) {
		var sb strings.Builder
		fmt.Fprintf(&sb, "gave up after %s waiting for %s", time.Since(began).Round(time.Second), what)
		ends.Each(func(e kadm.ListedOffset) {
			at := int64(-1)
			if o, ok := offs.Lookup(topic, e.Partition); ok {
				at = o.At
			}
			fmt.Fprintf(&sb, "\n  %s/%d: committed %d of end %d", topic, e.Partition, at, e.Offset)
		})
		for name, check := range p.Checks() {
			fmt.Fprintf(&sb, "\n  readiness %s: %v", name, check(context.Background()))
		}
		fmt.Fprintf(&sb, "\n  records in %v, transactions committed %v, aborted %v",
			testutil.ToFloat64(p.m.recordsIn), testutil.ToFloat64(p.rt.Metrics().Txns.WithLabelValues("committed")),
			testutil.ToFloat64(p.rt.Metrics().Txns.WithLabelValues("aborted")))
		select {
		case err := <-done:
			fmt.Fprintf(&sb, "\n  the processor had stopped: Run returned %v", err)
		default:
			fmt.Fprintf(&sb, "\n  the processor was still running")
		}
		b.Fatal(sb.String())
	}
	for start.IsZero() {
		if testutil.ToFloat64(p.m.recordsIn) > 0 {
			start, cpu0 = time.Now(), cpuTime()
		}
		if tctx.Err() != nil {
			giveUp("the first record to be processed")
		}
		if stallOK && time.Since(began) > firstRecordWait {
			var sb strings.Builder
			for name, check := range p.Checks() {
				fmt.Fprintf(&sb, "; readiness %s: %v", name, check(context.Background()))
			}
			// The input's end (high watermark) against its last stable
			// offset (what read_committed may read up to).
			// and its start now (records deleted by retention are never read).
			if lso, err := adm.ListCommittedOffsets(context.Background(), topic); err == nil {
				now, _ := adm.ListStartOffsets(context.Background(), topic)
				lso.Each(func(o kadm.ListedOffset) {
					e, _ := ends.Lookup(topic, o.Partition)
					st, _ := now.Lookup(topic, o.Partition)
					fmt.Fprintf(&sb, "; %s/%d: start %d, end %d, last stable %d", topic, o.Partition, st.Offset, e.Offset, o.Offset)
				})
			}
			if offs, err := adm.FetchOffsets(context.Background(), group); err == nil {
				offs.Each(func(o kadm.OffsetResponse) { fmt.Fprintf(&sb, "; committed %s/%d: %d", o.Topic, o.Partition, o.At) })
			}
			b.Logf("STALL: the processor (group %s) took no record of %s within %s of its start; transactions committed %v%s",
				group, topic, firstRecordWait, testutil.ToFloat64(p.rt.Metrics().Txns.WithLabelValues("committed")), sb.String())
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			return roundResult{stalled: true}
		}
		time.Sleep(time.Millisecond)
	}
	for {
		offs, err = adm.FetchOffsets(tctx, group)
		if err == nil && caughtUp(offs, ends, topic) {
			break
		}
		if tctx.Err() != nil {
			giveUp("the group's committed offsets to reach the end of the input")
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(start)
	r := roundResult{rate: float64(benchN) / el.Seconds(), cpuPerReading: float64((cpuTime() - cpu0).Microseconds()) / float64(benchN),
		txns: testutil.ToFloat64(p.rt.Metrics().Txns.WithLabelValues("committed")), changelogPerReading: testutil.ToFloat64(p.m.changelogBytes) / float64(benchN)}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return r
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is (max − min) / median of xs, in percent.
func spread(xs []float64) float64 {
	m := median(xs)
	if m == 0 {
		return 0
	}
	return 100 * (slices.Max(xs) - slices.Min(xs)) / m
}

// cpuTime is the CPU time (user + system) this process has used: per
// reading it is a figure that other processes on a loaded machine disturb
// far less than wall-clock throughput.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func caughtUp(offs kadm.OffsetResponses, ends kadm.ListedOffsets, topic string) bool {
	ok := true
	ends.Each(func(e kadm.ListedOffset) {
		o, found := offs.Lookup(topic, e.Partition)
		if !found || o.At < e.Offset {
			ok = false
		}
	})
	return ok
}

func benchLogger() *slog.Logger {
	if os.Getenv("IOTPIPE_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return nil
}
