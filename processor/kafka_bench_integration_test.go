//go:build integration

package processor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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
// input read_committed and decoding each record, nothing else.
// readings/s counts from the first record to the last.
func BenchmarkKafkaCeilingDecode(b *testing.B) {
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
		el := time.Since(start)
		b.ReportMetric(float64(n)/el.Seconds(), "readings/s")
		b.ReportMetric(el.Seconds()*1e6/float64(n), "µs/reading")
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-µs/reading")
		cl.Close()
	}
}

// BenchmarkKafkaExactlyOnce runs the processor (exactly once: transactions,
// changelog, read_committed, the copy of every accepted reading to a
// readings topic) over the input until every input offset is committed.
// IOTPIPE_BENCH_NO_READINGS=1 turns the copy off (Topics.Readings "-"), to
// measure what it costs. readings/s counts from the first record processed to the
// commit of the last.
func BenchmarkKafkaExactlyOnce(b *testing.B) { benchExactlyOnce(b, testenv.Load(b)) }

// BenchmarkKafkaExactlyOncePlaintext is BenchmarkKafkaExactlyOnce against
// a private Kafka broker with a PLAINTEXT listener and no authorization
// (IOTPIPE_KAFKA_SECURITY=plaintext): the baseline of what SASL_SSL costs
// the processor, in the same run (go test -bench 'KafkaExactlyOnce').
// Caveat: the private broker starts cold (no JIT warm-up, empty page
// cache) while the shared one has run for a while; on a busy 2-core
// machine its readings/s came out far lower than over SASL_SSL (first
// runs: 10-15k vs 37-47k readings/s), so compare cpu-µs/reading, or warm
// both brokers, before reading a cost into readings/s.
func BenchmarkKafkaExactlyOncePlaintext(b *testing.B) {
	benchExactlyOnce(b, testenv.StartPrivateWith(b, []string{"IOTPIPE_KAFKA_SECURITY=plaintext"}, "kafka").Env)
}

func benchExactlyOnce(b *testing.B, env *testenv.Env) {
	topic := benchInput(b, env)
	for range b.N {
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
		go func() { done <- p.Run(ctx) }()
		adm := env.KafkaAdmin(b)
		began := time.Now()
		tctx := testenv.Context(b, 10*time.Minute)
		ends, err := adm.ListEndOffsets(tctx, topic)
		if err != nil {
			b.Fatal(err)
		}
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
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(benchN), "cpu-µs/reading")
		b.ReportMetric(float64(benchN)/el.Seconds(), "readings/s")
		b.ReportMetric(el.Seconds()*1e6/float64(benchN), "µs/reading")
		b.ReportMetric(testutil.ToFloat64(p.rt.Metrics().Txns.WithLabelValues("committed")), "txns")
		b.ReportMetric(testutil.ToFloat64(p.m.changelogBytes)/float64(benchN), "changelog-B/reading")
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
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
