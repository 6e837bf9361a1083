//go:build integration

package timescale

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// TestSinkOnTimescaleDB checks the sink on the TimescaleDB flavor
// (hypertables, compression, continuous aggregates) of the shared server,
// which scripts/services.sh runs with TimescaleDB: readings written into
// compressed chunks, metrics upserts on a hypertable with revisions out of
// order, and the example queries on the continuous aggregate. The other
// tests of this package use the plain PostgreSQL flavor.
func TestSinkOnTimescaleDB(t *testing.T) {
	env := testenv.Load(t)
	requireTimescaleDB(t, env)
	f := newFixtureFlavor(t, env, migrations.FlavorTimescaleDB, 2, 1)
	ctx := context.Background()
	schema := pgx.Identifier{f.schema}.Sanitize()
	var ver string
	if err := f.owner.QueryRow(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'`).Scan(&ver); err != nil {
		t.Fatal(err)
	}
	t.Logf("timescaledb %s", ver)

	base := time.Now().Add(-72 * time.Hour).Truncate(time.Hour)
	var recs []*kgo.Record
	for i := range 600 {
		recs = append(recs, readingRecord(f.raw, fmt.Sprintf("dev-%d", i%3), int64(i), base.Add(time.Duration(i)*time.Minute), float64(i)))
	}
	for w := range 10 {
		for _, r := range []int64{2, 3, 1} {
			m := window("dev-0", "temp", base.Add(time.Duration(w)*time.Minute), r)
			recs = append(recs, metricRecord(f.metrics, &m))
		}
	}
	f.produce(t, recs)
	cfg := f.config()
	cfg.BatchRows = 50
	runSink(t, cfg)
	f.waitCount(t, time.Minute, 1200, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, time.Minute, 10, `SELECT count(*) FROM $S.device_metrics WHERE revision = 3 AND mean = 30`)

	// Compress every readings chunk, then write into the same time range
	// again: COPY into compressed chunks.
	var chunks int64
	if err := f.owner.QueryRow(ctx, fmt.Sprintf(`SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('%s.readings') c`, f.schema)).Scan(&chunks); err != nil {
		t.Fatalf("compress: %v", err)
	}
	t.Logf("compressed %d readings chunks", chunks)
	var more []*kgo.Record
	for i := 600; i < 700; i++ {
		more = append(more, readingRecord(f.raw, fmt.Sprintf("dev-%d", i%3), int64(i), base.Add(time.Duration(i-600)*time.Minute+time.Second), float64(i)))
	}
	// A replayed lower revision on the hypertable changes nothing; a higher
	// one replaces the row.
	low, high := window("dev-0", "temp", base, 2), window("dev-0", "temp", base.Add(time.Minute), 4)
	more = append(more, metricRecord(f.metrics, &low), metricRecord(f.metrics, &high))
	f.produce(t, more)
	f.waitCount(t, time.Minute, 1400, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, time.Minute, 1, `SELECT count(*) FROM $S.device_metrics WHERE revision = 4`)
	if n := f.count(t, `SELECT count(*) FROM $S.device_metrics WHERE revision < 3`); n != 0 {
		t.Fatalf("%d windows rolled back", n)
	}
	if n := f.count(t, `SELECT count(*) FROM (SELECT DISTINCT device_id, metric, seq FROM $S.readings) d`); n != 1400 {
		t.Fatalf("distinct readings = %d", n)
	}
	// The continuous aggregate answers (real-time aggregation).
	if n := f.count(t, `SELECT coalesce(sum(count), 0)::bigint FROM $S.device_metrics_1h WHERE device_id = 'dev-0'`); n != 3*9+4 {
		t.Fatalf("device_metrics_1h count = %d, want %d", n, 3*9+4)
	}
	// Example queries run unchanged.
	for _, name := range []string{QueryLatestValue, QueryHourlyStats, QuerySilentDevices} {
		q, err := Query(name, f.schema)
		if err != nil {
			t.Fatal(err)
		}
		args := map[string][]any{QueryLatestValue: {"temp"}, QueryHourlyStats: {"dev-0"}}[name]
		rows, err := f.owner.Query(ctx, q, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows.Close()
		if rows.Err() != nil {
			t.Fatalf("%s: %v", name, rows.Err())
		}
	}
	var compressed int64
	_ = f.owner.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = '%s' AND hypertable_name = 'readings' AND is_compressed`, f.schema)).Scan(&compressed)
	t.Logf("readings chunks still marked compressed after the second write: %d (schema %s)", compressed, schema)
}

// requireTimescaleDB skips the test, saying why, on a server that runs plain
// PostgreSQL (scripts/services.sh without the TimescaleDB archive says so
// loudly and exports IOTPIPE_PG_SERVER_FLAVOR=postgres), and fails it when
// the server should run TimescaleDB and does not.
func requireTimescaleDB(t *testing.T, env *testenv.Env) {
	t.Helper()
	ctx := testenv.Context(t, 15*time.Second)
	var available, preloaded bool
	err := env.PG(t).QueryRow(ctx, `SELECT
    EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),
    -- Defined by the TimescaleDB loader only when it is preloaded.
    EXISTS (SELECT FROM pg_settings WHERE name = 'timescaledb.disable_load')`).Scan(&available, &preloaded)
	if err != nil {
		t.Fatalf("look up timescaledb on the server: %v", err)
	}
	flavor := os.Getenv("IOTPIPE_PG_SERVER_FLAVOR")
	switch {
	case available && preloaded:
	case flavor == "timescaledb":
		t.Fatal("IOTPIPE_PG_SERVER_FLAVOR=timescaledb but the server does not preload and offer the timescaledb extension")
	default:
		t.Skipf("the server runs plain PostgreSQL (IOTPIPE_PG_SERVER_FLAVOR=%q): the TimescaleDB flavor cannot be tested", flavor)
	}
}
