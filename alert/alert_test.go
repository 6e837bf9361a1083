package alert

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.Topics.Changelog = c.Topics.Raw
	c.MaxSeries = 0
	c.DSN = "::"
	c.HeartbeatExpiry = 0
	err := c.Validate()
	for _, f := range []string{"Topics.Changelog", "MaxSeries", "DSN", "HeartbeatExpiry"} {
		found := false
		for _, fe := range config.Fields(err) {
			found = found || fe.Field == f
		}
		if !found {
			t.Errorf("no problem reported for %s in %v", f, err)
		}
	}
}

func rawRec(dev string, at time.Time, temp float64) *kgo.Record {
	r := &schemas.Reading{DeviceID: dev, EventTime: at, ReceivedTime: at, Measurements: []schemas.Measurement{{Name: "temp", Value: temp}}}
	rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
	return rec
}

// A task's changelog records restore a task that goes on exactly where the
// first one was: a replay of what it already evaluated gives no event, the
// next crossing gives the same event as on the original.
func TestChangelogRestore(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InstanceID = "unit"
	st, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	hot := &rules.Rule{ID: "hot", Kind: rules.KindReading, Scope: rules.ScopeAll, Metric: "temp", Operator: rules.GT,
		Trigger: 30, Clear: 25, ForCount: 1, Severity: rules.SeverityWarning, Enabled: true, Version: 1}
	quiet := &rules.Rule{ID: "quiet", Kind: rules.KindNoData, Scope: rules.ScopeAll, ForCount: 1, Silence: 10 * time.Second,
		Severity: rules.SeverityWarning, Enabled: true, Version: 1}
	st.setRules(&ruleSet{rules: []*rules.Rule{hot, quiet}, noData: true})
	part := eos.Partition{Topic: cfg.Topics.Raw, Partition: 2}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var outs []*kgo.Record
	out := func(r *kgo.Record) { outs = append(outs, r) }
	a, _ := st.NewTask(part)
	heartbeat := &kgo.Record{Value: []byte("{}"), Headers: []kgo.RecordHeader{{Key: schemas.HeaderHeartbeat}}}
	first := []*kgo.Record{rawRec("d1", t0, 31), rawRec("d2", t0, 20), heartbeat, rawRec("d1", t0.Add(time.Second), 27)}
	st.Process(a, first, time.Now(), out)
	st.changes(a, out)
	var events, changelog []*kgo.Record
	for _, r := range outs {
		switch r.Topic {
		case cfg.Topics.Alerts:
			events = append(events, r)
		case cfg.Topics.Changelog:
			if r.Partition != 2 || r.Key[0] != prefixRaw {
				t.Fatalf("changelog record to partition %d key %q", r.Partition, r.Key)
			}
			changelog = append(changelog, r)
		}
	}
	if len(events) != 1 {
		t.Fatalf("%d events, want the FIRING of d1", len(events))
	}
	if n := len(changelog); n != 5 { // hot/d1, hot/d2, quiet/d1, quiet/d2, the watermark
		t.Fatalf("%d changelog records, want 5", n)
	}

	b, _ := st.NewTask(part)
	m, _ := st.NewTask(eos.Partition{Topic: cfg.Topics.Metrics, Partition: 2})
	for _, r := range changelog {
		if err := st.Restore(b, r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
		if err := st.Restore(m, r.Key, r.Value); err != nil { // not its records: skipped
			t.Fatal(err)
		}
	}
	if err := st.Restored(b, time.Now()); err != nil {
		t.Fatal(err)
	}
	if b.eng.Series() != a.eng.Series() || m.eng.Series() != 0 || b.lastAdvance != a.lastAdvance {
		t.Fatalf("restored %d series (metrics task %d), last advance %d; want %d, 0, %d", b.eng.Series(), m.eng.Series(), b.lastAdvance, a.eng.Series(), a.lastAdvance)
	}
	next := []*kgo.Record{rawRec("d1", t0.Add(2*time.Second), 24), rawRec("d1", t0.Add(15*time.Second), 26)}
	run := func(tk *task, recs []*kgo.Record) []string {
		outs = nil
		st.Process(tk, recs, time.Now(), out)
		var ids []string
		for _, r := range outs {
			ev, err := schemas.DecodeAlert(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, string(ev.State)+" "+ev.RuleID+" "+ev.DeviceID+" "+ev.EventID)
		}
		return ids
	}
	if ids := run(b, first); len(ids) != 0 {
		t.Fatalf("replay after restore: %v, want nothing", ids)
	}
	want := run(a, next)
	got := run(b, next)
	// RESOLVED hot d1; at t0+15 the silences of d1 (since t0+2) and d2
	// (since t0) fire, and d1's reading resolves its own.
	if len(want) != 4 || !slices.Equal(got, want) {
		t.Fatalf("after restore %v,\noriginal %v;\nwant the same 4 events", got, want)
	}

	// Restored under a rule set without "quiet": its series are dropped,
	// with tombstones in the next changelog records.
	st.setRules(&ruleSet{rules: []*rules.Rule{hot}})
	c, _ := st.NewTask(part)
	for _, r := range changelog {
		if err := st.Restore(c, r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Restored(c, time.Now()); err != nil {
		t.Fatal(err)
	}
	outs = nil
	st.changes(c, out)
	tombs := 0
	for _, r := range outs {
		if r.Value == nil {
			tombs++
		}
	}
	if c.eng.Series() != 2 || tombs != 2 {
		t.Fatalf("restored under the smaller rule set: %d series, %d tombstones; want 2 (hot) and 2 (quiet)", c.eng.Series(), tombs)
	}

	if err := st.Restore(b, []byte("x"), nil); !errors.Is(err, eval.ErrCorrupt) {
		t.Fatalf("unknown key prefix: %v, want ErrCorrupt", err)
	}
}
