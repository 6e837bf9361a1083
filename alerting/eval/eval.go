// Package eval is the alert stage's pure core: it runs every rule's state
// machine over readings, window aggregates and the passing of event time,
// and returns the FIRING and RESOLVED events to publish. It does no I/O and
// reads no clock; the same inputs in the same order always give the same
// events with the same ids.
//
// # Contracts
//
//   - One state machine per series: (rule, device, metric) for reading and
//     window rules, (rule, device) for no_data rules. OK → PENDING →
//     FIRING → OK. A breaching value (value <op> trigger) moves OK to
//     PENDING; the series fires once ForCount breaching values in a row have
//     been seen and ForDuration of event time has passed since the first
//     of them; a non-breaching value in PENDING goes back to OK silently.
//     A FIRING series resolves only at a value past the clear threshold
//     (hysteresis): values between clear and trigger change nothing.
//     Events therefore alternate FIRING, RESOLVED, FIRING, ... per series.
//   - Event time only: a value whose event time is not after the last one
//     evaluated for its series (a redelivery, or a reading out of order) is
//     ignored and counted in [Stats.Stale]. A window's later revisions
//     (same end) are not evaluated again.
//   - no_data rules fire when [Engine.Advance] is given a time at least
//     Silence after the device's last reading (any metric) seen since the
//     rule applies — its [Reading.Received] time, or its event time when
//     that is zero; Advance's time must be on the same clock. The event
//     time is last reading + Silence, not the time Advance was called, so
//     the id does not depend on when the caller advances. The next reading
//     of the device resolves it (event time: that reading's Received). An Advance
//     not after the latest one is ignored (the latest is kept as
//     [WatermarkKey] in Dirty/Restore, so a replay after a restore
//     re-fires nothing). The caller
//     must advance with a time derived from its input (for example the
//     partition's largest event time) for replays to be identical.
//   - Event ids are deterministic: a hash of the rule, the series, the
//     transition and its event time ([EventID]). A replay after a crash
//     from a restored state produces the same events with the same ids.
//   - [State] has a compact binary encoding ([State.AppendBinary],
//     [DecodeState]) and [Key] one ([Key.AppendBinary], [DecodeKey]) for a
//     compacted changelog; [Engine.Dirty] lists the series changed since
//     the last call, [Engine.Restore] puts a state back.
//   - Deleting a rule drops its series without a RESOLVED event; changing
//     a rule keeps its series' states (a firing alert resolves under the
//     new clear threshold).
package eval

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/schemas"
)

// Reading is one measurement of one device.
type Reading struct {
	DeviceID string
	Metric   string
	Value    float64
	Time     time.Time // event time
	// Received is when the bridge received the reading: the time no_data
	// rules measure silences from (on the same clock as the caller's
	// Advance). Zero: Time.
	Received time.Time
}

// Window is one window aggregate of telemetry.metrics.
type Window struct {
	DeviceID string
	Metric   string
	End      time.Time
	// Stats by name: mean, min, max, p50, p95, p99.
	Stats map[string]float64
}

// Stats counts what the engine did.
type Stats struct {
	Evaluated uint64 // values compared with a rule
	Stale     uint64 // values ignored: not newer than their series' last
	Fired     uint64
	Resolved  uint64
	// Refused counts values not evaluated because their series was new
	// and the engine held MaxSeries series (see SetMaxSeries).
	Refused uint64 `json:",omitempty"`
}

// Engine evaluates a rule set. It is not safe for concurrent use.
type Engine struct {
	rules []*rules.Rule
	byID  map[string]*rules.Rule
	// Reading and window rules by metric, the device-scoped ones by
	// device and metric; no_data rules, the device-scoped ones by device.
	// Each list is in rule-set order (pos), and a value meets the rules of
	// both of its lists in that order: events come out as with one list,
	// while a reading costs the rules that may apply to it, not every
	// device's own.
	byMetric    map[string][]ruleAt
	byDevMetric map[devMetric][]ruleAt
	noData      []ruleAt
	noDataByDev map[string][]ruleAt
	groups      func(device string) []string
	series      map[Key]*State
	dirty       []Key // series changed since Dirty (each once, by State.dirty; deletions may repeat)
	wmDirty     bool
	stats       Stats
	// max caps the series held when capped.
	max    int
	capped bool
	// wm is the latest time Advance was given (Seen: once given); it is
	// held as the series WatermarkKey so that a replay of older advances
	// after a restore does nothing.
	wm State
}

// ruleAt is a rule and its position in the rule set.
type ruleAt struct {
	*rules.Rule
	pos int
}

type devMetric struct{ device, metric string }

// merged calls f with the rules of a and b (each in position order) in
// position order.
func merged(a, b []ruleAt, f func(*rules.Rule)) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j >= len(b) || (i < len(a) && a[i].pos < b[j].pos) {
			f(a[i].Rule)
			i++
		} else {
			f(b[j].Rule)
			j++
		}
	}
}

// WatermarkKey is the key under which Dirty and Restore carry the engine's
// event-time watermark (the latest Advance): no rule has an empty id.
var WatermarkKey = Key{}

// New returns an engine for the enabled rules of set. groups returns the
// groups a device is in (for group-scoped rules); nil means none.
func New(set []*rules.Rule, groups func(device string) []string) *Engine {
	e := &Engine{groups: groups, series: map[Key]*State{}}
	e.SetRules(set)
	return e
}

// SetRules replaces the rule set; the series of rules no longer in it (or
// disabled) are dropped.
func (e *Engine) SetRules(set []*rules.Rule) {
	e.rules = e.rules[:0]
	e.byID = map[string]*rules.Rule{}
	e.byMetric = map[string][]ruleAt{}
	e.byDevMetric = map[devMetric][]ruleAt{}
	e.noData = nil
	e.noDataByDev = map[string][]ruleAt{}
	keep := map[string]bool{}
	for _, r := range set {
		if !r.Enabled {
			continue
		}
		keep[r.ID] = true
		ra := ruleAt{r, len(e.rules)}
		e.rules = append(e.rules, r)
		e.byID[r.ID] = r
		device := r.Scope == rules.ScopeDevice
		switch {
		case r.Kind == rules.KindNoData && device:
			e.noDataByDev[r.ScopeID] = append(e.noDataByDev[r.ScopeID], ra)
		case r.Kind == rules.KindNoData:
			e.noData = append(e.noData, ra)
		case device:
			k := devMetric{r.ScopeID, r.Metric}
			e.byDevMetric[k] = append(e.byDevMetric[k], ra)
		default:
			e.byMetric[r.Metric] = append(e.byMetric[r.Metric], ra)
		}
	}
	for k := range e.series {
		if !keep[k.RuleID] {
			delete(e.series, k)
			e.dirty = append(e.dirty, k)
		}
	}
}

// Stats returns the counters so far.
func (e *Engine) Stats() Stats { return e.stats }

func (e *Engine) applies(r *rules.Rule, device string) bool {
	if r.Scope != rules.ScopeGroup {
		return r.AppliesTo(device, nil)
	}
	if e.groups == nil {
		return false
	}
	return r.AppliesTo(device, e.groups(device))
}

// SetMaxSeries caps the series the engine holds, as a memory guard: at
// the cap a value of a series not held yet is not evaluated (the series is
// not created) and is counted in Stats.Refused. Series already held go on
// as before. A negative n removes the cap (the default).
func (e *Engine) SetMaxSeries(n int) { e.max, e.capped = n, n >= 0 }

// state returns series k's state, creating it; nil when it is new and the
// engine is at its cap.
func (e *Engine) state(k Key) *State {
	s := e.series[k]
	if s == nil {
		if e.capped && len(e.series) >= e.max {
			e.stats.Refused++
			return nil
		}
		s = &State{}
		e.series[k] = s
	}
	return s
}

// mark records series k (state s) as changed since the last Dirty.
func (e *Engine) mark(k Key, s *State) {
	if !s.dirty {
		s.dirty = true
		e.dirty = append(e.dirty, k)
	}
}

// Reading evaluates one reading against the reading rules of its metric
// and records the device as seen for no_data rules; it appends the
// events to out and returns it.
func (e *Engine) Reading(out []*schemas.Alert, r Reading) []*schemas.Alert {
	t := r.Time.UnixNano()
	merged(e.byMetric[r.Metric], e.byDevMetric[devMetric{r.DeviceID, r.Metric}], func(rule *rules.Rule) {
		if rule.Kind != rules.KindReading || !e.applies(rule, r.DeviceID) {
			return
		}
		out = e.step(out, rule, Key{rule.ID, r.DeviceID, r.Metric}, r.Value, t)
	})
	seenAt := t
	if !r.Received.IsZero() {
		seenAt = r.Received.UnixNano()
	}
	merged(e.noData, e.noDataByDev[r.DeviceID], func(rule *rules.Rule) {
		if !e.applies(rule, r.DeviceID) {
			return
		}
		out = e.seen(out, rule, r.DeviceID, seenAt)
	})
	return out
}

// Window evaluates one window aggregate against the window rules of its
// metric, at the window's end.
func (e *Engine) Window(out []*schemas.Alert, w Window) []*schemas.Alert {
	t := w.End.UnixNano()
	merged(e.byMetric[w.Metric], e.byDevMetric[devMetric{w.DeviceID, w.Metric}], func(rule *rules.Rule) {
		if rule.Kind != rules.KindWindow || !e.applies(rule, w.DeviceID) {
			return
		}
		v, ok := w.Stats[rule.Statistic]
		if !ok {
			return
		}
		out = e.step(out, rule, Key{rule.ID, w.DeviceID, w.Metric}, v, t)
	})
	return out
}

// step runs one series' state machine on value v at event time t.
func (e *Engine) step(out []*schemas.Alert, rule *rules.Rule, k Key, v float64, t int64) []*schemas.Alert {
	s := e.state(k)
	if s == nil {
		return out
	}
	if s.Seen && t <= s.Last {
		e.stats.Stale++
		return out
	}
	e.stats.Evaluated++
	s.Seen, s.Last = true, t
	e.mark(k, s)
	switch s.Phase {
	case OK, Pending:
		if !rule.Breaches(v) {
			s.Phase, s.Count, s.Since = OK, 0, 0
			return out
		}
		if s.Phase == OK {
			s.Phase, s.Count, s.Since = Pending, 0, t
		}
		s.Count++
		if s.Count >= uint32(rule.ForCount) && t-s.Since >= int64(rule.ForDuration) {
			ev := e.event(rule, k, schemas.AlertFiring, v, rule.Trigger, t, "")
			s.Phase, s.Count, s.Since, s.FiredID = Firing, 0, 0, ev.EventID
			e.stats.Fired++
			out = append(out, ev)
		}
	case Firing:
		if rule.Clears(v) {
			ev := e.event(rule, k, schemas.AlertResolved, v, rule.Clear, t, s.FiredID)
			s.Phase, s.FiredID = OK, ""
			e.stats.Resolved++
			out = append(out, ev)
		}
	}
	return out
}

// seen records a reading of device for a no_data rule: it resolves a
// firing silence.
func (e *Engine) seen(out []*schemas.Alert, rule *rules.Rule, device string, t int64) []*schemas.Alert {
	k := Key{rule.ID, device, ""}
	s := e.state(k)
	if s == nil {
		return out
	}
	if s.Seen && t <= s.Last {
		return out // no newer: neither a sign of life nor stale for this rule
	}
	s.Seen, s.Last = true, t
	e.mark(k, s)
	if s.Phase == Firing {
		ev := e.event(rule, k, schemas.AlertResolved, 0, 0, t, s.FiredID)
		s.Phase, s.FiredID = OK, ""
		e.stats.Resolved++
		out = append(out, ev)
	}
	return out
}

// Advance fires the no_data rules of devices silent for their Silence at
// event time now, in a deterministic order (rule, device).
func (e *Engine) Advance(out []*schemas.Alert, now time.Time) []*schemas.Alert {
	n := now.UnixNano()
	if e.wm.Seen && n <= e.wm.Last {
		return out // not newer than an advance already done (a replay)
	}
	e.wm.Seen, e.wm.Last = true, n
	e.wmDirty = true
	var due []Key
	for k, s := range e.series {
		if k.Metric != "" || s.Phase == Firing || !s.Seen {
			continue
		}
		rule := e.ruleByID(k.RuleID)
		if rule == nil || rule.Kind != rules.KindNoData {
			continue
		}
		if n-s.Last >= int64(rule.Silence) {
			due = append(due, k)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].less(due[j]) })
	for _, k := range due {
		rule, s := e.ruleByID(k.RuleID), e.series[k]
		at := s.Last + int64(rule.Silence)
		ev := e.event(rule, k, schemas.AlertFiring, 0, 0, at, "")
		s.Phase, s.FiredID = Firing, ev.EventID
		e.mark(k, s)
		e.stats.Fired++
		out = append(out, ev)
	}
	return out
}

func (e *Engine) ruleByID(id string) *rules.Rule { return e.byID[id] }

// EventID is the deterministic id of a transition: the same rule, series,
// state and event time always give the same id.
func EventID(k Key, state schemas.AlertState, t int64) string {
	h := sha256.New()
	for _, s := range []string{k.RuleID, k.DeviceID, k.Metric, string(state), strconv.FormatInt(t, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "a1-" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (e *Engine) event(rule *rules.Rule, k Key, st schemas.AlertState, v, threshold float64, t int64, fired string) *schemas.Alert {
	ev := &schemas.Alert{
		SchemaVersion: schemas.AlertSchemaVersion,
		EventID:       EventID(k, st, t),
		State:         st,
		RuleID:        rule.ID,
		RuleVersion:   rule.Version,
		Kind:          string(rule.Kind),
		Severity:      rule.Severity,
		DeviceID:      k.DeviceID,
		Metric:        k.Metric,
		Statistic:     rule.Statistic,
		Operator:      string(rule.Operator),
		Value:         v,
		Threshold:     threshold,
		EventTime:     time.Unix(0, t).UTC(),
		FiredEventID:  fired,
		Recipients:    append([]string{}, rule.Recipients...),
	}
	what := k.Metric
	if rule.Kind == rules.KindWindow {
		what = rule.Statistic + "(" + k.Metric + ")"
	}
	switch {
	case rule.Kind == rules.KindNoData && st == schemas.AlertFiring:
		ev.Message = fmt.Sprintf("%s silent for %s (rule %s)", k.DeviceID, rule.Silence, rule.ID)
	case rule.Kind == rules.KindNoData:
		ev.Message = fmt.Sprintf("%s is sending again (rule %s)", k.DeviceID, rule.ID)
	case st == schemas.AlertFiring:
		ev.Message = fmt.Sprintf("%s %s %v %s %v (rule %s)", k.DeviceID, what, v, rule.Operator, rule.Trigger, rule.ID)
	default:
		ev.Message = fmt.Sprintf("%s %s %v back past %v (rule %s)", k.DeviceID, what, v, rule.Clear, rule.ID)
	}
	return ev
}
