package rules

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// NotifyChannel is the PostgreSQL channel of rule change notices.
const NotifyChannel = "iotpipe_alert_rules"

// Errors callers test with errors.Is.
var (
	ErrNotFound = errors.New("no such alert rule")
	ErrExists   = errors.New("alert rule already exists")
	// ErrConflict: the rule changed since the version the caller read.
	ErrConflict = errors.New("alert rule changed since it was read (version conflict)")
	ErrNoSchema = errors.New("the alert tables do not exist (run iotpipe init)")
)

// Store reads and writes alert rules. It connects as a member of the
// registry role (writes) or the writer role (reads, events).
type Store struct {
	pool   *pgxpool.Pool
	schema string
}

// Open connects and checks that migration 0010_alerts has run in schema.
func Open(ctx context.Context, dsn, schema string) (*Store, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("alert rules: database URL: %w", err)
	}
	pc.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("alert rules: connect: %w", err)
	}
	s := &Store{pool: pool, schema: schema}
	ok, err := migrations.TableExists(ctx, pool, schema, "alert_rules")
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("alert rules: connect: %w", err)
	}
	if !ok {
		pool.Close()
		return nil, fmt.Errorf("alert rules: schema %q: %w", schema, ErrNoSchema)
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() { s.pool.Close() }

func (s *Store) rel(table string) string { return pgx.Identifier{s.schema, table}.Sanitize() }

const ruleColumns = `rule_id, description, kind, scope, scope_id, metric, statistic, operator,
	trigger_threshold, clear_threshold, for_count, for_duration_ms, silence_ms, severity, recipients,
	enabled, version, created_at, updated_at`

func scanRule(row pgx.Row) (*Rule, error) {
	var r Rule
	var forMS, silenceMS int64
	var kind, scope, op string
	err := row.Scan(&r.ID, &r.Description, &kind, &scope, &r.ScopeID, &r.Metric, &r.Statistic, &op,
		&r.Trigger, &r.Clear, &r.ForCount, &forMS, &silenceMS, &r.Severity, &r.Recipients,
		&r.Enabled, &r.Version, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return nil, err
	}
	r.Kind, r.Scope, r.Operator = Kind(kind), Scope(scope), Operator(op)
	r.ForDuration = time.Duration(forMS) * time.Millisecond
	r.Silence = time.Duration(silenceMS) * time.Millisecond
	if r.Recipients == nil {
		r.Recipients = []string{}
	}
	return &r, nil
}

func args(r *Rule) []any {
	rc := r.Recipients
	if rc == nil {
		rc = []string{}
	}
	return []any{r.ID, r.Description, string(r.Kind), string(r.Scope), r.ScopeID, r.Metric, r.Statistic, string(r.Operator),
		r.Trigger, r.Clear, r.ForCount, r.ForDuration.Milliseconds(), r.Silence.Milliseconds(), r.Severity, rc, r.Enabled}
}

// Create validates r and stores it as version 1; it returns the stored rule.
func (s *Store) Create(ctx context.Context, r Rule) (*Rule, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("create alert rule %s: %w", r.ID, err)
	}
	q := `INSERT INTO ` + s.rel("alert_rules") + ` (rule_id, description, kind, scope, scope_id, metric, statistic, operator,
	trigger_threshold, clear_threshold, for_count, for_duration_ms, silence_ms, severity, recipients, enabled)
	VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) RETURNING ` + ruleColumns
	out, err := scanRule(s.pool.QueryRow(ctx, q, args(&r)...))
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return nil, fmt.Errorf("create alert rule %s: %w", r.ID, ErrExists)
		}
		return nil, fmt.Errorf("create alert rule %s: %w", r.ID, err)
	}
	return out, nil
}

// Get returns one rule.
func (s *Store) Get(ctx context.Context, id string) (*Rule, error) {
	r, err := scanRule(s.pool.QueryRow(ctx, `SELECT `+ruleColumns+` FROM `+s.rel("alert_rules")+` WHERE rule_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("alert rule %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get alert rule %s: %w", id, err)
	}
	return r, nil
}

// List returns every rule by id; onlyEnabled leaves out the disabled ones.
func (s *Store) List(ctx context.Context, onlyEnabled bool) ([]*Rule, error) {
	q := `SELECT ` + ruleColumns + ` FROM ` + s.rel("alert_rules")
	if onlyEnabled {
		q += ` WHERE enabled`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY rule_id`)
	if err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	defer rows.Close()
	var out []*Rule
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("list alert rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	return out, nil
}

// Update replaces rule r.ID with r if its stored version is still
// expected; it returns the stored rule (version expected+1).
func (s *Store) Update(ctx context.Context, r Rule, expected int64) (*Rule, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("update alert rule %s: %w", r.ID, err)
	}
	q := `UPDATE ` + s.rel("alert_rules") + ` SET description=$2, kind=$3, scope=$4, scope_id=$5, metric=$6, statistic=$7,
	operator=$8, trigger_threshold=$9, clear_threshold=$10, for_count=$11, for_duration_ms=$12, silence_ms=$13,
	severity=$14, recipients=$15, enabled=$16 WHERE rule_id=$1 AND version=$17 RETURNING ` + ruleColumns
	out, err := scanRule(s.pool.QueryRow(ctx, q, append(args(&r), expected)...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.missOrConflict(ctx, "update", r.ID, expected)
	}
	if err != nil {
		return nil, fmt.Errorf("update alert rule %s: %w", r.ID, err)
	}
	return out, nil
}

// Delete removes rule id if its version is still expected (0: whatever
// its version).
func (s *Store) Delete(ctx context.Context, id string, expected int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.rel("alert_rules")+` WHERE rule_id=$1 AND ($2 = 0 OR version=$2)`, id, expected)
	if err != nil {
		return fmt.Errorf("delete alert rule %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return s.missOrConflict(ctx, "delete", id, expected)
	}
	return nil
}

func (s *Store) missOrConflict(ctx context.Context, op, id string, expected int64) error {
	cur, err := s.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("%s alert rule %s: %w", op, id, err)
	}
	return fmt.Errorf("%s alert rule %s: expected version %d, it is at version %d: %w", op, id, expected, cur.Version, ErrConflict)
}

// Execer is what InsertEvents writes through: a pgx.Tx, *pgx.Conn or pool.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// InsertEvents stores alert events in schema's alert_events (migration
// 0012 or later), each once: an event id already stored is skipped (a
// redelivery). It returns how many rows were new. The TimescaleDB sink
// does the same in its batch transaction (sink/timescale, which also
// records the Kafka source of each row); this is for tools and tests that
// write events without Kafka.
func InsertEvents(ctx context.Context, db Execer, schema string, events []*schemas.Alert) (int, error) {
	q := `INSERT INTO ` + pgx.Identifier{schema, "alert_events"}.Sanitize() + ` (event_id, rule_id, rule_version, device_id, metric,
	state, severity, value, threshold, event_time, fired_event_id, message, kind, statistic, operator, recipients)
	VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,NULLIF($11,''),$12,$13,$14,$15,$16) ON CONFLICT (event_id) DO NOTHING`
	n := 0
	for _, e := range events {
		rc := e.Recipients
		if rc == nil {
			rc = []string{}
		}
		tag, err := db.Exec(ctx, q, e.EventID, e.RuleID, e.RuleVersion, e.DeviceID, e.Metric, string(e.State), e.Severity,
			e.Value, e.Threshold, e.EventTime, e.FiredEventID, e.Message, e.Kind, e.Statistic, e.Operator, rc)
		if err != nil {
			return n, fmt.Errorf("store alert event %s: %w", e.EventID, err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

// Active is one alert firing now (view alerts_active).
type Active struct {
	EventID, RuleID, DeviceID, Metric, Severity string
	Value, Threshold                            float64
	FiredAt                                     time.Time
}

// ActiveAlerts returns the alerts firing now, oldest first.
func (s *Store) ActiveAlerts(ctx context.Context) ([]Active, error) {
	rows, err := s.pool.Query(ctx, `SELECT event_id, rule_id, device_id, metric, severity, coalesce(value, 0), coalesce(threshold, 0), fired_at FROM `+
		s.rel("alerts_active")+` ORDER BY fired_at, event_id`)
	if err != nil {
		return nil, fmt.Errorf("active alerts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Active, error) {
		var a Active
		err := r.Scan(&a.EventID, &a.RuleID, &a.DeviceID, &a.Metric, &a.Severity, &a.Value, &a.Threshold, &a.FiredAt)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("active alerts: %w", err)
	}
	return out, nil
}
