package main

// `iotpipe alerts rules list|show|create|update|delete`: threshold alert
// rules (package alerting/rules) in PostgreSQL.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
)

const alertsSummary = "threshold alert rules: alerts rules list, show, create, update, delete"

const alertsUsage = `Usage: iotpipe alerts rules <command> [args] [flags]

  list           the rules (--enabled: only those evaluated)
  show <id>      one rule
  create <id>    a new rule (version 1)
  update <id>    change the flags given, if the rule is still at --if-version
  delete <id>    remove the rule (at --if-version, or any version without it)

A rule compares each reading (kind reading), each window statistic (kind
window, from telemetry.metrics) or a device's silence (kind no_data) with a
trigger threshold; the alert fires once and resolves once the value is back
past the clear threshold (hysteresis). Example:
  iotpipe alerts rules create hot-boiler --metric temp --op '>' --trigger 90 --clear 85 \
      --for 30s --severity critical --recipient ntfy:boiler-alerts --recipient webhook:https://ops.example.com/hook
Run 'iotpipe alerts rules <command> --help' for the flags.
`

func runAlerts(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, alertsUsage, "which alerts command? rules"); help {
		return err
	}
	if args[0] != "rules" {
		return &UsageError{fmt.Errorf("unknown alerts command %q: want rules (see iotpipe alerts --help)", args[0])}
	}
	args = args[1:]
	if help, err := groupHelp(env, args, alertsUsage, "which alerts rules command? list, show, create, update or delete"); help {
		return err
	}
	rest := args[1:]
	switch args[0] {
	case "list":
		return runRulesList(ctx, env, rest)
	case "show":
		return runRulesShow(ctx, env, rest)
	case "create":
		return runRulesWrite(ctx, env, rest, false)
	case "update":
		return runRulesWrite(ctx, env, rest, true)
	case "delete":
		return runRulesDelete(ctx, env, rest)
	}
	return &UsageError{fmt.Errorf("unknown alerts rules command %q: want list, show, create, update or delete", args[0])}
}

// rulesConnect checks the database flags and opens the rule store; the
// returned context ends after --timeout, or at the returned func.
func rulesConnect(ctx context.Context, r *registryFlags) (context.Context, *rules.Store, func(), error) {
	if err := r.check(); err != nil {
		return ctx, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	s, err := rules.Open(ctx, r.dsn, r.schema)
	if err != nil {
		cancel()
		if errors.Is(err, rules.ErrNoSchema) {
			return ctx, nil, nil, fmt.Errorf("%w (%s is %q)", err, settingName("pg-schema"), r.schema)
		}
		return ctx, nil, nil, fmt.Errorf("cannot reach the database at %s: %w", settingName("pg-registry-dsn"), err)
	}
	return ctx, s, func() { s.Close(); cancel() }, nil
}

// ruleFlags are the flags that define a rule.
type ruleFlags struct {
	kind, scope, metric, statistic, op, severity, description string
	trigger, clear                                            float64
	forCount                                                  int
	forDur, silence                                           time.Duration
	recipients                                                []string
	disabled                                                  bool
}

func (rf *ruleFlags) bind(f *cmdFlags) {
	f.Group("Rule")
	f.String(&rf.kind, "kind", "reading", "reading: every reading of --metric; window: a --statistic of each window aggregate of --metric (telemetry.metrics); no_data: the device silent for --silence")
	f.String(&rf.scope, "scope", "all", "devices the rule covers: all, device:<id> or group:<id>")
	f.String(&rf.metric, "metric", "", "measurement name (reading and window rules)")
	f.String(&rf.statistic, "statistic", "", "window rules: mean, min, max, p50, p95 or p99")
	f.String(&rf.op, "op", ">", "condition value <op> --trigger: >, >=, <, <=")
	f.Float(&rf.trigger, "trigger", 0, "trigger threshold: the alert fires when value <op> trigger holds")
	f.Float(&rf.clear, "clear", 0, "clear threshold: a firing alert resolves once value <op> clear no longer holds; at or below --trigger for > and >=, at or above for < and <=; not given: the trigger (no hysteresis)")
	f.Int(&rf.forCount, "for-count", 1, "readings (windows) in a row over the threshold before the alert fires")
	f.Duration(&rf.forDur, "for", 0, "event time the condition must hold before the alert fires (from the first reading over it)")
	f.Duration(&rf.silence, "silence", 0, "no_data rules: event-time silence of a device that fires")
	f.String(&rf.severity, "severity", "warning", "info, warning or critical")
	f.Flags.Var(strList{&rf.recipients}, &rf.recipients, "recipient", "where notifications go: webhook:<url>, ntfy:<topic>, email:<address>, mqtt:<topic>; repeat the flag or separate by commas")
	f.String(&rf.description, "description", "", "free text shown with the rule")
	f.Bool(&rf.disabled, "disabled", false, "store the rule disabled (not evaluated)")
}

// apply sets into r the rule flags given (all of them when all).
func (rf *ruleFlags) apply(f *cmdFlags, r *rules.Rule, all bool) error {
	given := func(name string) bool { return all || f.Source(name) != "default" }
	if given("kind") {
		r.Kind = rules.Kind(rf.kind)
	}
	if given("scope") {
		switch sc, id, _ := strings.Cut(rf.scope, ":"); sc {
		case "all", "device", "group":
			r.Scope, r.ScopeID = rules.Scope(sc), id
		default:
			return settingErr("scope", rf.scope, errors.New("want all, device:<id> or group:<id>"))
		}
	}
	if given("metric") {
		r.Metric = rf.metric
	}
	if given("statistic") {
		r.Statistic = rf.statistic
	}
	if given("op") {
		r.Operator = rules.Operator(rf.op)
	}
	if given("trigger") {
		r.Trigger = rf.trigger
	}
	if f.Source("clear") != "default" {
		r.Clear = rf.clear
	} else if all || given("trigger") {
		r.Clear = r.Trigger
	}
	if given("for-count") {
		r.ForCount = rf.forCount
	}
	if given("for") {
		r.ForDuration = rf.forDur
	}
	if given("silence") {
		r.Silence = rf.silence
	}
	if given("severity") {
		r.Severity = rf.severity
	}
	if given("recipient") {
		r.Recipients = rf.recipients
	}
	if given("description") {
		r.Description = rf.description
	}
	if given("disabled") {
		r.Enabled = !rf.disabled
	}
	if r.Kind == rules.KindNoData && all {
		// A no_data rule has no operator; the flag's default does not apply.
		if f.Source("op") == "default" {
			r.Operator = ""
		}
	}
	return nil
}

// ruleErr turns a validation error into a usage error naming the flags.
func ruleErr(err error) error {
	if errors.Is(err, rules.ErrInvalid) {
		flagOf := map[string]string{"rule_id": "rule id", "kind": "--kind", "scope": "--scope", "scope_id": "--scope",
			"metric": "--metric", "statistic": "--statistic", "operator": "--op", "trigger_threshold": "--trigger",
			"clear_threshold": "--clear", "for_count": "--for-count", "for_duration": "--for", "silence": "--silence",
			"severity": "--severity", "recipients": "--recipient", "description": "--description"}
		var lines []string
		for _, e := range flattenErrs(err) {
			var fe *rules.FieldError
			if errors.As(e, &fe) {
				lines = append(lines, fmt.Sprintf("%s: %s", flagOf[fe.Field], fe.Error()))
			}
		}
		return &UsageError{fmt.Errorf("rule refused (%w): %s", rules.ErrInvalid, strings.Join(lines, "; "))}
	}
	return err
}

func flattenErrs(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrs(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		if _, ok := u.(interface{ Unwrap() []error }); ok {
			return flattenErrs(u)
		}
	}
	return []error{err}
}

func runRulesWrite(ctx context.Context, env Env, args []string, update bool) error {
	verb := map[bool]string{false: "create", true: "update"}[update]
	help := `Create an alert rule (version 1). Every rule flag has its default.
Example:
  iotpipe alerts rules create hot --metric temp --op '>' --trigger 90 --clear 85 --for 30s --recipient ntfy:ops`
	if update {
		help = `Change an alert rule: only the rule flags given change. --if-version is the
version you read (iotpipe alerts rules show): when the rule changed since,
nothing is written and the command fails with a version conflict.
Example:
  iotpipe alerts rules update hot --if-version 3 --trigger 95 --clear 88`
	}
	id, args, perr := positional(args, "the rule id")
	var r registryFlags
	var rf ruleFlags
	var version int
	var asJSON bool
	f := newCmdFlags(env, "iotpipe alerts rules "+verb+" <id>", help)
	r.bind(f, false)
	rf.bind(f)
	if update {
		f.Int(&version, "if-version", 0, "the rule's version you read (required; like HTTP If-Match): the update is refused if it changed since")
	}
	f.Bool(&asJSON, "json", false, "print the stored rule as JSON")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	if update && version <= 0 {
		return settingErr("if-version", "", errors.New("required: the version you read with 'iotpipe alerts rules show'"))
	}
	var rule rules.Rule
	ctx, s, done, err := rulesConnect(ctx, &r)
	if err != nil {
		return err
	}
	defer done()
	if update {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		rule = *cur
	} else {
		rule = rules.Rule{ID: id}
	}
	if err := rf.apply(f, &rule, !update); err != nil {
		return err
	}
	var out *rules.Rule
	if update {
		out, err = s.Update(ctx, rule, int64(version))
	} else {
		rule.Normalize()
		out, err = s.Create(ctx, rule)
	}
	if err != nil {
		return ruleErr(err)
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(out)
	}
	fmt.Fprintf(env.Stdout, "alerts: %sd rule %s (version %d): %s\n", verb, out.ID, out.Version, describe(out))
	return nil
}

// describe is a one-line summary of a rule.
func describe(r *rules.Rule) string {
	var b strings.Builder
	switch r.Kind {
	case rules.KindNoData:
		fmt.Fprintf(&b, "no data for %s", r.Silence)
	case rules.KindWindow:
		fmt.Fprintf(&b, "window %s(%s) %s %v, clear %v", r.Statistic, r.Metric, r.Operator, r.Trigger, r.Clear)
	default:
		fmt.Fprintf(&b, "%s %s %v, clear %v", r.Metric, r.Operator, r.Trigger, r.Clear)
	}
	if r.ForCount > 1 {
		fmt.Fprintf(&b, ", %d in a row", r.ForCount)
	}
	if r.ForDuration > 0 {
		fmt.Fprintf(&b, ", for %s", r.ForDuration)
	}
	scope := string(r.Scope)
	if r.ScopeID != "" {
		scope += ":" + r.ScopeID
	}
	fmt.Fprintf(&b, "; %s; %s", scope, r.Severity)
	if !r.Enabled {
		b.WriteString("; disabled")
	}
	return b.String()
}

func runRulesList(ctx context.Context, env Env, args []string) error {
	var r registryFlags
	var enabled, asJSON bool
	f := newCmdFlags(env, "iotpipe alerts rules list", "List the alert rules.")
	r.bind(f, false)
	f.Bool(&enabled, "enabled", false, "only the enabled rules")
	f.Bool(&asJSON, "json", false, "print JSON")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	ctx, s, done, err := rulesConnect(ctx, &r)
	if err != nil {
		return err
	}
	defer done()
	list, err := s.List(ctx, enabled)
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []*rules.Rule{}
		}
		return json.NewEncoder(env.Stdout).Encode(list)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tVERSION\tENABLED\tRULE\tRECIPIENTS")
	for _, x := range list {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\n", x.ID, x.Version, x.Enabled, describe(x), dash(strings.Join(x.Recipients, ",")))
	}
	_ = tw.Flush()
	fmt.Fprintf(env.Stdout, "%d rule(s)\n", len(list))
	return nil
}

func runRulesShow(ctx context.Context, env Env, args []string) error {
	id, args, perr := positional(args, "the rule id")
	var r registryFlags
	var asJSON bool
	f := newCmdFlags(env, "iotpipe alerts rules show <id>", "Show one alert rule, with its version (for update --if-version).")
	r.bind(f, false)
	f.Bool(&asJSON, "json", false, "print JSON")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	ctx, s, done, err := rulesConnect(ctx, &r)
	if err != nil {
		return err
	}
	defer done()
	x, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(x)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "rule\t%s\nversion\t%d\nenabled\t%v\nkind\t%s\nrule\t%s\nrecipients\t%s\ndescription\t%s\nupdated\t%s\n",
		x.ID, x.Version, x.Enabled, x.Kind, describe(x), dash(strings.Join(x.Recipients, ", ")), dash(x.Description),
		x.UpdatedAt.UTC().Format(time.RFC3339))
	return tw.Flush()
}

func runRulesDelete(ctx context.Context, env Env, args []string) error {
	id, args, perr := positional(args, "the rule id")
	var r registryFlags
	var version int
	f := newCmdFlags(env, "iotpipe alerts rules delete <id>", "Delete an alert rule. Alerts it has firing stay in alert_events; no RESOLVED follows.")
	r.bind(f, false)
	f.Int(&version, "if-version", 0, "delete only if the rule is still at this version; 0: whatever its version")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	if version < 0 {
		return settingErr("if-version", strconv.Itoa(version), errors.New("must be 0 or a version"))
	}
	ctx, s, done, err := rulesConnect(ctx, &r)
	if err != nil {
		return err
	}
	defer done()
	if err := s.Delete(ctx, id, int64(version)); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "alerts: deleted rule %s\n", id)
	return nil
}
