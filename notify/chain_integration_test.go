//go:build integration

package notify_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// Readings → the evaluation core (standing in for the alert stage, not
// built yet) → telemetry.alerts → iotpipe notify → a webhook: every event
// arrives, and per device the receiver sees FIRING, RESOLVED, FIRING, ...
// in order, each RESOLVED naming the FIRING before it.
func TestNotifyChainFromReadings(t *testing.T) {
	f := newFixture(t)
	r := newReceiver(t)
	rule := &rules.Rule{ID: "hot", Kind: rules.KindReading, Scope: rules.ScopeAll, Metric: "temp", Operator: rules.GT, Trigger: 90,
		Clear: 85, ForCount: 1, Severity: rules.SeverityWarning, Recipients: []string{r.url("/hook")}, Enabled: true, Version: 1}
	if err := rule.Validate(); err != nil {
		t.Fatal(err)
	}
	e := eval.New([]*rules.Rule{rule}, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().UTC().Truncate(time.Second)
	var evs []*schemas.Alert
	for d := range 10 {
		dev := fmt.Sprintf("%s-d%d", f.group, d)
		v := 80.0
		for i := range 200 {
			v += float64(rng.IntN(7) - 3)
			v = min(max(v, 70), 100)
			evs = e.Reading(evs, eval.Reading{DeviceID: dev, Metric: "temp", Value: v, Time: base.Add(time.Duration(i) * time.Second)})
		}
	}
	if len(evs) < 20 {
		t.Fatalf("the walk crossed only %d times", len(evs))
	}
	f.produce(evs)
	p := f.start()
	ids := make([]string, len(evs))
	for i, a := range evs {
		ids[i] = a.EventID
	}
	waitAll(t, r, ids, 2*time.Minute)
	byID := map[string]*schemas.Alert{}
	for _, a := range evs {
		byID[a.EventID] = a
	}
	last := map[string]*schemas.Alert{}
	for _, d := range r.requests() {
		a := byID[d.webhookID]
		if a == nil {
			t.Fatalf("unknown webhook-id %s", d.webhookID)
		}
		prev := last[a.DeviceID]
		switch {
		case prev == nil && a.State != schemas.AlertFiring:
			t.Errorf("%s: first event is %s", a.DeviceID, a.State)
		case prev != nil && prev.State == a.State:
			t.Errorf("%s: %s after %s", a.DeviceID, a.State, prev.State)
		case a.State == schemas.AlertResolved && prev != nil && a.FiredEventID != prev.EventID:
			t.Errorf("%s: RESOLVED names %s, not the FIRING before it %s", a.DeviceID, a.FiredEventID, prev.EventID)
		}
		last[a.DeviceID] = a
	}
	t.Logf("%d readings of 10 devices → %d events, delivered in order per device", 2000, len(evs))
	testenv.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		if n := f.count(`SELECT count(*) FROM %s.notifications WHERE state = 'delivered'`); n != len(evs) {
			return fmt.Errorf("%d of %d delivered", n, len(evs))
		}
		return nil
	})
	p.StopClean(20 * time.Second)
}
