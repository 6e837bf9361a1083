//go:build integration

package grafana

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// TestAlertQueries runs every dashboard query on alert_events,
// alerts_active and notifications — panels and annotations — as the
// read-only role Grafana uses, on a schema holding known alert events and
// notifications, and checks what each returns. On both flavors.
func TestAlertQueries(t *testing.T) {
	env := testenv.Load(t)
	for _, flavor := range []migrations.Flavor{migrations.FlavorPostgres, migrations.FlavorTimescaleDB} {
		t.Run(string(flavor), func(t *testing.T) { testAlertQueries(t, env, flavor) })
	}
}

func testAlertQueries(t *testing.T, env *testenv.Env, flavor migrations.Flavor) {
	ctx := testenv.Context(t, 2*time.Minute)
	schema := env.Schema(t)
	conn, err := pgx.Connect(ctx, env.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	opts := migrations.DefaultOptions()
	opts.Schema, opts.Flavor = schema, flavor
	res, err := migrations.Apply(ctx, conn, opts)
	if err != nil {
		t.Fatalf("migrations: %v", err)
	}
	if res.Flavor != flavor {
		t.Fatalf("schema flavor %s, want %s (%s)", res.Flavor, flavor, res.FallbackReason)
	}
	if flavor == migrations.FlavorTimescaleDB {
		if err := testenv.QuiesceJobs(ctx, conn, schema); err != nil {
			t.Fatal(err)
		}
	}

	now := time.Now().UTC().Truncate(time.Second)
	at := func(min int) time.Time { return now.Add(time.Duration(min) * time.Minute) }
	// dev-a: fired and resolved (not active); dev-b: firing; dev-c: fired,
	// resolved, fired again (active); dev-a fired 3 hours ago (outside the
	// hour the dashboards show).
	events := []struct {
		id, fired, dev, state string
		at                    time.Time
	}{
		{"a-old", "", "dev-a", "FIRING", at(-180)},
		{"a-old-r", "a-old", "dev-a", "RESOLVED", at(-170)},
		{"a1", "", "dev-a", "FIRING", at(-50)},
		{"a1-r", "a1", "dev-a", "RESOLVED", at(-40)},
		{"b1", "", "dev-b", "FIRING", at(-30)},
		{"c1", "", "dev-c", "FIRING", at(-25)},
		{"c1-r", "c1", "dev-c", "RESOLVED", at(-20)},
		{"c2", "", "dev-c", "FIRING", at(-10)},
	}
	owner := env.PG(t)
	rel := func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }
	for _, e := range events {
		_, err := owner.Exec(ctx, `INSERT INTO `+rel("alert_events")+` (event_id, rule_id, rule_version, device_id, metric, state, severity,
			value, threshold, event_time, fired_event_id, message, kind, operator) VALUES ($1, 'hot', 1, $2, 'temp', $3, 'critical', 95, 90, $4, NULLIF($5, ''), $6, 'reading', '>')`,
			e.id, e.dev, e.state, e.at, e.fired, e.dev+" temp "+strings.ToLower(e.state))
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range []string{"failed", "delivered", "failed", "pending"} {
		created := at(-5)
		if i == 2 {
			created = at(-300) // outside the time range
		}
		_, err := owner.Exec(ctx, `INSERT INTO `+rel("notifications")+` (event_id, recipient, channel, alert, state, created_at)
			VALUES ($1, 'ntfy:ops', 'ntfy', '{}', $2, $3)`, fmt.Sprint("n", i), st, created)
		if err != nil {
			t.Fatal(err)
		}
	}

	reader, err := pgxpool.New(ctx, env.PGReaderDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	// What each alert query must return, by dashboard uid and query.
	want := map[string]map[string]string{
		"iotpipe-fleet": {
			"panel Alerts firing A":               "2",
			"panel Undeliverable notifications A": "1",
			"panel Alerts firing now A":           "dev-c hot temp critical;dev-b hot temp critical",
			"panel Recent alert events A":         "FIRING dev-c;RESOLVED dev-c;FIRING dev-c;FIRING dev-b;RESOLVED dev-a;FIRING dev-a",
			"annotation Alerts firing":            "hot FIRING on dev-a: dev-a temp firing|FIRING,critical,hot,dev-a;hot FIRING on dev-b: dev-b temp firing|FIRING,critical,hot,dev-b;hot FIRING on dev-c: dev-c temp firing|FIRING,critical,hot,dev-c;hot FIRING on dev-c: dev-c temp firing|FIRING,critical,hot,dev-c",
			"annotation Alerts resolved":          "hot RESOLVED on dev-a: dev-a temp resolved|RESOLVED,critical,hot,dev-a;hot RESOLVED on dev-c: dev-c temp resolved|RESOLVED,critical,hot,dev-c",
		},
		"iotpipe-device": {
			"panel Alert events A":       "RESOLVED false;FIRING false",
			"annotation Alerts firing":   "hot FIRING on dev-a: dev-a temp firing|FIRING,critical,hot,dev-a",
			"annotation Alerts resolved": "hot RESOLVED on dev-a: dev-a temp resolved|RESOLVED,critical,hot,dev-a",
		},
	}
	vars := map[string]string{"schema": schema, "device": "dev-a", "metric": "temp", "silent": "10 minutes"}
	checked := 0
	for _, d := range ds {
		for where, raw := range d.Queries() {
			if !strings.Contains(raw, "alert") && !strings.Contains(raw, "notification") {
				continue
			}
			w, ok := want[d.UID][where]
			if !ok {
				t.Errorf("%s / %s reads alerts but this test does not check it", d.Title, where)
				continue
			}
			q, err := Expand(raw, now.Add(-time.Hour), now.Add(time.Minute), 5*time.Second, vars)
			if err != nil {
				t.Fatal(err)
			}
			got, err := summarize(ctx, reader, q, strings.HasPrefix(where, "annotation"))
			if err != nil {
				t.Errorf("%s / %s: %v\n%s", d.Title, where, err, q)
				continue
			}
			if got != w {
				t.Errorf("%s / %s:\n got  %s\n want %s", d.Title, where, got, w)
			}
			checked++
		}
	}
	n := 0
	for _, m := range want {
		n += len(m)
	}
	if checked != n {
		t.Errorf("checked %d alert queries, the dashboards should have %d", checked, n)
	}
	// The device panel's "firing now": dev-b's only event is active.
	vars["device"] = "dev-b"
	for _, d := range ds {
		if d.UID != "iotpipe-device" {
			continue
		}
		q, _ := Expand(d.Queries()["panel Alert events A"], now.Add(-time.Hour), now.Add(time.Minute), 5*time.Second, vars)
		if got, err := summarize(ctx, reader, q, false); err != nil || got != "FIRING true" {
			t.Errorf("Device detail / Alert events for dev-b: %q, %v", got, err)
		}
	}
}

// summarize runs q and returns its rows as text: for annotations
// "text|tags" (and checks the time column), for tables the columns that
// tell the rows apart.
func summarize(ctx context.Context, db *pgxpool.Pool, q string, annotation bool) (string, error) {
	rows, err := db.Query(ctx, q)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out []string
	cols := rows.FieldDescriptions()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return "", err
		}
		byName := map[string]any{}
		for i, c := range cols {
			byName[c.Name] = vals[i]
		}
		switch {
		case annotation:
			if _, ok := byName["time"].(time.Time); !ok || len(cols) != 3 {
				return "", fmt.Errorf("annotation columns %v: want time, text, tags", byName)
			}
			out = append(out, fmt.Sprint(byName["text"], "|", byName["tags"]))
		case len(cols) == 1:
			out = append(out, fmt.Sprint(vals[0]))
		case byName["firing now"] != nil:
			out = append(out, fmt.Sprint(byName["state"], " ", byName["firing now"]))
		case byName["since"] != nil:
			out = append(out, fmt.Sprint(byName["device"], " ", byName["rule"], " ", byName["metric"], " ", byName["severity"]))
		default:
			out = append(out, fmt.Sprint(byName["state"], " ", byName["device"]))
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return strings.Join(out, ";"), nil
}
