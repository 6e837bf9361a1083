//go:build integration

package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// iotpipe alerts rules create|list|show|update|delete against the real
// database, with the errors a user meets: a bad rule (named flag and
// reason), a stale --if-version, a missing rule.
func TestAlertsRulesCommands(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	c := &cli{t: t, vars: map[string]string{"IOTPIPE_PG_REGISTRY_DSN": dsn, "IOTPIPE_PG_SCHEMA": schema}}

	out := c.ok("alerts", "rules", "create", "hot", "--metric", "temp", "--op", ">", "--trigger", "90", "--clear", "85",
		"--for", "30s", "--severity", "critical", "--recipient", "ntfy:ops", "--recipient", "webhook:https://ops.example.com/h")
	if !strings.Contains(out, "created rule hot (version 1)") || !strings.Contains(out, "temp > 90, clear 85, for 30s") {
		t.Fatalf("create said %q", out)
	}
	c.ok("alerts", "rules", "create", "quiet", "--kind", "no_data", "--silence", "10m", "--scope", "group:site-a")

	// Refused rules: exit 2 with the flag and the reason.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--metric", "temp", "--trigger", "90", "--clear", "95"}, "--clear: clear_threshold"},
		{[]string{"--metric", "temp", "--op", "=>", "--trigger", "1"}, "--op: operator"},
		{[]string{"--op", ">", "--trigger", "1"}, "--metric: metric"},
		{[]string{"--metric", "t", "--recipient", "sms:123"}, "--recipient: recipients"},
		{[]string{"--metric", "t", "--scope", "fleet"}, "--scope (IOTPIPE_SCOPE)"},
	} {
		code, _, errOut := c.run(append([]string{"alerts", "rules", "create", "bad"}, tc.args...)...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("create bad %v: exit %d %q, want exit %d naming %q", tc.args, code, errOut, ExitUsage, tc.want)
		}
	}

	var list []rules.Rule
	if err := json.Unmarshal([]byte(c.ok("alerts", "rules", "list", "--json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("list --json: %v %+v", err, list)
	}
	out = c.ok("alerts", "rules", "update", "hot", "--if-version", "1", "--trigger", "95", "--clear", "88")
	if !strings.Contains(out, "version 2") || !strings.Contains(out, "temp > 95, clear 88") || !strings.Contains(out, "critical") {
		t.Fatalf("update said %q", out)
	}
	code, _, errOut := c.run("alerts", "rules", "update", "hot", "--if-version", "1", "--trigger", "99")
	if code != ExitFailed || !strings.Contains(errOut, "version conflict") || !strings.Contains(errOut, "at version 2") {
		t.Fatalf("stale update: exit %d %q", code, errOut)
	}
	code, _, errOut = c.run("alerts", "rules", "update", "hot", "--trigger", "99")
	if code != ExitUsage || !strings.Contains(errOut, "--if-version") {
		t.Fatalf("update without --if-version: exit %d %q", code, errOut)
	}
	var shown rules.Rule
	if err := json.Unmarshal([]byte(c.ok("alerts", "rules", "show", "hot", "--json")), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Version != 2 || shown.Trigger != 95 || len(shown.Recipients) != 2 || shown.Severity != "critical" {
		t.Fatalf("show: %+v", shown)
	}
	c.ok("alerts", "rules", "update", "hot", "--if-version", "2", "--disabled")
	if out := c.ok("alerts", "rules", "list", "--enabled"); strings.Contains(out, "hot") {
		t.Fatalf("list --enabled shows the disabled rule: %q", out)
	}
	c.ok("alerts", "rules", "delete", "hot", "--if-version", "3")
	code, _, errOut = c.run("alerts", "rules", "show", "hot")
	if code != ExitFailed || !strings.Contains(errOut, "no such alert rule") {
		t.Fatalf("show deleted: exit %d %q", code, errOut)
	}
}
