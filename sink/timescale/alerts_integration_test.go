//go:build integration

package timescale

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

func alertRecord(t testing.TB, topic string, a *schemas.Alert) *kgo.Record {
	t.Helper()
	b, err := schemas.EncodeAlert(a)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(a.DeviceID), Value: b, Timestamp: a.EventTime}
}

func firing(id, dev string, at time.Time, v float64) *schemas.Alert {
	return &schemas.Alert{SchemaVersion: schemas.AlertSchemaVersion, EventID: id, State: schemas.AlertFiring,
		RuleID: "hot", RuleVersion: 3, Kind: "reading", Severity: "critical", DeviceID: dev, Metric: "temp",
		Operator: ">", Value: v, Threshold: 90, EventTime: at.UTC().Truncate(time.Microsecond),
		Recipients: []string{"ntfy:ops", "webhook:https://ops.example.com/hook"}, Message: dev + " temp over 90"}
}

func resolved(id, fired, dev string, at time.Time, v float64) *schemas.Alert {
	a := firing(id, dev, at, v)
	a.State, a.FiredEventID, a.Threshold, a.Message = schemas.AlertResolved, fired, 85, dev+" temp back under 85"
	return a
}

// TestSinkAlertEvents: alert records from a real Kafka topic land in
// alert_events once each — a repeated event id (in the same run and
// after a restart) is stored once — alerts_active shows the series whose
// newest event is FIRING, malformed records go to the DLQ with their
// reason and a row the database refuses goes there as db_rejected. On both
// flavors.
func TestSinkAlertEvents(t *testing.T) {
	env := testenv.Load(t)
	for _, flavor := range []migrations.Flavor{migrations.FlavorPostgres, migrations.FlavorTimescaleDB} {
		t.Run(string(flavor), func(t *testing.T) {
			if flavor == migrations.FlavorTimescaleDB {
				requireTimescaleDB(t, env)
			}
			testSinkAlertEvents(t, env, flavor)
		})
	}
}

func testSinkAlertEvents(t *testing.T, env *testenv.Env, flavor migrations.Flavor) {
	f := newFixtureFlavor(t, env, flavor, 1, 1)
	alerts := env.Topic(t, 2, nil)
	// A database rule the sink does not know about: the row it refuses
	// goes to the DLQ as db_rejected, the others are stored.
	if _, err := f.owner.Exec(context.Background(), `ALTER TABLE `+pgx.Identifier{f.schema, "alert_events"}.Sanitize()+
		` ADD CONSTRAINT no_refused_device CHECK (device_id <> 'dev-refused')`); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)

	fa := firing("hot/dev-a/1", "dev-a", base, 95.5)
	ra := resolved("hot/dev-a/2", fa.EventID, "dev-a", base.Add(5*time.Minute), 80)
	fb := firing("hot/dev-b/1", "dev-b", base.Add(time.Minute), 99)
	// dev-c fires, resolves, fires again: active with the second FIRING.
	fc1 := firing("hot/dev-c/1", "dev-c", base, 91)
	rc := resolved("hot/dev-c/2", fc1.EventID, "dev-c", base.Add(2*time.Minute), 84)
	fc2 := firing("hot/dev-c/3", "dev-c", base.Add(3*time.Minute), 92)
	// A no_data alert: no metric, no operator.
	nd := &schemas.Alert{SchemaVersion: 1, EventID: "silent/dev-d/1", State: schemas.AlertFiring, RuleID: "silent", RuleVersion: 1,
		Kind: "no_data", Severity: "warning", DeviceID: "dev-d", EventTime: base.Add(4 * time.Minute).UTC(), Message: "dev-d silent for 10m"}
	recs := []*kgo.Record{
		alertRecord(t, alerts, fa), alertRecord(t, alerts, fb), alertRecord(t, alerts, fc1),
		alertRecord(t, alerts, fa), // the same crossing again (a repeat): stored once
		alertRecord(t, alerts, ra), alertRecord(t, alerts, rc), alertRecord(t, alerts, fc2), alertRecord(t, alerts, nd),
		alertRecord(t, alerts, firing("hot/dev-refused/1", "dev-refused", base, 99)),
		// Malformed: not JSON; valid JSON with a bad state; a RESOLVED without the FIRING it closes.
		{Topic: alerts, Key: []byte("dev-x"), Value: []byte(`{"schema_version":1,"event_id":`)},
		{Topic: alerts, Key: []byte("dev-x"), Value: []byte(`{"schema_version":1,"event_id":"x1","state":"BURNING","rule_id":"hot","kind":"reading","severity":"critical","device_id":"dev-x","metric":"temp","value":1,"threshold":2,"event_time":"2026-12-07T10:00:00Z","recipients":[],"message":""}`)},
		{Topic: alerts, Key: []byte("dev-x"), Value: []byte(`{"schema_version":1,"event_id":"x2","state":"RESOLVED","rule_id":"hot","kind":"reading","severity":"critical","device_id":"dev-x","metric":"temp","value":1,"threshold":2,"event_time":"2026-12-07T10:00:00Z","recipients":[],"message":""}`)},
	}
	// Key = device id: dev-a's records keep their order on one partition.
	f.produce(t, recs)

	cfg := f.config()
	cfg.TopicAlerts = alerts
	reg := prometheus.NewRegistry()
	stop, s := runSinkReg(t, cfg, reg)
	f.waitCount(t, time.Minute, 7, `SELECT count(*) FROM $S.alert_events`)
	all := f.readDLQ(t, 4)
	stop()
	var dl []*schemas.DeadLetter
	refused := 0
	for _, d := range all {
		if d.Reason == schemas.ReasonRejectedByDatabase {
			refused++
			if string(d.Key) != "dev-refused" || !strings.Contains(d.Error, "no_refused_device") || d.SourceTopic != alerts {
				t.Errorf("db_rejected dead letter %+v", d)
			}
			continue
		}
		dl = append(dl, d)
	}
	if refused != 1 {
		t.Errorf("%d db_rejected dead letters, want 1", refused)
	}

	// Each event once, with every field of the record.
	if n := f.count(t, `SELECT count(DISTINCT event_id) FROM $S.alert_events`); n != 7 {
		t.Fatalf("%d distinct events, want 7", n)
	}
	var (
		state, kind, op, fired, msg, srcTopic string
		rv                                    int64
		v, th                                 float64
		at                                    time.Time
		rcpt                                  []string
	)
	err := f.owner.QueryRow(context.Background(), `SELECT state, kind, operator, coalesce(fired_event_id, ''), message, rule_version, value, threshold,
		event_time, recipients, source_topic FROM `+pgx.Identifier{f.schema, "alert_events"}.Sanitize()+` WHERE event_id = $1`, ra.EventID).
		Scan(&state, &kind, &op, &fired, &msg, &rv, &v, &th, &at, &rcpt, &srcTopic)
	if err != nil {
		t.Fatal(err)
	}
	if state != "RESOLVED" || kind != "reading" || op != ">" || fired != fa.EventID || rv != 3 || v != 80 || th != 85 ||
		!at.Equal(ra.EventTime) || strings.Join(rcpt, ",") != "ntfy:ops,webhook:https://ops.example.com/hook" || srcTopic != alerts || msg != ra.Message {
		t.Fatalf("stored RESOLVED: %s %s %s %s %q %d %v %v %v %v %s", state, kind, op, fired, msg, rv, v, th, at, rcpt, srcTopic)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.alert_events WHERE event_id = $1 AND metric = '' AND operator = '' AND kind = 'no_data'`, nd.EventID); n != 1 {
		t.Fatalf("no_data event stored %d times with empty metric and operator", n)
	}

	// alerts_active: dev-b (never resolved), dev-c (fired again), dev-d.
	checkActive(t, f, "hot/dev-b/1,hot/dev-c/3,silent/dev-d/1")

	// Dead letters: the three malformed records, each with its reason.
	// (dev-x's records share one partition, in this order.)
	wantErr := []string{"alert record", `state "BURNING"`, "fired_event_id"}
	if len(dl) != len(wantErr) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(wantErr))
	}
	for i, d := range dl {
		if d.Reason != schemas.ReasonInvalidRecord || d.Stage != schemas.StageSinkTimescale || d.SourceTopic != alerts || string(d.Key) != "dev-x" {
			t.Errorf("dead letter %+v", d)
		}
		if !strings.Contains(d.Error, wantErr[i]) || d.SourceOffset != dl[0].SourceOffset+int64(i) {
			t.Errorf("dead letter %d (offset %d): error %q, want it to mention %q", i, d.SourceOffset, d.Error, wantErr[i])
		}
	}
	if !strings.HasPrefix(string(dl[0].Value), `{"schema_version":1,"event_id":`) {
		t.Errorf("dead letter value %q is not the original bytes", dl[0].Value)
	}
	if got := testutil.ToFloat64(s.m.rows.WithLabelValues(tableAlerts)); got != 7 {
		t.Errorf("rows_total{alert_events} = %v, want 7", got)
	}
	if got := testutil.ToFloat64(s.m.alertRepeats); got != 1 {
		t.Errorf("alert_repeats_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(string(schemas.ReasonInvalidRecord))); got != 3 {
		t.Errorf("rejected_total{invalid_record} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(string(schemas.ReasonRejectedByDatabase))); got != 1 {
		t.Errorf("rejected_total{db_rejected} = %v, want 1", got)
	}

	// A restart: the alert stage produces dev-b's crossing once more and
	// dev-b resolves. Nothing is stored twice, nothing re-read.
	rb := resolved("hot/dev-b/2", fb.EventID, "dev-b", base.Add(6*time.Minute), 70)
	f.produce(t, []*kgo.Record{alertRecord(t, alerts, fb), alertRecord(t, alerts, rb)})
	reg2 := prometheus.NewRegistry()
	stop2, s2 := runSinkReg(t, cfg, reg2)
	f.waitCount(t, time.Minute, 8, `SELECT count(*) FROM $S.alert_events`)
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if got := testutil.ToFloat64(s2.m.alertRepeats); got != 1 {
			return errors.New("the repeat of dev-b's FIRING was not seen yet")
		}
		return nil
	})
	stop2()
	if got := testutil.ToFloat64(s2.m.skipped); got != 0 {
		t.Errorf("after restart %v records were read again", got)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.alert_events WHERE event_id = $1`, fb.EventID); n != 1 {
		t.Fatalf("dev-b's FIRING stored %d times", n)
	}
	checkActive(t, f, "hot/dev-c/3,silent/dev-d/1")
}

func checkActive(t *testing.T, f *fixture, want string) {
	t.Helper()
	rows, err := f.owner.Query(context.Background(), `SELECT event_id FROM `+pgx.Identifier{f.schema, "alerts_active"}.Sanitize()+` ORDER BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids, ","); got != want {
		t.Fatalf("alerts_active = %s, want %s", got, want)
	}
}

// A schema older than migration 0012 is refused at start, naming the
// setting, instead of retrying inserts the schema cannot take.
func TestSinkAlertsNeedMigration12(t *testing.T) {
	env := testenv.Load(t)
	f := newFixture(t, env, 1, 1)
	// Pretend the schema stopped at 0011.
	if _, err := f.owner.Exec(context.Background(), `DELETE FROM `+pgx.Identifier{f.schema, "schema_migrations"}.Sanitize()+` WHERE version >= 12`); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.TopicAlerts = env.Topic(t, 1, nil)
	s, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(testenv.Context(t, time.Minute))
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "TopicAlerts" || !errors.Is(err, ErrSchemaOld) {
		t.Fatalf("Run on a schema at 0011 = %v, want a FieldError on TopicAlerts matching ErrSchemaOld", err)
	}
	// With the topic skipped the same schema is fine.
	cfg.TopicAlerts = SkipTopic
	stop := runSink(t, cfg)
	stop()
}
