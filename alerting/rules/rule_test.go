package rules

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func validRule() Rule {
	return Rule{ID: "hot", Kind: KindReading, Scope: ScopeAll, Metric: "temp", Operator: GT, Trigger: 90, Clear: 85,
		ForCount: 1, Severity: SeverityWarning, Recipients: []string{"webhook:https://x.example/h", "ntfy:ops", "email:ops@example.com", "mqtt:alerts/ops"}, Enabled: true}
}

func TestValidateAccepts(t *testing.T) {
	for name, mut := range map[string]func(*Rule){
		"reading":       func(*Rule) {},
		"no hysteresis": func(r *Rule) { r.Clear = r.Trigger },
		"below":         func(r *Rule) { r.Operator, r.Trigger, r.Clear = LT, 5, 8 },
		"window p95":    func(r *Rule) { r.Kind, r.Statistic = KindWindow, "p95" },
		"device scope":  func(r *Rule) { r.Scope, r.ScopeID = ScopeDevice, "boiler-7" },
		"group for 5m":  func(r *Rule) { r.Scope, r.ScopeID, r.ForCount, r.ForDuration = ScopeGroup, "site-a", 3, 5*time.Minute },
		"no data": func(r *Rule) {
			*r = Rule{ID: "quiet", Kind: KindNoData, Scope: ScopeAll, Silence: 10 * time.Minute, ForCount: 1, Severity: SeverityInfo}
		},
		"no recipients":  func(r *Rule) { r.Recipients = nil },
		"unicode metric": func(r *Rule) { r.Metric = "température" },
	} {
		r := validRule()
		mut(&r)
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Each bad rule is refused with a reason naming the field at fault.
func TestValidateRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		mut   func(*Rule)
		field string
	}{
		"bad id":              {func(r *Rule) { r.ID = "a b" }, "rule_id"},
		"empty metric":        {func(r *Rule) { r.Metric = "" }, "metric"},
		"control in metric":   {func(r *Rule) { r.Metric = "t\x01" }, "metric"},
		"long metric":         {func(r *Rule) { r.Metric = strings.Repeat("m", 200) }, "metric"},
		"bad operator":        {func(r *Rule) { r.Operator = "=>" }, "operator"},
		"no operator":         {func(r *Rule) { r.Operator = "" }, "operator"},
		"clear above for >":   {func(r *Rule) { r.Clear = 95 }, "clear_threshold"},
		"clear below for <":   {func(r *Rule) { r.Operator, r.Trigger, r.Clear = LT, 5, 2 }, "clear_threshold"},
		"NaN trigger":         {func(r *Rule) { r.Trigger = math.NaN() }, "trigger_threshold"},
		"Inf clear":           {func(r *Rule) { r.Clear = math.Inf(-1) }, "clear_threshold"},
		"window no statistic": {func(r *Rule) { r.Kind = KindWindow }, "statistic"},
		"window bad stat":     {func(r *Rule) { r.Kind, r.Statistic = KindWindow, "median" }, "statistic"},
		"reading with stat":   {func(r *Rule) { r.Statistic = "mean" }, "statistic"},
		"bad kind":            {func(r *Rule) { r.Kind = "rate" }, "kind"},
		"bad scope":           {func(r *Rule) { r.Scope = "fleet" }, "scope"},
		"device without id":   {func(r *Rule) { r.Scope = ScopeDevice }, "scope_id"},
		"all with id":         {func(r *Rule) { r.ScopeID = "x" }, "scope_id"},
		"for count 0":         {func(r *Rule) { r.ForCount = 0 }, "for_count"},
		"negative for":        {func(r *Rule) { r.ForDuration = -time.Second }, "for_duration"},
		"severity":            {func(r *Rule) { r.Severity = "page" }, "severity"},
		"recipient channel":   {func(r *Rule) { r.Recipients = []string{"sms:+331234"} }, "recipients"},
		"webhook not url":     {func(r *Rule) { r.Recipients = []string{"webhook:/relative"} }, "recipients"},
		"email bad":           {func(r *Rule) { r.Recipients = []string{"email:not an address"} }, "recipients"},
		"mqtt wildcard":       {func(r *Rule) { r.Recipients = []string{"mqtt:alerts/#"} }, "recipients"},
		"ntfy bad topic":      {func(r *Rule) { r.Recipients = []string{"ntfy:a/b"} }, "recipients"},
		"duplicate recipient": {func(r *Rule) { r.Recipients = []string{"ntfy:a", "ntfy:a"} }, "recipients"},
		"no_data with metric": {func(r *Rule) { r.Kind, r.Silence = KindNoData, time.Minute }, "kind"},
		"no_data no silence": {func(r *Rule) {
			*r = Rule{ID: "q", Kind: KindNoData, Scope: ScopeAll, ForCount: 1, Severity: SeverityInfo}
		}, "silence"},
		"silence on reading": {func(r *Rule) { r.Silence = time.Minute }, "silence"},
	} {
		r := validRule()
		tc.mut(&r)
		err := r.Validate()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: got %v, want a fault in %s", name, err, tc.field)
		}
		if fe != nil && fe.Reason == "" {
			t.Errorf("%s: no reason", name)
		}
	}
}

// Hysteresis: an upward rule breaches above the trigger and clears only at
// or below the clear threshold.
func TestBreachesClears(t *testing.T) {
	r := validRule() // > 90, clear 85
	for _, c := range []struct {
		v              float64
		breach, clears bool
	}{{91, true, false}, {90, false, false}, {86, false, false}, {85, false, true}, {10, false, true}} {
		if r.Breaches(c.v) != c.breach || r.Clears(c.v) != c.clears {
			t.Errorf("v=%v: breaches %v clears %v, want %v %v", c.v, r.Breaches(c.v), r.Clears(c.v), c.breach, c.clears)
		}
	}
	r.Operator, r.Trigger, r.Clear = LE, 5, 8 // <= 5, clear above 8... at > 8
	if !r.Breaches(5) || r.Breaches(5.1) || r.Clears(8) || !r.Clears(8.01) {
		t.Error("<= rule: wrong breach/clear")
	}
}

func TestAppliesTo(t *testing.T) {
	r := validRule()
	if !r.AppliesTo("d", nil) {
		t.Error("scope all")
	}
	r.Scope, r.ScopeID = ScopeDevice, "d"
	if !r.AppliesTo("d", nil) || r.AppliesTo("e", nil) {
		t.Error("scope device")
	}
	r.Scope, r.ScopeID = ScopeGroup, "g"
	if !r.AppliesTo("e", []string{"x", "g"}) || r.AppliesTo("e", []string{"x"}) {
		t.Error("scope group")
	}
}
