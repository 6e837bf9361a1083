//go:build integration

package alert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestRulesToAlerts runs the stage in-process on real Kafka and
// PostgreSQL: a reading rule with hysteresis and for_count, a window rule
// on p95, a no_data rule, a redelivered reading, a bridge heartbeat and an
// undecodable record; then a rule created while the stage runs (change
// notice; the periodic refresh is set far off) takes effect. The events,
// read read_committed, must be exactly the expected list.
func TestRulesToAlerts(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := testenv.Context(t, 5*time.Minute)
	f.rule(t, rules.Rule{ID: "hot", Metric: "temp", Operator: rules.GT, Trigger: 30, Clear: 25, ForCount: 2})
	f.rule(t, rules.Rule{ID: "p95", Kind: rules.KindWindow, Metric: "hum", Statistic: "p95", Operator: rules.GE, Trigger: 80, Clear: 70})
	f.rule(t, rules.Rule{ID: "silent", Kind: rules.KindNoData, Scope: rules.ScopeDevice, ScopeID: "dev-quiet", Silence: 30 * time.Second})
	// A rule the database holds but the stage cannot evaluate: written
	// past Validate, straight into the table.
	pg := f.env.PG(t)
	_, err := pg.Exec(ctx, `INSERT INTO `+f.schema+`.alert_rules (rule_id, kind, scope, metric, operator, trigger_threshold, clear_threshold, severity, recipients, enabled)
		VALUES ('broken', 'reading', 'all', 'temp', '>', 10, 5, 'warning', '{pager:ops}', true)`)
	storedBroken := err == nil
	if !storedBroken {
		t.Logf("could not store an invalid rule (the database refuses it too): %v", err)
	}

	cfg := f.config(t, f.env.Group(t), "a")
	cfg.RulesRefresh = time.Hour
	reg := prometheus.NewRegistry()
	st, err := New(cfg, service.Deps{Registry: reg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	out := readAlerts(ctx, t, f.env, f.topics.Alerts)
	prod := f.env.Kafka(t)

	t0 := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var raw []*kgo.Record
	raw = append(raw, reading("dev-quiet", at(0), 1, m("temp", 20)))
	for i, v := range []float64{20, 31, 32, 28, 26, 24, 31, 20, 33, 34, 10} {
		raw = append(raw, reading("dev-1", at(i), int64(i+1), m("temp", v)))
		if i == 3 {
			raw = append(raw, reading("dev-1", at(3), 4, m("temp", 28))) // an MQTT redelivery
		}
	}
	hb := &kgo.Record{Key: []byte("bridge-1"), Value: []byte(`{"heartbeat":true}`), Headers: []kgo.RecordHeader{{Key: schemas.HeaderHeartbeat, Value: []byte("1")}}}
	raw = append(raw, hb, &kgo.Record{Key: []byte("dev-1"), Value: []byte(`{"schema_version":1,"device_id":`)})
	for s := 11; s <= 40; s++ { // dev-1 keeps sending: the partition's clock passes dev-quiet's silence
		raw = append(raw, reading("dev-1", at(s), int64(s+1), m("hum", 50)))
	}
	raw = append(raw, reading("dev-quiet", at(50), 2, m("temp", 20)))
	produce(t, prod, f.topics.Raw, raw...)
	win := func(endS int, p95 float64, rev int64) *kgo.Record {
		w := &schemas.WindowMetric{DeviceID: "dev-1", Metric: "hum", WindowStart: at(endS - 10), WindowEnd: at(endS), Count: 10,
			Sum: 500, Min: 40, Max: p95 + 1, Mean: 50, First: 50, Last: 50, P50: 50, P95: p95, P99: p95 + 0.5,
			FirstTime: at(endS - 10), LastTime: at(endS - 1), Revision: rev, EmittedAt: time.Now().UTC()}
		return &kgo.Record{Key: []byte("dev-1"), Value: schemas.AppendMetric(nil, w), Timestamp: w.WindowStart}
	}
	produce(t, prod, f.topics.Metrics, win(10, 85, 1), win(20, 75, 1), win(20, 60, 2), win(30, 65, 1))

	want := []string{
		"FIRING hot dev-1 temp @2s", "RESOLVED hot dev-1 temp @5s", "FIRING hot dev-1 temp @9s", "RESOLVED hot dev-1 temp @10s",
		"FIRING p95 dev-1 hum @10s", "RESOLVED p95 dev-1 hum @30s",
		"FIRING silent dev-quiet  @30s", "RESOLVED silent dev-quiet  @50s",
	}
	waitEvents(t, out, t0, want)
	evs := out.snapshot(t)
	fired := map[string]string{}
	for _, ev := range evs {
		k := eval.Key{RuleID: ev.RuleID, DeviceID: ev.DeviceID, Metric: ev.Metric}
		if id := eval.EventID(k, ev.State, ev.EventTime.UnixNano()); id != ev.EventID {
			t.Errorf("%s: event id %s, want %s", describe(ev, t0), ev.EventID, id)
		}
		if ev.State == schemas.AlertFiring {
			fired[ev.RuleID+ev.DeviceID] = ev.EventID
		} else if ev.FiredEventID != fired[ev.RuleID+ev.DeviceID] {
			t.Errorf("%s: fired_event_id %s, want the FIRING's %s", describe(ev, t0), ev.FiredEventID, fired[ev.RuleID+ev.DeviceID])
		}
	}
	if n := testutil.ToFloat64(st.m.rulesInvalid); storedBroken && n != 1 {
		t.Errorf("rules_invalid %v, want 1 (rule broken: unknown recipient channel)", n)
	}
	if n := testutil.ToFloat64(st.m.stale); n < 1 {
		t.Errorf("values ignored as older: %v, want at least 1 (the redelivery, the window's revision)", n)
	}
	if n := testutil.ToFloat64(st.m.invalid.WithLabelValues(f.topics.Raw)); n != 1 {
		t.Errorf("invalid raw records: %v, want 1 (the heartbeat is no reading and no invalid record)", n)
	}
	if n := testutil.ToFloat64(st.m.readings); n != float64(len(raw)-2) {
		t.Errorf("readings: %v, want %d", n, len(raw)-2)
	}

	// A rule created while the stage runs takes effect on its notice.
	f.rule(t, rules.Rule{ID: "cold", Metric: "temp", Operator: rules.LT, Trigger: 0, Clear: 5})
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := testutil.ToFloat64(st.m.rulesLoaded); n != 4 {
			return fmt.Errorf("%v rules loaded, want 4", n)
		}
		return nil
	})
	produce(t, prod, f.topics.Raw, reading("dev-1", at(60), 100, m("temp", -3)), reading("dev-1", at(61), 101, m("temp", 7)))
	want = append(want, "FIRING cold dev-1 temp @1m0s", "RESOLVED cold dev-1 temp @1m1s")
	waitEvents(t, out, t0, want)
	t.Logf("events: %s", joinLines(want))

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// waitEvents waits until the alerts topic holds exactly want (in any
// order), failing at once on an event not in want or one seen twice.
func waitEvents(t *testing.T, out *alertReader, t0 time.Time, want []string) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, 200*time.Millisecond, func() error {
		var got []string
		for _, ev := range out.snapshot(t) {
			got = append(got, describe(ev, t0))
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Fatalf("unexpected event %q; events so far: %s", g, joinLines(got))
			}
		}
		seen := map[string]bool{}
		for _, g := range got {
			if seen[g] {
				t.Fatalf("event %q twice; events so far: %s", g, joinLines(got))
			}
			seen[g] = true
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d of %d events: %s", len(got), len(want), joinLines(got))
		}
		return nil
	})
}

// TestGroupRules: a rule scoped to a group applies to the devices of its
// nested groups, read from the registry as the reader role, and follows
// membership changes (NOTIFY iotpipe_registry).
func TestGroupRules(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := testenv.Context(t, 3*time.Minute)
	reg, err := registry.Open(ctx, f.regDSN, f.schema)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for i, id := range []string{"d-in", "d-out", "d-later"} {
		if err := reg.Add(ctx, registry.NewDevice{ID: id, Cert: selfSigned(t, id, int64(i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []registry.Group{{ID: "site"}, {ID: "floor", Parent: "site"}} {
		if err := reg.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.AddToGroup(ctx, "floor", "d-in"); err != nil {
		t.Fatal(err)
	}
	f.rule(t, rules.Rule{ID: "site-hot", Scope: rules.ScopeGroup, ScopeID: "site", Metric: "temp", Operator: rules.GT, Trigger: 30, Clear: 25})
	cfg := f.config(t, f.env.Group(t), "a")
	cfg.RulesRefresh = time.Hour
	st, err := New(cfg, service.Deps{Registry: prometheus.NewRegistry(), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	out := readAlerts(ctx, t, f.env, f.topics.Alerts)
	prod := f.env.Kafka(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	produce(t, prod, f.topics.Raw, reading("d-in", t0, 1, m("temp", 31)), reading("d-out", t0, 1, m("temp", 31)), reading("d-later", t0, 1, m("temp", 31)))
	want := []string{"FIRING site-hot d-in temp @0s"}
	waitEvents(t, out, t0, want)

	n0 := testutil.ToFloat64(st.m.reloads.WithLabelValues("ok"))
	if err := reg.AddToGroup(ctx, "floor", "d-later"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := testutil.ToFloat64(st.m.reloads.WithLabelValues("ok")); n <= n0 {
			return fmt.Errorf("no rule reload after the membership change (%v loads)", n)
		}
		return nil
	})
	produce(t, prod, f.topics.Raw, reading("d-later", t0.Add(time.Second), 2, m("temp", 32)), reading("d-out", t0.Add(time.Second), 2, m("temp", 32)))
	want = append(want, "FIRING site-hot d-later temp @1s")
	waitEvents(t, out, t0, want)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// selfSigned is a certificate with CN id (the registry wants one per
// device; nothing checks its issuer here).
func selfSigned(t *testing.T, id string, serial int64) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStateCap: at --max-series the values of new series are not
// evaluated, counted and flagged; the series held go on.
func TestStateCap(t *testing.T) {
	f := newFixture(t, 2, 1)
	ctx := testenv.Context(t, 3*time.Minute)
	f.rule(t, rules.Rule{ID: "hot", Metric: "temp", Operator: rules.GT, Trigger: 30, Clear: 25})
	cfg := f.config(t, f.env.Group(t), "a")
	cfg.MaxSeries = 2
	st, err := New(cfg, service.Deps{Registry: prometheus.NewRegistry(), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	out := readAlerts(ctx, t, f.env, f.topics.Alerts)
	prod := f.env.Kafka(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	produce(t, prod, f.topics.Raw, reading("d1", t0, 1, m("temp", 20)), reading("d2", t0, 1, m("temp", 20)))
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		if n := testutil.ToFloat64(st.m.series); n != 2 {
			return fmt.Errorf("%v series held, want 2", n)
		}
		return nil
	})
	produce(t, prod, f.topics.Raw, reading("d3", t0, 1, m("temp", 35)), reading("d1", t0.Add(time.Second), 2, m("temp", 35)))
	waitEvents(t, out, t0, []string{"FIRING hot d1 temp @1s"})
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n, c := testutil.ToFloat64(st.m.refused), testutil.ToFloat64(st.m.capReached); n != 1 || c != 1 {
			return fmt.Errorf("refused %v, cap reached %v; want 1 and 1", n, c)
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
