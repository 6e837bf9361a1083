package processor

import (
	"fmt"
	"slices"
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
	// slab holds the next output records (readings copies, metrics,
	// changelog), and arena the bytes of the records the task encodes
	// (keys and values of metrics and changelog records): one allocation
	// per slabRecords records and per arenaChunk bytes instead of one or
	// more each. What is handed to out belongs to the producer; the task
	// never touches it again, and a slab or chunk is freed once the
	// producer is done with all of it (a slab keeps the fetched input its
	// copies point to until then: at most slabRecords records' worth).
	slab  []kgo.Record
	arena []byte
	// hdr: the headers of metrics records, one slice for all (records'
	// headers are only read).
	hdr []kgo.RecordHeader
	// n counts what the hottest metrics count until flush adds it to them
	// (after each poll's records: a Prometheus counter is an atomic
	// operation per call).
	n struct{ in, accepted, duplicates, ignored int64 }
}

// slabRecords is how many records a slab holds (about 40 KB);
// arenaChunk the size of an arena chunk.
const (
	slabRecords = 256
	arenaChunk  = 64 << 10
)

// record returns a zero record from the slab.
func (t *task) record() *kgo.Record {
	if len(t.slab) == 0 {
		t.slab = make([]kgo.Record, slabRecords)
	}
	r := &t.slab[0]
	t.slab = t.slab[1:]
	return r
}

// room starts a new arena chunk unless the current one has need bytes
// free (what was handed out stays in the old chunk).
func (t *task) room(need int) {
	if cap(t.arena)-len(t.arena) < need {
		t.arena = make([]byte, 0, max(arenaChunk, need))
	}
}

// copyBytes returns a copy of b in the arena.
func (t *task) copyBytes(b []byte) []byte {
	t.room(len(b))
	n := len(t.arena)
	t.arena = append(t.arena, b...)
	return t.arena[n:len(t.arena):len(t.arena)]
}

// encode returns what enc appends to an empty slice, in the arena; need
// is about what it appends (more is fine: the arena then grows).
func (t *task) encode(need int, enc func([]byte) []byte) []byte {
	t.room(need)
	n := len(t.arena)
	t.arena = enc(t.arena)
	return t.arena[n:len(t.arena):len(t.arena)]
}

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
			c := t.record()
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
	if t.hdr == nil {
		t.hdr = slices.Clip(schemas.RecordHeaders(""))
	}
	t.eng.AdvanceAt(now, t.clock.At(now), func(em *Emission) {
		r := t.record()
		r.Topic, r.Headers = t.topics.Metrics, t.hdr
		if em.Metric != nil {
			r.Value = t.encode(512, func(b []byte) []byte { return schemas.AppendMetric(b, em.Metric) })
			r.Key = t.encode(len(em.Metric.DeviceID), func(b []byte) []byte { return append(b, em.Metric.DeviceID...) })
			r.Timestamp = em.Metric.WindowStart
			t.m.emitted.WithLabelValues("metric").Inc()
			if em.Metric.Revision == 1 {
				t.m.emitDelay.Observe(now.Sub(em.Metric.WindowEnd).Seconds())
			}
		} else {
			r.Value = t.encode(320, func(b []byte) []byte { return schemas.AppendActivity(b, em.Activity) })
			r.Key = t.encode(len(em.Activity.DeviceID), func(b []byte) []byte { return append(b, em.Activity.DeviceID...) })
			r.Timestamp = em.Activity.WindowStart
			t.m.emitted.WithLabelValues("activity").Inc()
			t.m.seqResets.Add(float64(em.NewSeqResets))
		}
		out(r)
	})
}

// changes appends the changelog records of the state changed since the
// last call; they go to the changelog partition numbered like the input
// partition.
func (t *task) changes(out func(*kgo.Record)) {
	t.eng.Changes(func(k, v []byte) {
		r := t.record()
		r.Topic, r.Partition, r.Key = t.topics.Changelog, t.partition, t.copyBytes(k)
		if v != nil {
			r.Value = t.copyBytes(v)
			t.m.changelogBytes.Add(float64(len(k) + len(v)))
		}
		out(r)
	})
}
