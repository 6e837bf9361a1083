package lake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/semaphore"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// Sink consumes telemetry.readings and telemetry.metrics and writes them as
// Parquet files to the lake, exactly once (see the package comment).
type Sink struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	store objectStore
	cl    *kgo.Client
	adm   *kadm.Client
	opts  FileOptions
	mem   *semaphore.Weighted // bytes of sealed, uncommitted batches
	// progress exports the consumer lag and reports a stall.
	progress *kafkax.Progress

	// runCtx is cancelled at the hard deadline; uploads and rebalance
	// callbacks (which may run as soon as the client exists) use it.
	runCtx   context.Context
	hardStop context.CancelFunc

	mu    sync.Mutex
	parts map[partKey]*partState

	fpMu  sync.Mutex
	fpHit map[string]int

	rawDec  schemas.RawDecoder
	metDec  schemas.MetricsDecoder
	reading schemas.Reading
	metRec  schemas.MetricsRecord
}

type partKey struct {
	topic     string
	partition int32
}

// partState is one assigned partition: its open batch and its uploader.
type partState struct {
	key    partKey
	cur    *batch
	replay *intent
	up     chan *sealedBatch
	cancel context.CancelFunc
	done   chan struct{}
	idle   chan struct{} // receives after each batch is committed
	queued int           // batches sent to up and not yet done (under Sink.mu)
}

// sealedBatch is a batch whose files are closed, ready to upload.
type sealedBatch struct {
	topic       string
	partition   int32
	epoch       int32
	start, next int64
	objs        []sealedObject
	replayKeys  []string
	dlq         []*schemas.DeadLetter
	size        int64
	records     int
}

// New validates cfg (the errors are *config.FieldError) and builds the
// sink's Kafka and S3 clients. deps.Registry receives the sink's metrics
// (may be nil). The Kafka client joins the consumer group as soon as it
// exists (franz-go), so partitions can be assigned, and recovered from S3,
// before Run is called.
func New(cfg Config, deps service.Deps) (*Sink, error) {
	return newSink(cfg, deps, nil)
}

// newSink is New with the object store given (nil: the S3 server of
// cfg.S3); unit tests pass an in-memory one. The store must be in place
// before the Kafka client exists: the group may assign partitions (and
// onAssigned read the store) before New returns.
func newSink(cfg Config, deps service.Deps, store objectStore) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lake sink config: %w", err)
	}
	cfg.Prefix = cfg.keyPrefix()
	log, reg := deps.Logger(), deps.Registry
	if store == nil {
		mc, err := objstore.New(cfg.S3)
		if err != nil {
			return nil, fmt.Errorf("lake sink S3 client: %w", err)
		}
		store = &minioStore{cl: mc, bucket: cfg.S3.Bucket, partSize: uint64(cfg.PartSize)}
	}
	runCtx, hardStop := context.WithCancel(context.Background())
	s := &Sink{
		runCtx: runCtx, hardStop: hardStop,
		cfg:      cfg,
		log:      log,
		m:        newMetrics(reg),
		store:    store,
		opts:     FileOptions{RowGroupRows: cfg.RowGroupRows, ZstdLevel: cfg.ZstdLevel},
		mem:      semaphore.NewWeighted(int64(cfg.MaxBuffered)),
		parts:    map[partKey]*partState{},
		fpHit:    map[string]int{},
		progress: kafkax.NewProgress("iotpipe", "lake", reg, lakeStallAfter(cfg)),
	}
	var topics []string
	for _, t := range []string{cfg.RawTopic, cfg.MetricsTopic} {
		if t != "-" {
			topics = append(topics, t)
		}
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Offset fetches wait for pending transactional commits: franz-go
		// always asks for stable offsets now (RequireStableFetchOffsets
		// is a deprecated no-op).
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.DefaultProduceTopic(cfg.DLQTopic),
		kgo.ProducerLinger(0),
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	cl, err := kgo.NewClient(cfg.Kafka.Opts(opts...)...)
	if err != nil {
		hardStop()
		return nil, fmt.Errorf("lake sink kafka client: %w", err)
	}
	s.cl = cl
	s.adm = kadm.NewClient(cl)
	return s, nil
}

// Checks are the readiness checks: kafka (CheckKafka), s3 (CheckS3) and
// progress (fails while the sink is stalled: input waits and no batch was
// committed for StallAfter).
func (s *Sink) Checks() map[string]service.Check {
	return map[string]service.Check{"kafka": s.CheckKafka, "s3": s.CheckS3,
		"progress": func(context.Context) error { return s.progress.Check() }}
}

// CheckKafka is a readiness check: a broker answers.
func (s *Sink) CheckKafka(ctx context.Context) error {
	_, err := kafkax.Ping(ctx, s.adm)
	return err
}

// CheckS3 is a readiness check: the lake bucket answers.
func (s *Sink) CheckS3(ctx context.Context) error { return s.store.Ping(ctx) }

// Run consumes until ctx is cancelled, then shuts down cleanly: it stops
// fetching, seals every open batch, uploads and commits them within
// Config.ShutdownTimeout, and leaves the group. It returns nil on a clean
// cancel and an error when the sink cannot go on (for example the DLQ
// topic refuses records).
func (s *Sink) Run(ctx context.Context) error {
	runCtx, hardStop := s.runCtx, s.hardStop
	defer hardStop()

	// The hard deadline counts from the stop signal.
	stopTimer := context.AfterFunc(ctx, func() {
		time.AfterFunc(s.cfg.ShutdownTimeout, func() {
			if runCtx.Err() == nil {
				s.log.Warn("shutdown deadline passed: abandoning uploads (their records stay uncommitted and are read again)")
			}
			hardStop()
		})
	})
	defer stopTimer()
	s.log.Info("lake sink starting", "group", s.cfg.Group, "raw_topic", s.cfg.RawTopic, "metrics_topic", s.cfg.MetricsTopic,
		"bucket", s.cfg.S3.Bucket, "prefix", s.cfg.Prefix, "max_rows", s.cfg.MaxRows, "max_bytes", s.cfg.MaxBytes, "max_age", s.cfg.MaxAge)
	err := s.consume(ctx)

	// Soft stop: seal what is open, let the uploaders drain, then leave.
	if err != nil {
		hardStop() // a fatal error: do not wait for anything
	}
	s.mu.Lock()
	for _, ps := range s.parts {
		if err := s.sealLocked(runCtx, ps, "shutdown"); err != nil {
			break // hard stop: leave the rest uncommitted
		}
	}
	all := make([]*partState, 0, len(s.parts))
	for k, ps := range s.parts {
		all = append(all, ps)
		close(ps.up)
		delete(s.parts, k)
	}
	s.mu.Unlock()
	for _, ps := range all {
		<-ps.done
	}
	s.cl.CloseAllowingRebalance()
	if err == nil && runCtx.Err() == nil {
		s.log.Info("lake sink stopped cleanly")
	}
	return err
}

// checkS3 stops the sink at start, naming the setting, when the object
// store can never be used as configured: its certificate does not verify
// (S3.CAFile, S3.Endpoint) or it refuses the key access to the bucket
// (S3.AccessKey). An unreachable store is not an error here: the uploads
// wait it out.
func (s *Sink) checkS3(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.store.Ping(pctx)
	cancel()
	if err == nil {
		return nil
	}
	var fe *config.FieldError
	if errors.As(s.cfg.S3.Explain(err), &fe) {
		return &config.FieldError{Field: "S3." + fe.Field, Err: fe.Err}
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch") {
		return &config.FieldError{Field: "S3.AccessKey", Err: fmt.Errorf("the object store refuses this key access to bucket %s (%s; the key must own the bucket: iotpipe init --s3-bucket-owner): %w", s.cfg.S3.Bucket, resp.Code, err)}
	}
	s.log.Warn("object store not reachable yet; uploads will retry", "err", err)
	return nil
}

func (s *Sink) consume(ctx context.Context) error {
	if err := s.checkS3(ctx); err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, s.pollWait())
		fetches := s.cl.PollRecords(pctx, 10_000)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		var denied error
		fetches.EachError(func(t string, p int32, err error) {
			if kafkax.IsSecurity(err) && denied == nil {
				denied = kafkax.FetchError(s.cfg.Group, t, err)
			} else if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		if denied != nil { // retrying does not cure it: stop, naming the setting
			return denied
		}
		s.progress.Fetched(fetches)
		now := time.Now()
		s.mu.Lock()
		var err error
		fetches.EachRecord(func(r *kgo.Record) {
			if err == nil {
				err = s.add(ctx, r, now)
			}
		})
		if err == nil {
			err = s.sealExpiredLocked(ctx, now)
		}
		s.mu.Unlock()
		s.cl.AllowRebalance()
		if errors.Is(err, errStopping) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// pollWait is how long a poll may wait for records before the next open
// batch reaches MaxAge.
func (s *Sink) pollWait() time.Duration {
	wait := time.Second
	if q := s.cfg.MaxAge / 4; q < wait {
		wait = q
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, ps := range s.parts {
		if ps.cur != nil && ps.cur.replayEnd == 0 {
			if d := ps.cur.opened.Add(s.cfg.MaxAge).Sub(now); d < wait {
				wait = d
			}
		}
	}
	return max(wait, 5*time.Millisecond)
}

func (s *Sink) sealExpiredLocked(ctx context.Context, now time.Time) error {
	for _, ps := range s.parts {
		if ps.cur != nil && ps.cur.replayEnd == 0 && now.Sub(ps.cur.opened) >= s.cfg.MaxAge {
			if err := s.sealLocked(ctx, ps, "age"); err != nil {
				return err
			}
		}
	}
	return nil
}

// add appends one record to its partition's open batch.
func (s *Sink) add(ctx context.Context, r *kgo.Record, now time.Time) error {
	k := partKey{r.Topic, r.Partition}
	ps := s.parts[k]
	if ps == nil {
		// Not (or no longer) ours: only possible while stopping. Never
		// consume a partition without the recovery of onAssigned.
		return nil
	}
	if ps.replay != nil && r.Offset >= ps.replay.End {
		s.log.Warn("intent is behind the consumed offsets; not replaying it", "topic", r.Topic, "partition", r.Partition,
			"start", ps.replay.Start, "end", ps.replay.End, "offset", r.Offset)
		ps.replay = nil
	}
	if ps.cur != nil && ps.cur.replayEnd > 0 && r.Offset >= ps.cur.replayEnd {
		if err := s.sealLocked(ctx, ps, "replay"); err != nil {
			return err
		}
	}
	if ps.cur == nil {
		start := r.Offset
		if ps.replay != nil {
			start = ps.replay.Start
		}
		ps.cur = newBatch(r.Topic, r.Partition, start, now, s.opts)
		if ps.replay != nil {
			ps.cur.replayEnd = ps.replay.End
			ps.cur.replayKeys = ps.replay.Keys
			ps.replay = nil
		}
	}
	b := ps.cur
	s.m.records.WithLabelValues(r.Topic).Inc()
	open := len(b.files)
	if err := s.decode(b, r); err != nil {
		return err
	}
	if len(b.files) > open {
		s.m.openFiles.Add(float64(len(b.files) - open))
	}
	b.records++
	b.next = r.Offset + 1
	b.epoch = r.LeaderEpoch
	switch {
	case b.replayEnd > 0:
		if b.next >= b.replayEnd {
			return s.sealLocked(ctx, ps, "replay")
		}
	case b.rows >= s.cfg.MaxRows:
		return s.sealLocked(ctx, ps, "rows")
	case b.size() >= s.cfg.MaxBytes:
		return s.sealLocked(ctx, ps, "bytes")
	}
	return nil
}

func (s *Sink) decode(b *batch, r *kgo.Record) error {
	var derr error
	switch r.Topic {
	case s.cfg.RawTopic:
		if schemas.IsHeartbeat(r.Headers) {
			return nil // a bridge's heartbeat (when the raw topic is stored): not a reading
		}
		if derr = s.rawDec.Decode(r.Value, &s.reading); derr == nil {
			f, err := b.file(Readings, s.reading.EventTime)
			if err != nil {
				return err
			}
			f.b.appendReading(&s.reading, tagsJSON(s.reading.Tags), r.Partition, r.Offset)
			b.rows += len(s.reading.Measurements)
			return f.flushIfFull()
		}
	case s.cfg.MetricsTopic:
		if derr = s.metDec.Decode(r.Value, &s.metRec); derr == nil {
			var f *File
			var err error
			switch s.metRec.Kind {
			case schemas.KindMetric:
				if f, err = b.file(Metrics, s.metRec.Metric.WindowStart); err != nil {
					return err
				}
				f.b.appendMetric(&s.metRec.Metric, r.Partition, r.Offset)
			case schemas.KindActivity:
				if f, err = b.file(Activity, s.metRec.Activity.WindowStart); err != nil {
					return err
				}
				f.b.appendActivity(&s.metRec.Activity, r.Partition, r.Offset)
			default:
				derr = &schemas.RejectError{Reason: schemas.ReasonInvalidRecord, Detail: "unknown kind " + string(s.metRec.Kind)}
			}
			if derr == nil {
				b.rows++
				return f.flushIfFull()
			}
		}
	default:
		derr = &schemas.RejectError{Reason: schemas.ReasonInvalidRecord, Detail: "unexpected topic " + r.Topic}
	}
	reason, ok := schemas.ReasonOf(derr)
	if !ok {
		reason = schemas.ReasonInvalidRecord
	}
	b.dlq = append(b.dlq, &schemas.DeadLetter{
		Value: r.Value, Key: r.Key, Reason: reason, Error: derr.Error(), Stage: schemas.StageSinkLake,
		SourceTopic: r.Topic, SourcePartition: r.Partition, SourceOffset: r.Offset,
		Time: time.Now().UTC().Truncate(time.Microsecond),
	})
	s.m.dlq.WithLabelValues(string(reason)).Inc()
	return nil
}

// sealLocked closes the partition's open batch and queues it for upload.
// It blocks while sealed batches hold more than MaxBuffered bytes: this is
// how an S3 outage stops consumption with bounded memory.
func (s *Sink) sealLocked(ctx context.Context, ps *partState, trigger string) error {
	b := ps.cur
	if b == nil {
		return nil
	}
	ps.cur = nil
	s.m.openFiles.Sub(float64(len(b.files)))
	s.m.batches.WithLabelValues(trigger).Inc()
	objs, err := b.seal(s.cfg.Prefix)
	if err != nil { // encoding failed: a bug, not bad input
		return fmt.Errorf("seal batch %s/%d [%d,%d): %w", b.topic, b.partition, b.start, b.next, err)
	}
	sb := &sealedBatch{topic: b.topic, partition: b.partition, epoch: b.epoch, start: b.start, next: b.next,
		objs: objs, dlq: b.dlq, records: b.records}
	if b.replayEnd > 0 {
		if b.next != b.replayEnd {
			s.log.Warn("replayed batch ends elsewhere than its intent", "topic", b.topic, "partition", b.partition,
				"start", b.start, "end", b.next, "intent_end", b.replayEnd)
		}
		sb.replayKeys = b.replayKeys
	}
	for _, o := range objs {
		sb.size += int64(len(o.data))
	}
	need := min(max(sb.size, minBatchCharge), int64(s.cfg.MaxBuffered))
	if !s.mem.TryAcquire(need) {
		s.log.Info("upload backlog full: consumption waits for uploads", "buffered_limit", s.cfg.MaxBuffered)
		s.mu.Unlock()
		err := s.mem.Acquire(ctx, need)
		s.mu.Lock()
		if err != nil {
			// Stopping: the batch stays uncommitted, and so does everything
			// after it, since the caller stops consuming.
			return errStopping
		}
		if s.parts[ps.key] != ps { // revoked meanwhile: the new owner reads it again
			s.mem.Release(need)
			return errStopping
		}
	}
	sb.size = need
	s.m.buffered.Add(float64(need))
	ps.queued++
	ps.up <- sb // never blocks: cap(ps.up) batches of minBatchCharge fill MaxBuffered
	return nil
}

// lakeStallAfter is the stall time of the progress tracker: StallAfter
// beyond MaxAge, or never.
func lakeStallAfter(c Config) time.Duration {
	if c.StallAfter <= 0 {
		return 0
	}
	return c.MaxAge + c.StallAfter
}

// errStopping ends consumption when a sealed batch cannot be queued
// because the sink is stopping.
var errStopping = errors.New("lake sink stopping")

// minBatchCharge is the least a sealed batch counts against MaxBuffered,
// which bounds the number of queued batches.
const minBatchCharge = 64 << 10
