package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// DefaultChangelogTopic is the default name of the compacted changelog
// topic (created by `iotpipe init` with as many partitions as the raw topic).
const DefaultChangelogTopic = "iotpipe.processor.changelog"

// Config configures a Processor. Start from DefaultConfig: a zero field
// means zero (or is refused by Validate), never a default.
type Config struct {
	// Kafka is how to reach the cluster.
	Kafka kafkax.Config
	// Group is the consumer group; processors in one group split the raw
	// topic's partitions. Default "iotpipe-processor".
	Group string
	// InstanceID identifies this process in the group (static membership)
	// and, prefixed, is its transactional id. It must be unique among the
	// running processors of a group and stable across restarts of the same
	// one: a restarted instance then takes its partitions back at once, and
	// fences its predecessor's producer, aborting a transaction the
	// predecessor left open. Required; default the host name.
	InstanceID string
	// Topics names the input, output and changelog topics (defaults from
	// package schemas and DefaultChangelogTopic), and the topic that gets a
	// copy of every accepted reading (schemas.TopicReadings).
	Topics Topics
	// Window configures the windows (see WindowConfig).
	Window WindowConfig
	// CommitInterval is the longest a transaction stays open: input read
	// within it is committed, with its outputs and state, at its end.
	// Default 500ms.
	CommitInterval time.Duration
	// MaxPollRecords bounds the records taken from the client per poll.
	// Default 10000.
	MaxPollRecords int
	// MaxKeys caps the open metric windows (device × metric × window) the
	// process holds, as a guard against running out of memory: after each
	// poll, while they are at the cap, the oldest open window is closed
	// early (emitted, state dropped); readings that arrive for it later are
	// late (DLQ, counted). The cap can be passed by one poll's worth of new
	// windows. Default 2,000,000.
	MaxKeys int
	// TransactionTimeout is the broker-side timeout of a transaction
	// (bounds how long a transaction of a vanished process blocks
	// read_committed readers). Default 30s.
	TransactionTimeout time.Duration
	// SessionTimeout is the group session timeout: how long a vanished
	// instance keeps its partitions. Default 20s.
	SessionTimeout time.Duration
	// RestoreTimeout bounds reading a partition's changelog on assignment.
	// Default 5m.
	RestoreTimeout time.Duration
	// ShutdownTimeout bounds the soft stop: ending the current transaction
	// and leaving the group. Default 15s.
	ShutdownTimeout time.Duration
	// StallAfter is how long input may wait on a partition with no
	// transaction committing progress on it before the processor reports a
	// stall (iotpipe_processor_stalled, readiness check "progress"). Zero
	// never reports one. Default 2m.
	StallAfter time.Duration
	// DebugCommitDelay, for crash tests only, sleeps inside every
	// transaction commit, after the outputs are flushed and before the
	// offsets and the transaction are committed, and logs
	// "transaction commit started" at its start. Zero disables it.
	DebugCommitDelay time.Duration
}

// Defaults of Config.
const (
	DefaultGroup              = "iotpipe-processor"
	DefaultCommitInterval     = 500 * time.Millisecond
	DefaultMaxPollRecords     = 10000
	DefaultMaxKeys            = 2_000_000
	DefaultTransactionTimeout = 30 * time.Second
	DefaultSessionTimeout     = 20 * time.Second
	DefaultRestoreTimeout     = 5 * time.Minute
	DefaultShutdownTimeout    = 15 * time.Second
)

// DefaultConfig returns every default of Config; InstanceID is the host
// name.
func DefaultConfig() Config {
	return Config{
		Kafka:      kafkax.DefaultConfig("iotpipe-processor"),
		Group:      DefaultGroup,
		InstanceID: kafkax.HostInstanceID(),
		Topics: Topics{Raw: schemas.TopicRaw, Metrics: schemas.TopicMetrics, DLQ: schemas.TopicDLQ,
			Changelog: DefaultChangelogTopic, Readings: schemas.TopicReadings},
		Window:             DefaultWindowConfig(),
		CommitInterval:     DefaultCommitInterval,
		MaxPollRecords:     DefaultMaxPollRecords,
		MaxKeys:            DefaultMaxKeys,
		TransactionTimeout: DefaultTransactionTimeout,
		SessionTimeout:     DefaultSessionTimeout,
		RestoreTimeout:     DefaultRestoreTimeout,
		ShutdownTimeout:    DefaultShutdownTimeout,
		StallAfter:         kafkax.DefaultStallAfter,
	}
}

// Validate reports every field out of range as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.InstanceID == "", "InstanceID", "required: a name unique to this processor and stable across its restarts")
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.Topics.Raw == "", "Topics.Raw", "must not be empty")
	p.Check(c.Topics.Metrics == "", "Topics.Metrics", "must not be empty")
	p.Check(c.Topics.DLQ == "", "Topics.DLQ", "must not be empty")
	p.Check(c.Topics.Changelog == "", "Topics.Changelog", "must not be empty")
	p.Check(c.Topics.Changelog != "" && (c.Topics.Changelog == c.Topics.Raw || c.Topics.Changelog == c.Topics.Metrics || c.Topics.Changelog == c.Topics.DLQ),
		"Topics.Changelog", "must be a topic of its own")
	p.Check(c.Topics.Readings == "", "Topics.Readings", "must not be empty (- writes no copies of accepted readings)")
	p.Check(c.Topics.Readings != "" && (c.Topics.Readings == c.Topics.Raw || c.Topics.Readings == c.Topics.Metrics ||
		c.Topics.Readings == c.Topics.DLQ || c.Topics.Readings == c.Topics.Changelog),
		"Topics.Readings", "must be a topic of its own")
	p.Nested("Window", c.Window.Validate())
	if c.CommitInterval < time.Millisecond || c.CommitInterval > time.Minute {
		p.Add("CommitInterval", "%s: must be between 1ms and 1m", c.CommitInterval)
	}
	p.Check(c.MaxPollRecords < 1, "MaxPollRecords", "must be at least 1")
	p.Check(c.MaxKeys < 1, "MaxKeys", "must be at least 1")
	p.Check(c.TransactionTimeout < time.Second, "TransactionTimeout", "must be at least 1s")
	p.Check(c.SessionTimeout < time.Second, "SessionTimeout", "must be at least 1s")
	p.Check(c.RestoreTimeout <= 0, "RestoreTimeout", "must be positive")
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(c.StallAfter < 0, "StallAfter", "must not be negative (0: never report a stall)")
	p.Check(c.DebugCommitDelay < 0, "DebugCommitDelay", "must not be negative")
	return p.Err()
}

// TransactionalID is the transactional id the processor uses.
func (c *Config) TransactionalID() string { return "iotpipe-processor." + c.Group + "." + c.InstanceID }

// Processor consumes telemetry.raw in a consumer group and writes window
// aggregates to telemetry.metrics, exactly once (see the package comment).
type Processor struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	now      func() time.Time
	progress *kafkax.Progress // lag and stall of the raw partitions

	mu       sync.Mutex
	assigned map[int32]bool // partitions of the raw topic the group gave us

	tasks  map[int32]*task // restored partitions (main loop only)
	capped bool            // open windows at MaxKeys (main loop only)
	// produceFailures counts consecutive transactions aborted because a
	// record could not be produced; at maxProduceFailures Run fails.
	produceFailures int
	// commits counts the transactions committed (main loop only).
	commits  int
	ready    atomic.Bool
	bytesKey float64
	// devRetention is how long a silent device's state is kept: the raw
	// topic's retention, read at start (main loop only).
	devRetention time.Duration
}

// New validates cfg (the errors are *config.FieldError) and returns a
// processor; nothing is contacted before Run. deps.Registry receives the
// metrics (nil: a private registry).
func New(cfg Config, deps service.Deps) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("processor config: %w", err)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Processor{cfg: cfg, log: deps.Logger(), m: newMetrics(reg), now: time.Now,
		progress: kafkax.NewProgress("iotpipe", "processor", reg, cfg.StallAfter),
		assigned: map[int32]bool{}, tasks: map[int32]*task{}, bytesKey: BytesPerKeyEstimate}, nil
}

// Checks are the readiness checks: "processor" passes once the group has
// been joined and the assigned partitions' state restored; "progress"
// fails while the processor is stalled (input waits and no transaction
// committed for StallAfter).
func (p *Processor) Checks() map[string]service.Check {
	return map[string]service.Check{"processor": func(context.Context) error {
		if !p.ready.Load() {
			return errors.New("not consuming yet (joining the group or restoring state)")
		}
		return nil
	}, "progress": func(context.Context) error { return p.progress.Check() }}
}

const maxProduceFailures = 5

// BytesPerKeyEstimate is the measured heap size of one open metric window
// with a minute of 1 Hz readings, two metrics per device (see
// BenchmarkStateBytesPerKey: 386 B; 732 B at 10 Hz), used for
// the state_bytes_estimate gauge.
const BytesPerKeyEstimate = 400

// Run consumes until ctx is cancelled, then stops in two phases: it stops
// taking input, commits the transaction in progress (soft, bounded by
// ShutdownTimeout) and leaves the group; it returns nil after a clean stop.
// It returns an error when Kafka fails in a way that retrying within the
// process cannot fix (the transaction then aborts, and a restart resumes
// from the last commit).
func (p *Processor) Run(ctx context.Context) error {
	return p.loop(ctx)
}

// partitioner sends changelog records to the partition they name (that of
// their input partition) and everything else by key hash, as Kafka's
// default partitioner does.
type partitioner struct {
	changelog string
	byKey     kgo.Partitioner
}

func (pt partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == pt.changelog {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return pt.byKey.ForTopic(topic)
}

func (p *Processor) sessionOpts() []kgo.Opt {
	c := &p.cfg
	return c.Kafka.Opts(
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topics.Raw),
		kgo.InstanceID(c.InstanceID),
		kgo.SessionTimeout(c.SessionTimeout),
		kgo.TransactionalID(c.TransactionalID()),
		kgo.TransactionTimeout(c.TransactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(partitioner{changelog: c.Topics.Changelog, byKey: kgo.StickyKeyPartitioner(nil)}),
		kgo.MaxBufferedRecords(1<<20),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, part := range m[c.Topics.Raw] {
				p.assigned[part] = true
			}
			p.log.Info("partitions assigned", "topic", c.Topics.Raw, "partitions", m[c.Topics.Raw])
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.unassign(m, "revoked")
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.unassign(m, "lost")
		}),
	)
}

func (p *Processor) unassign(m map[string][]int32, why string) {
	p.progress.Forget(m)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range m[p.cfg.Topics.Raw] {
		delete(p.assigned, part)
	}
	if len(m[p.cfg.Topics.Raw]) > 0 {
		p.log.Info("partitions "+why, "topic", p.cfg.Topics.Raw, "partitions", m[p.cfg.Topics.Raw])
	}
}

// loop is the consume → aggregate → produce → commit cycle. Each turn is
// one Kafka transaction holding: the metrics, accepted-readings and DLQ
// records produced, the
// changelog records of every state change, and the input offsets (End
// commits every polled offset). When a transaction does not commit, the
// in-memory state is thrown away and rebuilt from the changelog, which
// then matches the committed offsets again.
//
// When ending a transaction fails (its coordinator stayed unreachable
// longer than the client's retries, e.g. while a broker dies and its
// transaction-state partitions move), whether it committed is unknown:
// the client's idea of the committed offsets may be behind what the
// broker holds. loop then throws the whole Kafka session away and starts
// a new one, exactly as a restarted process would: the new producer
// (same transactional id) fences the old one and has the open
// transaction finished or aborted, the group hands the partitions back
// with the offsets the broker committed, and the state is restored from
// the committed changelog. After maxSessionRestarts sessions in a row
// without a commit, Run fails.
func (p *Processor) loop(ctx context.Context) error {
	defer func() {
		// Soft stop, step 2: leave the group so that the partitions move
		// to the other instances now rather than after the session
		// timeout (static members do not leave on close by themselves).
		lctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
		defer cancel()
		lcl, err := kgo.NewClient(p.cfg.Kafka.Opts()...)
		if err == nil {
			if _, err := kadm.NewClient(lcl).LeaveGroup(lctx, kadm.LeaveGroup(p.cfg.Group).InstanceIDs(p.cfg.InstanceID).Reason("shutdown")); err != nil {
				p.log.Warn("leave group", "err", err)
			}
			lcl.Close()
		}
		p.log.Info("left the group", "group", p.cfg.Group, "instance", p.cfg.InstanceID)
	}()
	for restarts := 0; ; {
		commits := p.commits
		err := p.session(ctx, restarts == 0 && commits == 0)
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
		if p.commits > commits {
			restarts = 0
		}
		restarts++
		if restarts > maxSessionRestarts {
			return fmt.Errorf("%d Kafka sessions in a row ended without a commit, last: %w", restarts, se.err)
		}
		wait := min(time.Duration(1<<(restarts-1))*time.Second, 30*time.Second)
		p.m.sessions.Inc()
		p.log.Warn("starting a new Kafka session: it resumes from the committed offsets with the state restored from the changelog",
			"err", se.err, "attempt", restarts, "of", maxSessionRestarts, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// maxSessionRestarts bounds the Kafka sessions thrown away in a row (no
// commit in between); with the waits between them (1 s doubling up to
// 30 s), about 3.5 minutes of a cluster that cannot end a transaction.
const maxSessionRestarts = 10

// sessionError is an error after which the Kafka session is thrown away
// and a new one started (see loop).
type sessionError struct{ err error }

func (e *sessionError) Error() string { return e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

// session runs turns on one Kafka session (client, group membership,
// transactional producer) until ctx ends or an error.
func (p *Processor) session(ctx context.Context, first bool) error {
	sess, err := kgo.NewGroupTransactSession(p.sessionOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer func() {
		sess.Close()
		// What this session was given and restored is not the next
		// session's: it gets its partitions (and their state) anew.
		p.mu.Lock()
		clear(p.assigned)
		p.mu.Unlock()
		p.dropAll("kafka session closed")
		p.ready.Store(false)
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
		return &sessionError{fmt.Errorf("initialise the transactional producer (transactional id %s): %w", p.cfg.TransactionalID(), err)}
	}
	if first {
		p.devRetention = p.rawRetention(ctx, adm)
		p.log.Info("processor started", "group", p.cfg.Group, "instance", p.cfg.InstanceID,
			"transactional_id", p.cfg.TransactionalID(), "input", p.cfg.Topics.Raw, "readings", p.cfg.Topics.Readings, "window", p.cfg.Window.Size,
			"lateness", p.cfg.Window.Lateness, "idle_timeout", p.cfg.Window.IdleTimeout, "max_future_skew", p.cfg.Window.MaxFutureSkew,
			"device_retention", p.devRetention)
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := p.syncAssignment(ctx, adm); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &sessionError{err}
		}
		if err := sess.Begin(); err != nil {
			return &sessionError{fmt.Errorf("begin transaction (transactional id %s, group %s): %w", p.cfg.TransactionalID(), p.cfg.Group, err)}
		}
		stop, err := p.turn(ctx, sess, adm)
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
func (p *Processor) turn(ctx context.Context, sess *kgo.GroupTransactSession, adm *kadm.Client) (stop bool, err error) {
	var produceErr error
	var perrMu sync.Mutex
	// One promise for every record of the turn (not a closure per record:
	// with a copy of every accepted reading, out runs once per reading).
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			perrMu.Lock()
			if produceErr == nil {
				produceErr = err
			}
			perrMu.Unlock()
		}
	}
	out := func(r *kgo.Record) { sess.Produce(context.Background(), r, promise) }
	deadline := p.now().Add(p.cfg.CommitInterval)
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := sess.PollRecords(pctx, p.cfg.MaxPollRecords)
		cancel()
		if fs.IsClientClosed() {
			return true, nil
		}
		var fatal error
		fs.EachError(func(t string, part int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			p.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
			if errors.Is(err, kgo.ErrClientClosed) {
				fatal = err
			}
		})
		if fatal != nil {
			return false, fatal
		}
		p.progress.Fetched(fs)
		now := p.now()
		var rerr error
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if rerr != nil || len(fp.Records) == 0 {
				return
			}
			t, err := p.task(ctx, adm, fp.Partition)
			if err != nil {
				rerr = err
				return
			}
			for _, r := range fp.Records {
				t.handle(r, now, out)
			}
			p.enforceCap(now, out)
		})
		if rerr != nil {
			// The records polled are in no transaction yet: abort, and the
			// session rewinds to the committed offsets.
			if _, aerr := p.endTxn(sess, kgo.TryAbort, ctx); aerr != nil {
				rerr = errors.Join(rerr, fmt.Errorf("abort the transaction: %w", aerr))
			}
			if ctx.Err() != nil {
				return true, nil
			}
			return false, &sessionError{rerr}
		}
		p.ready.Store(true)
		if ctx.Err() != nil || !p.now().Before(deadline) {
			break
		}
	}
	// Emit what the watermarks allow, then write the state changes: the
	// changelog always describes the state after these emissions.
	now := p.now()
	for _, t := range p.tasks {
		t.advance(now, out)
	}
	for _, t := range p.tasks {
		t.changes(out)
	}
	p.observeState(now)
	want := kgo.TryCommit
	if err := sess.Client().Flush(ctx); err != nil && ctx.Err() == nil {
		return false, fmt.Errorf("flush: %w", err)
	}
	perrMu.Lock()
	perr := produceErr
	perrMu.Unlock()
	if perr != nil {
		p.produceFailures++
		p.log.Error("produce failed; aborting the transaction", "err", perr, "consecutive", p.produceFailures)
		want = kgo.TryAbort
	} else {
		p.produceFailures = 0
	}
	committed, err := p.endTxn(sess, want, ctx)
	if err != nil {
		return false, &sessionError{err}
	}
	if committed {
		p.commits++
		p.progress.CommittedAll()
	} else {
		p.dropAll("transaction aborted")
	}
	if p.produceFailures >= maxProduceFailures {
		return false, fmt.Errorf("%d transactions in a row failed to produce, last: %w", p.produceFailures, perr)
	}
	return ctx.Err() != nil, nil
}

// endTxn ends the transaction; after a shutdown request it still commits,
// within ShutdownTimeout (the hard deadline).
func (p *Processor) endTxn(sess *kgo.GroupTransactSession, want kgo.TransactionEndTry, ctx context.Context) (bool, error) {
	ectx := context.Background()
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ectx, cancel = context.WithTimeout(ectx, p.cfg.ShutdownTimeout)
		defer cancel()
	}
	if d := p.cfg.DebugCommitDelay; d > 0 && want == kgo.TryCommit {
		ectx = kgo.PreTxnCommitFnContext(ectx, func(*kmsg.TxnOffsetCommitRequest) error {
			p.log.Info("transaction commit started")
			time.Sleep(d)
			return nil
		})
	}
	start := time.Now()
	committed, err := sess.End(ectx, want)
	p.m.txnSeconds.Observe(time.Since(start).Seconds())
	if committed {
		p.m.txns.WithLabelValues("committed").Inc()
	} else {
		p.m.txns.WithLabelValues("aborted").Inc()
	}
	if err != nil {
		return false, fmt.Errorf("end transaction: %w", err)
	}
	return committed, nil
}

// dropAll forgets every partition's in-memory state; the partitions still
// assigned are restored from the changelog before they are used again.
func (p *Processor) dropAll(why string) {
	if len(p.tasks) > 0 {
		p.log.Info("dropping in-memory state; it will be restored from the changelog", "reason", why, "partitions", len(p.tasks))
	}
	clear(p.tasks)
}

// syncAssignment drops the state of partitions no longer assigned and
// restores the state of newly assigned ones (so that their windows close
// even when no new input comes).
func (p *Processor) syncAssignment(ctx context.Context, adm *kadm.Client) error {
	p.mu.Lock()
	var missing []int32
	for part := range p.assigned {
		if p.tasks[part] == nil {
			missing = append(missing, part)
		}
	}
	for part := range p.tasks {
		if !p.assigned[part] {
			delete(p.tasks, part)
		}
	}
	n := len(p.assigned)
	p.mu.Unlock()
	p.m.partitions.Set(float64(n))
	if len(missing) == 0 {
		return nil
	}
	return p.restore(ctx, adm, missing)
}

// task returns the task of an input partition, restoring its state first
// when needed.
func (p *Processor) task(ctx context.Context, adm *kadm.Client, part int32) (*task, error) {
	if t := p.tasks[part]; t != nil {
		return t, nil
	}
	if err := p.restore(ctx, adm, []int32{part}); err != nil {
		return nil, err
	}
	return p.tasks[part], nil
}

// restore rebuilds the engines of parts from their changelog partitions:
// it reads each from its start to the end that the log had when the
// restore began, read_committed, so that only state written by committed
// transactions is applied. A transaction still open on the changelog (a
// predecessor's, being committed or aborted) holds the read back until it
// ends, as it holds the input offsets (franz-go always fetches stable offsets).
func (p *Processor) restore(ctx context.Context, adm *kadm.Client, parts []int32) error {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, p.cfg.RestoreTimeout)
	defer cancel()
	topic := p.cfg.Topics.Changelog
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
	engines := map[int32]*Engine{}
	target := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	for _, part := range parts {
		eng, err := NewEngine(p.cfg.Window)
		if err != nil {
			return err
		}
		eng.SetDeviceRetention(p.devRetention)
		engines[part] = eng
		e, ok := ends.Lookup(topic, part)
		if !ok {
			return fmt.Errorf("changelog %s has no partition %d: it needs as many partitions as %s", topic, part, p.cfg.Topics.Raw)
		}
		s, _ := starts.Lookup(topic, part)
		if e.Offset > s.Offset {
			target[part] = e.Offset
			offsets[part] = kgo.NewOffset().At(s.Offset)
		}
	}
	var n int64
	if len(target) > 0 {
		cl, err := kgo.NewClient(p.cfg.Kafka.Opts(
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
			fs.EachRecord(func(r *kgo.Record) {
				if ferr != nil {
					return
				}
				if !r.Attrs.IsControl() {
					if err := engines[r.Partition].Restore(r.Key, r.Value); err != nil {
						ferr = fmt.Errorf("changelog %s partition %d offset %d: %w", topic, r.Partition, r.Offset, err)
						return
					}
					n++
				}
				if end, ok := target[r.Partition]; ok && r.Offset >= end-1 {
					delete(target, r.Partition)
				}
			})
			if ferr != nil {
				return ferr
			}
		}
	}
	now := p.now()
	for part, eng := range engines {
		if err := eng.FinishRestore(now); err != nil {
			return fmt.Errorf("changelog %s partition %d: %w", topic, part, err)
		}
		p.tasks[part] = newTask(part, eng, p.cfg.Topics, p.m)
	}
	p.m.restoredRecs.Add(float64(n))
	p.m.restoreSeconds.Observe(time.Since(start).Seconds())
	p.log.Info("restored state", "partitions", parts, "records", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// rawRetention returns the raw topic's retention.ms, how long a device
// may stay offline and still have its buffered readings counted: the
// processor keeps a silent device's state that long. When it cannot be
// read (or is infinite), DefaultDeviceRetention.
func (p *Processor) rawRetention(ctx context.Context, adm *kadm.Client) time.Duration {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(rctx, p.cfg.Topics.Raw)
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(p.cfg.Topics.Raw, nil); err == nil {
			err = rc.Err
			for _, c := range rc.Configs {
				if c.Key == "retention.ms" && c.Value != nil {
					if ms, perr := strconv.ParseInt(*c.Value, 10, 64); perr == nil && ms > 0 {
						return time.Duration(ms) * time.Millisecond
					}
				}
			}
		}
	}
	if err != nil {
		p.log.Warn("could not read the raw topic's retention; keeping silent devices' state for the default", "topic", p.cfg.Topics.Raw, "err", err, "default", DefaultDeviceRetention)
	}
	return DefaultDeviceRetention
}

func (p *Processor) openKeys() int {
	n := 0
	for _, t := range p.tasks {
		n += t.eng.OpenKeys()
	}
	return n
}

func (p *Processor) overCap() bool { return p.openKeys() >= p.cfg.MaxKeys }

// enforceCap keeps the open windows under MaxKeys: while they are at the
// cap it closes the oldest open window of the partition holding it (the
// watermark jumps to that window's end plus the lateness), emitting it now
// and dropping its state. Readings that arrive for it later are late (DLQ,
// counted). It logs once per episode and counts every window closed early.
func (p *Processor) enforceCap(now time.Time, out func(*kgo.Record)) {
	if !p.overCap() {
		return
	}
	for _, t := range p.tasks { // first let windows close in their own time
		t.advance(now, out)
	}
	for p.overCap() {
		var victim *task
		var oldest int64
		for _, t := range p.tasks {
			if st, ok := t.eng.oldestOpen(); ok && (victim == nil || st < oldest) {
				victim, oldest = t, st
			}
		}
		if victim == nil || !victim.eng.CloseOldest() {
			return
		}
		if !p.capped {
			p.capped = true
			p.m.capReached.Set(1)
			p.log.Warn("state cap reached: closing the oldest windows early; readings still to come for them will be late",
				"open_windows", p.openKeys(), "max_keys", p.cfg.MaxKeys)
		}
		p.m.capEvents.Inc()
		victim.advance(now, out)
	}
	if p.capped {
		p.capped = false
		p.m.capReached.Set(0)
		p.log.Info("state back under the cap", "open_windows", p.openKeys(), "max_keys", p.cfg.MaxKeys)
	}
}

func (p *Processor) observeState(now time.Time) {
	keys, dws, devs := 0, 0, 0
	var oldest time.Time
	for _, t := range p.tasks {
		keys += t.eng.OpenKeys()
		dws += t.eng.DeviceWindows()
		devs += t.eng.Devices()
		if wm, ok := t.eng.Watermark(); ok && (oldest.IsZero() || wm.Before(oldest)) {
			oldest = wm
		}
	}
	p.m.windowsOpen.Set(float64(keys))
	p.m.deviceWindows.Set(float64(dws))
	p.m.devices.Set(float64(devs))
	p.m.stateBytes.Set(float64(keys) * p.bytesKey)
	if !oldest.IsZero() {
		p.m.watermarkLag.Set(now.Sub(oldest).Seconds())
	}
}
