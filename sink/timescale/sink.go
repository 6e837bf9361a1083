package timescale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/internal/service"
)

// Sink consumes telemetry.readings, telemetry.metrics and telemetry.alerts
// and writes readings, device_metrics, device_activity and alert_events
// rows, exactly once (see the package documentation).
type Sink struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	st    *store
	admin *kgo.Client // for the Kafka readiness check
	now   func() time.Time
	// progress exports the consumer lag and reports a stall.
	progress *kafkax.Progress

	mu      sync.Mutex
	lastErr error // last failed database attempt, cleared on success
}

// New validates cfg (the errors are *config.FieldError) and prepares the
// sink. It connects to nothing: Run does. deps.Registry receives the
// sink's collectors (nil: none).
func New(cfg Config, deps service.Deps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("timescale sink config: %w", err)
	}
	log, reg := deps.Logger(), deps.Registry
	st, err := newStore(&cfg)
	if err != nil {
		return nil, err
	}
	admin, err := kgo.NewClient(cfg.Kafka.Opts()...)
	if err != nil {
		st.pool.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &Sink{cfg: cfg, log: log, m: newMetrics(reg), st: st, admin: admin, now: time.Now,
		progress: kafkax.NewProgress("iotpipe", "sink_timescale", reg, cfg.StallAfter)}, nil
}

// Checks are the readiness checks: postgres (CheckDB), kafka
// (CheckKafka) and progress (fails while the sink is stalled: input waits
// and no batch committed for StallAfter).
func (s *Sink) Checks() map[string]service.Check {
	return map[string]service.Check{"postgres": s.CheckDB, "kafka": s.CheckKafka,
		"progress": func(context.Context) error { return s.progress.Check() }}
}

// CheckDB is the readiness check of the database: it answers, and the last
// batch attempt did not fail.
func (s *Sink) CheckDB(ctx context.Context) error {
	if err := s.st.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("last write failed: %w", s.lastErr)
	}
	return nil
}

// CheckKafka is the readiness check of Kafka: a broker answers.
func (s *Sink) CheckKafka(ctx context.Context) error {
	_, err := kafkax.Ping(ctx, kadm.NewClient(s.admin))
	return err
}

func (s *Sink) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	if err == nil {
		s.m.dbUp.Set(1)
	} else {
		s.m.dbUp.Set(0)
	}
}

// Run consumes until ctx is cancelled, then drains: it writes the batch it
// holds within ShutdownTimeout (or rolls it back: nothing is lost, the records
// are read again on restart), leaves the group and returns nil. It returns
// an error only when the sink cannot work at all.
func (s *Sink) Run(ctx context.Context) error {
	defer s.st.pool.Close()
	defer s.admin.Close()

	// Wait for the database and the schema: no point joining the group
	// before rows can be written.
	if err := s.retry(ctx, "database", func() error { return settingProblem(s.st.ready(ctx, s.cfg.Schema, s.cfg.alerts())) }); err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			return err
		}
		return nil // cancelled while waiting
	}
	s.setErr(nil)

	topics := []string{s.cfg.TopicMetrics}
	if s.cfg.readings() {
		topics = append(topics, s.cfg.TopicRaw)
	}
	if s.cfg.alerts() {
		topics = append(topics, s.cfg.TopicAlerts)
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AdjustFetchOffsetsFn(s.seekStored),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.progress.Forget(m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.progress.Forget(m) }),
	}
	if s.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(s.cfg.InstanceID))
	}
	cl, err := kgo.NewClient(s.cfg.Kafka.Opts(opts...)...)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer cl.Close()
	s.log.Info("sink started", "group", s.cfg.Group, "topics", topics, "schema", s.cfg.Schema,
		"batch_rows", s.cfg.BatchRows, "batch_delay", s.cfg.BatchDelay)

	b := newBatch(s.rawTopic(), s.cfg.TopicMetrics, s.alertsTopic())
	var lastCommit time.Time
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if !b.empty() {
			pollCtx, cancel = context.WithDeadline(ctx, b.started.Add(s.cfg.BatchDelay))
		}
		max := s.cfg.BatchRows - b.rows
		if max < 1 {
			max = 1
		}
		fs := cl.PollRecords(pollCtx, max)
		cancel()
		if ctx.Err() != nil {
			break
		}
		if fs.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		var denied error
		fs.EachError(func(t string, p int32, err error) {
			if kafkax.IsSecurity(err) && denied == nil {
				denied = kafkax.FetchError(s.cfg.Group, t, err)
			} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.log.Warn("kafka fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		if denied != nil { // retrying does not cure it: stop, naming the setting
			cl.AllowRebalance() // BlockRebalanceOnPoll: Close waits for it
			return denied
		}
		now := s.now()
		s.progress.Fetched(fs)
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				s.m.records.WithLabelValues(p.Topic).Add(float64(n))
			}
			for _, r := range p.Records {
				b.add(r, now)
			}
		})
		if !b.empty() && (b.rows >= s.cfg.BatchRows || !now.Before(b.started.Add(s.cfg.BatchDelay))) {
			if err := s.flush(ctx, cl, b); err != nil {
				break // cancelled while retrying: drain below
			}
			if time.Since(lastCommit) > time.Second {
				// Informational only (lag monitoring): the sink resumes
				// from sink_offsets, never from these.
				cl.CommitOffsets(ctx, cl.UncommittedOffsets(), nil)
				lastCommit = time.Now()
			}
		}
		if b.empty() {
			cl.AllowRebalance()
		}
	}

	// Soft stop: write what we hold within the drain timeout.
	if !b.empty() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		if err := s.flush(dctx, cl, b); err != nil {
			s.log.Warn("drain: batch rolled back, its records will be read again", "records", len(b.srcs), "err", err)
		}
		cancel()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if b.empty() {
		_ = cl.CommitUncommittedOffsets(cctx)
	}
	cancel()
	cl.AllowRebalance()
	s.log.Info("sink stopped")
	return nil
}

func (s *Sink) alertsTopic() string {
	if s.cfg.alerts() {
		return s.cfg.TopicAlerts
	}
	return ""
}

func (s *Sink) rawTopic() string {
	if s.cfg.readings() {
		return s.cfg.TopicRaw
	}
	return ""
}

// flush writes b, retrying with backoff until it commits or ctx ends; it
// does not poll meanwhile, so Kafka fetching stops once the client's
// buffers are full. On success b is reset.
func (s *Sink) flush(ctx context.Context, cl *kgo.Client, b *batch) error {
	dlq := func(ctx context.Context, rej []rejection) error {
		recs := deadLetters(b, rej, s.cfg.TopicDLQ, s.now())
		return cl.ProduceSync(ctx, recs...).FirstErr()
	}
	var res writeResult
	err := s.retry(ctx, "database", func() error {
		start := time.Now()
		var err error
		res, err = s.st.write(ctx, b, dlq)
		if err == nil {
			s.m.commit.Observe(time.Since(start).Seconds())
		}
		return err
	})
	if err != nil {
		return err
	}
	s.setErr(nil)
	s.progress.CommittedAll() // the batch held everything polled so far
	s.m.rows.WithLabelValues(tableReadings).Add(float64(res.readings))
	s.m.rows.WithLabelValues(tableMetrics).Add(float64(res.metrics))
	s.m.rows.WithLabelValues(tableActivity).Add(float64(res.activity))
	s.m.rows.WithLabelValues(tableAlerts).Add(float64(res.alerts))
	s.m.alertRepeats.Add(float64(res.alertRepeats))
	s.m.batchRows.Observe(float64(res.readings + res.metrics + res.activity + res.alerts))
	s.m.skipped.Add(float64(res.skipped))
	for _, r := range res.rejected {
		s.m.rejected.WithLabelValues(string(r.reason)).Inc()
		src := b.srcs[r.src].rec
		s.log.Warn("record sent to the DLQ", "reason", r.reason, "err", r.err,
			"topic", src.Topic, "partition", src.Partition, "offset", src.Offset)
	}
	b.reset()
	return nil
}

// retry calls f until it succeeds, with jittered exponential backoff
// between RetryMin and RetryMax (internal/retry). It returns ctx's error
// when ctx ends first.
func (s *Sink) retry(ctx context.Context, what string, f func() error) error {
	return retry.Do(ctx, retry.New(s.cfg.RetryMin, s.cfg.RetryMax), f,
		func(attempt int, err error, wait time.Duration) {
			s.setErr(err)
			s.m.retries.WithLabelValues(cause(err)).Inc()
			s.log.Warn(what+" attempt failed, retrying", "attempt", attempt, "wait", wait, "err", err)
		})
}

func cause(err error) string {
	switch {
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, errDLQ):
		return "dlq"
	}
	return "database"
}

var errDLQ = errors.New("dlq")

// seekStored is the AdjustFetchOffsetsFn: on every assignment it replaces
// Kafka's committed offsets with the ones in sink_offsets, written in the
// same transactions as the rows; partitions the database has never seen
// start at the beginning. It retries while the database is down: the
// group waits (until the rebalance timeout) rather than consume from a
// wrong position.
func (s *Sink) seekStored(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	topics := make([]string, 0, len(offs))
	for t := range offs {
		topics = append(topics, t)
	}
	var stored map[tp]int64
	if err := s.retry(ctx, "read sink_offsets", func() (err error) {
		stored, err = s.st.storedOffsets(ctx, topics)
		return err
	}); err != nil {
		return nil, err
	}
	s.setErr(nil)
	var assigned, resumed int
	for t, ps := range offs {
		for p := range ps {
			assigned++
			if n, ok := stored[tp{t, p}]; ok {
				ps[p] = kgo.NewOffset().At(n).WithEpoch(-1)
				resumed++
			} else {
				ps[p] = kgo.NewOffset().AtStart()
			}
		}
	}
	s.log.Info("partitions assigned", "partitions", assigned, "resumed_from_sink_offsets", resumed, "from_start", assigned-resumed)
	return offs, nil
}
