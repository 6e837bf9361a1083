//go:build integration

package timescale

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// BenchmarkReadings measures readings rows/s into PostgreSQL three ways in
// one run, on the same rows and the same table:
//
//	psql_copy  psql \copy of a CSV file of the rows (the ceiling)
//	sink_write the sink's database path: its transactions (binary COPY,
//	           sink_offsets compare-and-set, commit) of BatchRows rows
//	sink_e2e   the whole sink: Kafka fetch, JSON decode, write, with a
//	           fresh consumer group each iteration; rows/s from the first
//	           committed batch to the last row (the group join is logged)
//
// Run: go test -tags integration -run '^$' -bench Readings -benchtime 3x ./sink/timescale/
// IOTPIPE_BENCH_READINGS sets the number of readings (4 rows each),
// IOTPIPE_BENCH_BATCH_ROWS the sink's batch size (default DefaultBatchRows).
func BenchmarkReadings(b *testing.B) {
	n := 50_000
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_READINGS")); err == nil && v > 0 {
		n = v
	}
	env := testenv.Load(b)
	f := newFixture(b, env, 3, 1)
	ctx := context.Background()
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	recs := make([]*kgo.Record, n)
	for i := range n {
		r := schemas.Reading{
			DeviceID: fmt.Sprintf("device-%05d", i%1000), EventTime: base.Add(time.Duration(i) * time.Millisecond).UTC(),
			ReceivedTime: base.Add(time.Duration(i)*time.Millisecond + 20*time.Millisecond).UTC(), Seq: int64(i), HasSeq: true,
			Measurements: []schemas.Measurement{{Name: "battery", Value: 3.7}, {Name: "humidity", Value: 41.25}, {Name: "pressure", Value: 1013.2}, {Name: "temperature", Value: 21.5 + float64(i%100)/10}},
		}
		recs[i] = schemas.RawRecord(schemas.AppendRaw(nil, &r), &r, "")
		recs[i].Topic = f.raw
		recs[i].Partition = int32(i % 3)
		recs[i].Offset = int64(i / 3)
	}
	rows := int64(4 * n)
	batchRows := DefaultBatchRows
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_BATCH_ROWS")); err == nil && v > 0 {
		batchRows = v
	}
	reset := func() {
		if _, err := f.owner.Exec(ctx, fmt.Sprintf(`TRUNCATE %[1]s.readings; DELETE FROM %[1]s.sink_offsets`, pgx.Identifier{f.schema}.Sanitize())); err != nil {
			b.Fatal(err)
		}
	}
	rate := map[string]float64{}
	report := func(b *testing.B, name string, elapsed time.Duration) {
		r := float64(rows) * float64(b.N) / elapsed.Seconds()
		rate[name] = r
		b.ReportMetric(r, "rows/s")
		b.ReportMetric(0, "ns/op")
	}

	// One timed psql \copy of the rows (the CSV file is written once).
	file := filepath.Join(b.TempDir(), "readings.csv")
	{
		fh, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriter(fh)
		var rd schemas.Reading
		for _, rec := range recs {
			if err := schemas.DecodeRaw(rec.Value, &rd); err != nil {
				b.Fatal(err)
			}
			for _, m := range rd.Measurements {
				fmt.Fprintf(w, "%s,%s,%s,%s,%d,%s\n", rd.EventTime.Format(time.RFC3339Nano), rd.DeviceID, m.Name,
					strconv.FormatFloat(m.Value, 'g', -1, 64), rd.Seq, rd.ReceivedTime.Format(time.RFC3339Nano))
			}
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		fh.Close()
	}
	psqlOnce := func(b *testing.B) time.Duration {
		reset()
		cmd := exec.Command("psql", f.writerDSN, "-v", "ON_ERROR_STOP=1", "-qc",
			fmt.Sprintf(`\copy %s.readings (time, device_id, metric, value, seq, received_at) FROM '%s' WITH (FORMAT csv)`, f.schema, file))
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("psql: %v\n%s", err, out)
		}
		elapsed := time.Since(start)
		if got := f.count(b, `SELECT count(*) FROM $S.readings`); got != rows {
			b.Fatalf("psql copied %d rows, want %d", got, rows)
		}
		return elapsed
	}

	// One timed pass of the sink's database path over the rows, in its
	// transactions of batchRows rows (decoding is not timed).
	cfg := f.config()
	cfg.BatchRows = batchRows
	st, err := newStore(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.pool.Close()
	nop := func(context.Context, []rejection) error { return nil }
	sinkWriteOnce := func(b *testing.B) time.Duration {
		reset()
		var batches []*batch
		bt := newBatch(f.raw, f.metrics, "")
		for _, rec := range recs {
			bt.add(rec, time.Now())
			if bt.rows >= cfg.BatchRows {
				batches = append(batches, bt)
				bt = newBatch(f.raw, f.metrics, "")
			}
		}
		if !bt.empty() {
			batches = append(batches, bt)
		}
		start := time.Now()
		for _, bt := range batches {
			if _, err := st.write(ctx, bt, nop); err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		if got := f.count(b, `SELECT count(*) FROM $S.readings`); got != rows {
			b.Fatalf("sink wrote %d rows, want %d", got, rows)
		}
		return elapsed
	}

	b.Run("psql_copy", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			elapsed += psqlOnce(b)
		}
		report(b, "psql_copy", elapsed)
	})
	b.Run("sink_write", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			elapsed += sinkWriteOnce(b)
		}
		report(b, "sink_write", elapsed)
	})
	// Both alternately, so that the shared machine's load drift hits both
	// alike: the ratio of this pair is the most trustworthy figure.
	b.Run("interleaved", func(b *testing.B) {
		var ep, es time.Duration
		for range b.N {
			ep += psqlOnce(b)
			es += sinkWriteOnce(b)
		}
		rp := float64(rows) * float64(b.N) / ep.Seconds()
		rs := float64(rows) * float64(b.N) / es.Seconds()
		b.ReportMetric(rp, "psql_rows/s")
		b.ReportMetric(rs, "sink_rows/s")
		b.ReportMetric(rs/rp, "x_ceiling")
		b.ReportMetric(0, "ns/op")
	})

	produced := false // the sub-benchmark body runs more than once
	b.Run("sink_e2e", func(b *testing.B) {
		if !produced {
			out := make([]*kgo.Record, len(recs))
			for i, r := range recs {
				out[i] = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			}
			f.produce(b, out)
			produced = true
		}
		// Steady state: from the first committed batch (the consumer group
		// has joined and fetching runs) to the last row; the rows of the
		// first batch are not counted. The time to join is logged apart.
		var elapsed, joins time.Duration
		var counted int64
		for i := range b.N {
			reset()
			cfg := f.config()
			cfg.BatchRows = batchRows
			cfg.Group = fmt.Sprintf("%s-e2e-%d", f.group, i)
			start := time.Now()
			stop := runSink(b, cfg)
			var first int64
			var t0 time.Time
			testenv.Eventually(b, 10*time.Minute, 5*time.Millisecond, func() error {
				got := f.count(b, `SELECT count(*) FROM $S.readings`)
				if first == 0 && got > 0 {
					first, t0 = got, time.Now()
				}
				if got != rows {
					return fmt.Errorf("readings = %d, want %d", got, rows)
				}
				return nil
			})
			elapsed += time.Since(t0)
			joins += t0.Sub(start)
			counted += rows - first
			stop()
		}
		r := float64(counted) / elapsed.Seconds()
		rate["sink_e2e"] = r
		b.ReportMetric(r, "rows/s")
		b.ReportMetric(0, "ns/op")
		b.Logf("sink_e2e: %.2fs to join the group and commit the first batch (mean), steady %.0f rows/s", joins.Seconds()/float64(b.N), r)
	})

	if c := rate["psql_copy"]; c > 0 {
		b.Logf("rows=%d psql_copy=%.0f rows/s sink_write=%.0f rows/s (%.2fx) sink_e2e=%.0f rows/s (%.2fx)",
			rows, c, rate["sink_write"], rate["sink_write"]/c, rate["sink_e2e"], rate["sink_e2e"]/c)
	}
}
