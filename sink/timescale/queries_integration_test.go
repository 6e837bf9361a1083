//go:build integration

package timescale

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestQueries fills a database through the sink and runs the example
// queries of queries/*.sql as the read-only role.
func TestQueries(t *testing.T) {
	env := testenv.Load(t)
	f := newFixture(t, env, 1, 1)
	now := time.Now().UTC()
	hour := now.Truncate(time.Hour)

	temp := func(dev string, seq int64, at time.Time, v float64) *kgo.Record {
		r := schemas.Reading{DeviceID: dev, EventTime: at.Truncate(time.Microsecond), ReceivedTime: at.Truncate(time.Microsecond),
			Seq: seq, HasSeq: true, Measurements: []schemas.Measurement{{Name: "temperature", Value: v}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, &r), &r, "")
		rec.Topic = f.raw
		return rec
	}
	recs := []*kgo.Record{
		temp("dev-1", 1, now.Add(-time.Hour), 10), temp("dev-1", 2, now.Add(-time.Minute), 42),
		temp("dev-2", 1, now.Add(-30*time.Minute), 7),
		temp("dev-3", 1, now.Add(-3*time.Minute), 1), temp("dev-3", 2, now.Add(-2*time.Minute), 3),
	}
	// dev-1: one window every 6 hours for 7.5 days, two in the newest hour.
	for i := range 31 {
		m := window("dev-1", "temperature", hour.Add(-2*time.Hour-time.Duration(i)*6*time.Hour+5*time.Minute), 1)
		recs = append(recs, metricRecord(f.metrics, &m))
	}
	extra := window("dev-1", "temperature", hour.Add(-2*time.Hour+10*time.Minute), 1)
	recs = append(recs, metricRecord(f.metrics, &extra))
	// Activity: dev-1 alive, dev-2 silent for 30 min, dev-3 silent for
	// 20 days (not "in the last week").
	for _, a := range []struct {
		dev  string
		last time.Time
	}{{"dev-1", now.Add(-time.Minute)}, {"dev-2", now.Add(-30 * time.Minute)}, {"dev-3", now.Add(-20 * 24 * time.Hour)}} {
		act := activity(a.dev, a.last.Add(-50*time.Second), 1)
		recs = append(recs, activityRecord(f.metrics, &act))
	}
	f.produce(t, recs)
	runSink(t, f.config())
	f.waitCount(t, time.Minute, 5, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, time.Minute, 32, `SELECT count(*) FROM $S.device_metrics`)
	f.waitCount(t, time.Minute, 3, `SELECT count(*) FROM $S.device_activity`)

	ctx := testenv.Context(t, time.Minute)
	reader, err := pgx.Connect(ctx, env.PGReaderDSN)
	if err != nil {
		t.Fatalf("connect as reader: %v", err)
	}
	defer reader.Close(context.Background())
	query := func(name string, args ...any) pgx.Rows {
		t.Helper()
		q, err := Query(name, f.schema)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := reader.Query(ctx, q, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return rows
	}

	// Latest value per device.
	latest := map[string]float64{}
	var dev string
	var at time.Time
	var v float64
	if _, err := pgx.ForEachRow(query(QueryLatestValue, "temperature"), []any{&dev, &at, &v}, func() error {
		latest[dev] = v
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(latest) != 3 || latest["dev-1"] != 42 || latest["dev-2"] != 7 || latest["dev-3"] != 3 {
		t.Fatalf("latest values = %v", latest)
	}

	// Hourly stats of dev-1 over the week: windows i = 0..27 are within it.
	var hours int
	var metric string
	var count int64
	var min, max, mean, p95 float64
	var newest time.Time
	var newestCount int64
	if _, err := pgx.ForEachRow(query(QueryHourlyStats, "dev-1"), []any{&at, &metric, &count, &min, &max, &mean, &p95}, func() error {
		hours++
		if at.After(newest) {
			newest, newestCount = at, count
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if hours != 28 || !newest.Equal(hour.Add(-2*time.Hour)) || newestCount != 2 {
		t.Fatalf("hourly stats: %d hours (want 28), newest %s with count %d (want %s, 2)", hours, newest, newestCount, hour.Add(-2*time.Hour))
	}

	// Silent devices: only dev-2.
	var silent []string
	var d time.Duration
	if _, err := pgx.ForEachRow(query(QuerySilentDevices), []any{&dev, &at, &d}, func() error {
		silent = append(silent, dev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(silent) != 1 || silent[0] != "dev-2" {
		t.Fatalf("silent devices = %v, want [dev-2]", silent)
	}
}
