package timescale

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

// recKind says what a consumed record became.
type recKind uint8

const (
	kindReading  recKind = iota // rows readings[lo:hi]
	kindMetric                  // metrics[row]
	kindActivity                // activity[row]
	kindInvalid                 // did not decode: DLQ invalid_record
	kindAlert                   // alerts[row]
)

// source is one consumed Kafka record and the rows it became.
type source struct {
	rec    *kgo.Record
	kind   recKind
	lo, hi int    // rows of the record in the kind's slice
	err    string // decode error of kindInvalid
	// superseded marks a metric or activity record whose key appears later
	// in the batch with a higher or equal revision: it is not written.
	superseded bool
}

// readingRow is one readings row: one measurement of one reading.
type readingRow struct {
	time     time.Time
	device   string
	metric   string
	value    float64
	seq      int64
	hasSeq   bool
	received time.Time
}

type tp struct {
	topic     string
	partition int32
}

type metricKey struct {
	device, metric string
	bucket         int64
}

type activityKey struct {
	device string
	bucket int64
}

// batch collects decoded records until they are written in one
// transaction. It is used by one goroutine.
type batch struct {
	topicRaw, topicMetrics, topicAlerts string

	srcs     []source
	readings []readingRow
	order    []int32 // scratch for readingSource's sorted rows
	metrics  []schemas.WindowMetric
	activity []schemas.Activity
	alerts   []*schemas.Alert
	rows     int       // rows to write (metrics and activity before dedup)
	started  time.Time // when the first record was added

	// Latest record per upsert key, for in-batch dedup.
	metricIdx   map[metricKey]int
	activityIdx map[activityKey]int

	raw  schemas.RawDecoder
	mdec schemas.MetricsDecoder
	r    schemas.Reading
	mr   schemas.MetricsRecord
}

// newBatch makes a batch for the topics given; an empty topicRaw or
// topicAlerts is not consumed.
func newBatch(topicRaw, topicMetrics, topicAlerts string) *batch {
	return &batch{
		topicRaw: topicRaw, topicMetrics: topicMetrics, topicAlerts: topicAlerts,
		metricIdx: map[metricKey]int{}, activityIdx: map[activityKey]int{},
	}
}

func (b *batch) empty() bool { return len(b.srcs) == 0 }

func (b *batch) reset() {
	clear(b.srcs)
	b.srcs = b.srcs[:0]
	b.readings = b.readings[:0]
	b.metrics = b.metrics[:0]
	b.activity = b.activity[:0]
	clear(b.alerts)
	b.alerts = b.alerts[:0]
	b.rows = 0
	clear(b.metricIdx)
	clear(b.activityIdx)
}

// add decodes r and appends it to the batch. A record that does not decode
// is kept as kindInvalid, to go to the DLQ in the same transaction.
func (b *batch) add(r *kgo.Record, now time.Time) {
	if len(b.srcs) == 0 {
		b.started = now
	}
	s := source{rec: r}
	switch {
	case r.Topic == b.topicAlerts && b.topicAlerts != "":
		a, err := schemas.DecodeAlert(r.Value)
		if err != nil {
			s.kind, s.err = kindInvalid, err.Error()
			break
		}
		s.kind, s.lo, s.hi = kindAlert, len(b.alerts), len(b.alerts)+1
		b.alerts = append(b.alerts, a)
		b.rows++
	case r.Topic == b.topicRaw && schemas.IsHeartbeat(r.Headers):
		// A bridge's heartbeat (when the raw topic is stored): not a
		// reading, no rows.
		s.kind, s.lo, s.hi = kindReading, len(b.readings), len(b.readings)
	case r.Topic == b.topicRaw:
		if err := b.raw.Decode(r.Value, &b.r); err != nil {
			s.kind, s.err = kindInvalid, err.Error()
			break
		}
		s.kind, s.lo = kindReading, len(b.readings)
		for _, m := range b.r.Measurements {
			b.readings = append(b.readings, readingRow{
				time: b.r.EventTime, device: b.r.DeviceID, metric: m.Name, value: m.Value,
				seq: b.r.Seq, hasSeq: b.r.HasSeq, received: b.r.ReceivedTime,
			})
		}
		s.hi = len(b.readings)
		b.rows += s.hi - s.lo
	case r.Topic == b.topicMetrics:
		if err := b.mdec.Decode(r.Value, &b.mr); err != nil {
			s.kind, s.err = kindInvalid, err.Error()
			break
		}
		idx := len(b.srcs)
		switch b.mr.Kind {
		case schemas.KindMetric:
			m := b.mr.Metric
			s.kind, s.lo = kindMetric, len(b.metrics)
			b.metrics = append(b.metrics, m)
			k := metricKey{m.DeviceID, m.Metric, m.WindowStart.UnixMicro()}
			if prev, ok := b.metricIdx[k]; ok {
				if b.metrics[b.srcs[prev].lo].Revision > m.Revision {
					s.superseded = true
				} else {
					b.srcs[prev].superseded = true
					b.metricIdx[k] = idx
				}
			} else {
				b.metricIdx[k] = idx
			}
		case schemas.KindActivity:
			a := b.mr.Activity
			s.kind, s.lo = kindActivity, len(b.activity)
			b.activity = append(b.activity, a)
			k := activityKey{a.DeviceID, a.WindowStart.UnixMicro()}
			if prev, ok := b.activityIdx[k]; ok {
				if b.activity[b.srcs[prev].lo].Revision > a.Revision {
					s.superseded = true
				} else {
					b.srcs[prev].superseded = true
					b.activityIdx[k] = idx
				}
			} else {
				b.activityIdx[k] = idx
			}
		default:
			s.kind, s.err = kindInvalid, "unknown metrics record kind"
		}
		s.hi = s.lo + 1
		b.rows++
	default:
		s.kind, s.err = kindInvalid, "record from unexpected topic "+r.Topic
	}
	b.srcs = append(b.srcs, s)
}

// partitions returns the first and last offset of each partition in the
// batch.
func (b *batch) partitions() map[tp][2]int64 {
	out := map[tp][2]int64{}
	for i := range b.srcs {
		r := b.srcs[i].rec
		k := tp{r.Topic, r.Partition}
		if o, ok := out[k]; ok {
			o[1] = r.Offset
			out[k] = o
		} else {
			out[k] = [2]int64{r.Offset, r.Offset}
		}
	}
	return out
}
