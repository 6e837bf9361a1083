//go:build integration

package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// ruleNotices listens to the alert stage's channel and waits for the
// notices of this test's schema (other tests' schemas notify the same
// channel with their own name).
type ruleNotices struct {
	t      *testing.T
	conn   *pgx.Conn
	schema string
}

func listenRules(t *testing.T, h *harness) *ruleNotices {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+rules.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	return &ruleNotices{t: t, conn: conn, schema: h.schema}
}

// expect waits for one notice of the schema, after what.
func (n *ruleNotices) expect(what string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		nt, err := n.conn.WaitForNotification(ctx)
		if err != nil {
			n.t.Fatalf("no NOTIFY %s after %s: %v", rules.NotifyChannel, what, err)
		}
		if nt.Payload == n.schema {
			return
		}
	}
}

// exerciseAlertRules walks /v1/alert-rules through h (called by
// TestAPIRoutes, which checks that every route was exercised): roles,
// validation problems, paging and filters, If-Match, disable, delete, and
// the NOTIFY of every change.
func exerciseAlertRules(t *testing.T, h *harness) {
	t.Helper()
	notices := listenRules(t, h)
	const coll = "POST /v1/alert-rules"
	const one = "/v1/alert-rules/"

	// Roles: a viewer reads, may not write.
	want(t, h.do(call{route: coll, path: "/v1/alert-rules", role: RoleViewer, body: `{"rule_id":"x","metric":"temp","trigger_threshold":1}`}), 403)
	want(t, h.do(call{route: "GET /v1/alert-rules", path: "/v1/alert-rules"}), 401)

	a := h.do(call{route: coll, path: "/v1/alert-rules", role: RoleOperator, body: `{"rule_id":"hot-boiler","description":"boiler too hot",
		"metric":"temp","operator":">","trigger_threshold":90,"clear_threshold":85,"for_duration":"30s","severity":"critical",
		"recipients":["ntfy:boiler-alerts","webhook:https://ops.example.com/hook"]}`})
	want(t, a, 201)
	notices.expect("create")
	var r AlertRule
	a.json(t, &r)
	if a.header.Get("ETag") != `"1"` || a.header.Get("Location") != one+"hot-boiler" || r.Version != 1 || !r.Enabled ||
		r.ForDuration != "30s" || r.Clear != 85 || r.Kind != "reading" || r.Scope != "all" || len(r.Recipients) != 2 {
		t.Fatalf("created %s (ETag %s, Location %s)", a.body, a.header.Get("ETag"), a.header.Get("Location"))
	}
	// The rule is in the store the alert stage reads.
	stored, err := rules.NewStore(h.a.pool, h.schema).Get(testenv.Context(t, 10*time.Second), "hot-boiler")
	if err != nil || stored.Trigger != 90 || stored.ForDuration != 30*time.Second || stored.Severity != "critical" {
		t.Fatalf("stored rule %+v, %v", stored, err)
	}

	// Rules that cannot be evaluated: 422 invalid_rule naming the field.
	for _, c := range []struct{ body, field string }{
		{`{"rule_id":"bad-1","metric":"temp","operator":">","trigger_threshold":90,"clear_threshold":95}`, "clear_threshold"},
		{`{"rule_id":"bad-2","metric":"temp","operator":"<","trigger_threshold":5,"clear_threshold":1}`, "clear_threshold"},
		{`{"rule_id":"bad-3","metric":"temp","operator":"=>","trigger_threshold":90}`, "operator"},
		{`{"rule_id":"bad-4","trigger_threshold":90}`, "metric"},
		{`{"rule_id":"bad-5","metric":"temp","trigger_threshold":90,"for_duration":"soon"}`, "for_duration"},
		{`{"rule_id":"bad-6","metric":"temp","trigger_threshold":90,"recipients":["pager:42"]}`, "recipients"},
		{`{"rule_id":"bad-7","kind":"window","metric":"temp","trigger_threshold":90,"statistic":"median"}`, "statistic"},
		{`{"rule_id":"bad 8","metric":"temp","trigger_threshold":90}`, "rule_id"},
		{`{"metric":"temp","trigger_threshold":90}`, "rule_id"},
	} {
		p := h.do(call{route: coll, path: "/v1/alert-rules", role: RoleOperator, body: c.body}).problem(t)
		if p.Status != 422 || p.Code != CodeInvalidRule || len(p.Errors) == 0 || p.Errors[0].Field != c.field || p.Errors[0].Reason == "" {
			t.Errorf("%s: problem %+v, want 422 invalid_rule on %s", c.body, p, c.field)
		}
	}
	if p := h.do(call{route: coll, path: "/v1/alert-rules", role: RoleOperator, body: `{"rule_id":"x","trigger":1}`}).problem(t); p.Status != 400 || p.Code != CodeMalformed {
		t.Errorf("unknown field: %+v", p)
	}
	if p := h.do(call{route: coll, path: "/v1/alert-rules", role: RoleOperator, body: `{"rule_id":"hot-boiler","metric":"t","trigger_threshold":1}`}).problem(t); p.Status != 409 {
		t.Errorf("duplicate rule: %+v", p)
	}

	// More rules, for paging and filters.
	for _, b := range []string{
		`{"rule_id":"cold-1","metric":"temp","operator":"<","trigger_threshold":5,"clear_threshold":7,"scope":"device","scope_id":"dev-1"}`,
		`{"rule_id":"silent-1","kind":"no_data","silence":"10m","severity":"info"}`,
		`{"rule_id":"win-p95","kind":"window","metric":"hum","statistic":"p95","operator":">=","trigger_threshold":80,"clear_threshold":70,"scope":"group","scope_id":"site-a"}`,
		`{"rule_id":"a-off","metric":"temp","operator":">","trigger_threshold":1,"enabled":false}`,
	} {
		want(t, h.do(call{route: coll, path: "/v1/alert-rules", role: RoleAdmin, body: b}), 201)
		notices.expect("create")
	}
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		var p Page[AlertRule]
		a := h.do(call{route: "GET /v1/alert-rules", path: "/v1/alert-rules?limit=2&after=" + after, role: RoleViewer})
		want(t, a, 200)
		a.json(t, &p)
		for _, r := range p.Items {
			ids = append(ids, r.ID)
		}
		if p.Next == nil || pages > 5 {
			break
		}
		after = *p.Next
	}
	if strings.Join(ids, ",") != "a-off,cold-1,hot-boiler,silent-1,win-p95" {
		t.Fatalf("paged rule ids %v", ids)
	}
	list := func(q string) string {
		t.Helper()
		var p Page[AlertRule]
		a := h.do(call{route: "GET /v1/alert-rules", path: "/v1/alert-rules?" + q, role: RoleViewer})
		want(t, a, 200)
		a.json(t, &p)
		var out []string
		for _, r := range p.Items {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	for q, w := range map[string]string{
		"kind=no_data": "silent-1", "enabled=false": "a-off", "metric=temp&enabled=true": "cold-1,hot-boiler",
		"severity=critical": "hot-boiler", "scope=group&scope_id=site-a": "win-p95", "scope=device": "cold-1",
		"metric=pressure": "",
	} {
		if got := list(q); got != w {
			t.Errorf("filter %s: %q, want %q", q, got, w)
		}
	}
	for _, q := range []string{"severity=urgent", "enabled=maybe", "kind=sometimes", "scope=planet", "limit=0"} {
		if p := h.do(call{route: "GET /v1/alert-rules", path: "/v1/alert-rules?" + q, role: RoleViewer}).problem(t); p.Status != 400 {
			t.Errorf("filter %s: %+v", q, p)
		}
	}

	// One rule: ETag = version; PATCH with If-Match.
	route, path := "PATCH /v1/alert-rules/{id}", one+"hot-boiler"
	a = h.do(call{route: "GET /v1/alert-rules/{id}", path: path, role: RoleViewer})
	want(t, a, 200)
	if a.header.Get("ETag") != `"1"` {
		t.Fatalf("ETag %q", a.header.Get("ETag"))
	}
	want(t, h.do(call{route: "GET /v1/alert-rules/{id}", path: one + "nope", role: RoleViewer}), 404)
	want(t, h.do(call{route: route, path: path, role: RoleOperator, body: `{"trigger_threshold":95}`}), 428)
	want(t, h.do(call{route: route, path: path, role: RoleViewer, ifMatch: `"1"`, body: `{"trigger_threshold":95}`}), 403)
	a = h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"1"`, body: `{"trigger_threshold":95,"for_duration":"1m"}`})
	want(t, a, 200)
	notices.expect("update")
	r = AlertRule{}
	a.json(t, &r)
	if a.header.Get("ETag") != `"2"` || r.Trigger != 95 || r.Clear != 85 || r.ForDuration != "1m0s" || r.Description != "boiler too hot" {
		t.Fatalf("after PATCH: %s", a.body)
	}
	if p := h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"1"`, body: `{"trigger_threshold":99}`}).problem(t); p.Status != 412 || p.Code != CodeVersionConflict || p.CurrentVersion == nil || *p.CurrentVersion != 2 {
		t.Fatalf("stale PATCH: %+v", p)
	}
	if p := h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"2"`, body: `{"clear_threshold":100}`}).problem(t); p.Status != 422 || p.Errors[0].Field != "clear_threshold" {
		t.Fatalf("PATCH clear above trigger: %+v", p)
	}
	if p := h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"2"`, body: `{"rule_id":"other"}`}).problem(t); p.Status != 422 || p.Errors[0].Field != "rule_id" {
		t.Fatalf("PATCH of the id: %+v", p)
	}
	want(t, h.do(call{route: route, path: one + "nope", role: RoleOperator, ifMatch: `"1"`, body: `{"enabled":false}`}), 404)
	// Disable.
	a = h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"2"`, body: `{"enabled":false}`})
	want(t, a, 200)
	notices.expect("disable")
	r = AlertRule{}
	a.json(t, &r)
	if r.Enabled || r.Version != 3 || r.Trigger != 95 {
		t.Fatalf("after disable: %s", a.body)
	}
	if got := list("enabled=false"); got != "a-off,hot-boiler" {
		t.Fatalf("disabled rules %q", got)
	}

	// DELETE with If-Match.
	route = "DELETE /v1/alert-rules/{id}"
	want(t, h.do(call{route: route, path: path, role: RoleOperator}), 428)
	want(t, h.do(call{route: route, path: path, role: RoleViewer, ifMatch: `"3"`}), 403)
	for _, stale := range []string{`"2"`, `"0"`} {
		if p := h.do(call{route: route, path: path, role: RoleOperator, ifMatch: stale}).problem(t); p.Status != 412 || p.CurrentVersion == nil || *p.CurrentVersion != 3 {
			t.Fatalf("DELETE with If-Match %s: %+v", stale, p)
		}
	}
	want(t, h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"3"`}), 204)
	notices.expect("delete")
	want(t, h.do(call{route: "GET /v1/alert-rules/{id}", path: path, role: RoleViewer}), 404)
	want(t, h.do(call{route: route, path: path, role: RoleOperator, ifMatch: `"3"`}), 404)
	if got := list(""); got != "a-off,cold-1,silent-1,win-p95" {
		t.Fatalf("rules after delete: %q", got)
	}
}
