package api

// /v1/alert-rules: threshold alert rules (package alerting/rules) over
// REST. Every change goes through rules.Store, whose table trigger sends
// NOTIFY iotpipe_alert_rules, so a running alert stage reloads at once.

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
)

// AlertRule is a rule as the API shows it: rules.Rule with durations as
// Go duration strings ("30s", "5m") instead of nanoseconds.
type AlertRule struct {
	ID          string    `json:"rule_id"`
	Description string    `json:"description"`
	Kind        string    `json:"kind"`
	Scope       string    `json:"scope"`
	ScopeID     string    `json:"scope_id"`
	Metric      string    `json:"metric"`
	Statistic   string    `json:"statistic"`
	Operator    string    `json:"operator"`
	Trigger     float64   `json:"trigger_threshold"`
	Clear       float64   `json:"clear_threshold"`
	ForCount    int       `json:"for_count"`
	ForDuration string    `json:"for_duration"`
	Silence     string    `json:"silence"`
	Severity    string    `json:"severity"`
	Recipients  []string  `json:"recipients"`
	Enabled     bool      `json:"enabled"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func apiRule(r *rules.Rule) AlertRule {
	rc := r.Recipients
	if rc == nil {
		rc = []string{}
	}
	return AlertRule{ID: r.ID, Description: r.Description, Kind: string(r.Kind), Scope: string(r.Scope), ScopeID: r.ScopeID,
		Metric: r.Metric, Statistic: r.Statistic, Operator: string(r.Operator), Trigger: r.Trigger, Clear: r.Clear,
		ForCount: r.ForCount, ForDuration: r.ForDuration.String(), Silence: r.Silence.String(), Severity: r.Severity,
		Recipients: rc, Enabled: r.Enabled, Version: r.Version, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// RuleChange is the body of POST /v1/alert-rules (rule_id required; the
// others default as in `iotpipe alerts rules create`: kind reading, scope
// all, operator > (reading and window rules), severity warning, for_count
// 1, clear_threshold = trigger_threshold, enabled) and of PATCH /v1/alert-rules/{id} (no rule_id; absent fields
// keep their value).
type RuleChange struct {
	ID          *string   `json:"rule_id,omitempty"`
	Description *string   `json:"description,omitempty"`
	Kind        *string   `json:"kind,omitempty"`
	Scope       *string   `json:"scope,omitempty"`
	ScopeID     *string   `json:"scope_id,omitempty"`
	Metric      *string   `json:"metric,omitempty"`
	Statistic   *string   `json:"statistic,omitempty"`
	Operator    *string   `json:"operator,omitempty"`
	Trigger     *float64  `json:"trigger_threshold,omitempty"`
	Clear       *float64  `json:"clear_threshold,omitempty"`
	ForCount    *int      `json:"for_count,omitempty"`
	ForDuration *string   `json:"for_duration,omitempty"`
	Silence     *string   `json:"silence,omitempty"`
	Severity    *string   `json:"severity,omitempty"`
	Recipients  *[]string `json:"recipients,omitempty"`
	Enabled     *bool     `json:"enabled,omitempty"`
}

// apply sets the fields given into r; a duration that does not parse is
// a field error.
func (c *RuleChange) apply(r *rules.Rule) error {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&r.Description, c.Description)
	set(&r.ScopeID, c.ScopeID)
	set(&r.Metric, c.Metric)
	set(&r.Statistic, c.Statistic)
	set(&r.Severity, c.Severity)
	if c.Kind != nil {
		r.Kind = rules.Kind(*c.Kind)
	}
	if c.Scope != nil {
		r.Scope = rules.Scope(*c.Scope)
	}
	if c.Operator != nil {
		r.Operator = rules.Operator(*c.Operator)
	}
	if c.Trigger != nil {
		r.Trigger = *c.Trigger
	}
	if c.Clear != nil {
		r.Clear = *c.Clear
	}
	if c.ForCount != nil {
		r.ForCount = *c.ForCount
	}
	if c.Recipients != nil {
		r.Recipients = *c.Recipients
	}
	if c.Enabled != nil {
		r.Enabled = *c.Enabled
	}
	var errs []error
	for _, d := range []struct {
		field string
		src   *string
		dst   *time.Duration
	}{{"for_duration", c.ForDuration, &r.ForDuration}, {"silence", c.Silence, &r.Silence}} {
		if d.src == nil {
			continue
		}
		v, err := time.ParseDuration(*d.src)
		if err != nil {
			errs = append(errs, &rules.FieldError{Field: d.field, Value: *d.src, Reason: `not a duration such as "30s" or "5m"`})
			continue
		}
		*d.dst = v
	}
	return errors.Join(errs...)
}

// writeRuleProblem answers a rule that cannot be stored or evaluated with
// 422 invalid_rule, listing every field at fault.
func writeRuleProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := Problem{Status: http.StatusUnprocessableEntity, Code: CodeInvalidRule, Detail: err.Error()}
	var walk func(error)
	walk = func(e error) {
		var fe *rules.FieldError
		if errors.As(e, &fe) && e == error(fe) {
			p.Errors = append(p.Errors, FieldProblem{Field: fe.Field, Value: fe.Value, Reason: fe.Reason})
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if u := errors.Unwrap(e); u != nil {
			walk(u)
		}
	}
	walk(err)
	writeProblemValue(w, r, p)
}

// writeRuleError maps the rules package's errors; the rest go to
// writeError.
func (a *API) writeRuleError(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, rules.ErrInvalid):
		writeRuleProblem(w, r, err)
	case errors.Is(err, rules.ErrNotFound):
		writeProblem(w, r, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, rules.ErrExists):
		writeProblem(w, r, http.StatusConflict, CodeConflict, err.Error())
	case errors.Is(err, rules.ErrConflict):
		p := Problem{Status: http.StatusPreconditionFailed, Code: CodeVersionConflict, Detail: err.Error()}
		if cur, gerr := a.rules.Get(r.Context(), id); gerr == nil {
			p.CurrentVersion = &cur.Version
		}
		writeProblemValue(w, r, p)
	default:
		a.writeError(w, r, err)
	}
}

func writeRule(w http.ResponseWriter, status int, r *rules.Rule) {
	w.Header().Set("ETag", etag(r.Version))
	writeJSON(w, status, apiRule(r))
}

func (a *API) listAlertRules(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, after, ok := a.page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := rules.Filter{Kind: rules.Kind(q.Get("kind")), Metric: q.Get("metric"), Severity: q.Get("severity"),
		Scope: rules.Scope(q.Get("scope")), ScopeID: q.Get("scope_id"), After: after, Limit: limit}
	bad := func(format string, args ...any) {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(format, args...))
	}
	switch f.Kind {
	case "", rules.KindReading, rules.KindWindow, rules.KindNoData:
	default:
		bad("kind %q: want reading, window or no_data", f.Kind)
		return
	}
	switch f.Severity {
	case "", rules.SeverityInfo, rules.SeverityWarning, rules.SeverityCritical:
	default:
		bad("severity %q: want info, warning or critical", f.Severity)
		return
	}
	switch f.Scope {
	case "", rules.ScopeAll, rules.ScopeDevice, rules.ScopeGroup:
	default:
		bad("scope %q: want all, device or group", f.Scope)
		return
	}
	if s := q.Get("enabled"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			bad("enabled %q: want true or false", s)
			return
		}
		f.Enabled = &b
	}
	rs, err := a.rules.ListPage(r.Context(), f)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := Page[AlertRule]{Items: make([]AlertRule, 0, len(rs))}
	for _, x := range rs {
		p.Items = append(p.Items, apiRule(x))
	}
	if len(rs) == limit {
		next := rs[len(rs)-1].ID
		p.Next = &next
	}
	writeJSON(w, http.StatusOK, p)
}

func (a *API) createAlertRule(w http.ResponseWriter, r *http.Request, _ Token) {
	var req RuleChange
	if !a.decodeBody(w, r, &req) {
		return
	}
	if req.ID == nil {
		writeRuleProblem(w, r, &rules.FieldError{Field: "rule_id", Reason: "is required"})
		return
	}
	rule := rules.Rule{ID: *req.ID, Enabled: true}
	if err := req.apply(&rule); err != nil {
		writeRuleProblem(w, r, err)
		return
	}
	rule.Normalize()
	if req.Operator == nil && rule.Kind != rules.KindNoData {
		rule.Operator = rules.GT // the CLI's --op default
	}
	if req.Clear == nil {
		rule.Clear = rule.Trigger // no hysteresis unless asked, as the CLI
	}
	out, err := a.rules.Create(r.Context(), rule)
	if err != nil {
		a.writeRuleError(w, r, rule.ID, err)
		return
	}
	w.Header().Set("Location", "/v1/alert-rules/"+url.PathEscape(out.ID))
	writeRule(w, http.StatusCreated, out)
}

func (a *API) getAlertRule(w http.ResponseWriter, r *http.Request, _ Token) {
	id := r.PathValue("id")
	rule, err := a.rules.Get(r.Context(), id)
	if err != nil {
		a.writeRuleError(w, r, id, err)
		return
	}
	writeRule(w, http.StatusOK, rule)
}

// updateAlertRule changes the fields given, if the rule is still at the
// If-Match version; {"enabled": false} disables a rule.
func (a *API) updateAlertRule(w http.ResponseWriter, r *http.Request, _ Token) {
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	var req RuleChange
	if !a.decodeBody(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	if req.ID != nil && *req.ID != id {
		writeRuleProblem(w, r, &rules.FieldError{Field: "rule_id", Value: *req.ID, Reason: "a rule's id cannot change (create a new rule)"})
		return
	}
	rule, err := a.rules.Get(r.Context(), id)
	if err != nil {
		a.writeRuleError(w, r, id, err)
		return
	}
	if rule.Version != v {
		// Checked again by the UPDATE; answering here spares validating a
		// change based on a version that is gone.
		cur := rule.Version
		writeProblemValue(w, r, Problem{Status: http.StatusPreconditionFailed, Code: CodeVersionConflict, CurrentVersion: &cur,
			Detail: fmt.Sprintf("alert rule %s is at version %d, If-Match names %d", id, cur, v)})
		return
	}
	if err := req.apply(rule); err != nil {
		writeRuleProblem(w, r, err)
		return
	}
	out, err := a.rules.Update(r.Context(), *rule, v)
	if err != nil {
		a.writeRuleError(w, r, id, err)
		return
	}
	writeRule(w, http.StatusOK, out)
}

func (a *API) deleteAlertRule(w http.ResponseWriter, r *http.Request, _ Token) {
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if v < 1 { // versions start at 1; rules.Store.Delete reads 0 as "any version"
		cur, err := a.rules.Get(r.Context(), id)
		if err != nil {
			a.writeRuleError(w, r, id, err)
			return
		}
		writeProblemValue(w, r, Problem{Status: http.StatusPreconditionFailed, Code: CodeVersionConflict, CurrentVersion: &cur.Version,
			Detail: fmt.Sprintf("alert rule %s is at version %d, If-Match names %d", id, cur.Version, v)})
		return
	}
	if err := a.rules.Delete(r.Context(), id, v); err != nil {
		a.writeRuleError(w, r, id, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
