package processor

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/ingestclock"
	"github.com/iotpipe/iotpipe/schemas"
)

// task processes the records of one input partition: decode, aggregate,
// and turn what the engine emits, rejects and changes into Kafka records.
// It does no I/O itself: records go to out, and the caller produces them
// inside its transaction.
type task struct {
	partition int32
	eng       *Engine
	topics    Topics
	m         *metrics
	dec       schemas.RawDecoder
	r         schemas.Reading
	clock     ingestclock.Clock
	// slab holds the records of the next readings copies: one allocation
	// per slabRecords copies instead of one each. A record handed to out
	// belongs to the producer; the task never touches it again, and a slab
	// is freed once the producer is done with all of its records.
	slab []kgo.Record
	// n counts what the hottest metrics count until flush adds it to them
	// (after each poll's records: a Prometheus counter is an atomic
	// operation per call).
	n struct{ in, accepted, duplicates, ignored int64 }
}

// slabRecords is how many records a slab holds (about 40 KB).
const slabRecords = 256

// Topics names the topics a processor reads and writes.
type Topics struct {
	// Raw is the input: telemetry.raw records.
	Raw string
	// Metrics receives WindowMetric and Activity records.
	Metrics string
	// DLQ receives undecodable and late input.
	DLQ string
	// Changelog is the compacted topic holding the state of open windows,
	// with as many partitions as Raw.
	Changelog string
	// Readings receives every accepted reading's input record, unchanged
	// (key, value, headers, timestamp), exactly once: in the transaction
	// that counts it. Duplicates, late and rejected input are not copied.
	// The sinks store it. SkipTopic ("-") writes no copies.
	Readings string
}

// SkipTopic as Topics.Readings turns the copy of accepted readings off.
const SkipTopic = "-"

func newTask(partition int32, eng *Engine, topics Topics, m *metrics) *task {
	return &task{partition: partition, eng: eng, topics: topics, m: m,
		clock: ingestclock.New(eng.cfg.HeartbeatExpiry)}
}

// handle processes one input record at wall-clock time now (see
// handleRec) and updates the metrics.
func (t *task) handle(rec *kgo.Record, now time.Time, out func(*kgo.Record)) {
	t.handleRec(rec, now, out)
	t.flush()
}

// flush adds what handleRec counted to the metrics.
func (t *task) flush() {
	if t.n.in > 0 {
		t.m.recordsIn.Add(float64(t.n.in))
	}
	if t.n.accepted > 0 {
		t.m.accepted.Add(float64(t.n.accepted))
	}
	if t.n.duplicates > 0 {
		t.m.duplicates.Add(float64(t.n.duplicates))
	}
	if t.n.ignored > 0 {
		t.m.ignoredFields.Add(float64(t.n.ignored))
	}
	t.n = struct{ in, accepted, duplicates, ignored int64 }{}
}

// handleRec processes one input record at wall-clock time now; call flush
// after the last. A heartbeat moves the partition's ingest clock and is
// not a reading: not counted as input, not copied, not dead-lettered (its
// offset is consumed like any other's).
func (t *task) handleRec(rec *kgo.Record, now time.Time, out func(*kgo.Record)) {
	if schemas.IsHeartbeat(rec.Headers) {
		h, err := schemas.DecodeHeartbeat(rec.Value)
		if err != nil {
			t.m.heartbeats.WithLabelValues("invalid").Inc()
			return
		}
		t.m.heartbeats.WithLabelValues("read").Inc()
		t.clock.Observe(h)
		return
	}
	t.n.in++
	if err := t.dec.Decode(rec.Value, &t.r); err != nil {
		t.m.rejected(schemas.ReasonInvalidRecord)
		out(t.deadLetter(rec, schemas.ReasonInvalidRecord, err.Error(), now))
		return
	}
	// The reading's silence counts from when its bridge received it (on
	// the bridges' clock, within [ingest clock, wall]).
	clock := t.clock.At(now)
	seen := clock
	if t.clock.OK() && t.r.ReceivedTime.After(seen) {
		seen = t.r.ReceivedTime
		if seen.After(now) {
			seen = now
		}
	}
	switch t.eng.AddAt(&t.r, now, clock, seen) {
	case Accepted:
		t.n.accepted++
		t.n.ignored += int64(t.r.IgnoredFields)
		if t.topics.Readings != SkipTopic {
			// Keyed by device id like the input, so with as many
			// partitions it lands in the same partition number.
			if len(t.slab) == 0 {
				t.slab = make([]kgo.Record, slabRecords)
			}
			c := &t.slab[0]
			t.slab = t.slab[1:]
			c.Topic, c.Key, c.Value, c.Headers, c.Timestamp = t.topics.Readings, rec.Key, rec.Value, rec.Headers, rec.Timestamp
			out(c)
		}
	case Duplicate:
		t.n.duplicates++
	case Late:
		t.m.rejected(schemas.ReasonLate)
		out(t.deadLetter(rec, schemas.ReasonLate, t.eng.lateError(&t.r), now))
	case TooFarAhead:
		t.m.rejected(schemas.ReasonTimestampSkew)
		out(t.deadLetter(rec, schemas.ReasonTimestampSkew, fmt.Sprintf(
			"event time %s is more than the allowed future skew %s ahead of the processor's clock %s",
			t.r.EventTime.Format(time.RFC3339Nano), t.eng.cfg.MaxFutureSkew, now.UTC().Format(time.RFC3339Nano)), now))
	}
}

func (t *task) deadLetter(rec *kgo.Record, reason schemas.Reason, msg string, now time.Time) *kgo.Record {
	d := schemas.DeadLetter{
		Value: rec.Value, Key: rec.Key, Reason: reason, Error: msg, Stage: schemas.StageProcessor,
		SourceTopic: rec.Topic, SourcePartition: rec.Partition, SourceOffset: rec.Offset,
		Time: now.UTC().Truncate(time.Microsecond),
	}
	r := d.Record()
	r.Topic = t.topics.DLQ
	return r
}

// advance lets the engine emit what the watermark allows at now, and
// appends the metrics records to out.
func (t *task) advance(now time.Time, out func(*kgo.Record)) {
	t.eng.AdvanceAt(now, t.clock.At(now), func(em *Emission) {
		var v []byte
		var key string
		var ws time.Time
		if em.Metric != nil {
			v = schemas.AppendMetric(make([]byte, 0, 512), em.Metric)
			key, ws = em.Metric.DeviceID, em.Metric.WindowStart
			t.m.emitted.WithLabelValues("metric").Inc()
			if em.Metric.Revision == 1 {
				t.m.emitDelay.Observe(now.Sub(em.Metric.WindowEnd).Seconds())
			}
		} else {
			v = schemas.AppendActivity(make([]byte, 0, 320), em.Activity)
			key, ws = em.Activity.DeviceID, em.Activity.WindowStart
			t.m.emitted.WithLabelValues("activity").Inc()
			t.m.seqResets.Add(float64(em.NewSeqResets))
		}
		out(&kgo.Record{
			Topic: t.topics.Metrics, Key: []byte(key), Value: v, Timestamp: ws,
			Headers: schemas.RecordHeaders(""),
		})
	})
}

// changes appends the changelog records of the state changed since the
// last call; they go to the changelog partition numbered like the input
// partition.
func (t *task) changes(out func(*kgo.Record)) {
	t.eng.Changes(func(k, v []byte) {
		r := &kgo.Record{Topic: t.topics.Changelog, Partition: t.partition, Key: append([]byte(nil), k...)}
		if v != nil {
			r.Value = append([]byte(nil), v...)
			t.m.changelogBytes.Add(float64(len(k) + len(v)))
		}
		out(r)
	})
}
