package lake

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/iotpipe/iotpipe/internal/retry"
)

// startPart registers an assigned partition and starts its uploader.
// Called with s.mu held (or before any consumption of the partition).
func (s *Sink) startPart(k partKey, replay *intent) *partState {
	ctx, cancel := context.WithCancel(s.runCtx)
	ps := &partState{
		key:    k,
		replay: replay,
		up:     make(chan *sealedBatch, s.cfg.MaxBuffered/minBatchCharge+1),
		cancel: cancel,
		done:   make(chan struct{}),
		idle:   make(chan struct{}, 1),
	}
	s.parts[k] = ps
	go func() {
		defer close(ps.done)
		for sb := range ps.up {
			err := s.upload(ctx, sb)
			s.mem.Release(sb.size)
			s.m.buffered.Sub(float64(sb.size))
			s.mu.Lock()
			ps.queued--
			s.mu.Unlock()
			select {
			case ps.idle <- struct{}{}:
			default:
			}
			if err != nil {
				// Cancelled (revoke or hard stop): the batch and the ones
				// queued behind it stay uncommitted; drain to release memory.
				for sb := range ps.up {
					s.mem.Release(sb.size)
					s.m.buffered.Sub(float64(sb.size))
				}
				return
			}
		}
	}()
	return ps
}

// retry runs op until it succeeds or ctx ends, with jittered exponential
// backoff between RetryMin and RetryMax (internal/retry).
func (s *Sink) retry(ctx context.Context, opName string, op func(context.Context) error) error {
	return retry.Do(ctx, retry.New(s.cfg.RetryMin, s.cfg.RetryMax), func() error { return op(ctx) },
		func(_ int, err error, wait time.Duration) {
			s.m.retries.WithLabelValues(opName).Inc()
			s.log.Warn("retrying", "op", opName, "in", wait, "err", err)
		})
}

// upload makes one sealed batch durable and commits it:
//
//  1. dead letters of the batch are produced to the DLQ topic (acked);
//  2. the intent (range and keys) is stored;
//  3. every object is stored;
//  4. objects of an earlier cut of the same range that this cut did not
//     produce are deleted;
//  5. the offset after the batch is committed;
//  6. the intent is deleted.
//
// Every step retries until it succeeds or ctx is cancelled.
func (s *Sink) upload(ctx context.Context, sb *sealedBatch) error {
	if len(sb.dlq) > 0 {
		recs := make([]*kgo.Record, len(sb.dlq))
		for i, d := range sb.dlq {
			recs[i] = d.Record()
			recs[i].Topic = s.cfg.DLQTopic
		}
		if err := s.retry(ctx, "dlq", func(ctx context.Context) error {
			return s.cl.ProduceSync(ctx, recs...).FirstErr()
		}); err != nil {
			return err
		}
	}
	ikey := intentKey(s.cfg.Prefix, sb.topic, sb.partition, sb.start)
	if len(sb.objs) > 0 {
		in := intent{Topic: sb.topic, Partition: sb.partition, Start: sb.start, End: sb.next}
		for _, o := range sb.objs {
			in.Keys = append(in.Keys, o.key)
		}
		body, _ := json.Marshal(in)
		if err := s.retry(ctx, "intent", func(ctx context.Context) error { return s.store.Put(ctx, ikey, body) }); err != nil {
			return err
		}
		for i, o := range sb.objs {
			if i == len(sb.objs)/2 {
				s.failpoint(FailpointMidUpload, "key", o.key)
			}
			if err := s.retry(ctx, "put", func(ctx context.Context) error {
				t0 := time.Now()
				if err := s.store.Put(ctx, o.key, o.data); err != nil {
					return err
				}
				s.m.upload.Observe(time.Since(t0).Seconds())
				return nil
			}); err != nil {
				return err
			}
		}
	}
	// A replayed range: remove objects of the earlier cut that this cut
	// did not overwrite (only when the input changed, e.g. retention).
	for _, k := range sb.replayKeys {
		if !containsKey(sb.objs, k) {
			if err := s.retry(ctx, "delete", func(ctx context.Context) error { return s.store.Delete(ctx, k) }); err != nil {
				return err
			}
		}
	}
	s.failpoint(FailpointBeforeCommit, "topic", sb.topic, "partition", sb.partition, "end", sb.next)
	if err := s.retry(ctx, "commit", func(ctx context.Context) error { return s.commit(ctx, sb) }); err != nil {
		return err
	}
	s.m.commits.Inc()
	s.progress.Committed(sb.topic, sb.partition, sb.next)
	for _, o := range sb.objs {
		ds := o.dataset.String()
		s.m.rows.WithLabelValues(ds).Add(float64(o.rows))
		s.m.files.WithLabelValues(ds).Inc()
		s.m.bytes.WithLabelValues(ds).Add(float64(len(o.data)))
		s.m.fileRows.Observe(float64(o.rows))
	}
	s.log.Debug("batch committed", "topic", sb.topic, "partition", sb.partition, "start", sb.start, "end", sb.next,
		"records", sb.records, "files", len(sb.objs), "dlq", len(sb.dlq))
	if len(sb.objs) > 0 || len(sb.replayKeys) > 0 {
		s.failpoint(FailpointAfterCommit, "topic", sb.topic, "partition", sb.partition, "end", sb.next)
		// Best effort: an intent left behind is recognised as committed
		// (end <= committed offset) and deleted on the next assignment.
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.store.Delete(dctx, ikey); err != nil {
			s.log.Warn("could not delete intent; it is cleaned up later", "key", ikey, "err", err)
		}
		cancel()
	}
	return nil
}

func containsKey(objs []sealedObject, k string) bool {
	for _, o := range objs {
		if o.key == k {
			return true
		}
	}
	return false
}

// commit commits the offset after the batch for its partition.
func (s *Sink) commit(ctx context.Context, sb *sealedBatch) error {
	var cerr error
	s.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{
		sb.topic: {sb.partition: {Epoch: sb.epoch, Offset: sb.next}},
	}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					cerr = e
				}
			}
		}
	})
	if cerr != nil {
		return fmt.Errorf("commit %s/%d offset %d: %w", sb.topic, sb.partition, sb.next, cerr)
	}
	return nil
}

// failpoint pauses at a named point when it is reached for the configured
// time (crash tests kill the process there).
func (s *Sink) failpoint(name string, attrs ...any) {
	fp, ok := s.cfg.Failpoints[name]
	if !ok {
		return
	}
	s.fpMu.Lock()
	s.fpHit[name]++
	hit := s.fpHit[name]
	s.fpMu.Unlock()
	if hit != max(fp.Hit, 1) {
		return
	}
	s.log.Warn("failpoint reached", append([]any{"failpoint", name, "pause", fp.Pause}, attrs...)...)
	time.Sleep(fp.Pause)
}

// onAssigned recovers each new partition before it is consumed: it reads
// the committed offset and the partition's intents, deletes the intents of
// committed batches and arms the replay of the batch that was in flight.
// It uses the client it is given, not s.cl or s.adm: the group may assign
// partitions before New has stored those (found by TestUploadOrder with
// kfake under -race).
func (s *Sink) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	adm := kadm.NewClient(cl)
	committed := map[partKey]int64{}
	if err := s.retry(s.runCtx, "list", func(ctx context.Context) error {
		resp, err := adm.FetchOffsets(ctx, s.cfg.Group)
		if err != nil {
			return err
		}
		if err := resp.Error(); err != nil {
			return err
		}
		for t, ps := range assigned {
			for _, p := range ps {
				committed[partKey{t, p}] = -1 // no commit yet
				if o, ok := resp.Lookup(t, p); ok {
					if o.Err != nil {
						return fmt.Errorf("committed offset of %s/%d: %w", t, p, o.Err)
					}
					committed[partKey{t, p}] = o.At
				}
			}
		}
		return nil
	}); err != nil {
		return
	}
	for k, c := range committed {
		var rec recovery
		if err := s.retry(s.runCtx, "list", func(ctx context.Context) error {
			ins, keys, err := loadIntents(ctx, s.store, s.cfg.Prefix, k.topic, k.partition, s.log)
			if err != nil {
				return err
			}
			rec = planRecovery(ins, keys, c)
			for _, w := range rec.warnings {
				s.log.Warn(w)
			}
			for _, in := range rec.discard {
				for _, key := range in.Keys {
					if err := s.store.Delete(ctx, key); err != nil {
						return err
					}
				}
				if err := s.store.Delete(ctx, intentKey(s.cfg.Prefix, k.topic, k.partition, in.Start)); err != nil {
					return err
				}
				s.m.intents.WithLabelValues("discarded").Inc()
			}
			for _, key := range rec.stale {
				if err := s.store.Delete(ctx, key); err != nil {
					return err
				}
				s.m.intents.WithLabelValues("stale").Inc()
			}
			return nil
		}); err != nil {
			return
		}
		if rec.replay != nil {
			s.m.intents.WithLabelValues("replay").Inc()
			s.log.Info("replaying the batch in flight when the previous owner stopped", "topic", k.topic,
				"partition", k.partition, "start", rec.replay.Start, "end", rec.replay.End, "committed", c)
		}
		s.mu.Lock()
		if old := s.parts[k]; old != nil { // should not happen: revoked first
			s.stopPartLocked(old, 0)
		}
		s.startPart(k, rec.replay)
		s.mu.Unlock()
		s.log.Info("partition assigned", "topic", k.topic, "partition", k.partition, "committed", c)
	}
}

// onRevoked hands over revoked partitions: their open batches are sealed
// and uploaded within the rebalance budget, then the uploaders stop.
func (s *Sink) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	s.stopParts(revoked, s.cfg.RebalanceTimeout/2)
}

// onLost drops lost partitions at once: what was not committed is read
// again by the new owner, which replays any batch in flight.
func (s *Sink) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.stopParts(lost, 0)
}

func (s *Sink) stopParts(m map[string][]int32, flush time.Duration) {
	defer s.progress.Forget(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			if st := s.parts[partKey{t, p}]; st != nil {
				s.stopPartLocked(st, flush)
			}
		}
	}
}

// stopPartLocked stops one partition: with flush > 0 it first seals the
// open batch and waits up to flush for the uploader to commit everything;
// then it cancels the uploader and waits for it to exit, so that nothing
// of this partition is committed after it returns.
func (s *Sink) stopPartLocked(ps *partState, flush time.Duration) {
	delete(s.parts, ps.key)
	if flush > 0 && ps.cur != nil {
		s.parts[ps.key] = ps // sealLocked may wait and re-check ownership
		if err := s.sealLocked(s.runCtx, ps, "revoke"); err != nil {
			s.log.Warn("revoked partition's open batch not uploaded; the new owner reads it again", "topic", ps.key.topic, "partition", ps.key.partition, "err", err)
		}
		delete(s.parts, ps.key)
	} else if ps.cur != nil {
		s.m.openFiles.Sub(float64(len(ps.cur.files)))
		ps.cur.abort()
		ps.cur = nil
	}
	if flush > 0 {
		deadline := time.NewTimer(flush)
		for ps.queued > 0 {
			s.mu.Unlock()
			select {
			case <-ps.idle:
			case <-deadline.C:
				s.mu.Lock()
				goto stop
			}
			s.mu.Lock()
		}
		deadline.Stop()
	}
stop:
	close(ps.up)
	ps.cancel()
	s.mu.Unlock()
	<-ps.done
	s.mu.Lock()
}
