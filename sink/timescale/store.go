package timescale

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Errors the sink branches on.
var (
	// ErrConflict: another writer moved this consumer group's offsets
	// between our read and our write (a zombie or a rebalance race). The
	// transaction is rolled back; the next attempt skips what the other
	// writer wrote.
	ErrConflict = errors.New("timescale: sink_offsets changed under the batch (another writer)")
	// ErrSchemaMissing: the schema has no iotpipe tables; run `iotpipe init`.
	ErrSchemaMissing = errors.New("timescale: schema is not migrated (run iotpipe init)")
	// ErrSchemaOld: the schema predates the tables a configured topic is
	// written to (alert_events' columns of migration 0012); run
	// `iotpipe init` to upgrade it.
	ErrSchemaOld = errors.New("timescale: schema is older than this sink needs (run iotpipe init)")
)

// alertsMigration is the schema version whose alert_events columns the
// sink writes.
const alertsMigration = 12

// Staging tables, one set per connection (temporary, emptied on commit).
const (
	stageMetrics  = "iotpipe_stage_metrics"
	stageActivity = "iotpipe_stage_activity"
)

var (
	readingCols  = []string{"time", "device_id", "metric", "value", "seq", "received_at"}
	metricCols   = []string{"bucket", "bucket_end", "device_id", "metric", "count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p95", "p99", "first_time", "last_time", "revision"}
	activityCols = []string{"bucket", "bucket_end", "device_id", "messages", "seq_gaps", "late", "duplicates", "first_seen", "last_seen", "revision", "seq_resets", "ignored_fields"}
)

// store writes batches to the database.
type store struct {
	pool  *pgxpool.Pool
	group string

	readings, metricsTbl, activityTbl, offsets pgx.Identifier
	upsertMetrics, upsertActivity              string
	insertAlert                                string
	readOffsets, allOffsets                    string
	casOffset, insertOffset                    string
}

func newStore(cfg *Config) (*store, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("DSN: %w", err)
	}
	pc.MaxConns = 4
	pc.MinConns = 0
	pc.HealthCheckPeriod = 5 * time.Second
	s := &store{
		group:       cfg.Group,
		readings:    pgx.Identifier{cfg.Schema, "readings"},
		metricsTbl:  pgx.Identifier{cfg.Schema, "device_metrics"},
		activityTbl: pgx.Identifier{cfg.Schema, "device_activity"},
		offsets:     pgx.Identifier{cfg.Schema, "sink_offsets"},
	}
	s.upsertMetrics = upsertSQL(s.metricsTbl.Sanitize(), stageMetrics, metricCols, "device_id, metric, bucket")
	s.upsertActivity = upsertSQL(s.activityTbl.Sanitize(), stageActivity, activityCols, "device_id, bucket")
	s.insertAlert = `INSERT INTO ` + pgx.Identifier{cfg.Schema, "alert_events"}.Sanitize() + ` (event_id, rule_id, rule_version,
		device_id, metric, state, severity, value, threshold, event_time, fired_event_id, message, kind, statistic, operator,
		recipients, source_topic, source_partition, source_offset)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULLIF($11, ''), $12, $13, $14, $15, $16, $17, $18, $19)
		ON CONFLICT (event_id) DO NOTHING`
	off := s.offsets.Sanitize()
	s.readOffsets = `SELECT o.topic, o.partition, o.next_offset FROM ` + off + ` o
		JOIN unnest($2::text[], $3::int[]) AS k(topic, partition) USING (topic, partition)
		WHERE o.consumer_group = $1 FOR UPDATE OF o`
	s.allOffsets = `SELECT topic, partition, next_offset FROM ` + off + ` WHERE consumer_group = $1 AND topic = ANY($2::text[])`
	s.casOffset = `UPDATE ` + off + ` SET next_offset = $4, updated_at = now()
		WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $5`
	s.insertOffset = `INSERT INTO ` + off + ` (consumer_group, topic, partition, next_offset)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`
	// Each connection gets its staging tables: COPY into them, then one
	// INSERT … SELECT … ON CONFLICT per table. ON COMMIT DELETE ROWS keeps
	// them empty between transactions.
	stageDDL := fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS %s ON COMMIT DELETE ROWS AS SELECT %s FROM %s WITH NO DATA;
		CREATE TEMP TABLE IF NOT EXISTS %s ON COMMIT DELETE ROWS AS SELECT %s FROM %s WITH NO DATA`,
		stageMetrics, strings.Join(metricCols, ", "), s.metricsTbl.Sanitize(),
		stageActivity, strings.Join(activityCols, ", "), s.activityTbl.Sanitize())
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, stageDDL)
		return err
	}
	s.pool, err = pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("DSN: %w", err)
	}
	return s, nil
}

// upsertSQL moves the staged rows into table; an existing row is replaced
// only by a higher revision (an equal revision is a replay: no-op).
func upsertSQL(table, stage string, cols []string, key string) string {
	var set []string
	for _, c := range cols {
		if !strings.Contains(", "+key+",", ", "+c+",") {
			set = append(set, c+" = EXCLUDED."+c)
		}
	}
	set = append(set, "updated_at = EXCLUDED.updated_at")
	list := strings.Join(cols, ", ")
	return fmt.Sprintf(`INSERT INTO %s AS t (%s, updated_at) SELECT %s, now() FROM %s
		ON CONFLICT (%s) DO UPDATE SET %s WHERE t.revision < EXCLUDED.revision`,
		table, list, list, stage, key, strings.Join(set, ", "))
}

// ready checks that the database answers and holds the schema, at least
// at migration 0012 when alerts are consumed (a permanent
// *config.FieldError on TopicAlerts otherwise: waiting does not cure it).
func (s *store) ready(ctx context.Context, schema string, alerts bool) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	v, _, err := migrations.Status(ctx, c.Conn(), schema)
	if err != nil {
		return err
	}
	if v == 0 {
		return fmt.Errorf("schema %q: %w", schema, ErrSchemaMissing)
	}
	if alerts && v < alertsMigration {
		return retry.Permanent(&config.FieldError{Field: "TopicAlerts", Err: fmt.Errorf(
			"schema %q is at version %d, alert events need version %d (or skip the topic with -): %w", schema, v, alertsMigration, ErrSchemaOld)})
	}
	return nil
}

// storedOffsets returns the next offsets stored for this group's topics.
func (s *store) storedOffsets(ctx context.Context, topics []string) (map[tp]int64, error) {
	rows, err := s.pool.Query(ctx, s.allOffsets, s.group, topics)
	if err != nil {
		return nil, err
	}
	out := map[tp]int64{}
	var k tp
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &n}, func() error {
		out[k] = n
		return nil
	})
	return out, err
}

// rejection is a record that goes to the DLQ.
type rejection struct {
	src    int
	reason schemas.Reason
	err    string
}

// writeResult is what one committed batch did.
type writeResult struct {
	readings, metrics, activity int // rows written
	alerts                      int // alert_events rows written
	alertRepeats                int // alert records whose event id was stored already
	skipped                     int // records already in the database
	rejected                    []rejection
}

// write writes the batch in one transaction together with the offsets it
// covers: records at offsets the database already holds are skipped;
// records the database refuses are isolated (bisection in savepoints)
// and, with records that did not decode, handed to dlq before the commit.
// On error nothing was committed.
func (s *store) write(ctx context.Context, b *batch, dlq func(context.Context, []rejection) error) (res writeResult, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
		}
	}()

	parts := b.partitions()
	topics := make([]string, 0, len(parts))
	nums := make([]int32, 0, len(parts))
	for k := range parts {
		topics = append(topics, k.topic)
		nums = append(nums, k.partition)
	}
	rows, err := tx.Query(ctx, s.readOffsets, s.group, topics, nums)
	if err != nil {
		return res, fmt.Errorf("read sink_offsets: %w", err)
	}
	stored := map[tp]int64{}
	var k tp
	var n int64
	if _, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &n}, func() error {
		stored[k] = n
		return nil
	}); err != nil {
		return res, fmt.Errorf("read sink_offsets: %w", err)
	}

	idxs := make([]int, 0, len(b.srcs))
	for i := range b.srcs {
		src := &b.srcs[i]
		if n, ok := stored[tp{src.rec.Topic, src.rec.Partition}]; ok && src.rec.Offset < n {
			res.skipped++
			continue
		}
		switch {
		case src.kind == kindInvalid:
			res.rejected = append(res.rejected, rejection{i, schemas.ReasonInvalidRecord, src.err})
		case src.superseded:
		default:
			idxs = append(idxs, i)
		}
	}
	if err := s.writeIsolating(ctx, tx, b, idxs, &res); err != nil { // returned into the named err: the deferred rollback sees it
		return res, err
	}
	if len(res.rejected) > 0 {
		if err = dlq(ctx, res.rejected); err != nil {
			return res, fmt.Errorf("%w: %w", errDLQ, err)
		}
	}
	// Move each partition's offset, compare-and-set against what we read.
	var ob pgx.Batch
	var cas []tp
	for k, r := range parts {
		next := r[1] + 1
		if old, ok := stored[k]; ok {
			if next <= old {
				continue
			}
			ob.Queue(s.casOffset, s.group, k.topic, k.partition, next, old)
		} else {
			ob.Queue(s.insertOffset, s.group, k.topic, k.partition, next)
		}
		cas = append(cas, k)
	}
	if len(cas) > 0 {
		br := tx.SendBatch(ctx, &ob)
		for _, k := range cas {
			tag, e := br.Exec()
			if e != nil {
				_ = br.Close()
				return res, fmt.Errorf("write sink_offsets: %w", e)
			}
			if tag.RowsAffected() != 1 {
				_ = br.Close()
				return res, fmt.Errorf("%s/%d: %w", k.topic, k.partition, ErrConflict)
			}
		}
		if err = br.Close(); err != nil {
			return res, fmt.Errorf("write sink_offsets: %w", err)
		}
	}
	if err = tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// writeIsolating writes the rows of the records idxs in a savepoint. When
// the database refuses a row for a data reason, it rolls the savepoint back
// and splits the records in halves until the refused records are alone;
// those become rejections, everything else is written.
func (s *store) writeIsolating(ctx context.Context, tx pgx.Tx, b *batch, idxs []int, res *writeResult) error {
	if len(idxs) == 0 {
		return nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	n, err := s.writeRows(ctx, sp, b, idxs)
	if err == nil {
		if err = sp.Commit(ctx); err == nil {
			res.readings += n.readings
			res.metrics += n.metrics
			res.activity += n.activity
			res.alerts += n.alerts
			res.alertRepeats += n.alertRepeats
			return nil
		}
	}
	_ = sp.Rollback(ctx)
	if !isDataError(err) {
		return err
	}
	if len(idxs) == 1 {
		res.rejected = append(res.rejected, rejection{idxs[0], schemas.ReasonRejectedByDatabase, err.Error()})
		return nil
	}
	mid := len(idxs) / 2
	if err := s.writeIsolating(ctx, tx, b, idxs[:mid], res); err != nil {
		return err
	}
	return s.writeIsolating(ctx, tx, b, idxs[mid:], res)
}

// writeRows writes the rows of records idxs: readings by binary COPY,
// metrics and activity by COPY into the staging tables and one upsert each,
// alert events by one INSERT … ON CONFLICT (event_id) DO NOTHING each, sent
// in one round trip. The counts are in the readings, metrics, activity,
// alerts and alertRepeats fields of the result.
func (s *store) writeRows(ctx context.Context, tx pgx.Tx, b *batch, idxs []int) (n writeResult, err error) {
	var haveR, haveM, haveA bool
	var ab pgx.Batch
	for _, i := range idxs {
		switch b.srcs[i].kind {
		case kindReading:
			haveR = true
		case kindMetric:
			haveM = true
		case kindActivity:
			haveA = true
		case kindAlert:
			src := &b.srcs[i]
			a := b.alerts[src.lo]
			rc := a.Recipients
			if rc == nil {
				rc = []string{}
			}
			ab.Queue(s.insertAlert, a.EventID, a.RuleID, a.RuleVersion, a.DeviceID, a.Metric, string(a.State), a.Severity,
				a.Value, a.Threshold, a.EventTime, a.FiredEventID, a.Message, a.Kind, a.Statistic, a.Operator,
				rc, src.rec.Topic, src.rec.Partition, src.rec.Offset)
		}
	}
	if haveR {
		c, err := tx.CopyFrom(ctx, s.readings, readingCols, &readingSource{b: b, idxs: idxs, vals: make([]any, len(readingCols))})
		if err != nil {
			return n, fmt.Errorf("copy readings: %w", err)
		}
		n.readings = int(c)
	}
	if haveM {
		if _, err := tx.Exec(ctx, "TRUNCATE "+stageMetrics); err != nil {
			return n, fmt.Errorf("stage device_metrics: %w", err)
		}
		c, err := tx.CopyFrom(ctx, pgx.Identifier{stageMetrics}, metricCols, &metricSource{b: b, idxs: idxs, vals: make([]any, len(metricCols))})
		if err != nil {
			return n, fmt.Errorf("stage device_metrics: %w", err)
		}
		if _, err := tx.Exec(ctx, s.upsertMetrics); err != nil {
			return n, fmt.Errorf("upsert device_metrics: %w", err)
		}
		n.metrics = int(c)
	}
	if haveA {
		if _, err := tx.Exec(ctx, "TRUNCATE "+stageActivity); err != nil {
			return n, fmt.Errorf("stage device_activity: %w", err)
		}
		c, err := tx.CopyFrom(ctx, pgx.Identifier{stageActivity}, activityCols, &activitySource{b: b, idxs: idxs, vals: make([]any, len(activityCols))})
		if err != nil {
			return n, fmt.Errorf("stage device_activity: %w", err)
		}
		if _, err := tx.Exec(ctx, s.upsertActivity); err != nil {
			return n, fmt.Errorf("upsert device_activity: %w", err)
		}
		n.activity = int(c)
	}
	if ab.Len() > 0 {
		br := tx.SendBatch(ctx, &ab)
		for range ab.Len() {
			tag, err := br.Exec()
			if err != nil {
				_ = br.Close()
				return n, fmt.Errorf("insert alert_events: %w", err)
			}
			if tag.RowsAffected() == 1 {
				n.alerts++
			} else {
				n.alertRepeats++
			}
		}
		if err := br.Close(); err != nil {
			return n, fmt.Errorf("insert alert_events: %w", err)
		}
	}
	return n, nil
}

// isDataError reports whether the database refused the data itself
// (data exception, integrity constraint violation, program limit such as
// a row too large): retrying cannot help, so the rows go to the DLQ. Every
// other error (connection lost, server shutting down, serialization
// failure, missing privilege) is retried.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// nullTime is a timestamptz that is NULL when zero.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// readingSource streams the readings rows of records idxs to COPY.
// readingSource feeds COPY the readings rows of the records idxs, sorted
// by (device_id, metric, time): consecutive rows then go to the same leaf
// pages of the readings_device_metric_time_idx index (and of the chunk's
// heap), which made PostgreSQL spend 20-30 % less CPU per row than rows in
// arrival order (interleaved across every device of the fleet), more as
// the index grows. Which rows are written is unchanged.
type readingSource struct {
	b     *batch
	idxs  []int
	order []int32 // rows of b.readings to write, sorted; built on the first Next
	built bool
	i     int
	cur   *readingRow
	vals  []any
}

func (r *readingSource) build() {
	r.built = true
	r.order = r.b.order[:0]
	for _, i := range r.idxs {
		src := &r.b.srcs[i]
		if src.kind != kindReading {
			continue
		}
		for row := src.lo; row < src.hi; row++ {
			r.order = append(r.order, int32(row))
		}
	}
	rows := r.b.readings
	slices.SortFunc(r.order, func(x, y int32) int {
		a, b := &rows[x], &rows[y]
		if c := strings.Compare(a.device, b.device); c != 0 {
			return c
		}
		if c := strings.Compare(a.metric, b.metric); c != 0 {
			return c
		}
		return a.time.Compare(b.time)
	})
	r.b.order = r.order // reuse the memory for the next batch
}

func (r *readingSource) Next() bool {
	if !r.built {
		r.build()
	}
	if r.i >= len(r.order) {
		return false
	}
	r.cur = &r.b.readings[r.order[r.i]]
	r.i++
	return true
}

func (r *readingSource) Values() ([]any, error) {
	c := r.cur
	r.vals[0], r.vals[1], r.vals[2], r.vals[3] = c.time, c.device, c.metric, c.value
	if c.hasSeq {
		r.vals[4] = c.seq
	} else {
		r.vals[4] = nil
	}
	r.vals[5] = nullTime(c.received)
	return r.vals, nil
}

func (r *readingSource) Err() error { return nil }

type metricSource struct {
	b    *batch
	idxs []int
	i    int
	cur  *schemas.WindowMetric
	vals []any
}

func (m *metricSource) Next() bool {
	for m.i < len(m.idxs) {
		src := &m.b.srcs[m.idxs[m.i]]
		m.i++
		if src.kind == kindMetric {
			m.cur = &m.b.metrics[src.lo]
			return true
		}
	}
	return false
}

func (m *metricSource) Values() ([]any, error) {
	w := m.cur
	copy(m.vals, []any{w.WindowStart, w.WindowEnd, w.DeviceID, w.Metric, w.Count, w.Sum, w.Min, w.Max,
		w.Mean, w.Stddev, w.First, w.Last, w.P50, w.P95, w.P99, nullTime(w.FirstTime), nullTime(w.LastTime), w.Revision})
	return m.vals, nil
}

func (m *metricSource) Err() error { return nil }

type activitySource struct {
	b    *batch
	idxs []int
	i    int
	cur  *schemas.Activity
	vals []any
}

func (a *activitySource) Next() bool {
	for a.i < len(a.idxs) {
		src := &a.b.srcs[a.idxs[a.i]]
		a.i++
		if src.kind == kindActivity {
			a.cur = &a.b.activity[src.lo]
			return true
		}
	}
	return false
}

func (a *activitySource) Values() ([]any, error) {
	v := a.cur
	copy(a.vals, []any{v.WindowStart, v.WindowEnd, v.DeviceID, v.Messages, v.SeqGaps, v.Late, v.Duplicates,
		nullTime(v.FirstSeen), nullTime(v.LastSeen), v.Revision, v.SeqResets, v.IgnoredFields})
	return a.vals, nil
}

func (a *activitySource) Err() error { return nil }

// deadLetters turns rejections into DLQ records.
func deadLetters(b *batch, rej []rejection, topic string, now time.Time) []*kgo.Record {
	out := make([]*kgo.Record, 0, len(rej))
	for _, r := range rej {
		src := b.srcs[r.src].rec
		d := schemas.DeadLetter{
			Value: src.Value, Key: src.Key, Reason: r.reason, Error: r.err,
			Stage:       schemas.StageSinkTimescale,
			SourceTopic: src.Topic, SourcePartition: src.Partition, SourceOffset: src.Offset,
			Time: now.UTC().Truncate(time.Microsecond),
		}
		rec := d.Record()
		rec.Topic = topic
		out = append(out, rec)
	}
	return out
}

// settingProblem turns a connection failure that waiting cannot cure into
// a permanent *config.FieldError on DSN: the server's certificate does not
// verify (sslrootcert, or the host name for sslmode=verify-full), the
// server's pg_hba refuses the connection (e.g. plaintext to a hostssl-only
// server), or the password is wrong. The message holds pgx's error, which
// names host, user and database, never the password.
func settingProblem(err error) error {
	if err == nil {
		return nil
	}
	var why string
	var pe *pgconn.PgError
	switch {
	case certs.IsUnknownAuthority(err):
		why = "the server's certificate is not signed by a CA in the DSN's sslrootcert"
	case certs.IsNameMismatch(err):
		why = "the server's certificate does not hold the DSN's host name (sslmode=verify-full)"
	case errors.As(err, &pe) && pe.Code == "28000":
		why = "the server refuses this connection (pg_hba; it may take TLS connections only: sslmode=verify-full)"
	case errors.As(err, &pe) && pe.Code == "28P01":
		why = "the server refuses the DSN's user or password"
	default:
		return err
	}
	return retry.Permanent(&config.FieldError{Field: "DSN", Err: fmt.Errorf("%s: %w", why, err)})
}
