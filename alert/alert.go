package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/ingestclock"
	"github.com/iotpipe/iotpipe/internal/service"
)

// Stage is the alert stage: it evaluates the rules over telemetry.raw and
// telemetry.metrics and writes FIRING and RESOLVED events to
// telemetry.alerts, exactly once (see the package comment). It is the
// Logic of the shared exactly-once runtime (internal/eos).
type Stage struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	rt  *eos.Runtime[*task]
	res int64 // NoDataResolution in ns

	// latest is the last rule set loaded (the watcher stores it); applied
	// the one the engines use (Run's goroutine only).
	latest  atomic.Pointer[ruleSet]
	applied *ruleSet
	capped  bool
	// rulesReady is set once rules were loaded and the runtime is ready.
	loaded atomic.Bool
}

// New validates cfg (the errors are *config.FieldError) and returns a
// stage; nothing is contacted before Run. deps.Registry receives the
// metrics (nil: a private registry).
func New(cfg Config, deps service.Deps) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alert config: %w", err)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	st := &Stage{cfg: cfg, log: deps.Logger(), m: newMetrics(reg), res: int64(cfg.NoDataResolution), applied: &ruleSet{}}
	rt, err := eos.New[*task](cfg.runtimeConfig(), st, st.log, reg)
	if err != nil {
		return nil, err
	}
	st.rt = rt
	return st, nil
}

// Checks are the readiness checks: "alert" passes once the rules are
// loaded, the group joined and the assigned partitions' state restored;
// "progress" fails while the stage is stalled.
func (st *Stage) Checks() map[string]service.Check {
	return map[string]service.Check{"alert": func(context.Context) error {
		if !st.loaded.Load() {
			return errors.New("alert rules not loaded yet")
		}
		if !st.rt.Ready() {
			return errors.New("not consuming yet (joining the group or restoring state)")
		}
		return nil
	}, "progress": func(context.Context) error { return st.rt.ProgressCheck() }}
}

// Run loads the rules, then consumes until ctx is cancelled and stops in
// two phases (commit the transaction in progress within ShutdownTimeout,
// leave the group); it returns nil after a clean stop. The rules are read
// before any input: a stage that cannot read them does not consume (an
// error naming DSN). Later read failures keep the last rule set.
func (st *Stage) Run(ctx context.Context) error {
	store, err := rules.Open(ctx, st.cfg.DSN, st.cfg.Schema)
	if err != nil && ctx.Err() != nil {
		return nil // stopped while starting
	}
	if errors.Is(err, rules.ErrNoSchema) {
		return &config.FieldError{Field: "Schema", Err: err}
	}
	if err != nil {
		return &config.FieldError{Field: "DSN", Err: err}
	}
	defer store.Close()
	l := &loader{store: store, dsn: st.cfg.DSN, schema: st.cfg.Schema, log: st.log, logged: map[string]int64{}}
	conn, err := pgx.Connect(ctx, st.cfg.DSN)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return &config.FieldError{Field: "DSN", Err: fmt.Errorf("alert rules: connect: %w", err)}
	}
	rs, err := l.load(ctx, conn)
	conn.Close(context.Background())
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return &config.FieldError{Field: "DSN", Err: fmt.Errorf("alert rules: %w", err)}
	}
	st.setRules(rs)
	st.loaded.Store(true)

	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.watch(wctx, st.cfg.RulesRefresh, st.setRules, func(error) { st.m.reloads.WithLabelValues("error").Inc() })
	}()
	defer wg.Wait() // after stopWatch (defers run last-in first-out)
	defer stopWatch()
	return st.rt.Run(ctx)
}

// setRules publishes a loaded rule set to the run loop.
func (st *Stage) setRules(rs *ruleSet) {
	st.m.reloads.WithLabelValues("ok").Inc()
	st.m.rulesLoaded.Set(float64(len(rs.rules)))
	st.m.rulesInvalid.Set(float64(rs.invalid))
	st.latest.Store(rs)
}

// applyRules gives the engines the latest rule set when it changed (Run's
// goroutine).
func (st *Stage) applyRules() {
	rs := st.latest.Load()
	if rs == nil || rs == st.applied {
		return
	}
	st.applied = rs
	for _, t := range st.rt.Tasks() {
		t.eng.SetRules(rs.rules)
	}
	st.log.Info("alert rules in use", "rules", len(rs.rules), "invalid", rs.invalid, "grouped_devices", len(rs.groups))
}

// groupsOf is the engines' group lookup: the applied set's.
func (st *Stage) groupsOf(device string) []string { return st.applied.groupsOf(device) }

// Start (eos.Logic) logs the start.
func (st *Stage) Start(context.Context, *kadm.Client) {
	st.log.Info("alert stage started", "group", st.cfg.Group, "instance", st.cfg.InstanceID,
		"transactional_id", st.cfg.TransactionalID(), "inputs", st.cfg.inputs(), "alerts", st.cfg.Topics.Alerts,
		"changelog", st.cfg.Topics.Changelog, "rules", len(st.latest.Load().rules))
}

// NewTask (eos.Logic) returns the empty state of an input partition.
func (st *Stage) NewTask(p eos.Partition) (*task, error) {
	st.applyRules()
	t := &task{part: p, raw: p.Topic == st.cfg.Topics.Raw, prefix: prefixMetrics, clock: ingestclock.New(st.cfg.HeartbeatExpiry)}
	if t.raw {
		t.prefix = prefixRaw
	}
	t.eng = eval.New(st.applied.rules, st.groupsOf)
	return t, nil
}

// Restore (eos.Logic) applies one changelog record.
func (st *Stage) Restore(t *task, key, value []byte) error { return t.restore(key, value) }

// Restored (eos.Logic) drops the restored series of rules no longer in
// use (deleted or disabled while the partition was elsewhere); their
// tombstones go out with the next commit.
func (st *Stage) Restored(t *task, _ time.Time) error {
	t.eng.SetRules(st.applied.rules)
	return nil
}

// Process (eos.Logic) evaluates one partition's polled records and
// produces the events, in input order.
func (st *Stage) Process(t *task, recs []*kgo.Record, _ time.Time, out func(*kgo.Record)) {
	st.applyRules()
	others := st.seriesHeld() - t.eng.Series()
	t.eng.SetMaxSeries(max(st.cfg.MaxSeries-others, 0))
	before := t.eng.Stats()
	for _, rec := range recs {
		st.handle(t, rec)
	}
	st.emit(t, out)
	st.stats(t, before)
}

// EndTurn (eos.Logic) writes the changelog records of every series
// changed in the turn and updates the state gauges.
func (st *Stage) EndTurn(_ time.Time, out func(*kgo.Record)) {
	st.applyRules() // rules removed: their series' tombstones
	for _, t := range st.rt.Tasks() {
		st.changes(t, out)
	}
	n := st.seriesHeld()
	st.m.series.Set(float64(n))
	if capped := n >= st.cfg.MaxSeries; capped != st.capped {
		st.capped = capped
		if capped {
			st.m.capReached.Set(1)
			st.log.Warn("state cap reached: values of new series are not evaluated until series are dropped", "series", n, "max_series", st.cfg.MaxSeries)
		} else {
			st.m.capReached.Set(0)
			st.log.Info("state back under the cap", "series", n, "max_series", st.cfg.MaxSeries)
		}
	}
}

func (st *Stage) seriesHeld() int {
	n := 0
	for _, t := range st.rt.Tasks() {
		n += t.eng.Series()
	}
	return n
}
