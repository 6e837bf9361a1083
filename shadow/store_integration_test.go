//go:build integration

package shadow

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

type fixture struct {
	st     *Store
	pool   *pgxpool.Pool
	schema string
	dev    string
}

// newFixture migrates a schema, registers one device and returns a Store
// connected as a member of the registry role.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	ctx := testenv.Context(t, time.Minute)
	reg, err := registry.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	ca, err := certs.New("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev := testenv.Name(t, "d")
	key, _ := certs.NewKey()
	iss, err := ca.IssueClient(dev, &key.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(ctx, registry.NewDevice{ID: dev, Cert: iss.Cert}); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := New(pool, schema, Limits{MaxBytes: 1024, MaxDepth: 4, MaxKeys: 20})
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	return &fixture{st: st, pool: pool, schema: schema, dev: dev}
}

func (f *fixture) outbox(t *testing.T) []Message {
	t.Helper()
	msgs, err := f.st.Pending(testenv.Context(t, 10*time.Second), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (f *fixture) report(t *testing.T, payload string) Outcome {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	var out Outcome
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		var err error
		out, err = f.st.ApplyReport(ctx, tx, f.dev, []byte(payload))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func payloadOf(t *testing.T, m Message) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatalf("%s: %v", m.Topic, err)
	}
	return v
}

// The shadow's life: patches, config, the delta and the outbox rows
// written with each change, a report that empties the delta, a stale
// report, and nothing written for refused input.
func TestShadowStore(t *testing.T) {
	f := newFixture(t)
	ctx := testenv.Context(t, time.Minute)
	sh, err := f.st.Get(ctx, f.dev)
	if err != nil || sh.Version != 0 || len(sh.State.Desired) != 0 {
		t.Fatalf("new shadow: %+v %v", sh, err)
	}
	if _, err := f.st.Get(ctx, "nobody"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	sh, err = f.st.PatchDesired(ctx, f.dev, 0, []byte(`{"led":"on","config":{"rate":5}}`))
	if err != nil || sh.Version != 1 {
		t.Fatalf("patch: %+v %v", sh, err)
	}
	msgs := f.outbox(t)
	if len(msgs) != 2 || msgs[0].Topic != DeltaTopic(f.dev) || msgs[1].Topic != ConfigTopic(f.dev) || !msgs[0].Retain || !msgs[1].Retain {
		t.Fatalf("outbox after the first patch: %+v", msgs)
	}
	if p := payloadOf(t, msgs[1]); p["version"] != 1.0 || p["config"].(map[string]any)["rate"] != 5.0 {
		t.Fatalf("config message %s", msgs[1].Payload)
	}
	// A stale If-Match: refused, nothing written.
	if _, err := f.st.PatchDesired(ctx, f.dev, 0, []byte(`{"led":"off"}`)); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale patch: %v", err)
	}
	var ce *ConflictError
	if _, err := f.st.SetConfig(ctx, f.dev, 7, []byte(`{"rate":1}`)); !errors.As(err, &ce) || ce.Current != 1 {
		t.Fatalf("stale config: %v", err)
	}
	// Refused documents: nothing written.
	for _, bad := range []string{`[1]`, `{"a":`, `{"a":{"b":{"c":{"d":{"e":1}}}}}`, `{"x":"` + strings.Repeat("y", 2000) + `"}`} {
		if _, err := f.st.PatchDesired(ctx, f.dev, 1, []byte(bad)); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) {
			t.Fatalf("patch %.40s: %v", bad, err)
		}
	}
	// Patches that together exceed the keys limit: the second is refused.
	many := map[string]int{}
	for i := range 17 {
		many[string(rune('a'+i))] = i
	}
	b, _ := json.Marshal(map[string]any{"k": many})
	if _, err := f.st.PatchDesired(ctx, f.dev, 1, b); !errors.Is(err, ErrLimit) {
		t.Fatalf("patch over the keys limit of the result: %v", err)
	}
	if got := len(f.outbox(t)); got != 2 {
		t.Fatalf("refused writes left %d outbox rows, want 2", got)
	}
	if sh, _ = f.st.Get(ctx, f.dev); sh.Version != 1 {
		t.Fatalf("refused writes moved the version to %d", sh.Version)
	}
	// A config change: config message and delta.
	sh, err = f.st.SetConfig(ctx, f.dev, 1, []byte(`{"rate":10,"mode":"eco"}`))
	if err != nil || sh.Version != 2 {
		t.Fatalf("config: %+v %v", sh, err)
	}
	if got, _ := json.Marshal(sh.State.Delta); string(got) != `{"config":{"mode":"eco","rate":10},"led":"on"}` {
		t.Fatalf("delta %s", got)
	}
	// A no-op patch: same version, nothing sent.
	if sh, err = f.st.PatchDesired(ctx, f.dev, 2, []byte(`{"led":"on"}`)); err != nil || sh.Version != 2 {
		t.Fatalf("no-op patch: %+v %v", sh, err)
	}
	if got := len(f.outbox(t)); got != 4 {
		t.Fatalf("outbox rows %d, want 4", got)
	}

	// The device reports a stale version: rejected, nothing applied.
	if o := f.report(t, `{"state":{"reported":{"led":"on"}},"version":1,"client_token":"t1"}`); o.Accepted || o.Code != CodeStaleVersion {
		t.Fatalf("stale report: %+v", o)
	}
	msgs = f.outbox(t)
	last := msgs[len(msgs)-1]
	if p := payloadOf(t, last); last.Topic != RejectedTopic(f.dev) || p["code"] != "stale_version" || p["client_token"] != "t1" || p["version"] != 2.0 {
		t.Fatalf("rejection %s %s", last.Topic, last.Payload)
	}
	for _, c := range []struct {
		payload string
		code    Code
	}{
		{`not json`, CodeMalformed},
		{`{"state":{"reported":[1]}}`, CodeMalformed},
		{`{"state":{"desired":{"led":"off"},"reported":{}}}`, CodeMalformed},
		{`{"state":{"reported":{"x":"` + strings.Repeat("y", 1500) + `"}}}`, CodeTooLarge},
		{`{"state":{"reported":{"a":{"b":{"c":{"d":{"e":1}}}}}}}`, CodeTooLarge},
	} {
		if o := f.report(t, c.payload); o.Accepted || o.Code != c.code {
			t.Fatalf("report %.40s: %+v, want %s", c.payload, o, c.code)
		}
	}
	if sh, _ = f.st.Get(ctx, f.dev); sh.Version != 2 || len(sh.State.Reported) != 0 {
		t.Fatalf("rejected reports changed the shadow: %+v", sh)
	}
	// The device catches up: the delta empties, the retained delta is
	// cleared (empty payload), and the report is accepted.
	o := f.report(t, `{"state":{"reported":{"led":"on","config":{"rate":10,"mode":"eco"},"fw":"1.2"}},"version":2,"client_token":"t2"}`)
	if !o.Accepted || o.Version != 3 || !o.Changed {
		t.Fatalf("report: %+v", o)
	}
	sh, _ = f.st.Get(ctx, f.dev)
	if sh.Version != 3 || len(sh.State.Delta) != 0 || sh.ReportedAt == nil {
		t.Fatalf("after the report: %+v", sh)
	}
	msgs = f.outbox(t)
	n := len(msgs)
	if msgs[n-2].Topic != DeltaTopic(f.dev) || len(msgs[n-2].Payload) != 0 || msgs[n-1].Topic != AcceptedTopic(f.dev) {
		t.Fatalf("last messages: %s %q, %s", msgs[n-2].Topic, msgs[n-2].Payload, msgs[n-1].Topic)
	}
	if p := payloadOf(t, msgs[n-1]); p["version"] != 3.0 || p["client_token"] != "t2" {
		t.Fatalf("accepted %s", msgs[n-1].Payload)
	}
	// Outbox ids rise in commit order and Delivered removes them.
	for i := 1; i < n; i++ {
		if msgs[i].ID <= msgs[i-1].ID {
			t.Fatalf("outbox out of order: %v", msgs)
		}
	}
	if err := f.st.Delivered(ctx, []int64{msgs[0].ID}); err != nil || len(f.outbox(t)) != n-1 {
		t.Fatalf("delivered: %v", err)
	}
}

// Concurrent writers with the same If-Match: exactly one wins.
func TestShadowConcurrentPatch(t *testing.T) {
	f := newFixture(t)
	ctx := testenv.Context(t, time.Minute)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = f.st.PatchDesired(ctx, f.dev, 0, []byte(`{"w":`+string(rune('0'+i))+`}`))
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrConflict):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	sh, _ := f.st.Get(ctx, f.dev)
	if ok != 1 || sh.Version != 1 {
		t.Fatalf("%d writers succeeded, version %d; want exactly one, version 1", ok, sh.Version)
	}
}

// Concurrent writes to a shadow that already has a row (the conditional
// UPDATE path): of the writers with the same If-Match exactly one
// succeeds and only its messages are in the outbox; writers with
// AnyVersion all succeed, one version each, while reports land in
// between, and every change's messages carry its own version in
// version order.
func TestShadowConcurrentWritesOnAnExistingRow(t *testing.T) {
	f := newFixture(t)
	ctx := testenv.Context(t, time.Minute)
	if _, err := f.st.PatchDesired(ctx, f.dev, 0, []byte(`{"start":1}`)); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = f.st.PatchDesired(ctx, f.dev, 1, []byte(`{"w":`+string(rune('0'+i))+`}`))
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		var ce *ConflictError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &ce):
			if ce.Current != 2 {
				t.Fatalf("conflict names version %d, want the current 2: %v", ce.Current, err)
			}
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if sh, _ := f.st.Get(ctx, f.dev); ok != 1 || sh.Version != 2 {
		t.Fatalf("%d writers succeeded, version %d; want exactly one, version 2", ok, sh.Version)
	}
	if got := f.outbox(t); len(got) != 2 || got[0].Version != 1 || got[1].Version != 2 {
		t.Fatalf("outbox %+v; want the two deltas of versions 1 and 2", got)
	}

	// AnyVersion writers and reports at the same time: nobody is refused.
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = f.st.PatchDesired(ctx, f.dev, AnyVersion, []byte(`{"any`+string(rune('0'+i))+`":true}`))
		})
	}
	wg.Go(func() {
		for i := range 3 {
			f.report(t, `{"state":{"reported":{"r":`+string(rune('0'+i))+`}}}`)
		}
	})
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("an AnyVersion writer failed: %v", err)
		}
	}
	sh, _ := f.st.Get(ctx, f.dev)
	if sh.Version != 2+writers+3 || len(sh.State.Desired) != 2+writers {
		t.Fatalf("version %d, desired %v; want version %d and every writer's key", sh.Version, sh.State.Desired, 2+writers+3)
	}
	last := int64(0)
	for _, m := range f.outbox(t) {
		if m.Version < last {
			t.Fatalf("outbox goes back from version %d to %d (%s)", last, m.Version, m.Topic)
		}
		last = m.Version
	}
	if last != sh.Version {
		t.Fatalf("the last outbox message carries version %d, the shadow is at %d", last, sh.Version)
	}
}

// The outbox trigger notifies the relay at every commit, except on a
// connection that set iotpipe.outbox_notify = 'after_commit' (iotpipe
// api, which wakes the relay itself after the commit: PostgreSQL
// serialises notifying commits). Notices arrive in commit order, so a
// marker sent after the change is the first notice exactly when the
// change sent none.
func TestShadowOutboxNotifyUnlessAfterCommit(t *testing.T) {
	f := newFixture(t)
	ctx := testenv.Context(t, time.Minute)
	listen, err := f.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Release()
	if _, err := listen.Exec(ctx, "LISTEN iotpipe_outbox"); err != nil {
		t.Fatal(err)
	}
	firstNotice := func(afterCommit bool, version int64) string {
		t.Helper()
		pc, err := pgxpool.ParseConfig(f.pool.Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		if afterCommit {
			pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
				_, err := c.Exec(ctx, "SET iotpipe.outbox_notify = 'after_commit'")
				return err
			}
		}
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		st := New(pool, f.schema, f.st.Limits())
		called := 0
		st.OnOutbox(func() { called++ })
		if _, err := st.PatchDesired(ctx, f.dev, version, []byte(`{"n":`+string(rune('0'+version))+`}`)); err != nil {
			t.Fatal(err)
		}
		if called != 1 {
			t.Fatalf("OnOutbox called %d times for one change, want 1", called)
		}
		if _, err := f.pool.Exec(ctx, "SELECT pg_notify('iotpipe_outbox', 'marker')"); err != nil {
			t.Fatal(err)
		}
		n, err := listen.Conn().WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload != "marker" { // drain up to the marker
			for {
				m, err := listen.Conn().WaitForNotification(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if m.Payload == "marker" {
					break
				}
			}
		}
		return n.Payload
	}
	if got := firstNotice(false, 0); got != f.schema {
		t.Fatalf("first notice %q after a change, want the trigger's (%q)", got, f.schema)
	}
	if got := firstNotice(true, 1); got != "marker" {
		t.Fatalf("first notice %q after a change with outbox_notify=after_commit, want none before the marker", got)
	}
}
