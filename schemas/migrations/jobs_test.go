//go:build integration

package migrations

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// jobsTimeout bounds TestPoliciesRunOnSchedule: the wait for the jobs and
// every check after it.
const jobsTimeout = 4 * time.Minute

// policyJob is one of the TimescaleDB background jobs the migrations create.
type policyJob struct {
	id     int
	proc   string // policy_compression, policy_retention, policy_refresh_continuous_aggregate
	target string // the hypertable, or the continuous aggregate a refresh policy fills
}

func (j policyJob) String() string { return fmt.Sprintf("job %d (%s on %s)", j.id, j.proc, j.target) }

// TestPoliciesRunOnSchedule checks the policies of the TimescaleDB flavor as
// TimescaleDB's scheduler runs them. The schema's six jobs (compression of
// readings, retention of readings, device_metrics and device_activity,
// refresh of the 1 h and 1 d rollups) first run once on their own right
// after the migration; then data is placed where each policy has work, their
// schedules are shortened to 5 seconds, and the test waits (bounded) until
// each has run successfully on that schedule (timescaledb_information.job_stats),
// failing at once on a failed run, then checks what each did, and that they
// keep running.
func TestPoliciesRunOnSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), jobsTimeout)
	defer cancel()
	conn := connect(t)
	requireTimescaleDB(t, ctx, conn)
	o := newOptions(t)
	o.Flavor = FlavorTimescaleDB
	var created time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&created); err != nil {
		t.Fatal(err)
	}
	mustApply(t, ctx, conn, o)
	s := quoteIdent(o.Schema)

	jobs := schemaJobs(t, ctx, conn, o.Schema)
	want := []string{
		"policy_compression readings",
		"policy_refresh_continuous_aggregate device_metrics_1d",
		"policy_refresh_continuous_aggregate device_metrics_1h",
		"policy_retention device_activity",
		"policy_retention device_metrics",
		"policy_retention readings",
	}
	var got []string
	for _, j := range jobs {
		got = append(got, j.proc+" "+j.target)
	}
	if !equal(got, want) {
		t.Fatalf("jobs of schema %s:\n got %q\nwant %q", o.Schema, got, want)
	}
	// A new policy runs once right away (on the still empty tables), then
	// next after its schedule interval (30 minutes at the least). Wait for
	// those first runs, then pause the jobs until the data is in place, so
	// that every run checked below starts from a known state. (Pausing a
	// running job would cancel it, and the scheduler waits 5 minutes before
	// it starts a job whose last run did not end.)
	waitForJobs(t, ctx, conn, jobs, created)
	if err := pauseJobs(ctx, conn, jobs); err != nil {
		t.Fatal(err)
	}

	// Data for every policy, placed relative to now. Defaults: readings are
	// compressed after 1 day and dropped after 30 days (1-day chunks);
	// device_metrics and device_activity are dropped after 365 days (7-day
	// chunks).
	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	day := func(d int) time.Time { return today.AddDate(0, 0, d) }
	readings := []struct {
		name  string
		start time.Time
		n     int
	}{
		{"dropped", day(-40).Add(12 * time.Hour), 120},   // retention
		{"compressed", day(-3).Add(12 * time.Hour), 300}, // compression
		{"recent", now.Add(-5 * time.Minute), 30},        // neither
	}
	for _, r := range readings {
		if _, err := conn.Exec(ctx, `INSERT INTO `+s+`.readings (time, device_id, metric, value, seq)
SELECT $1::timestamptz + i * INTERVAL '1 second', 'dev-' || (i % 3), 'temp', i, i FROM generate_series(1, $2::int) i`, r.start, r.n); err != nil {
			t.Fatalf("insert %s readings: %v", r.name, err)
		}
	}

	// Windows for the rollups: day -2 is inside both refresh windows (1 h:
	// [now-3 days, now-1 hour), 1 d: [now-30 days, now-1 day)); day -5 only
	// inside the daily one; the last few minutes inside neither (real time
	// only); day -400 is dropped by retention.
	var windows []testWindow
	for i, h := range []int{9, 9, 10, 14, 23} {
		for d, dev := range []string{"dev-a", "dev-b"} {
			windows = append(windows, newTestWindow(dev, "temp", day(-2).Add(time.Duration(h)*time.Hour+time.Duration(i*7+d)*time.Minute), float64(i*10+d)))
		}
	}
	windows = append(windows,
		newTestWindow("dev-a", "temp", day(-5).Add(6*time.Hour), 40),
		newTestWindow("dev-a", "temp", day(-5).Add(7*time.Hour), 50),
		newTestWindow("dev-a", "hum", day(-2).Add(11*time.Hour), 60),
		newTestWindow("dev-a", "temp", now.Add(-10*time.Minute).Truncate(time.Minute), 70),
	)
	old := newTestWindow("dev-a", "temp", day(-400), 80)
	for _, w := range append(windows, old) {
		w.insert(t, ctx, conn, s)
	}
	for _, bucket := range []time.Time{day(-400), day(-2)} {
		if _, err := conn.Exec(ctx, `INSERT INTO `+s+`.device_activity (bucket, bucket_end, device_id, messages, seq_gaps, late, duplicates, revision)
VALUES ($1::timestamptz, $1::timestamptz + INTERVAL '1 minute', 'dev-a', 10, 0, 0, 0, 1)`, bucket); err != nil {
			t.Fatalf("insert device_activity: %v", err)
		}
	}

	// Nothing has run on this data yet: nothing is materialized or
	// compressed.
	for _, view := range []string{"device_metrics_1h", "device_metrics_1d"} {
		if rows := materialized(t, ctx, conn, o.Schema, view); len(rows) != 0 {
			t.Fatalf("%s has %d materialized rows before its policy ran", view, len(rows))
		}
	}
	if n := count(t, ctx, conn, `SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = $1 AND is_compressed`, o.Schema); n != 0 {
		t.Fatalf("%d compressed chunks before the compression policy ran", n)
	}

	// Every 5 seconds from now on, run by TimescaleDB's scheduler: first the
	// compression and refresh policies, then, once they have run, the
	// retention policies. The 40-day-old readings chunk is work for both
	// compression and retention; taken at the same moment, the two deadlock
	// (one run fails with 40P01 and is retried later). In production the
	// chunks retention drops were compressed long before.
	var first, rest []policyJob
	for _, j := range jobs {
		if j.proc == "policy_retention" {
			rest = append(rest, j)
		} else {
			first = append(first, j)
		}
	}
	start := time.Now()
	for _, group := range [][]policyJob{first, rest} {
		var since time.Time
		if err := conn.QueryRow(ctx, "SELECT now()").Scan(&since); err != nil {
			t.Fatal(err)
		}
		for _, j := range group {
			if _, err := conn.Exec(ctx, `SELECT alter_job($1, scheduled => true, schedule_interval => INTERVAL '5 seconds', next_start => now())`, j.id); err != nil {
				t.Fatalf("alter_job %s: %v", j, err)
			}
		}
		waitForJobs(t, ctx, conn, group, since)
	}
	t.Logf("all six policies ran successfully on schedule within %v", time.Since(start).Round(time.Second))

	t.Run("compression", func(t *testing.T) {
		chunks := readingsChunks(t, ctx, conn, o.Schema)
		var compressed, recent bool
		for _, c := range chunks {
			if !c.start.After(readings[1].start) && c.end.After(readings[1].start) {
				compressed = c.compressed
			}
			if !c.start.After(readings[2].start) && c.end.After(readings[2].start) {
				recent = c.compressed
			}
		}
		if !compressed || recent {
			t.Errorf("chunk of day -3 compressed: %v (want true); chunk of the last minutes compressed: %v (want false); chunks: %+v", compressed, recent, chunks)
		}
		// Compressed rows read back unchanged.
		var n, sum int64
		if err := conn.QueryRow(ctx, `SELECT count(*), sum(value)::bigint FROM `+s+`.readings WHERE time >= $1 AND time < $1 + INTERVAL '1 hour'`, readings[1].start).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		if n != 300 || sum != 300*301/2 {
			t.Errorf("day -3 readings after compression: %d rows summing to %d; want 300, %d", n, sum, 300*301/2)
		}
	})

	t.Run("retention of readings", func(t *testing.T) {
		for _, c := range readingsChunks(t, ctx, conn, o.Schema) {
			if c.end.Before(now.AddDate(0, 0, -30)) {
				t.Errorf("readings chunk %s..%s is older than the 30-day retention and still there", c.start, c.end)
			}
		}
		for _, r := range readings {
			n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.readings WHERE time >= $1 AND time < $1 + INTERVAL '1 hour'`, r.start)
			want := int64(r.n)
			if r.name == "dropped" {
				want = 0
			}
			if n != want {
				t.Errorf("%s readings: %d rows, want %d", r.name, n, want)
			}
		}
	})

	t.Run("retention of metrics and activity", func(t *testing.T) {
		if n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.device_metrics WHERE bucket < now() - INTERVAL '365 days'`); n != 0 {
			t.Errorf("device_metrics: %d windows older than 365 days left", n)
		}
		if n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.device_metrics`); n != int64(len(windows)) {
			t.Errorf("device_metrics: %d windows, want the %d recent ones", n, len(windows))
		}
		if n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.device_activity WHERE bucket < now() - INTERVAL '365 days'`); n != 0 {
			t.Errorf("device_activity: %d rows older than 365 days left", n)
		}
		if n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.device_activity`); n != 1 {
			t.Errorf("device_activity: %d rows, want the recent one", n)
		}
	})

	// What the refresh policies materialized (read from the materialization
	// hypertables, so real-time aggregation plays no part) against the
	// windows rolled up here: exactly the buckets inside each refresh window.
	t.Run("rollup 1h", func(t *testing.T) {
		checkMaterialized(t, materialized(t, ctx, conn, o.Schema, "device_metrics_1h"),
			rollUp(windows, time.Hour, now.AddDate(0, 0, -3), now.Add(-time.Hour)))
	})
	t.Run("rollup 1d", func(t *testing.T) {
		checkMaterialized(t, materialized(t, ctx, conn, o.Schema, "device_metrics_1d"),
			rollUp(windows, 24*time.Hour, now.AddDate(0, 0, -30), now.AddDate(0, 0, -1)))
	})

	// The scheduler keeps running them: each succeeds again, and a run with
	// nothing new to do changes nothing.
	t.Run("again on schedule", func(t *testing.T) {
		var since time.Time
		if err := conn.QueryRow(ctx, "SELECT now()").Scan(&since); err != nil {
			t.Fatal(err)
		}
		waitForJobs(t, ctx, conn, jobs, since)
		checkMaterialized(t, materialized(t, ctx, conn, o.Schema, "device_metrics_1h"),
			rollUp(windows, time.Hour, now.AddDate(0, 0, -3), now.Add(-time.Hour)))
		if n := count(t, ctx, conn, `SELECT count(*) FROM `+s+`.readings`); n != 300+30 {
			t.Errorf("readings: %d rows after more runs, want %d", n, 300+30)
		}
	})
}

// schemaJobs returns the jobs on the schema's hypertables and on its
// rollups' materialization hypertables, ordered by procedure and target.
func schemaJobs(t *testing.T, ctx context.Context, conn *pgx.Conn, schema string) []policyJob {
	t.Helper()
	rows, err := conn.Query(ctx, `
SELECT j.job_id, j.proc_name, coalesce(ca.view_name, j.hypertable_name)
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.continuous_aggregates ca
  ON j.hypertable_schema = ca.materialization_hypertable_schema AND j.hypertable_name = ca.materialization_hypertable_name
WHERE j.hypertable_schema = $1 OR ca.view_schema = $1
ORDER BY 2, 3`, schema)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (policyJob, error) {
		var j policyJob
		err := r.Scan(&j.id, &j.proc, &j.target)
		return j, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// waitForJobs polls timescaledb_information.job_stats until every job's last
// run succeeded and finished after since (total_successes >= 1). A run of
// any of them that started after since and failed ends the wait at once with
// the job's errors, unless it was a deadlock with another policy (40P01),
// which the scheduler retries; those are logged. (Runs before since may have
// been cancelled by pauseJobs.)
func waitForJobs(t *testing.T, ctx context.Context, conn *pgx.Conn, jobs []policyJob, since time.Time) {
	t.Helper()
	type stat struct {
		status                    string
		runs, successes, failures int64
		succeededSince            bool // last_successful_finish > since
	}
	var last map[int]stat
	logged := map[int]bool{}
	for {
		pending := 0
		last = map[int]stat{}
		for _, j := range jobs {
			var st stat
			var status *string
			err := conn.QueryRow(ctx, `SELECT last_run_status, coalesce(total_runs, 0), coalesce(total_successes, 0), coalesce(total_failures, 0),
    coalesce(last_successful_finish > $2, false)
FROM timescaledb_information.job_stats WHERE job_id = $1`, j.id, since).Scan(&status, &st.runs, &st.successes, &st.failures, &st.succeededSince)
			switch {
			case errors.Is(err, pgx.ErrNoRows): // not run yet
			case err != nil:
				t.Fatalf("job_stats of %s: %v", j, err)
			}
			if status != nil {
				st.status = *status
			}
			last[j.id] = st
			if codes, msgs := jobErrors(t, ctx, conn, j.id, since); len(codes) > 0 {
				for _, c := range codes {
					if c != "40P01" {
						t.Fatalf("%s failed (%d runs, %d failures in all): %s", j, st.runs, st.failures, msgs)
					}
				}
				if !logged[j.id] {
					t.Logf("%s: %d runs failed with a deadlock, retried by the scheduler: %s", j, len(codes), msgs)
					logged[j.id] = true
				}
			}
			if st.status != "Success" || st.successes < 1 || !st.succeededSince {
				pending++
			}
		}
		if pending == 0 {
			for _, j := range jobs {
				t.Logf("%s: last run %s, %d runs, %d successes", j, last[j.id].status, last[j.id].runs, last[j.id].successes)
			}
			return
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for _, j := range jobs {
				fmt.Fprintf(&b, "\n  %s: %+v", j, last[j.id])
			}
			fmt.Fprintf(&b, "\nbackground workers:%s", jobWorkers(conn))
			t.Fatalf("timed out waiting for the jobs to run successfully on schedule:%s", b.String())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// jobWorkers describes the running TimescaleDB job workers and what they
// wait for, for a timeout's message.
func jobWorkers(conn *pgx.Conn) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT format('pid %s %s: %s, wait %s/%s, blocked by %s, since %s', pid, application_name, state,
    wait_event_type, wait_event, pg_blocking_pids(pid), now() - xact_start)
FROM pg_stat_activity WHERE application_name ~ '(Policy|Job) \[[0-9]+\]$' ORDER BY pid`)
	if err != nil {
		return " " + err.Error()
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return " " + err.Error()
	}
	if len(lines) == 0 {
		return " none"
	}
	return "\n  " + strings.Join(lines, "\n  ")
}

// jobErrors returns the SQLSTATEs and messages of the errors TimescaleDB
// recorded for the runs of a job that started after since.
func jobErrors(t *testing.T, ctx context.Context, conn *pgx.Conn, id int, since time.Time) (codes []string, msgs string) {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT coalesce(sqlerrcode, ''), coalesce(err_message, '') FROM timescaledb_information.job_errors
WHERE job_id = $1 AND start_time > $2 ORDER BY start_time`, id, since)
	if err != nil {
		t.Fatalf("job_errors of job %d: %v", id, err)
	}
	var all []string
	for rows.Next() {
		var code, msg string
		if err := rows.Scan(&code, &msg); err != nil {
			t.Fatalf("job_errors of job %d: %v", id, err)
		}
		codes = append(codes, code)
		all = append(all, code+" "+msg)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("job_errors of job %d: %v", id, err)
	}
	return codes, strings.Join(all, "; ")
}

// pauseJobs stops the scheduler from starting the jobs and waits until none
// of them runs (until ctx ends).
func pauseJobs(ctx context.Context, conn *pgx.Conn, jobs []policyJob) error {
	ids := make([]int32, len(jobs))
	for i, j := range jobs {
		if _, err := conn.Exec(ctx, `SELECT alter_job($1, scheduled => false)`, j.id); err != nil {
			return fmt.Errorf("pause %s: %w", j, err)
		}
		ids[i] = int32(j.id)
	}
	for {
		var running int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM timescaledb_information.job_stats WHERE job_id = ANY($1) AND job_status = 'Running'`, ids).Scan(&running); err != nil {
			return fmt.Errorf("pause jobs: job_stats: %w", err)
		}
		if running == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pause jobs: %d still running: %w", running, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func count(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

type chunkInfo struct {
	start, end time.Time
	compressed bool
}

func readingsChunks(t *testing.T, ctx context.Context, conn *pgx.Conn, schema string) []chunkInfo {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks
WHERE hypertable_schema = $1 AND hypertable_name = 'readings' ORDER BY range_start`, schema)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (chunkInfo, error) {
		var c chunkInfo
		err := r.Scan(&c.start, &c.end, &c.compressed)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return chunks
}

// testWindow is one device_metrics row with values derived from a base.
type testWindow struct {
	device, metric      string
	start               time.Time
	count               int64
	sum, min, max       float64
	first, last         float64
	firstTime, lastTime time.Time
	p95, p99            float64
}

func newTestWindow(device, metric string, start time.Time, base float64) testWindow {
	return testWindow{
		device: device, metric: metric, start: start,
		count: 3, sum: 3*base + 3, min: base, max: base + 2,
		first: base + 1, last: base + 2,
		firstTime: start.Add(5 * time.Second), lastTime: start.Add(50 * time.Second),
		p95: base + 1.9, p99: base + 1.99,
	}
}

func (w testWindow) insert(t *testing.T, ctx context.Context, conn *pgx.Conn, schema string) {
	t.Helper()
	_, err := conn.Exec(ctx, `INSERT INTO `+schema+`.device_metrics
    (bucket, bucket_end, device_id, metric, count, sum, min, max, mean, first, last, p95, p99, first_time, last_time, revision)
VALUES ($1::timestamptz, $1::timestamptz + INTERVAL '1 minute', $2, $3, $4, $5, $6, $7, $5::double precision / $4::bigint, $8, $9, $10, $11, $12, $13, 1)`,
		w.start, w.device, w.metric, w.count, w.sum, w.min, w.max, w.first, w.last, w.p95, w.p99, w.firstTime, w.lastTime)
	if err != nil {
		t.Fatalf("insert window %s %s %s: %v", w.device, w.metric, w.start, err)
	}
}

// rollupKey orders rollup rows like the queries below: bucket, device, metric.
type rollupKey struct {
	bucket         time.Time
	device, metric string
}

type keyedRollup struct {
	rollupKey
	rollupRow
}

// rollUp computes what a refresh over [from, to) materializes: the buckets
// of the given width that lie entirely inside the window, aggregated as the
// rollups define it (see the package doc).
func rollUp(windows []testWindow, width time.Duration, from, to time.Time) []keyedRollup {
	acc := map[rollupKey]*rollupRow{}
	for _, w := range windows {
		b := w.start.Truncate(width)
		if b.Before(from) || b.Add(width).After(to) {
			continue
		}
		k := rollupKey{b, w.device, w.metric}
		r, ok := acc[k]
		if !ok {
			r = &rollupRow{Bucket: b, Min: math.Inf(1), Max: math.Inf(-1), MaxP95: math.Inf(-1), MaxP99: math.Inf(-1)}
			acc[k] = r
		}
		r.Windows++
		r.Count += w.count
		r.Sum += w.sum
		r.Min, r.Max = math.Min(r.Min, w.min), math.Max(r.Max, w.max)
		if r.FirstTime.IsZero() || w.firstTime.Before(r.FirstTime) {
			r.FirstTime, r.First = w.firstTime, w.first
		}
		if w.lastTime.After(r.LastTime) {
			r.LastTime, r.Last = w.lastTime, w.last
		}
		r.MaxP95, r.MaxP99 = math.Max(r.MaxP95, w.p95), math.Max(r.MaxP99, w.p99)
	}
	var out []keyedRollup
	for k, r := range acc {
		r.Mean = r.Sum / float64(r.Count)
		out = append(out, keyedRollup{k, *r})
	}
	sort.Slice(out, func(i, j int) bool { return lessKey(out[i].rollupKey, out[j].rollupKey) })
	return out
}

func lessKey(a, b rollupKey) bool {
	if !a.bucket.Equal(b.bucket) {
		return a.bucket.Before(b.bucket)
	}
	if a.device != b.device {
		return a.device < b.device
	}
	return a.metric < b.metric
}

// materialized returns the rows a continuous aggregate has materialized.
func materialized(t *testing.T, ctx context.Context, conn *pgx.Conn, schema, view string) []keyedRollup {
	t.Helper()
	var rel string
	if err := conn.QueryRow(ctx, `SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
FROM timescaledb_information.continuous_aggregates WHERE view_schema = $1 AND view_name = $2`, schema, view).Scan(&rel); err != nil {
		t.Fatalf("materialization hypertable of %s: %v", view, err)
	}
	rows, err := conn.Query(ctx, `SELECT bucket, device_id, metric, windows, count, sum, min, max, mean, first, last, first_time, last_time, max_p95, max_p99
FROM `+rel+` ORDER BY bucket, device_id, metric`)
	if err != nil {
		t.Fatalf("read %s (%s): %v", rel, view, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyedRollup, error) {
		var x keyedRollup
		err := r.Scan(&x.bucket, &x.device, &x.metric, &x.Windows, &x.Count, &x.Sum, &x.Min, &x.Max, &x.Mean, &x.First, &x.Last, &x.FirstTime, &x.LastTime, &x.MaxP95, &x.MaxP99)
		x.Bucket = x.bucket
		return x, err
	})
	if err != nil {
		t.Fatalf("read %s (%s): %v", rel, view, err)
	}
	return out
}

func checkMaterialized(t *testing.T, got, want []keyedRollup) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the test data has no bucket inside the refresh window")
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows materialized, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i].device != want[i].device || got[i].metric != want[i].metric || !rollupEqual(got[i].rollupRow, want[i].rollupRow) {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	t.Logf("%d rows materialized, as computed from device_metrics", len(got))
}
