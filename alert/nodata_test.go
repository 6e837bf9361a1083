package alert

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// noDataStage is a stage with one no_data rule (silence 10 s, all
// devices) and a task of raw partition 0.
func noDataStage(t *testing.T) (*Stage, *task) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InstanceID = "unit"
	cfg.HeartbeatExpiry = time.Minute
	st, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	quiet := &rules.Rule{ID: "quiet", Kind: rules.KindNoData, Scope: rules.ScopeAll, ForCount: 1, Silence: 10 * time.Second,
		Severity: rules.SeverityWarning, Enabled: true, Version: 1}
	st.setRules(&ruleSet{rules: []*rules.Rule{quiet}, noData: true})
	tk, err := st.NewTask(eos.Partition{Topic: cfg.Topics.Raw, Partition: 0})
	if err != nil {
		t.Fatal(err)
	}
	return st, tk
}

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func hb(bridge string, at time.Time) *kgo.Record {
	return schemas.HeartbeatRecord("raw", 0, schemas.Heartbeat{Bridge: bridge, Time: at})
}

// recv is a reading with event time ev received by the bridge at rcv.
func recv(dev string, ev, rcv time.Time) *kgo.Record {
	r := &schemas.Reading{DeviceID: dev, EventTime: ev, ReceivedTime: rcv, Measurements: []schemas.Measurement{{Name: "temp", Value: 1}}}
	return schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
}

// process runs one turn and returns its events and changelog records.
func process(st *Stage, tk *task, recs ...*kgo.Record) (events []*schemas.Alert, changelog []*kgo.Record) {
	st.Process(tk, recs, time.Now(), func(r *kgo.Record) {
		ev, err := schemas.DecodeAlert(r.Value)
		if err != nil {
			panic(err)
		}
		events = append(events, ev)
	})
	st.changes(tk, func(r *kgo.Record) { changelog = append(changelog, r) })
	return events, changelog
}

// A device goes silent while every device of its partition is silent:
// the bridges' heartbeats alone fire its no_data rule, at its last
// reading's received time + silence (the device's own clock, 1 h off,
// plays no part), with the id eval.EventID gives.
func TestNoDataOnHeartbeats(t *testing.T) {
	st, tk := noDataStage(t)
	var evs []*schemas.Alert
	e, _ := process(st, tk, hb("b1", sec(0)), recv("d1", sec(-3600), sec(0.5)))
	evs = append(evs, e...)
	for s := 1; s <= 10; s++ {
		e, _ := process(st, tk, hb("b1", sec(float64(s))))
		evs = append(evs, e...)
	}
	if len(evs) != 0 {
		t.Fatalf("silent 9.5 s: %d events, want none", len(evs))
	}
	evs, _ = process(st, tk, hb("b1", sec(11)))
	if len(evs) != 1 || evs[0].State != schemas.AlertFiring || !evs[0].EventTime.Equal(sec(10.5)) {
		t.Fatalf("silent 10.5 s: %+v, want one FIRING at received + 10 s", evs)
	}
	if id := eval.EventID(eval.Key{RuleID: "quiet", DeviceID: "d1"}, schemas.AlertFiring, sec(10.5).UnixNano()); evs[0].EventID != id {
		t.Fatalf("event id %s, want %s", evs[0].EventID, id)
	}
	evs, _ = process(st, tk, recv("d1", sec(-3590), sec(12)))
	if len(evs) != 1 || evs[0].State != schemas.AlertResolved || !evs[0].EventTime.Equal(sec(12)) {
		t.Fatalf("back: %+v, want one RESOLVED at its received time", evs)
	}
	if n := testutil.ToFloat64(st.m.heartbeats.WithLabelValues("read")); n != 12 {
		t.Fatalf("heartbeats read %v, want 12", n)
	}
}

// A stalled bridge holds the clock: no heartbeat from b2 (its path
// stalled) keeps the partition's clock at its last one however long b1
// goes on, so its silent devices do not fire; once b2 is more than
// HeartbeatExpiry behind (scaled away), b1's heartbeats fire them.
func TestNoDataStalledBridge(t *testing.T) {
	st, tk := noDataStage(t)
	process(st, tk, hb("b1", sec(0)), hb("b2", sec(0)), recv("d1", sec(0), sec(0.5)))
	var evs []*schemas.Alert
	for s := 1; s <= 60; s++ {
		e, _ := process(st, tk, hb("b1", sec(float64(s))))
		evs = append(evs, e...)
	}
	if len(evs) != 0 {
		t.Fatalf("b2 stalled for 60 s: %d events, want none", len(evs))
	}
	evs, _ = process(st, tk, hb("b1", sec(61)))
	if len(evs) != 1 || !evs[0].EventTime.Equal(sec(10.5)) {
		t.Fatalf("b2 expired: %+v, want the FIRING at 10.5 s", evs)
	}
}

// The partition's ingest clock is in the changelog: a restored task goes
// on with it, so a bridge stalled before the restore still holds it (no
// false FIRING), and a replay of heartbeats already taken fires nothing
// twice.
func TestNoDataClockRestored(t *testing.T) {
	st, tk := noDataStage(t)
	var changelog []*kgo.Record
	_, c := process(st, tk, hb("b1", sec(0)), hb("b2", sec(0)), recv("d1", sec(0), sec(0.5)))
	changelog = append(changelog, c...)
	_, c = process(st, tk, hb("b1", sec(5)))
	changelog = append(changelog, c...)

	_, re := noDataStage(t)
	for _, r := range changelog {
		if err := st.Restore(re, r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if now, ok := re.clock.Now(); !ok || !now.Equal(sec(0)) {
		t.Fatalf("restored clock %s %v, want 0 s (b2's)", now.Sub(t0), ok)
	}
	for s := 6; s <= 30; s++ {
		if evs, _ := process(st, re, hb("b1", sec(float64(s)))); len(evs) != 0 {
			t.Fatalf("after the restore, b2 stalled: %+v", evs)
		}
	}
	evs, _ := process(st, re, hb("b2", sec(30)))
	if len(evs) != 1 || !evs[0].EventTime.Equal(sec(10.5)) {
		t.Fatalf("b2 back: %+v, want the FIRING at 10.5 s", evs)
	}
	// The metrics task of the partition skips the clock records.
	m, _ := st.NewTask(eos.Partition{Topic: st.cfg.Topics.Metrics, Partition: 0})
	for _, r := range changelog {
		if err := st.Restore(m, r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if m.clock.OK() {
		t.Fatal("metrics task took the raw partition's clock")
	}
}

// Without heartbeats on a partition its clock is the largest received
// time of its readings: another device's readings fire the silent one.
func TestNoDataWithoutHeartbeats(t *testing.T) {
	st, tk := noDataStage(t)
	process(st, tk, recv("d1", sec(0), sec(0)), recv("d2", sec(0), sec(0)))
	var evs []*schemas.Alert
	for s := 1; s <= 11; s++ {
		e, _ := process(st, tk, recv("d2", sec(float64(s)), sec(float64(s))))
		evs = append(evs, e...)
	}
	if len(evs) != 1 || evs[0].DeviceID != "d1" || !evs[0].EventTime.Equal(sec(10)) {
		t.Fatalf("%+v, want d1's FIRING at 10 s", evs)
	}
}
