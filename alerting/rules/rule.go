// Package rules holds threshold alert rules: their type, the validation
// that refuses a rule the alert stage could not evaluate, and their store in
// PostgreSQL (table alert_rules of migration 0010_alerts).
//
// # Contracts
//
//   - A rule that passes [Rule.Validate] can be evaluated: its metric name is
//     a valid measurement name, its operator one of > >= < <=, its
//     thresholds finite, and its clear threshold on the safe side of the
//     trigger threshold (hysteresis). Validate reports every fault, each as
//     a [*FieldError] naming the field, all matching [ErrInvalid].
//   - The condition is value <op> Trigger; a FIRING alert resolves when
//     value <op> Clear no longer holds ([Rule.Breaches], [Rule.Clears]).
//     Clear = Trigger means no hysteresis.
//   - Updates are optimistic: [Store.Update] and [Store.Delete] take the
//     version the caller read and fail with [ErrConflict] when the rule has
//     changed since; the database raises the version on every change and
//     sends NOTIFY iotpipe_alert_rules (payload: the schema).
//   - Errors: [ErrNotFound], [ErrExists], [ErrConflict], [ErrInvalid],
//     [ErrNoSchema], each wrapped with the operation.
package rules

import (
	"errors"
	"fmt"
	"math"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// Kind is what a rule looks at.
type Kind string

// Kinds.
const (
	// KindReading compares every reading of the metric.
	KindReading Kind = "reading"
	// KindWindow compares a statistic (mean, p95, ...) of each window
	// aggregate of the metric from telemetry.metrics.
	KindWindow Kind = "window"
	// KindNoData fires when a device has sent nothing for Silence of
	// event time.
	KindNoData Kind = "no_data"
)

// Scope is which devices a rule applies to.
type Scope string

// Scopes.
const (
	ScopeDevice Scope = "device" // the device ScopeID
	ScopeGroup  Scope = "group"  // the devices of group ScopeID
	ScopeAll    Scope = "all"    // every device
)

// Operator compares a value with a threshold.
type Operator string

// Operators.
const (
	GT Operator = ">"
	GE Operator = ">="
	LT Operator = "<"
	LE Operator = "<="
)

// Holds reports whether v <op> threshold.
func (o Operator) Holds(v, threshold float64) bool {
	switch o {
	case GT:
		return v > threshold
	case GE:
		return v >= threshold
	case LT:
		return v < threshold
	case LE:
		return v <= threshold
	}
	return false
}

// upward reports whether the operator alerts on high values.
func (o Operator) upward() bool { return o == GT || o == GE }

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Statistics a window rule can compare.
var Statistics = []string{"mean", "min", "max", "p50", "p95", "p99"}

// Rule is one alert rule.
type Rule struct {
	ID          string   `json:"rule_id"`
	Description string   `json:"description"`
	Kind        Kind     `json:"kind"`
	Scope       Scope    `json:"scope"`
	ScopeID     string   `json:"scope_id,omitempty"`
	Metric      string   `json:"metric,omitempty"`
	Statistic   string   `json:"statistic,omitempty"`
	Operator    Operator `json:"operator,omitempty"`
	Trigger     float64  `json:"trigger_threshold"`
	Clear       float64  `json:"clear_threshold"`
	// ForCount readings (windows) in a row must breach before the alert
	// fires; at least 1.
	ForCount int `json:"for_count"`
	// ForDuration of event time the breach must last before firing (from
	// the first breaching reading); 0 fires on ForCount alone.
	ForDuration time.Duration `json:"for_duration"`
	// Silence is the event-time silence that fires a no_data rule.
	Silence    time.Duration `json:"silence,omitempty"`
	Severity   string        `json:"severity"`
	Recipients []string      `json:"recipients"`
	Enabled    bool          `json:"enabled"`
	Version    int64         `json:"version"`
	CreatedAt  time.Time     `json:"created_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

// Breaches reports whether v meets the trigger condition.
func (r *Rule) Breaches(v float64) bool { return r.Operator.Holds(v, r.Trigger) }

// Clears reports whether v ends a FIRING alert: v is past the clear
// threshold on the safe side.
func (r *Rule) Clears(v float64) bool { return !r.Operator.Holds(v, r.Clear) }

// AppliesTo reports whether the rule covers device, given the groups the
// device belongs to.
func (r *Rule) AppliesTo(device string, groups []string) bool {
	switch r.Scope {
	case ScopeAll:
		return true
	case ScopeDevice:
		return r.ScopeID == device
	case ScopeGroup:
		for _, g := range groups {
			if g == r.ScopeID {
				return true
			}
		}
	}
	return false
}

// ErrInvalid matches every validation error.
var ErrInvalid = errors.New("invalid alert rule")

// FieldError is one invalid field of a rule.
type FieldError struct {
	Field  string // the JSON name: "metric", "clear_threshold", ...
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Normalize fills the defaults of a new rule: kind reading, scope all,
// severity warning, for_count 1.
func (r *Rule) Normalize() {
	if r.Kind == "" {
		r.Kind = KindReading
	}
	if r.Scope == "" {
		r.Scope = ScopeAll
	}
	if r.Severity == "" {
		r.Severity = SeverityWarning
	}
	if r.ForCount == 0 {
		r.ForCount = 1
	}
}

// Validate reports every reason the rule cannot be stored or evaluated,
// joined; each is a *FieldError matching ErrInvalid.
func (r *Rule) Validate() error {
	var errs []error
	bad := func(field, value, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	if !idRE.MatchString(r.ID) {
		bad("rule_id", r.ID, "must be 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit")
	}
	switch r.Scope {
	case ScopeAll:
		if r.ScopeID != "" {
			bad("scope_id", r.ScopeID, "must be empty for scope all")
		}
	case ScopeDevice, ScopeGroup:
		if !idRE.MatchString(r.ScopeID) {
			bad("scope_id", r.ScopeID, fmt.Sprintf("scope %s needs the %s id (1-128 of A-Z a-z 0-9 . _ : -)", r.Scope, r.Scope))
		}
	default:
		bad("scope", string(r.Scope), "must be device, group or all")
	}
	switch r.Kind {
	case KindReading, KindWindow:
		if !schemas.ValidName(r.Metric) {
			bad("metric", r.Metric, fmt.Sprintf("not a measurement name (1-%d bytes of UTF-8 without control characters)", schemas.MaxNameLen))
		}
		switch r.Operator {
		case GT, GE, LT, LE:
		default:
			bad("operator", string(r.Operator), "must be one of >, >=, <, <=")
		}
		finite := true
		for _, f := range []struct {
			name string
			v    float64
		}{{"trigger_threshold", r.Trigger}, {"clear_threshold", r.Clear}} {
			if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
				bad(f.name, fmt.Sprint(f.v), "must be a finite number")
				finite = false
			}
		}
		if finite {
			if r.Operator.upward() && r.Clear > r.Trigger {
				bad("clear_threshold", fmt.Sprint(r.Clear), fmt.Sprintf("must be at or below the trigger threshold %v for operator %s (the alert resolves once the value falls back past it)", r.Trigger, r.Operator))
			}
			if (r.Operator == LT || r.Operator == LE) && r.Clear < r.Trigger {
				bad("clear_threshold", fmt.Sprint(r.Clear), fmt.Sprintf("must be at or above the trigger threshold %v for operator %s (the alert resolves once the value rises back past it)", r.Trigger, r.Operator))
			}
		}
		if r.Kind == KindWindow {
			if !contains(Statistics, r.Statistic) {
				bad("statistic", r.Statistic, "a window rule compares one of "+strings.Join(Statistics, ", "))
			}
		} else if r.Statistic != "" {
			bad("statistic", r.Statistic, "only window rules have a statistic")
		}
		if r.Silence != 0 {
			bad("silence", r.Silence.String(), "only no_data rules have a silence")
		}
	case KindNoData:
		if r.Metric != "" || r.Operator != "" || r.Statistic != "" || r.Trigger != 0 || r.Clear != 0 {
			bad("kind", string(r.Kind), "a no_data rule has no metric, statistic, operator or thresholds")
		}
		if r.Silence < time.Second || r.Silence%time.Millisecond != 0 {
			bad("silence", r.Silence.String(), "a no_data rule needs a silence of at least 1s, in whole milliseconds")
		}
	default:
		bad("kind", string(r.Kind), "must be reading, window or no_data")
	}
	if r.ForCount < 1 {
		bad("for_count", fmt.Sprint(r.ForCount), "must be at least 1")
	}
	if r.ForDuration < 0 || r.ForDuration%time.Millisecond != 0 {
		bad("for_duration", r.ForDuration.String(), "must be zero or positive, in whole milliseconds")
	}
	if !contains([]string{SeverityInfo, SeverityWarning, SeverityCritical}, r.Severity) {
		bad("severity", r.Severity, "must be info, warning or critical")
	}
	seen := map[string]bool{}
	for _, rc := range r.Recipients {
		if _, err := ParseRecipient(rc); err != nil {
			bad("recipients", rc, err.Error())
		}
		if seen[rc] {
			bad("recipients", rc, "listed twice")
		}
		seen[rc] = true
	}
	if len(r.Description) > 1024 {
		bad("description", "", "at most 1024 bytes")
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Channel is a notification channel.
type Channel string

// Channels.
const (
	Webhook Channel = "webhook"
	Ntfy    Channel = "ntfy"
	Email   Channel = "email"
	MQTT    Channel = "mqtt"
)

// Recipient is one parsed recipient: webhook:<http(s) URL>, ntfy:<topic>,
// email:<address> or mqtt:<topic>.
type Recipient struct {
	Channel Channel
	Target  string
}

// String is the recipient's stored form.
func (r Recipient) String() string { return string(r.Channel) + ":" + r.Target }

var ntfyTopicRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ParseRecipient parses one recipient, saying what is wrong with it.
func ParseRecipient(s string) (Recipient, error) {
	ch, target, ok := strings.Cut(s, ":")
	if !ok || target == "" {
		return Recipient{}, errors.New("want <channel>:<target>, channel webhook, ntfy, email or mqtt")
	}
	r := Recipient{Channel: Channel(ch), Target: target}
	switch r.Channel {
	case Webhook:
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return r, errors.New("webhook needs an absolute http or https URL")
		}
	case Ntfy:
		if !ntfyTopicRE.MatchString(target) {
			return r, errors.New("ntfy needs a topic of 1-64 of A-Z a-z 0-9 _ -")
		}
	case Email:
		a, err := mail.ParseAddress(target)
		if err != nil || a.Address != target {
			return r, errors.New("email needs a bare address like ops@example.com")
		}
	case MQTT:
		if strings.ContainsAny(target, "+#\x00") || len(target) > 1024 {
			return r, errors.New("mqtt needs a topic without wildcards (+ #)")
		}
	default:
		return r, fmt.Errorf("unknown channel %q: want webhook, ntfy, email or mqtt", ch)
	}
	return r, nil
}
