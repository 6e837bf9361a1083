// Package eos is the exactly-once runtime of the stateful stages (the
// processor, the alert stage): a consume → process → produce → commit
// loop in which every turn is one Kafka transaction.
//
// # Contract
//
//   - One transaction per turn holds the turn's outputs (whatever the stage
//     produces), its state changes (records of a compacted changelog topic)
//     and its input offsets (kgo.GroupTransactSession, read_committed
//     input; End commits every polled offset). A turn lasts at most
//     Config.CommitInterval.
//   - State lives in tasks, one per assigned input partition. A task's
//     state is written to, and restored from, the changelog partition
//     numbered like its input partition: on assignment (and before any of
//     its input is processed) the runtime reads that changelog partition
//     from its start to the end it had when the restore began,
//     read_committed, and gives every record to [Logic.Restore]. With
//     several input topics, the tasks of partition p of each share
//     changelog partition p: each is given every record of it and must
//     tell its own apart by key. The changelog needs as many partitions as
//     the largest input topic.
//   - When a transaction does not commit, every task is dropped and
//     restored from the changelog again, so state always matches the
//     committed offsets. When ending a transaction fails (its coordinator
//     unreachable beyond the client's retries), whether it committed is
//     unknown: the runtime throws the Kafka session away and starts a new
//     one, as a restarted process would (the new producer, same
//     transactional id, fences the old one; the group hands the
//     partitions back with the offsets the broker committed; the state is
//     restored), counted in <ns>_<sub>_session_restarts_total; it fails
//     after 10 such sessions in a row without a commit. A security failure
//     (denied ACL, wrong password, untrusted certificate) stops at once.
//   - Soft stop (ctx ends): the transaction in progress is committed
//     within ShutdownTimeout, then the instance leaves the group (static
//     members do not leave by themselves), and Run returns nil.
//   - Progress: consumer lag and stall (internal/kafkax Progress) under the
//     stage's metric namespace; Ready reports whether the group was joined
//     and the assigned partitions restored.
//
// The stage plugs its own work in as a [Logic]; every Logic method is
// called from Run's goroutine, one at a time, so a Logic needs no locks
// for its tasks.
package eos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
)

// Config configures a Runtime. Every field is the stage's own setting;
// the stage fills it from its Config.
type Config struct {
	Kafka kafkax.Config
	// Group is the consumer group; InstanceID this process's static
	// member id in it; TransactionalID its transactional id (unique per
	// instance, stable across its restarts).
	Group, InstanceID, TransactionalID string
	// Inputs are the topics consumed; Changelog the compacted state topic.
	Inputs    []string
	Changelog string
	// CommitInterval is the longest a transaction stays open.
	CommitInterval time.Duration
	// MaxPollRecords bounds the records taken per poll.
	MaxPollRecords int
	// TransactionTimeout, SessionTimeout: broker-side transaction and
	// group session timeouts.
	TransactionTimeout, SessionTimeout time.Duration
	// RestoreTimeout bounds one restore; ShutdownTimeout the soft stop.
	RestoreTimeout, ShutdownTimeout time.Duration
	// StallAfter: report a stall when input waits this long with no
	// commit (0: never).
	StallAfter time.Duration
	// DebugCommitDelay, for crash tests only, sleeps inside every commit
	// after the outputs are flushed and before offsets and transaction are
	// committed, after logging "transaction commit started".
	DebugCommitDelay time.Duration
	// Namespace and Subsystem name the runtime's metrics:
	// <ns>_<sub>_transactions_total and so on.
	Namespace, Subsystem string
}

// Validate reports the fields a stage left wrong (a stage validates its
// own settings first, so these are programming errors mostly).
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.InstanceID == "", "InstanceID", "required")
	p.Check(c.TransactionalID == "", "TransactionalID", "required")
	p.Check(len(c.Inputs) == 0, "Inputs", "at least one input topic")
	p.Check(c.Changelog == "", "Changelog", "must not be empty")
	p.Check(c.CommitInterval <= 0, "CommitInterval", "must be positive")
	p.Check(c.MaxPollRecords < 1, "MaxPollRecords", "must be at least 1")
	p.Check(c.RestoreTimeout <= 0, "RestoreTimeout", "must be positive")
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(c.Subsystem == "", "Subsystem", "must not be empty")
	return p.Err()
}

// CheckSettings adds to p what is out of range among the runtime settings
// a stage exposes to its users, under the same field names (every
// exactly-once stage names them alike in its own Config): the stage's
// Validate calls it with the Config it will give New.
func (c *Config) CheckSettings(p *config.Problems) {
	if c.CommitInterval < time.Millisecond || c.CommitInterval > time.Minute {
		p.Add("CommitInterval", "%s: must be between 1ms and 1m", c.CommitInterval)
	}
	p.Check(c.MaxPollRecords < 1, "MaxPollRecords", "must be at least 1")
	p.Check(c.TransactionTimeout < time.Second, "TransactionTimeout", "must be at least 1s")
	p.Check(c.SessionTimeout < time.Second, "SessionTimeout", "must be at least 1s")
	p.Check(c.RestoreTimeout <= 0, "RestoreTimeout", "must be positive")
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(c.StallAfter < 0, "StallAfter", "must not be negative (0: never report a stall)")
	p.Check(c.DebugCommitDelay < 0, "DebugCommitDelay", "must not be negative")
}

// Partition names one input partition: the unit of state.
type Partition struct {
	Topic     string
	Partition int32
}

// Logic is a stage's work inside the runtime. T is its per-partition task.
type Logic[T any] interface {
	// Start is called once, in the first Kafka session, after the
	// transactional producer has fenced its predecessors.
	Start(ctx context.Context, adm *kadm.Client)
	// NewTask returns the empty state of an input partition, about to be
	// restored.
	NewTask(p Partition) (T, error)
	// Restore applies one record of the task's changelog partition, in
	// log order (value nil: a tombstone). An error fails the restore.
	Restore(t T, key, value []byte) error
	// Restored ends a task's restore at wall-clock time now.
	Restored(t T, now time.Time) error
	// Process handles the records polled from one partition at wall-clock
	// time now, giving what it produces to out (inside the transaction).
	Process(t T, recs []*kgo.Record, now time.Time, out func(*kgo.Record))
	// EndTurn runs before each commit: emit what is due at now and write
	// the changelog records of every state change since the last call
	// (topic Config.Changelog, Partition the task's input partition).
	EndTurn(now time.Time, out func(*kgo.Record))
}

// Runtime runs a Logic exactly once. Create it with New.
type Runtime[T any] struct {
	cfg      Config
	logic    Logic[T]
	log      *slog.Logger
	m        *Metrics
	progress *kafkax.Progress
	now      func() time.Time

	mu       sync.Mutex
	assigned map[Partition]bool

	tasks           map[Partition]T // restored tasks (Run's goroutine only)
	started         bool
	produceFailures int
	commits         int
	ready           atomic.Bool
}

// Metrics are the runtime's collectors, under the stage's namespace.
type Metrics struct {
	Txns           *prometheus.CounterVec // by result: committed, aborted
	TxnSeconds     prometheus.Histogram
	RestoreSeconds prometheus.Histogram
	RestoredRecs   prometheus.Counter
	Partitions     prometheus.Gauge
	Sessions       prometheus.Counter
}

func newMetrics(ns, sub string, reg prometheus.Registerer) *Metrics {
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: ns, Subsystem: sub, Name: name, Help: help}
	}
	m := &Metrics{
		Txns:           prometheus.NewCounterVec(prometheus.CounterOpts(f("transactions_total", "Kafka transactions ended, by result (committed, aborted).")), []string{"result"}),
		TxnSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "transaction_end_seconds", Help: "Time to end (flush and commit) a transaction.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		RestoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "restore_seconds", Help: "Time to restore assigned partitions' state from the changelog.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		RestoredRecs:   prometheus.NewCounter(prometheus.CounterOpts(f("restored_records_total", "Changelog records read while restoring state."))),
		Partitions:     prometheus.NewGauge(prometheus.GaugeOpts(f("partitions_assigned", "Input partitions this process owns."))),
		Sessions:       prometheus.NewCounter(prometheus.CounterOpts(f("session_restarts_total", "Kafka sessions thrown away after a transaction whose end failed (outcome unknown) or a failed state restore; the next session resumes from the committed offsets with the state restored, as a restarted process does."))),
	}
	reg.MustRegister(m.Txns, m.TxnSeconds, m.RestoreSeconds, m.RestoredRecs, m.Partitions, m.Sessions)
	for _, r := range []string{"committed", "aborted"} {
		m.Txns.WithLabelValues(r)
	}
	return m
}

// New returns a runtime for logic; its metrics (and the consumer lag and
// stall of kafkax.Progress) go to reg (nil: a private registry).
func New[T any](cfg Config, logic Logic[T], log *slog.Logger, reg prometheus.Registerer) (*Runtime[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("exactly-once runtime: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime[T]{cfg: cfg, logic: logic, log: log, m: newMetrics(cfg.Namespace, cfg.Subsystem, reg),
		progress: kafkax.NewProgress(cfg.Namespace, cfg.Subsystem, reg, cfg.StallAfter), now: time.Now,
		assigned: map[Partition]bool{}, tasks: map[Partition]T{}}, nil
}

// Metrics returns the runtime's collectors (for tests and benchmarks).
func (r *Runtime[T]) Metrics() *Metrics { return r.m }

// Tasks returns the restored tasks by input partition. Only for use from
// Logic's methods (Run's goroutine); the map must not be changed.
func (r *Runtime[T]) Tasks() map[Partition]T { return r.tasks }

// Ready reports whether the group has been joined and the assigned
// partitions' state restored (cleared while a session restarts).
func (r *Runtime[T]) Ready() bool { return r.ready.Load() }

// ProgressCheck fails while the runtime is stalled: input waits and no
// transaction committed for StallAfter.
func (r *Runtime[T]) ProgressCheck() error { return r.progress.Check() }

// Commits returns the number of transactions committed so far.
func (r *Runtime[T]) Commits() int { return r.commits }

const (
	// maxProduceFailures: Run fails after this many transactions in a row
	// aborted because a record could not be produced.
	maxProduceFailures = 5
	// maxSessionRestarts bounds the Kafka sessions thrown away in a row (no
	// commit in between); with the waits between them (1 s doubling up to
	// 30 s), about 3.5 minutes of a cluster that cannot end a transaction.
	maxSessionRestarts = 10
)

// changelogPartitioner sends changelog records to the partition they
// name (that of their input partition) and everything else by key hash,
// as Kafka's default partitioner does.
type changelogPartitioner struct {
	changelog string
	byKey     kgo.Partitioner
}

func (pt changelogPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == pt.changelog {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return pt.byKey.ForTopic(topic)
}

// txnLinger is how long outputs wait to fill a batch inside a transaction.
const txnLinger = 100 * time.Millisecond

func (r *Runtime[T]) sessionOpts() []kgo.Opt {
	c := &r.cfg
	return c.Kafka.Opts(
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Inputs...),
		kgo.InstanceID(c.InstanceID),
		kgo.SessionTimeout(c.SessionTimeout),
		kgo.TransactionalID(c.TransactionalID),
		kgo.TransactionTimeout(c.TransactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(changelogPartitioner{changelog: c.Changelog, byKey: kgo.StickyKeyPartitioner(nil)}),
		kgo.MaxBufferedRecords(1<<20),
		// Outputs are visible only once the transaction commits, and the
		// commit flushes whatever waits: lingering inside a transaction
		// costs no latency, and it makes a few large produce requests per
		// transaction instead of one every 10 ms (franz-go's default),
		// less CPU per record here and in the broker (#19).
		kgo.ProducerLinger(txnLinger),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, topic := range c.Inputs {
				for _, part := range m[topic] {
					r.assigned[Partition{topic, part}] = true
				}
				if len(m[topic]) > 0 {
					r.log.Info("partitions assigned", "topic", topic, "partitions", m[topic])
				}
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.unassign(m, "revoked")
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.unassign(m, "lost")
		}),
	)
}

func (r *Runtime[T]) unassign(m map[string][]int32, why string) {
	r.progress.Forget(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, topic := range r.cfg.Inputs {
		for _, part := range m[topic] {
			delete(r.assigned, Partition{topic, part})
		}
		if len(m[topic]) > 0 {
			r.log.Info("partitions "+why, "topic", topic, "partitions", m[topic])
		}
	}
}

// Run consumes until ctx is cancelled, then stops in two phases: it stops
// taking input, commits the transaction in progress (soft, bounded by
// ShutdownTimeout) and leaves the group; it returns nil after a clean stop.
// It returns an error when Kafka fails in a way that retrying within the
// process cannot fix (the transaction then aborts, and a restart resumes
// from the last commit).
//
// Run loops over Kafka sessions: when ending a transaction fails (outcome
// unknown) or a restore fails, the whole session is thrown away and a new
// one started, exactly as a restarted process would: the new producer
// (same transactional id) fences the old one and has the open transaction
// finished or aborted, the group hands the partitions back with the
// offsets the broker committed, and the state is restored from the
// committed changelog. After maxSessionRestarts sessions in a row without
// a commit, Run fails.
func (r *Runtime[T]) Run(ctx context.Context) error {
	defer r.leaveGroup()
	for restarts := 0; ; {
		commits := r.commits
		err := r.session(ctx)
		var se *sessionError
		if err == nil || !errors.As(err, &se) {
			return err
		}
		if kafkax.IsSecurity(se.err) {
			// A denied ACL, a wrong password, an untrusted certificate: a
			// new session cannot cure it. Stop, naming the setting.
			return se.err
		}
		if ctx.Err() != nil {
			return se.err // the shutdown commit failed: its outcome is unknown
		}
		if r.commits > commits {
			restarts = 0
		}
		restarts++
		if restarts > maxSessionRestarts {
			return fmt.Errorf("%d Kafka sessions in a row ended without a commit, last: %w", restarts, se.err)
		}
		wait := min(time.Duration(1<<(restarts-1))*time.Second, 30*time.Second)
		r.m.Sessions.Inc()
		r.log.Warn("starting a new Kafka session: it resumes from the committed offsets with the state restored from the changelog",
			"err", se.err, "attempt", restarts, "of", maxSessionRestarts, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// leaveGroup is the soft stop's last step: leave the group so that the
// partitions move to the other instances now rather than after the
// session timeout (static members do not leave on close by themselves).
func (r *Runtime[T]) leaveGroup() {
	lctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	lcl, err := kgo.NewClient(r.cfg.Kafka.Opts()...)
	if err == nil {
		if _, err := kadm.NewClient(lcl).LeaveGroup(lctx, kadm.LeaveGroup(r.cfg.Group).InstanceIDs(r.cfg.InstanceID).Reason("shutdown")); err != nil {
			r.log.Warn("leave group", "err", err)
		}
		lcl.Close()
	}
	r.log.Info("left the group", "group", r.cfg.Group, "instance", r.cfg.InstanceID)
}

// sessionError is an error after which the Kafka session is thrown away
// and a new one started (see Run).
type sessionError struct{ err error }

func (e *sessionError) Error() string { return e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

// session runs turns on one Kafka session (client, group membership,
// transactional producer) until ctx ends or an error.
func (r *Runtime[T]) session(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(r.sessionOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer func() {
		sess.Close()
		// What this session was given and restored is not the next
		// session's: it gets its partitions (and their state) anew.
		r.mu.Lock()
		clear(r.assigned)
		r.mu.Unlock()
		r.dropAll("kafka session closed")
		r.ready.Store(false)
	}()
	adm := kadm.NewClient(sess.Client())
	// Initialise the transactional producer before restoring anything: it
	// fences the predecessor (an earlier session or process with this
	// transactional id) and has its open transaction aborted, or finished
	// if it was committing. The changelog (read read_committed) and the
	// committed offsets are then final at once instead of held until the
	// transaction timeout.
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return &sessionError{fmt.Errorf("initialise the transactional producer (transactional id %s): %w", r.cfg.TransactionalID, err)}
	}
	if !r.started {
		r.started = true
		r.logic.Start(ctx, adm)
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := r.syncAssignment(ctx, adm); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &sessionError{err}
		}
		if err := sess.Begin(); err != nil {
			return &sessionError{fmt.Errorf("begin transaction (transactional id %s, group %s): %w", r.cfg.TransactionalID, r.cfg.Group, err)}
		}
		stop, err := r.turn(ctx, sess, adm)
		if err != nil {
			return err
		}
		if stop {
			if ctx.Err() == nil {
				return errors.New("kafka client closed unexpectedly")
			}
			return nil
		}
	}
}

// turn runs one transaction. It returns stop=true after the shutdown
// commit.
func (r *Runtime[T]) turn(ctx context.Context, sess *kgo.GroupTransactSession, adm *kadm.Client) (stop bool, err error) {
	var produceErr error
	var perrMu sync.Mutex
	// One promise for every record of the turn (not a closure per record:
	// out may run once per input record).
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			perrMu.Lock()
			if produceErr == nil {
				produceErr = err
			}
			perrMu.Unlock()
		}
	}
	out := func(rec *kgo.Record) { sess.Produce(context.Background(), rec, promise) }
	deadline := r.now().Add(r.cfg.CommitInterval)
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := sess.PollRecords(pctx, r.cfg.MaxPollRecords)
		cancel()
		if fs.IsClientClosed() {
			return true, nil
		}
		var fatal error
		fs.EachError(func(t string, part int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			r.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
			if errors.Is(err, kgo.ErrClientClosed) {
				fatal = err
			} else if kafkax.IsSecurity(err) {
				fatal = kafkax.FetchError(r.cfg.Group, t, err)
			}
		})
		if fatal != nil {
			if kafkax.IsSecurity(fatal) {
				return false, &sessionError{fatal}
			}
			return false, fatal
		}
		r.progress.Fetched(fs)
		now := r.now()
		var rerr error
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if rerr != nil || len(fp.Records) == 0 {
				return
			}
			t, err := r.task(ctx, adm, Partition{fp.Topic, fp.Partition})
			if err != nil {
				rerr = err
				return
			}
			r.logic.Process(t, fp.Records, now, out)
		})
		if rerr != nil {
			// The records polled are in no transaction yet: abort, and the
			// session rewinds to the committed offsets.
			if _, aerr := r.endTxn(sess, kgo.TryAbort, ctx); aerr != nil {
				rerr = errors.Join(rerr, fmt.Errorf("abort the transaction: %w", aerr))
			}
			if ctx.Err() != nil {
				return true, nil
			}
			return false, &sessionError{rerr}
		}
		r.ready.Store(true)
		if ctx.Err() != nil || !r.now().Before(deadline) {
			break
		}
	}
	r.logic.EndTurn(r.now(), out)
	want := kgo.TryCommit
	if err := sess.Client().Flush(ctx); err != nil && ctx.Err() == nil {
		return false, fmt.Errorf("flush: %w", err)
	}
	perrMu.Lock()
	perr := produceErr
	perrMu.Unlock()
	if perr != nil {
		r.produceFailures++
		r.log.Error("produce failed; aborting the transaction", "err", perr, "consecutive", r.produceFailures)
		want = kgo.TryAbort
		if kafkax.IsSecurity(perr) {
			// Not allowed to write an output: no retry can cure it.
			if _, aerr := r.endTxn(sess, want, ctx); aerr != nil {
				perr = errors.Join(perr, fmt.Errorf("abort the transaction: %w", aerr))
			}
			return false, &sessionError{fmt.Errorf("produce: %w", perr)}
		}
	} else {
		r.produceFailures = 0
	}
	committed, err := r.endTxn(sess, want, ctx)
	if err != nil {
		return false, &sessionError{err}
	}
	if committed {
		r.commits++
		r.progress.CommittedAll()
	} else {
		r.dropAll("transaction aborted")
	}
	if r.produceFailures >= maxProduceFailures {
		return false, fmt.Errorf("%d transactions in a row failed to produce, last: %w", r.produceFailures, perr)
	}
	return ctx.Err() != nil, nil
}

// endTxn ends the transaction; after a shutdown request it still commits,
// within ShutdownTimeout (the hard deadline).
func (r *Runtime[T]) endTxn(sess *kgo.GroupTransactSession, want kgo.TransactionEndTry, ctx context.Context) (bool, error) {
	ectx := context.Background()
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ectx, cancel = context.WithTimeout(ectx, r.cfg.ShutdownTimeout)
		defer cancel()
	}
	if d := r.cfg.DebugCommitDelay; d > 0 && want == kgo.TryCommit {
		ectx = kgo.PreTxnCommitFnContext(ectx, func(*kmsg.TxnOffsetCommitRequest) error {
			r.log.Info("transaction commit started")
			time.Sleep(d)
			return nil
		})
	}
	start := time.Now()
	committed, err := sess.End(ectx, want)
	r.m.TxnSeconds.Observe(time.Since(start).Seconds())
	if committed {
		r.m.Txns.WithLabelValues("committed").Inc()
	} else {
		r.m.Txns.WithLabelValues("aborted").Inc()
	}
	if err != nil {
		return false, fmt.Errorf("end transaction: %w", err)
	}
	return committed, nil
}

// dropAll forgets every partition's in-memory state; the partitions still
// assigned are restored from the changelog before they are used again.
func (r *Runtime[T]) dropAll(why string) {
	if len(r.tasks) > 0 {
		r.log.Info("dropping in-memory state; it will be restored from the changelog", "reason", why, "partitions", len(r.tasks))
	}
	clear(r.tasks)
}

// syncAssignment drops the state of partitions no longer assigned and
// restores the state of newly assigned ones (so that a stage can act on
// them, e.g. close windows, even when no new input comes).
func (r *Runtime[T]) syncAssignment(ctx context.Context, adm *kadm.Client) error {
	r.mu.Lock()
	var missing []Partition
	for p := range r.assigned {
		if _, ok := r.tasks[p]; !ok {
			missing = append(missing, p)
		}
	}
	for p := range r.tasks {
		if !r.assigned[p] {
			delete(r.tasks, p)
		}
	}
	n := len(r.assigned)
	r.mu.Unlock()
	r.m.Partitions.Set(float64(n))
	if len(missing) == 0 {
		return nil
	}
	return r.restore(ctx, adm, missing)
}

// task returns the task of an input partition, restoring its state first
// when needed.
func (r *Runtime[T]) task(ctx context.Context, adm *kadm.Client, p Partition) (T, error) {
	if t, ok := r.tasks[p]; ok {
		return t, nil
	}
	if err := r.restore(ctx, adm, []Partition{p}); err != nil {
		var zero T
		return zero, err
	}
	return r.tasks[p], nil
}

// restore rebuilds the tasks of parts from their changelog partitions: it
// reads each from its start to the end that the log had when the restore
// began, read_committed, so that only state written by committed
// transactions is applied. A transaction still open on the changelog (a
// predecessor's, being committed or aborted) holds the read back until it
// ends, as it holds the input offsets (franz-go always fetches stable
// offsets).
func (r *Runtime[T]) restore(ctx context.Context, adm *kadm.Client, parts []Partition) error {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, r.cfg.RestoreTimeout)
	defer cancel()
	topic := r.cfg.Changelog
	ends, err := adm.ListEndOffsets(rctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets of changelog %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(rctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list start offsets of changelog %s: %w", topic, err)
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].Partition != parts[j].Partition {
			return parts[i].Partition < parts[j].Partition
		}
		return parts[i].Topic < parts[j].Topic
	})
	tasks := map[Partition]T{}
	byCL := map[int32][]T{} // the tasks each changelog partition restores
	target := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	for _, p := range parts {
		t, err := r.logic.NewTask(p)
		if err != nil {
			return err
		}
		tasks[p] = t
		byCL[p.Partition] = append(byCL[p.Partition], t)
		e, ok := ends.Lookup(topic, p.Partition)
		if !ok {
			return fmt.Errorf("changelog %s has no partition %d: it needs as many partitions as %s", topic, p.Partition, p.Topic)
		}
		s, _ := starts.Lookup(topic, p.Partition)
		if e.Offset > s.Offset {
			target[p.Partition] = e.Offset
			offsets[p.Partition] = kgo.NewOffset().At(s.Offset)
		}
	}
	var n int64
	if len(target) > 0 {
		cl, err := kgo.NewClient(r.cfg.Kafka.Opts(
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.KeepControlRecords(),
			kgo.FetchMaxBytes(64<<20),
		)...)
		if err != nil {
			return fmt.Errorf("changelog client: %w", err)
		}
		defer cl.Close()
		for len(target) > 0 {
			fs := cl.PollFetches(rctx)
			if err := rctx.Err(); err != nil {
				return fmt.Errorf("restore partitions %v from %s: %w (open transaction on the changelog?)", parts, topic, err)
			}
			var ferr error
			fs.EachError(func(_ string, part int32, err error) { ferr = fmt.Errorf("partition %d: %w", part, err) })
			if ferr != nil {
				return fmt.Errorf("read changelog %s: %w", topic, ferr)
			}
			fs.EachRecord(func(rec *kgo.Record) {
				if ferr != nil {
					return
				}
				if !rec.Attrs.IsControl() {
					for _, t := range byCL[rec.Partition] {
						if err := r.logic.Restore(t, rec.Key, rec.Value); err != nil {
							ferr = fmt.Errorf("changelog %s partition %d offset %d: %w", topic, rec.Partition, rec.Offset, err)
							return
						}
					}
					n++
				}
				if end, ok := target[rec.Partition]; ok && rec.Offset >= end-1 {
					delete(target, rec.Partition)
				}
			})
			if ferr != nil {
				return ferr
			}
		}
	}
	now := r.now()
	for p, t := range tasks {
		if err := r.logic.Restored(t, now); err != nil {
			return fmt.Errorf("changelog %s partition %d: %w", topic, p.Partition, err)
		}
		r.tasks[p] = t
	}
	r.m.RestoredRecs.Add(float64(n))
	r.m.RestoreSeconds.Observe(time.Since(start).Seconds())
	r.log.Info("restored state", "partitions", describe(parts, len(r.cfg.Inputs) > 1), "records", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// describe lists partitions for a log line: their numbers alone when
// there is one input topic (as the processor always logged them).
func describe(parts []Partition, topics bool) any {
	if !topics {
		ns := make([]int32, len(parts))
		for i, p := range parts {
			ns[i] = p.Partition
		}
		return ns
	}
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = fmt.Sprintf("%s/%d", p.Topic, p.Partition)
	}
	return s
}
