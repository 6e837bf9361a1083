//go:build integration

// Integration tests against a real PostgreSQL (plain or with TimescaleDB):
//
//	scripts/services.sh up && eval "$(scripts/services.sh env)"
//	go test -tags integration ./schemas/migrations/
//
// The flavor is auto, so a server without TimescaleDB exercises the plain
// path and one with it (preloaded, creatable by the test's role) the
// TimescaleDB path. Each test works in its own schema t_<random> with its
// own roles, dropped at the end.
package migrations

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

const testTimeout = 2 * time.Minute

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection to IOTPIPE_PG_DSN, closed at the end of the test.
func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	dsn := os.Getenv("IOTPIPE_PG_DSN")
	if dsn == "" {
		t.Fatal(`IOTPIPE_PG_DSN is not set: run scripts/services.sh up and eval "$(scripts/services.sh env)"`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to IOTPIPE_PG_DSN: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func randomName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t_" + hex.EncodeToString(b)
}

// newOptions returns default options for a unique schema and unique roles,
// and drops them when the test ends.
func newOptions(t *testing.T) Options {
	t.Helper()
	name := randomName(t)
	o := DefaultOptions()
	o.Schema, o.WriterRole, o.ReaderRole = name, name+"_writer", name+"_reader"
	o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Cleanups run last-in first-out: the schema goes before the roles.
	t.Cleanup(func() {
		conn := connect(t)
		for _, r := range []string{o.WriterRole, o.ReaderRole} {
			if _, err := conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+quoteIdent(r)); err != nil {
				t.Errorf("cleanup: drop role %s: %v", r, err)
			}
		}
	})
	dropSchemaAtEnd(t, o.Schema)
	return o
}

// dropSchemaAtEnd drops the schema when the test ends.
func dropSchemaAtEnd(t *testing.T, schema string) {
	t.Helper()
	t.Cleanup(func() {
		conn := connect(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := testenv.QuiesceJobs(ctx, conn, schema); err != nil {
			t.Logf("cleanup: %v; dropping schema %s anyway", err, schema)
		}
		// A TimescaleDB background job that starts on the new hypertables
		// can make the drop fail with "tuple concurrently updated"
		// (XX000); try again.
		var err error
		for range 20 {
			if err = dropSchema(ctx, conn, schema); sqlstate(err) != "XX000" {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
		if err != nil {
			t.Errorf("cleanup: drop schema %s: %v", schema, err)
		}
	})
}

func dropSchema(ctx context.Context, conn *pgx.Conn, schema string) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var tsdb bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL").Scan(&tsdb); err != nil {
			return err
		}
		// TimescaleDB 2.28 leaves compressed chunk tables behind in
		// _timescaledb_internal (still granted to the test's roles) when
		// their hypertable is dropped; drop_chunks removes them.
		if tsdb {
			if _, err := tx.Exec(ctx, `SELECT count(*) FROM timescaledb_information.hypertables h,
    drop_chunks(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass, older_than => 'infinity'::timestamptz)
WHERE h.hypertable_schema = $1 AND h.compression_enabled`, schema); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+quoteIdent(schema)+" CASCADE")
		return err
	})
}

func mustApply(t *testing.T, ctx context.Context, conn *pgx.Conn, o Options) Result {
	t.Helper()
	res, err := Apply(ctx, conn, o)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("Apply: flavor=%s from=%d to=%d applied=%v fallback=%q", res.Flavor, res.From, res.To, res.Applied, res.FallbackReason)
	return res
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// columns returns "name type [NOT NULL]" for each column of schema.rel.
func columns(t *testing.T, ctx context.Context, conn *pgx.Conn, schema, rel string, nullability bool) []string {
	t.Helper()
	rows, err := conn.Query(ctx, `
SELECT column_name || ' ' || data_type || CASE WHEN $3 AND is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
FROM information_schema.columns
WHERE table_schema = $1 AND table_name = $2
ORDER BY ordinal_position`, schema, rel, nullability)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

const (
	tstz = "timestamp with time zone"
	dp   = "double precision"
)

var wantColumns = map[string][]string{
	"readings": {
		"time " + tstz + " NOT NULL", "device_id text NOT NULL", "metric text NOT NULL",
		"value " + dp + " NOT NULL", "seq bigint", "received_at " + tstz,
	},
	"device_metrics": {
		"bucket " + tstz + " NOT NULL", "bucket_end " + tstz + " NOT NULL", "device_id text NOT NULL",
		"metric text NOT NULL", "count bigint NOT NULL", "sum " + dp, "min " + dp, "max " + dp,
		"mean " + dp, "stddev " + dp, "first " + dp, "last " + dp, "p50 " + dp, "p95 " + dp,
		"p99 " + dp, "first_time " + tstz, "last_time " + tstz, "revision bigint NOT NULL",
		"updated_at " + tstz + " NOT NULL",
	},
	"device_activity": {
		"bucket " + tstz + " NOT NULL", "bucket_end " + tstz + " NOT NULL", "device_id text NOT NULL",
		"messages bigint NOT NULL", "seq_gaps bigint NOT NULL", "late bigint NOT NULL",
		"duplicates bigint NOT NULL", "first_seen " + tstz, "last_seen " + tstz,
		"revision bigint NOT NULL", "updated_at " + tstz + " NOT NULL",
		"seq_resets bigint NOT NULL",     // 0005
		"ignored_fields bigint NOT NULL", // 0008
	},
	"sink_offsets": {
		"consumer_group text NOT NULL", "topic text NOT NULL", "partition integer NOT NULL",
		"next_offset bigint NOT NULL", "updated_at " + tstz + " NOT NULL",
	},
	"schema_migrations": {
		"version integer NOT NULL", "name text NOT NULL", "flavor text NOT NULL", "checksum text",
		"applied_at " + tstz + " NOT NULL",
	},
}

// Both rollups, on both flavors.
var wantRollupColumns = []string{
	"bucket " + tstz, "device_id text", "metric text", "windows bigint", "count bigint",
	"sum " + dp, "min " + dp, "max " + dp, "mean " + dp, "first " + dp, "last " + dp,
	"first_time " + tstz, "last_time " + tstz, "max_p95 " + dp, "max_p99 " + dp,
}

var wantKeys = map[string]string{
	"device_metrics":    "device_metrics_device_metric_bucket_key u (device_id,metric,bucket)",
	"device_activity":   "device_activity_device_bucket_key u (device_id,bucket)",
	"sink_offsets":      "sink_offsets_pkey p (consumer_group,topic,partition)",
	"schema_migrations": "schema_migrations_pkey p (version)",
}

// TestApplyFreshSchema migrates a new schema with the flavor chosen
// automatically: TimescaleDB on a server that has it (IOTPIPE_PG_SERVER_FLAVOR
// says which), plain PostgreSQL otherwise.
func TestApplyFreshSchema(t *testing.T) {
	testFreshSchema(t, connect(t), newOptions(t))
}

// TestApplyFreshSchemaPlainDatabase runs the same checks on the plain
// PostgreSQL flavor in a database of its own in which the timescaledb
// extension is never created, so that flavor stays covered on a TimescaleDB
// server too.
func TestApplyFreshSchemaPlainDatabase(t *testing.T) {
	o := newOptions(t)
	o.Flavor = FlavorPostgres
	conn := connectNewDatabase(t)
	testFreshSchema(t, conn, o)
	var ext int
	if err := conn.QueryRow(testContext(t), "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").Scan(&ext); err != nil || ext != 0 {
		t.Errorf("timescaledb extensions in the plain database: %d, %v; want 0", ext, err)
	}
}

// testFreshSchema applies every migration to the new schema of o on conn and
// checks what they created.
func testFreshSchema(t *testing.T, conn *pgx.Conn, o Options) {
	ctx := testContext(t)

	var pathBefore string
	if err := conn.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&pathBefore); err != nil {
		t.Fatal(err)
	}

	res := mustApply(t, ctx, conn, o)
	if res.From != 0 || res.To != Latest() || len(res.Applied) != Latest() {
		t.Fatalf("Apply = %+v, want from 0 to %d with %d applied", res, Latest(), Latest())
	}
	if res.Applied[0] != "0001_tables" {
		t.Errorf("Applied[0] = %q", res.Applied[0])
	}
	switch res.Flavor {
	case FlavorTimescaleDB:
		if res.FallbackReason != "" || o.Flavor == FlavorPostgres {
			t.Errorf("flavor timescaledb with Options.Flavor %q, FallbackReason %q", o.Flavor, res.FallbackReason)
		}
	case FlavorPostgres:
		if o.Flavor == FlavorAuto && res.FallbackReason == "" {
			t.Errorf("auto chose postgres without a FallbackReason")
		}
		// A TimescaleDB that does not work must not pass as plain PostgreSQL.
		if o.Flavor == FlavorAuto && serverFlavor() == FlavorTimescaleDB {
			t.Errorf("auto fell back to plain PostgreSQL on a TimescaleDB server (IOTPIPE_PG_SERVER_FLAVOR): %s", res.FallbackReason)
		}
	default:
		t.Fatalf("Flavor = %q", res.Flavor)
	}

	version, flavor, err := Status(ctx, conn, o.Schema)
	if err != nil || version != Latest() || flavor != res.Flavor {
		t.Fatalf("Status = %d, %q, %v; want %d, %q", version, flavor, err, Latest(), res.Flavor)
	}

	// The session is left as it was: search_path unchanged, lock released.
	var pathAfter string
	var locks int
	if err := conn.QueryRow(ctx, "SELECT current_setting('search_path'), (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())").Scan(&pathAfter, &locks); err != nil {
		t.Fatal(err)
	}
	if pathAfter != pathBefore || locks != 0 {
		t.Errorf("after Apply: search_path %q (was %q), %d advisory locks held", pathAfter, pathBefore, locks)
	}

	t.Run("columns", func(t *testing.T) {
		for table, want := range wantColumns {
			if got := columns(t, ctx, conn, o.Schema, table, true); !equal(got, want) {
				t.Errorf("%s columns:\n got %q\nwant %q", table, got, want)
			}
		}
		for _, view := range []string{"device_metrics_1h", "device_metrics_1d"} {
			if got := columns(t, ctx, conn, o.Schema, view, false); !equal(got, wantRollupColumns) {
				t.Errorf("%s columns:\n got %q\nwant %q", view, got, wantRollupColumns)
			}
		}
	})

	t.Run("keys and indexes", func(t *testing.T) {
		for table, want := range wantKeys {
			var got []string
			rows, err := conn.Query(ctx, `
SELECT c.conname || ' ' || c.contype::text || ' (' || string_agg(a.attname, ',' ORDER BY k.ord) || ')'
FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.conrelid = to_regclass($1) AND c.contype IN ('u', 'p')
GROUP BY c.conname, c.contype`, quoteIdent(o.Schema)+"."+table)
			if err != nil {
				t.Fatal(err)
			}
			if got, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != want {
				t.Errorf("%s unique/primary keys = %q, want [%q]", table, got, want)
			}
		}
		for name, want := range map[string]string{
			"readings_device_metric_time_idx": `(device_id, metric, "time" DESC)`,
			"readings_time_idx":               `("time" DESC)`,
			"device_metrics_bucket_idx":       `(bucket DESC)`,
			"device_activity_bucket_idx":      `(bucket DESC)`,
		} {
			var def string
			if err := conn.QueryRow(ctx, "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2", o.Schema, name).Scan(&def); err != nil {
				t.Errorf("index %s: %v", name, err)
				continue
			}
			if !strings.Contains(def, want) {
				t.Errorf("index %s = %s, want %s", name, def, want)
			}
		}
	})

	t.Run("comments", func(t *testing.T) {
		var missing []string
		rows, err := conn.Query(ctx, `
SELECT c.relname || coalesce('.' || a.attname, '')
FROM pg_class c
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'v')
  AND coalesce(col_description(c.oid, a.attnum), obj_description(c.oid, 'pg_class')) IS NULL
  AND NOT (c.relname = 'schema_migrations' AND a.attname IS NOT NULL)`, o.Schema)
		if err != nil {
			t.Fatal(err)
		}
		if missing, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("objects without a comment: %q", missing)
		}
	})

	t.Run("upsert device_metrics", func(t *testing.T) {
		upsert := `INSERT INTO ` + quoteIdent(o.Schema) + `.device_metrics AS m
    (bucket, bucket_end, device_id, metric, count, sum, min, max, mean, revision)
VALUES ($1::timestamptz, $1::timestamptz + INTERVAL '1 minute', 'upsert-dev', 'temp', $2, $3, 1, 1, $3::double precision / $2::bigint, $4)
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    count = EXCLUDED.count, sum = EXCLUDED.sum, mean = EXCLUDED.mean,
    revision = EXCLUDED.revision, updated_at = now()
WHERE m.revision < EXCLUDED.revision`
		at := time.Now().UTC().Truncate(time.Minute)
		for _, step := range []struct {
			count    int64
			sum      float64
			revision int64
		}{{2, 2, 1}, {3, 3, 2}, {1, 1, 1}} { // the last one is stale and must be ignored
			if _, err := conn.Exec(ctx, upsert, at, step.count, step.sum, step.revision); err != nil {
				t.Fatalf("upsert revision %d: %v", step.revision, err)
			}
		}
		var n, count, revision int64
		if err := conn.QueryRow(ctx, "SELECT count(*), max(count), max(revision) FROM "+quoteIdent(o.Schema)+".device_metrics WHERE device_id = 'upsert-dev'").Scan(&n, &count, &revision); err != nil {
			t.Fatal(err)
		}
		if n != 1 || count != 3 || revision != 2 {
			t.Errorf("after upserts: %d rows, count %d, revision %d; want 1, 3, 2", n, count, revision)
		}
	})

	t.Run("rollups", func(t *testing.T) {
		checkRollups(t, ctx, conn, o.Schema, res.Flavor)
	})

	t.Run("reader role", func(t *testing.T) {
		grantToSelf(t, ctx, conn, o.ReaderRole)
		for _, rel := range []string{"readings", "device_metrics", "device_activity", "sink_offsets", "device_metrics_1h", "device_metrics_1d", "schema_migrations"} {
			err := asRole(ctx, conn, o.ReaderRole, "SELECT count(*) FROM "+quoteIdent(o.Schema)+"."+rel)
			if err != nil {
				t.Errorf("reader SELECT %s: %v", rel, err)
			}
		}
		for _, stmt := range []string{
			"INSERT INTO %s.readings (time, device_id, metric, value) VALUES (now(), 'd', 'm', 1)",
			"UPDATE %s.device_metrics SET count = 0",
			"DELETE FROM %s.sink_offsets",
		} {
			err := asRole(ctx, conn, o.ReaderRole, fmt.Sprintf(stmt, quoteIdent(o.Schema)))
			if sqlstate(err) != "42501" {
				t.Errorf("reader %q: err = %v, want permission denied (42501)", stmt, err)
			}
		}
	})

	t.Run("writer role", func(t *testing.T) {
		grantToSelf(t, ctx, conn, o.WriterRole)
		s := quoteIdent(o.Schema)
		for _, stmt := range []string{
			"INSERT INTO " + s + ".readings (time, device_id, metric, value, seq) VALUES (now(), 'w', 'm', 1, 7)",
			"INSERT INTO " + s + ".device_activity (bucket, bucket_end, device_id, messages, seq_gaps, late, duplicates, revision) VALUES (now(), now() + INTERVAL '1 minute', 'w', 1, 0, 0, 0, 1) ON CONFLICT (device_id, bucket) DO UPDATE SET messages = EXCLUDED.messages",
			"INSERT INTO " + s + ".sink_offsets (consumer_group, topic, partition, next_offset) VALUES ('g', 'telemetry.raw', 0, 42) ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
			"DELETE FROM " + s + ".sink_offsets WHERE consumer_group = 'g'",
			"SELECT max(version) FROM " + s + ".schema_migrations",
		} {
			if err := asRole(ctx, conn, o.WriterRole, stmt); err != nil {
				t.Errorf("writer %q: %v", stmt, err)
			}
		}
		if err := asRole(ctx, conn, o.WriterRole, "DELETE FROM "+s+".readings"); sqlstate(err) != "42501" {
			t.Errorf("writer DELETE readings: err = %v, want permission denied (42501)", err)
		}
	})

	if res.Flavor == FlavorTimescaleDB {
		t.Run("timescaledb objects", func(t *testing.T) {
			checkTimescaleDB(t, ctx, conn, o.Schema)
		})
	}

	t.Run("second apply applies nothing", func(t *testing.T) {
		again := mustApply(t, ctx, conn, o)
		if len(again.Applied) != 0 || again.From != Latest() || again.To != Latest() || again.Flavor != res.Flavor || again.FallbackReason != "" {
			t.Errorf("second Apply = %+v", again)
		}
	})
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// grantToSelf makes the test's login role a member of role, for SET ROLE.
func grantToSelf(t *testing.T, ctx context.Context, conn *pgx.Conn, role string) {
	t.Helper()
	if _, err := conn.Exec(ctx, "GRANT "+quoteIdent(role)+" TO CURRENT_USER"); err != nil {
		t.Fatalf("grant %s to the test role: %v", role, err)
	}
}

// asRole runs stmt as role in a transaction that is rolled back.
func asRole(ctx context.Context, conn *pgx.Conn, role, stmt string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+quoteIdent(role)); err != nil {
		return fmt.Errorf("set role: %w", err)
	}
	_, err = tx.Exec(ctx, stmt)
	return err
}

type rollupRow struct {
	Bucket              time.Time
	Windows, Count      int64
	Sum, Min, Max, Mean float64
	First, Last         float64
	FirstTime, LastTime time.Time
	MaxP95, MaxP99      float64
}

// checkRollups inserts windows of one series and compares the 1 h and 1 d
// rollups with hand-computed values: through real-time aggregation, and on
// TimescaleDB again after materializing them.
func checkRollups(t *testing.T, ctx context.Context, conn *pgx.Conn, schema string, flavor Flavor) {
	s := quoteIdent(schema)
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -2)
	at := func(h, m, sec int) time.Time {
		return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second)
	}
	type window struct {
		start               time.Time
		count               int64
		sum, min, max       float64
		first, last         float64
		firstTime, lastTime time.Time
		p95, p99            float64
	}
	windows := []window{
		{at(10, 0, 0), 2, 3, 1, 2, 1, 2, at(10, 0, 5), at(10, 0, 50), 1.9, 2},
		{at(10, 1, 0), 3, 12, 3, 5, 5, 4, at(10, 1, 1), at(10, 1, 59), 4.8, 4.9},
		{at(11, 30, 0), 1, 7, 7, 7, 7, 7, at(11, 30, 30), at(11, 30, 30), 7, 7},
		{at(24, 10, 0), 4, 8, 0, 4, 0, 4, at(24, 10, 1), at(24, 10, 40), 3.5, 3.9},
	}
	for _, w := range windows {
		_, err := conn.Exec(ctx, `INSERT INTO `+s+`.device_metrics
    (bucket, bucket_end, device_id, metric, count, sum, min, max, mean, first, last, p95, p99, first_time, last_time, revision)
VALUES ($1::timestamptz, $1::timestamptz + INTERVAL '1 minute', 'rollup-dev', 'temp', $2, $3, $4, $5, $3::double precision / $2::bigint, $6, $7, $8, $9, $10, $11, 1)`,
			w.start, w.count, w.sum, w.min, w.max, w.first, w.last, w.p95, w.p99, w.firstTime, w.lastTime)
		if err != nil {
			t.Fatalf("insert window %s: %v", w.start, err)
		}
	}
	want := map[string][]rollupRow{
		"device_metrics_1h": {
			{at(10, 0, 0), 2, 5, 15, 1, 5, 3, 1, 4, at(10, 0, 5), at(10, 1, 59), 4.8, 4.9},
			{at(11, 0, 0), 1, 1, 7, 7, 7, 7, 7, 7, at(11, 30, 30), at(11, 30, 30), 7, 7},
			{at(24, 0, 0), 1, 4, 8, 0, 4, 2, 0, 4, at(24, 10, 1), at(24, 10, 40), 3.5, 3.9},
		},
		"device_metrics_1d": {
			{day, 3, 6, 22, 1, 7, 22.0 / 6, 1, 7, at(10, 0, 5), at(11, 30, 30), 7, 7},
			{day.AddDate(0, 0, 1), 1, 4, 8, 0, 4, 2, 0, 4, at(24, 10, 1), at(24, 10, 40), 3.5, 3.9},
		},
	}
	check := func(stage string) {
		for view, rows := range want {
			got, err := queryRollup(ctx, conn, s+"."+view)
			if err != nil {
				t.Fatalf("%s: query %s: %v", stage, view, err)
			}
			if len(got) != len(rows) {
				t.Errorf("%s: %s has %d rows, want %d: %+v", stage, view, len(got), len(rows), got)
				continue
			}
			for i := range rows {
				if !rollupEqual(got[i], rows[i]) {
					t.Errorf("%s: %s row %d:\n got %+v\nwant %+v", stage, view, i, got[i], rows[i])
				}
			}
		}
	}
	check("real time")
	if flavor != FlavorTimescaleDB {
		return
	}
	// refresh_continuous_aggregate cannot run inside a transaction block.
	// The refresh policy of a fresh schema runs once at its start; a
	// manual refresh during it is refused with 55P03 (concurrent refresh):
	// try again until the policy's run is over.
	for _, view := range []string{"device_metrics_1h", "device_metrics_1d"} {
		testenv.Eventually(t, time.Minute, 200*time.Millisecond, func() error {
			_, err := conn.Exec(ctx, "CALL refresh_continuous_aggregate($1::regclass, NULL, NULL)", s+"."+view)
			var pgErr *pgconn.PgError
			if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "55P03") {
				t.Fatalf("refresh %s: %v", view, err)
			}
			return err
		})
	}
	check("materialized")
	for _, view := range []string{"device_metrics_1h", "device_metrics_1d"} {
		var materialized int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM timescaledb_information.chunks ch
JOIN timescaledb_information.continuous_aggregates ca
  ON ch.hypertable_schema = ca.materialization_hypertable_schema AND ch.hypertable_name = ca.materialization_hypertable_name
WHERE ca.view_schema = $1 AND ca.view_name = $2`, schema, view).Scan(&materialized)
		if err != nil {
			t.Fatal(err)
		}
		if materialized == 0 {
			t.Errorf("%s: no materialized chunks after refresh", view)
		}
	}
}

func queryRollup(ctx context.Context, conn *pgx.Conn, rel string) ([]rollupRow, error) {
	rows, err := conn.Query(ctx, `SELECT bucket, windows, count, sum, min, max, mean, first, last, first_time, last_time, max_p95, max_p99
FROM `+rel+` WHERE device_id = 'rollup-dev' AND metric = 'temp' ORDER BY bucket`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (rollupRow, error) {
		var x rollupRow
		err := r.Scan(&x.Bucket, &x.Windows, &x.Count, &x.Sum, &x.Min, &x.Max, &x.Mean, &x.First, &x.Last, &x.FirstTime, &x.LastTime, &x.MaxP95, &x.MaxP99)
		return x, err
	})
}

func rollupEqual(a, b rollupRow) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.Bucket.Equal(b.Bucket) && a.Windows == b.Windows && a.Count == b.Count &&
		near(a.Sum, b.Sum) && near(a.Min, b.Min) && near(a.Max, b.Max) && near(a.Mean, b.Mean) &&
		near(a.First, b.First) && near(a.Last, b.Last) &&
		a.FirstTime.Equal(b.FirstTime) && a.LastTime.Equal(b.LastTime) &&
		near(a.MaxP95, b.MaxP95) && near(a.MaxP99, b.MaxP99)
}

// checkTimescaleDB checks the hypertables, policies and compression.
func checkTimescaleDB(t *testing.T, ctx context.Context, conn *pgx.Conn, schema string) {
	rows, err := conn.Query(ctx, `SELECT hypertable_name || ' ' || compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_schema = $1 ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	hts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"device_activity false", "device_metrics false", "readings true"}; !equal(hts, want) {
		t.Errorf("hypertables = %q, want %q", hts, want)
	}

	// Jobs on the schema's hypertables and on the rollups' materialization
	// hypertables.
	rows, err = conn.Query(ctx, `
SELECT j.proc_name || ' ' || coalesce(ca.view_name, j.hypertable_name) || ' ' ||
       coalesce(j.config->>'drop_after', j.config->>'compress_after', (j.config->>'start_offset') || '..' || (j.config->>'end_offset'))
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.continuous_aggregates ca
  ON j.hypertable_schema = ca.materialization_hypertable_schema AND j.hypertable_name = ca.materialization_hypertable_name
WHERE j.hypertable_schema = $1 OR ca.view_schema = $1
ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"policy_compression readings 1 day",
		"policy_refresh_continuous_aggregate device_metrics_1d 30 days..1 day",
		"policy_refresh_continuous_aggregate device_metrics_1h 3 days..01:00:00",
		"policy_retention device_activity 365 days",
		"policy_retention device_metrics 365 days",
		"policy_retention readings 30 days",
	}
	if !equal(jobs, want) {
		t.Errorf("jobs:\n got %q\nwant %q", jobs, want)
	}

	rows, err = conn.Query(ctx, `SELECT attname || ' ' || coalesce('segmentby ' || segmentby_column_index, 'orderby ' || orderby_column_index || CASE WHEN orderby_asc THEN ' asc' ELSE ' desc' END)
FROM timescaledb_information.compression_settings WHERE hypertable_schema = $1 AND hypertable_name = 'readings' ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"device_id segmentby 1", "metric segmentby 2", "time orderby 1 desc"}; !equal(settings, want) {
		t.Errorf("readings compression settings = %q, want %q", settings, want)
	}

	// Compress the chunk of readings from three days ago, then read it back.
	s := quoteIdent(schema)
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3).Add(12 * time.Hour)
	if _, err := conn.Exec(ctx, `INSERT INTO `+s+`.readings (time, device_id, metric, value, seq)
SELECT $1::timestamptz + i * INTERVAL '1 second', 'dev-' || (i % 3), 'temp', i, i FROM generate_series(1, 300) i`, old); err != nil {
		t.Fatal(err)
	}
	var compressed int
	if err := conn.QueryRow(ctx, `SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks($1::regclass, older_than => now() - INTERVAL '2 days') c`, s+".readings").Scan(&compressed); err != nil {
		t.Fatalf("compress_chunk: %v", err)
	}
	var isCompressed bool
	var n int64
	var sum float64
	if err := conn.QueryRow(ctx, `SELECT bool_and(is_compressed) FROM timescaledb_information.chunks WHERE hypertable_schema = $1 AND hypertable_name = 'readings' AND range_end <= now() - INTERVAL '2 days'`, schema).Scan(&isCompressed); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*), sum(value) FROM `+s+`.readings WHERE time >= $1 AND time < $1 + INTERVAL '1 hour'`, old).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	if compressed != 1 || !isCompressed || n != 300 || sum != 45150 {
		t.Errorf("compression: %d chunks compressed (compressed=%v), read back %d rows summing to %v; want 1, true, 300, 45150", compressed, isCompressed, n, sum)
	}
}

func TestApplyConcurrent(t *testing.T) {
	ctx := testContext(t)
	o := newOptions(t)
	conns := []*pgx.Conn{connect(t), connect(t), connect(t)}
	results := make([]Result, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { results[i], errs[i] = Apply(ctx, c, o) })
	}
	wg.Wait()
	total := 0
	for i := range conns {
		if errs[i] != nil {
			t.Fatalf("Apply %d: %v", i, errs[i])
		}
		if results[i].To != Latest() {
			t.Errorf("Apply %d: To = %d, want %d", i, results[i].To, Latest())
		}
		total += len(results[i].Applied)
	}
	if total != Latest() {
		t.Errorf("concurrent Applies applied %d migrations in total, want %d: %+v", total, Latest(), results)
	}
}

// TestApplyConcurrentSchemasShareRoles sets up two schemas at once with the
// same, not yet existing, roles: both may try to create them.
func TestApplyConcurrentSchemasShareRoles(t *testing.T) {
	ctx := testContext(t)
	a := newOptions(t)
	b := a
	b.Schema = randomName(t)
	dropSchemaAtEnd(t, b.Schema)
	ca, cb := connect(t), connect(t)
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { _, errA = Apply(ctx, ca, a) })
	wg.Go(func() { _, errB = Apply(ctx, cb, b) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Apply: %v / %v", errA, errB)
	}
	for _, s := range []string{a.Schema, b.Schema} {
		if v, _, err := Status(ctx, ca, s); err != nil || v != Latest() {
			t.Errorf("Status(%s) = %d, %v", s, v, err)
		}
	}
}

func TestChecksumAndVersionChecks(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	o := newOptions(t)
	mustApply(t, ctx, conn, o)
	table := quoteIdent(o.Schema) + ".schema_migrations"

	if _, err := conn.Exec(ctx, "UPDATE "+table+" SET checksum = 'tampered' WHERE version = 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, conn, o); !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), "0002_policies") {
		t.Errorf("Apply after tampering: %v, want ErrChecksumMismatch naming 0002_policies", err)
	}
	if _, err := conn.Exec(ctx, "UPDATE "+table+" SET checksum = NULL WHERE version = 2"); err != nil {
		t.Fatal(err)
	}
	if res, err := Apply(ctx, conn, o); err != nil || len(res.Applied) != 0 {
		t.Errorf("Apply with a NULL checksum: %+v, %v; want nothing applied", res, err)
	}

	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" (version, name, flavor, checksum) SELECT $1, 'from_the_future', flavor, 'x' FROM "+table+" WHERE version = 1", Latest()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, conn, o); !errors.Is(err, ErrDatabaseNewer) {
		t.Errorf("Apply on a newer schema: %v, want ErrDatabaseNewer", err)
	}
	if v, _, err := Status(ctx, conn, o.Schema); err != nil || v != Latest()+1 {
		t.Errorf("Status = %d, %v; want %d", v, err, Latest()+1)
	}
}

func TestFlavorSticks(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	o := newOptions(t)
	o.Flavor = FlavorPostgres
	res := mustApply(t, ctx, conn, o)
	if res.Flavor != FlavorPostgres || res.FallbackReason != "" {
		t.Fatalf("explicit postgres: %+v", res)
	}
	// Plain views, not continuous aggregates, even if TimescaleDB is there.
	var kind string
	if err := conn.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", quoteIdent(o.Schema)+".device_metrics_1h").Scan(&kind); err != nil || kind != "v" {
		t.Errorf("device_metrics_1h relkind = %q, %v", kind, err)
	}

	ts := o
	ts.Flavor = FlavorTimescaleDB
	if _, err := Apply(ctx, conn, ts); !errors.Is(err, ErrFlavorMismatch) {
		t.Errorf("Apply timescaledb on a postgres schema: %v, want ErrFlavorMismatch", err)
	}
	auto := o
	auto.Flavor = FlavorAuto
	if res := mustApply(t, ctx, conn, auto); res.Flavor != FlavorPostgres || len(res.Applied) != 0 || res.FallbackReason != "" {
		t.Errorf("auto on a postgres schema: %+v", res)
	}
}

func TestExplicitTimescaleDB(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	probe := newOptions(t)
	probe.Flavor = FlavorAuto
	available := mustApply(t, ctx, conn, probe).Flavor == FlavorTimescaleDB

	o := newOptions(t)
	o.Flavor = FlavorTimescaleDB
	res, err := Apply(ctx, conn, o)
	if available {
		if err != nil || res.Flavor != FlavorTimescaleDB {
			t.Fatalf("Apply timescaledb: %+v, %v", res, err)
		}
		return
	}
	if !errors.Is(err, ErrTimescaleDBUnavailable) {
		t.Fatalf("Apply timescaledb without the extension: %+v, %v; want ErrTimescaleDBUnavailable", res, err)
	}
	t.Logf("as expected: %v", err)
	// Nothing was created for the schema.
	if v, f, err := Status(ctx, conn, o.Schema); err != nil || v != 0 || f != "" {
		t.Errorf("Status after the failed Apply = %d, %q, %v", v, f, err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", o.Schema).Scan(&exists); err != nil || exists {
		t.Errorf("schema %s exists after the failed Apply (%v)", o.Schema, err)
	}
}

// TestNoTransactionMigration adds a migration that must run outside a
// transaction (CREATE INDEX CONCURRENTLY) on top of the embedded ones.
func TestNoTransactionMigration(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	o := newOptions(t)

	fsys := fstest.MapFS{}
	sub, err := fs.Sub(sqlFiles, "sql")
	if err != nil {
		t.Fatal(err)
	}
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, path)
		fsys[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	next := fmt.Sprintf("%04d_offsets_updated_idx", Latest()+1)
	fsys["common/"+next+".sql"] = &fstest.MapFile{Data: []byte(
		"-- iotpipe:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS sink_offsets_updated_at_idx ON {{.Schema}}.sink_offsets (updated_at);\n")}
	c, err := loadCatalog(fsys)
	if err != nil {
		t.Fatal(err)
	}

	var pathBefore string
	if err := conn.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&pathBefore); err != nil {
		t.Fatal(err)
	}
	res, err := apply(ctx, conn, o, c)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(res.Applied) != Latest()+1 || res.Applied[Latest()] != next {
		t.Fatalf("applied %v, want %d ending in %s", res.Applied, Latest()+1, next)
	}
	var valid bool
	var pathAfter string
	if err := conn.QueryRow(ctx, `SELECT i.indisvalid, current_setting('search_path') FROM pg_index i WHERE i.indexrelid = to_regclass($1)`, quoteIdent(o.Schema)+".sink_offsets_updated_at_idx").Scan(&valid, &pathAfter); err != nil || !valid {
		t.Errorf("index sink_offsets_updated_at_idx: valid=%v, %v", valid, err)
	}
	if pathAfter != pathBefore {
		t.Errorf("search_path after a no-transaction migration = %q, was %q", pathAfter, pathBefore)
	}
	// The embedded catalog is now older than the schema.
	if _, err := Apply(ctx, conn, o); !errors.Is(err, ErrDatabaseNewer) {
		t.Errorf("Apply with the older embedded catalog: %v, want ErrDatabaseNewer", err)
	}
}

func TestStatusOfMissingSchema(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	v, f, err := Status(ctx, conn, randomName(t))
	if err != nil || v != 0 || f != "" {
		t.Errorf("Status of a missing schema = %d, %q, %v; want 0, \"\", nil", v, f, err)
	}
	if _, _, err := Status(ctx, conn, "Bad-Name"); err == nil {
		t.Errorf("Status(Bad-Name) succeeded")
	}
}

func TestApplyRefusesOpenTransaction(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	o := newOptions(t)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := Apply(ctx, conn, o); err == nil || !strings.Contains(err.Error(), "in a transaction") {
		t.Errorf("Apply inside a transaction: %v, want an error", err)
	}
}

func TestApplyRejectsInvalidOptions(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	_, err := Apply(ctx, conn, Options{Schema: "no such schema", CompressAfter: -1})
	if err == nil || !strings.Contains(err.Error(), "Options.Schema") || !strings.Contains(err.Error(), "Options.CompressAfter") {
		t.Errorf("Apply with invalid options: %v", err)
	}
}
