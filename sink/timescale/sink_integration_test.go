//go:build integration

package timescale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestSinkReadingsMetricsActivity runs the sink through real Kafka into
// real PostgreSQL: readings, window metrics whose revisions arrive out of
// order, activity, records that do not decode and a row the database
// refuses; then a restart that must not duplicate anything.
func TestSinkReadingsMetricsActivity(t *testing.T) {
	env := testenv.Load(t)
	f := newFixture(t, env, 2, 2)
	ctx := context.Background()
	// A database rule the sink does not know about: its rows must go to
	// the DLQ as db_rejected without blocking the partition.
	if _, err := f.owner.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s.readings ADD CONSTRAINT sane_value CHECK (value < 1e6)`, f.schema)); err != nil {
		t.Fatal(err)
	}

	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	devs := []string{"dev-a", "dev-b", "dev-c"}
	var raw []*kgo.Record
	for i := range 40 {
		for _, d := range devs {
			raw = append(raw, readingRecord(f.raw, d, int64(i), base.Add(time.Duration(i)*time.Second), 20+float64(i)/10))
		}
	}
	bad := readingRecord(f.raw, "dev-b", 1000, base, 5e6) // refused by sane_value
	// Valid for the wire format, out of PostgreSQL's timestamptz range.
	ancient := &kgo.Record{Topic: f.raw, Key: []byte("dev-c"), Value: []byte(`{"schema_version":1,"device_id":"dev-c","event_time_us":-9000000000000000000,"received_time_us":1764252000200000,"measurements":{"temp":1}}`)}
	raw = append(raw, bad, ancient, &kgo.Record{Topic: f.raw, Key: []byte("dev-x"), Value: []byte(`{"not":"a reading"}`)})

	// Revisions 1..3 of each window, shuffled, spread over several batches.
	var met []*kgo.Record
	for _, d := range devs {
		for w := range 4 {
			start := base.Add(time.Duration(w) * time.Minute)
			revs := []int64{1, 2, 3}
			rand.Shuffle(len(revs), func(i, j int) { revs[i], revs[j] = revs[j], revs[i] })
			for _, r := range revs {
				m := window(d, "temp", start, r)
				met = append(met, metricRecord(f.metrics, &m))
			}
			for _, r := range []int64{2, 1} {
				a := activity(d, start, r)
				met = append(met, activityRecord(f.metrics, &a))
			}
		}
	}
	met = append(met, &kgo.Record{Topic: f.metrics, Key: []byte("dev-x"), Value: []byte(`{"schema_version":1,"kind":"bogus"}`)})
	f.produce(t, raw)
	f.produce(t, met)

	cfg := f.config()
	cfg.BatchRows = 7 // many small batches: the revision guard works across transactions
	reg := prometheus.NewRegistry()
	stop, sink := runSinkReg(t, cfg, reg)

	wantReadings := int64(len(devs) * 40 * 2)
	f.waitCount(t, time.Minute, wantReadings, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, time.Minute, int64(len(devs)*4), `SELECT count(*) FROM $S.device_metrics`)
	f.waitCount(t, time.Minute, int64(len(devs)*4), `SELECT count(*) FROM $S.device_activity`)
	// Every window holds its highest revision, whatever the arrival order.
	f.waitCount(t, 30*time.Second, int64(len(devs)*4),
		`SELECT count(*) FROM $S.device_metrics WHERE revision = 3 AND count = 3 AND mean = 30 AND p99 = 30.99 AND bucket_end = bucket + interval '1 minute'`)
	f.waitCount(t, 30*time.Second, int64(len(devs)*4), `SELECT count(*) FROM $S.device_activity WHERE revision = 2 AND messages = 20 AND seq_gaps = 2 AND seq_resets = 2 AND ignored_fields = 6`)
	if n := f.count(t, `SELECT count(*) FROM (SELECT device_id, metric, seq FROM $S.readings GROUP BY 1, 2, 3 HAVING count(*) > 1) d`); n != 0 {
		t.Fatalf("%d duplicated readings", n)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.readings WHERE device_id = 'dev-a' AND metric = 'temp' AND seq = 5 AND value = 20.5 AND received_at = time + interval '1 ms'`); n != 1 {
		t.Fatalf("reading dev-a/temp/5 not found with its values")
	}

	dls := f.readDLQ(t, 4)
	reasons := map[schemas.Reason]int{}
	for _, d := range dls {
		reasons[d.Reason]++
		if d.Stage != schemas.StageSinkTimescale || d.SourceTopic == "" || d.SourceOffset < 0 {
			t.Errorf("dead letter without its source: %+v", d)
		}
		if d.Reason == schemas.ReasonRejectedByDatabase && (string(d.Value) != string(bad.Value) && string(d.Value) != string(ancient.Value) || d.SourceTopic != f.raw) {
			t.Errorf("db_rejected dead letter is not the refused record: %+v", d)
		}
	}
	if reasons[schemas.ReasonInvalidRecord] != 2 || reasons[schemas.ReasonRejectedByDatabase] != 2 {
		t.Fatalf("dead letters by reason = %v, want 2 invalid_record and 2 db_rejected", reasons)
	}

	// Metrics and readiness.
	testenv.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		m := map[string]float64{
			"rows readings":        testutil.ToFloat64(sink.m.rows.WithLabelValues(tableReadings)),
			"rejected db_rejected": testutil.ToFloat64(sink.m.rejected.WithLabelValues(string(schemas.ReasonRejectedByDatabase))),
			"rejected invalid":     testutil.ToFloat64(sink.m.rejected.WithLabelValues(string(schemas.ReasonInvalidRecord))),
			"db_up":                testutil.ToFloat64(sink.m.dbUp),
		}
		if m["rows readings"] != float64(wantReadings) || m["rejected db_rejected"] != 2 || m["rejected invalid"] != 2 || m["db_up"] != 1 {
			return fmt.Errorf("metrics = %v", m)
		}
		return nil
	})
	if n, err := testutil.GatherAndCount(reg, "iotpipe_sink_timescale_commit_seconds", "iotpipe_sink_timescale_batch_rows"); err != nil || n != 2 {
		t.Fatalf("commit/batch histograms: %d, %v", n, err)
	}
	if err := sink.CheckDB(ctx); err != nil {
		t.Fatalf("CheckDB: %v", err)
	}
	if err := sink.CheckKafka(ctx); err != nil {
		t.Fatalf("CheckKafka: %v", err)
	}

	// sink_offsets sits right after the last record of every partition.
	wantOffsets := int64(len(raw) + len(met))
	f.waitCount(t, 10*time.Second, wantOffsets, `SELECT sum(next_offset)::bigint FROM $S.sink_offsets WHERE consumer_group = $1`, f.group)

	// Restart: nothing is written twice, new records are written.
	stop()
	f.produce(t, []*kgo.Record{readingRecord(f.raw, "dev-a", 500, base.Add(time.Hour), 1)})
	old := window("dev-a", "temp", base, 2) // a replayed lower revision must not roll back
	f.produce(t, []*kgo.Record{metricRecord(f.metrics, &old)})
	runSink(t, cfg)
	f.waitCount(t, time.Minute, wantReadings+2, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, 30*time.Second, wantOffsets+2, `SELECT sum(next_offset)::bigint FROM $S.sink_offsets WHERE consumer_group = $1`, f.group)
	if n := f.count(t, `SELECT count(*) FROM $S.device_metrics WHERE revision <> 3`); n != 0 {
		t.Fatalf("%d windows rolled back to a lower revision", n)
	}
}

// TestSinkReadingsOff: with readings off the raw topic is not consumed.
func TestSinkReadingsOff(t *testing.T) {
	env := testenv.Load(t)
	f := newFixture(t, env, 1, 1)
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	m := window("dev-a", "temp", base, 1)
	f.produce(t, []*kgo.Record{readingRecord(f.raw, "dev-a", 1, base, 1), metricRecord(f.metrics, &m)})
	cfg := f.config()
	cfg.TopicRaw = SkipTopic
	runSink(t, cfg)
	f.waitCount(t, time.Minute, 1, `SELECT count(*) FROM $S.device_metrics`)
	if n := f.count(t, `SELECT count(*) FROM $S.readings`); n != 0 {
		t.Fatalf("readings = %d with readings off", n)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.sink_offsets WHERE topic = $1`, f.raw); n != 0 {
		t.Fatalf("raw topic consumed with readings off")
	}
}
