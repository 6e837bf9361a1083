//go:build integration

package rules_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// Create, read, update with the version read, conflict on a stale version,
// delete; the database refuses what Validate refuses too.
func TestStoreLifecycle(t *testing.T) {
	e := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, e)
	ctx := testenv.Context(t, time.Minute)
	s, err := rules.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	r := rules.Rule{ID: "hot", Metric: "temp", Operator: rules.GT, Trigger: 90, Clear: 85, ForDuration: 30 * time.Second,
		Recipients: []string{"ntfy:ops"}, Enabled: true}
	r.Normalize()
	got, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.ForDuration != 30*time.Second || got.Kind != rules.KindReading || got.Scope != rules.ScopeAll {
		t.Fatalf("created %+v", got)
	}
	if _, err := s.Create(ctx, r); !errors.Is(err, rules.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	bad := r
	bad.ID, bad.Clear = "bad", 95
	if _, err := s.Create(ctx, bad); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("create with clear above trigger: %v, want ErrInvalid", err)
	}

	r.Trigger, r.Clear = 100, 92
	up, err := s.Update(ctx, r, 1)
	if err != nil {
		t.Fatal(err)
	}
	if up.Version != 2 || up.Trigger != 100 {
		t.Fatalf("updated %+v", up)
	}
	if _, err := s.Update(ctx, r, 1); !errors.Is(err, rules.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if err := s.Delete(ctx, "hot", 1); !errors.Is(err, rules.ErrConflict) {
		t.Fatalf("stale delete: %v, want ErrConflict", err)
	}
	if _, err := s.Update(ctx, rules.Rule{ID: "nope", Metric: "m", Operator: rules.GT, ForCount: 1, Severity: "info", Scope: rules.ScopeAll, Kind: rules.KindReading}, 1); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("update missing: %v, want ErrNotFound", err)
	}
	list, err := s.List(ctx, true)
	if err != nil || len(list) != 1 || list[0].ID != "hot" {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := s.Delete(ctx, "hot", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "hot"); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}

	// The table's own checks refuse a rule with the clear threshold on the
	// wrong side, written by hand.
	pool := e.PG(t)
	_, err = pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "alert_rules"}.Sanitize()+
		` (rule_id, metric, operator, trigger_threshold, clear_threshold) VALUES ('x', 'temp', '<', 5, 1)`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" {
		t.Fatalf("hand-written bad rule: %v, want a check violation", err)
	}
}

// Events are stored once per event id, and alerts_active shows the series
// whose newest event is FIRING.
func TestEventsAndActiveView(t *testing.T) {
	e := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, e)
	ctx := testenv.Context(t, time.Minute)
	pool := e.PG(t)
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	ev := func(id string, st schemas.AlertState, dev string, at time.Duration, fired string) *schemas.Alert {
		return &schemas.Alert{SchemaVersion: 1, EventID: id, State: st, RuleID: "hot", RuleVersion: 1, Kind: "reading",
			Severity: "warning", DeviceID: dev, Metric: "temp", Value: 91, Threshold: 90, EventTime: t0.Add(at), FiredEventID: fired}
	}
	batch := []*schemas.Alert{
		ev("f1", schemas.AlertFiring, "d1", 0, ""),
		ev("r1", schemas.AlertResolved, "d1", time.Minute, "f1"),
		ev("f2", schemas.AlertFiring, "d2", 2*time.Minute, ""),
	}
	n, err := rules.InsertEvents(ctx, pool, schema, batch)
	if err != nil || n != 3 {
		t.Fatalf("insert: %d %v", n, err)
	}
	n, err = rules.InsertEvents(ctx, pool, schema, batch) // a redelivery
	if err != nil || n != 0 {
		t.Fatalf("insert again: %d %v, want 0 new", n, err)
	}
	s, err := rules.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	act, err := s.ActiveAlerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(act) != 1 || act[0].EventID != "f2" || act[0].DeviceID != "d2" {
		t.Fatalf("active: %+v, want only f2", act)
	}
}
