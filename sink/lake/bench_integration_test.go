//go:build integration

package lake

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSink measures the whole sink against the real Kafka and
// versitygw: consume, decode, encode Parquet, upload, commit. It reports
// rows per second of wall time and per CPU-second of this process (the
// sink's cost per core; Kafka and versitygw run in other processes on the
// same machine), Parquet bytes per reading, and the ratio to the JSON
// input. IOTPIPE_BENCH_READINGS sets the input size (default 1M).
func BenchmarkSink(b *testing.B) {
	env := testenv.Load(b)
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_READINGS")); err == nil && v > 0 {
		n = v
	}
	raw, dlq := env.Topic(b, 2, nil), env.Topic(b, 1, nil)
	bucket := env.Bucket(b)
	cl := env.Kafka(b, kgo.ProducerBatchMaxBytes(4<<20), kgo.MaxBufferedRecords(100_000))
	ctx := testenv.Context(b, 30*time.Minute)
	fl := newFleet(1000, 7)
	fl.t = time.Now().Add(-time.Duration(n/1000+1) * 10 * time.Second).UTC().Truncate(time.Second)
	var r schemas.Reading
	rows, jsonBytes := 0, 0
	for range n {
		fl.next(&r)
		v := schemas.AppendRaw(nil, &r)
		jsonBytes += len(v)
		rows += len(r.Measurements)
		rec := schemas.RawRecord(v, &r, "")
		rec.Topic = raw
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Errorf("produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		group := env.Group(b)
		cfg := testConfig(b, env, bucket, raw, "-", dlq, group)
		cfg.Prefix = fmt.Sprintf("run%d/", i)
		cfg.MaxRows = 500_000
		cfg.MaxAge = 250 * time.Millisecond
		cpu0, t0 := cpuTime(), time.Now()
		_, reg, stop := runSink(b, cfg)
		testenv.Eventually(b, 20*time.Minute, 50*time.Millisecond, func() error {
			return committedAll(ctx, env, b, group, raw)
		})
		wall, cpu := time.Since(t0), cpuTime()-cpu0
		if err := stop(); err != nil {
			b.Fatal(err)
		}
		size := metricValue(reg, "iotpipe_lake_bytes_total", "readings")
		files := metricValue(reg, "iotpipe_lake_files_total", "readings")
		b.ReportMetric(float64(rows)/wall.Seconds(), "rows/s")
		b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
		b.ReportMetric(size/float64(n), "parquet_B/reading")
		b.ReportMetric(float64(jsonBytes)/float64(n), "rawjson_B/reading")
		b.ReportMetric(float64(jsonBytes)/size, "x_smaller")
		b.Logf("%d readings (%d rows) in %s wall, %s CPU, %v files, %.0f bytes", n, rows, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), files, size)
	}
}
