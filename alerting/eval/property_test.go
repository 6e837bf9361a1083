package eval

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/schemas"
)

// randomRule is a valid reading rule with random operator, thresholds on
// the right sides, for-count and for-duration.
func randomRule(rng *rand.Rand, id string) *rules.Rule {
	ops := []rules.Operator{rules.GT, rules.GE, rules.LT, rules.LE}
	r := &rules.Rule{ID: id, Kind: rules.KindReading, Scope: rules.ScopeAll, Metric: "m", Operator: ops[rng.IntN(4)],
		Trigger: float64(rng.IntN(21) - 10), ForCount: 1 + rng.IntN(3), ForDuration: time.Duration(rng.IntN(3)) * time.Second,
		Severity: rules.SeverityWarning, Enabled: true, Version: 1}
	gap := float64(rng.IntN(6))
	if r.Operator == rules.GT || r.Operator == rules.GE {
		r.Clear = r.Trigger - gap
	} else {
		r.Clear = r.Trigger + gap
	}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

// randomWalk is readings of a few devices whose values walk in integer
// steps (so they often sit exactly on a threshold), with times that mostly
// rise per device but sometimes repeat or go back (redelivery, disorder),
// interleaved with advances of event time.
func randomWalk(rng *rand.Rand, n int) []input {
	devs := []string{"d1", "d2", "d3"}
	val := map[string]float64{}
	tm := map[string]float64{}
	var out []input
	maxT := 0.0
	for range n {
		if rng.IntN(20) == 0 {
			a := maxT
			out = append(out, input{Advance: &a})
			continue
		}
		d := devs[rng.IntN(len(devs))]
		val[d] += float64(rng.IntN(7) - 3)
		if val[d] > 20 || val[d] < -20 {
			val[d] /= 2
		}
		switch rng.IntN(10) {
		case 0: // same time again: a redelivery
		case 1: // back in time
			tm[d] -= float64(rng.IntN(3))
		default:
			tm[d] += 0.5 * float64(1+rng.IntN(3))
		}
		maxT = max(maxT, tm[d])
		metric := "m"
		if rng.IntN(8) == 0 {
			metric = "other"
		}
		out = append(out, input{Device: d, Metric: metric, Value: val[d], T: tm[d]})
	}
	return out
}

func run(e *Engine, ins []input) []*schemas.Alert {
	var out []*schemas.Alert
	for _, in := range ins {
		out = in.apply(e, out)
	}
	return out
}

// The walk's events per series alternate FIRING, RESOLVED, ...; each
// FIRING is at a breaching value, each RESOLVED at the first clearing value
// evaluated after its FIRING (so nothing between the clear and trigger
// thresholds resolves or re-fires); a RESOLVED names its FIRING.
func TestPropertyAlternation(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 17))
		set := []*rules.Rule{randomRule(rng, "r1"), randomRule(rng, "r2")}
		ins := randomWalk(rng, 400)
		e := New(set, nil)
		// Run input by input, so each event is tied to the reading that
		// caused it, and track the evaluated values per series.
		type seriesLog struct {
			firing  bool
			firedID string
			lastT   float64
			seen    bool
		}
		logs := map[Key]*seriesLog{}
		var out []*schemas.Alert
		for i, in := range ins {
			n := len(out)
			out = in.apply(e, out)
			for _, r := range set {
				if in.Advance != nil || in.Metric != r.Metric {
					continue
				}
				k := Key{r.ID, in.Device, in.Metric}
				l := logs[k]
				if l == nil {
					l = &seriesLog{}
					logs[k] = l
				}
				var ev *schemas.Alert
				for _, x := range out[n:] {
					if x.RuleID == r.ID {
						ev = x
					}
				}
				if l.seen && in.T <= l.lastT {
					if ev != nil {
						t.Fatalf("seed %d input %d: stale reading %+v made event %+v", seed, i, in, ev)
					}
					continue
				}
				l.seen, l.lastT = true, in.T
				switch {
				case l.firing && r.Clears(in.Value):
					if ev == nil || ev.State != schemas.AlertResolved || ev.FiredEventID != l.firedID {
						t.Fatalf("seed %d input %d: rule %s %s %v clear %v: value %v clears a firing alert, got %+v", seed, i, r.ID, r.Operator, r.Trigger, r.Clear, in.Value, ev)
					}
					l.firing = false
				case l.firing:
					if ev != nil {
						t.Fatalf("seed %d input %d: value %v between thresholds (rule %s %s %v clear %v) made %s", seed, i, in.Value, r.ID, r.Operator, r.Trigger, r.Clear, ev.State)
					}
				case ev != nil:
					if ev.State != schemas.AlertFiring || !r.Breaches(in.Value) {
						t.Fatalf("seed %d input %d: %s at value %v (rule %s %s %v)", seed, i, ev.State, in.Value, r.ID, r.Operator, r.Trigger)
					}
					l.firing, l.firedID = true, ev.EventID
				}
			}
		}
		ids := map[string]bool{}
		for _, ev := range out {
			if ids[ev.EventID] {
				t.Fatalf("seed %d: event id %s twice", seed, ev.EventID)
			}
			ids[ev.EventID] = true
		}
	}
}

// A replay gives the same events with the same ids; an engine restored
// from the encoded states at input k, fed again from an earlier input j
// (a redelivery after a crash), gives exactly the events the uninterrupted
// run gave after input k.
func TestPropertyReplay(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 99))
		set := []*rules.Rule{randomRule(rng, "r1"), randomRule(rng, "r2"),
			{ID: "quiet", Kind: rules.KindNoData, Scope: rules.ScopeAll, Silence: 3 * time.Second, ForCount: 1, Severity: "info", Enabled: true, Version: 1}}
		ins := randomWalk(rng, 300)
		full := run(New(set, nil), ins)
		if again := run(New(set, nil), ins); !reflect.DeepEqual(full, again) {
			t.Fatalf("seed %d: two runs differ", seed)
		}
		k := rng.IntN(len(ins) + 1)
		j := rng.IntN(k + 1)
		a := New(set, nil)
		before := run(a, ins[:k])
		// Restore through the binary encoding, as from a changelog.
		b := New(set, nil)
		for _, c := range a.Dirty() {
			kb := c.Key.AppendBinary(nil)
			key, err := DecodeKey(kb)
			if err != nil || key != c.Key {
				t.Fatalf("seed %d: key round trip %v: %v", seed, c.Key, err)
			}
			var st *State
			if c.State != nil {
				s, err := DecodeState(c.State.AppendBinary(nil))
				if err != nil || !reflect.DeepEqual(s, *c.State) {
					t.Fatalf("seed %d: state round trip %+v → %+v: %v", seed, *c.State, s, err)
				}
				st = &s
			}
			b.Restore(key, st)
		}
		after := run(b, ins[j:])
		got := append(append([]*schemas.Alert{}, before...), after...)
		if !reflect.DeepEqual(eventIDs(got), eventIDs(full)) {
			t.Fatalf("seed %d (k=%d j=%d): restored run\n%v\nwant\n%v", seed, k, j, eventIDs(got), eventIDs(full))
		}
	}
}

func eventIDs(evs []*schemas.Alert) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %s %s %s", e.EventID, e.State, e.RuleID, e.DeviceID)
	}
	return out
}

func TestStateEncoding(t *testing.T) {
	s := State{Phase: Firing, Seen: true, Last: 1764252187250000000, Count: 0, Since: 0, FiredID: "a1-0123456789abcdef0123456789abcdef"}
	b := s.AppendBinary(nil)
	if len(b) > 50 {
		t.Errorf("firing state takes %d bytes", len(b))
	}
	got, err := DecodeState(b)
	if err != nil || got != s {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := range len(b) {
		if _, err := DecodeState(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: decoded", i)
		}
	}
	if _, err := DecodeState(append(b, 0)); err == nil {
		t.Error("trailing byte: decoded")
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add((&State{Phase: Pending, Seen: true, Last: 5, Count: 2, Since: 3}).AppendBinary(nil))
	f.Add(Key{"r", "d", "m"}.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := DecodeState(b); err == nil {
			if again, err := DecodeState(s.AppendBinary(nil)); err != nil || again != s {
				t.Fatalf("re-encode %+v: %+v %v", s, again, err)
			}
		}
		if k, err := DecodeKey(b); err == nil {
			if again, err := DecodeKey(k.AppendBinary(nil)); err != nil || again != k {
				t.Fatalf("re-encode key %+v", k)
			}
		}
	})
}
