//go:build integration

package alert

import (
	"context"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// The Kafka benchmarks read an input topic of benchN readings
// (IOTPIPE_BENCH_READINGS) of benchDevices devices at 1 Hz, each reading
// with a temperature and a humidity. Run them in one go (go test -bench
// 'BenchmarkAlert' -cpu 1): the ceiling and the stage on the same input,
// machine and load.
var benchN = 300_000

const benchDevices = 1000

// benchInput creates the benchmark's input topic and fills it. Every
// device's temperature crosses its threshold now and then (one crossing
// in 97 readings, resolved 5 readings later).
func benchInput(b *testing.B, env *testenv.Env) string {
	if n, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_READINGS")); err == nil && n > 0 {
		benchN = n
	}
	topic := env.Topic(b, 3, nil)
	cl := env.Kafka(b, kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	ctx := testenv.Context(b, 5*time.Minute)
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Second).UTC()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var perr error
	for i := range benchN {
		d, round := i%benchDevices, i/benchDevices
		temp := 20 + float64(i%13)/10
		if (round+d)%97 < 5 {
			temp = 45 // above every device's threshold (30-39.9)
		}
		r := &schemas.Reading{DeviceID: "device-" + strconv.Itoa(d), EventTime: t0.Add(time.Duration(round)*time.Second + time.Duration(d)*time.Microsecond),
			Seq: int64(round), HasSeq: true, Measurements: []schemas.Measurement{{Name: "hum", Value: 40 + float64(i%17)}, {Name: "temp", Value: temp}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
		rec.Topic = topic
		wg.Add(1)
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
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
	return topic
}

// benchRules stores the benchmark's 1,000 rules: a temperature threshold
// per device for 900 of the devices (scope device: what a per-device
// threshold table becomes), 1 humidity rule for all devices, and 99 rules
// on metrics the input does not carry. A reading thus meets 1-2 rules of
// the 1,000.
func benchRules(b *testing.B, f *fixture) {
	ctx := testenv.Context(b, 5*time.Minute)
	for d := range 900 {
		th := 30 + float64(d%100)/10
		r := rules.Rule{ID: "temp-" + strconv.Itoa(d), Scope: rules.ScopeDevice, ScopeID: "device-" + strconv.Itoa(d),
			Metric: "temp", Operator: rules.GT, Trigger: th, Clear: th - 3, ForCount: 2, Enabled: true}
		r.Normalize()
		if _, err := f.store.Create(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 100 {
		metric := "hum"
		if i > 0 {
			metric = "m" + strconv.Itoa(i)
		}
		r := rules.Rule{ID: "all-" + strconv.Itoa(i), Metric: metric, Operator: rules.GT, Trigger: 90, Clear: 80, Enabled: true}
		r.Normalize()
		if _, err := f.store.Create(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAlertCeiling is the ceiling: a consumer group reading the input
// read_committed and decoding each record, nothing else. readings/s counts
// from the first record to the last; readings/cpu-s is per CPU-second of
// this process.
func BenchmarkAlertCeiling(b *testing.B) {
	env := testenv.Load(b)
	topic := benchInput(b, env)
	for range b.N {
		cl := env.Kafka(b, kgo.ConsumerGroup(env.Group(b)), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
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
		report(b, n, time.Since(start), cpuTime()-cpu0)
		cl.Close()
	}
}

// BenchmarkAlertExactlyOnce runs the alert stage with the 1,000 rules
// over the input until every input offset is committed (transactions,
// changelog, read_committed). readings/s counts from the first reading
// evaluated to the commit of the last.
func BenchmarkAlertExactlyOnce(b *testing.B) {
	f := newBenchFixture(b)
	benchRules(b, f)
	topic := benchInput(b, f.env)
	for range b.N {
		f.topics.Raw = topic
		f.topics.Alerts = f.env.Topic(b, 3, nil)
		f.topics.Changelog = f.env.Topic(b, 3, map[string]string{"cleanup.policy": "compact"})
		group := f.env.Group(b)
		cfg := DefaultConfig()
		cfg.Kafka = f.env.KafkaConfig(b, testenv.Alert)
		cfg.Group, cfg.InstanceID, cfg.Topics = group, "bench", f.topics
		cfg.Topics.Metrics = SkipTopic
		cfg.DSN, cfg.Schema = f.env.PGReaderDSN, f.schema
		reg := prometheus.NewRegistry()
		st, err := New(cfg, service.Deps{Registry: reg})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- st.Run(ctx) }()
		adm := f.env.KafkaAdmin(b)
		tctx := testenv.Context(b, 10*time.Minute)
		ends, err := adm.ListEndOffsets(tctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		var start time.Time
		var cpu0 time.Duration
		for start.IsZero() {
			if testutil.ToFloat64(st.m.readings) > 0 {
				start, cpu0 = time.Now(), cpuTime()
			}
			select {
			case err := <-done:
				b.Fatalf("the stage stopped: %v", err)
			case <-tctx.Done():
				b.Fatal("no reading evaluated")
			case <-time.After(time.Millisecond):
			}
		}
		for {
			offs, err := adm.FetchOffsets(tctx, group)
			if err == nil && caughtUp(offs, ends, topic) {
				break
			}
			if tctx.Err() != nil {
				b.Fatalf("the group's committed offsets did not reach the end of the input: %v", offs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		el, cpu := time.Since(start), cpuTime()-cpu0
		report(b, benchN, el, cpu)
		b.ReportMetric(testutil.ToFloat64(st.m.rulesLoaded), "rules")
		b.ReportMetric(testutil.ToFloat64(st.m.events.WithLabelValues("FIRING"))+testutil.ToFloat64(st.m.events.WithLabelValues("RESOLVED")), "events")
		b.ReportMetric(testutil.ToFloat64(st.m.series), "series")
		b.ReportMetric(testutil.ToFloat64(st.rt.Metrics().Txns.WithLabelValues("committed")), "txns")
		if n := testutil.ToFloat64(st.m.readings); n != float64(benchN) {
			b.Logf("%v readings evaluated for %d in the input: a transaction aborted and its input was evaluated again", n, benchN)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

func newBenchFixture(b *testing.B) *fixture { return newFixture(b, 3, 1) }

func report(b *testing.B, n int, el, cpu time.Duration) {
	b.ReportMetric(float64(n)/el.Seconds(), "readings/s")
	b.ReportMetric(float64(n)/cpu.Seconds(), "readings/cpu-s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/reading")
}

// cpuTime is the CPU time (user + system) this process has used.
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
