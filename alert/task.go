package alert

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/internal/eos"
	"github.com/iotpipe/iotpipe/internal/ingestclock"
	"github.com/iotpipe/iotpipe/schemas"
)

// Changelog key prefixes: the tasks of raw partition p and metrics
// partition p share changelog partition p, and each restores only its own
// records.
const (
	prefixRaw     byte = 'r'
	prefixMetrics byte = 'm'
	// prefixClock: a raw partition's ingest clock, one record per bridge
	// (key = prefix + bridge instance id, value = its latest heartbeat,
	// Unix ns, 8 bytes big-endian; a tombstone once it expired).
	prefixClock byte = 'h'
)

// task is the state of one input partition: an eval engine over the
// series whose input it is (reading and no_data rules for a raw
// partition, window rules for a metrics partition).
type task struct {
	part   eos.Partition
	raw    bool
	prefix byte
	eng    *eval.Engine
	// lastAdvance is the time (Unix ns) of the last no_data check: the
	// engine's watermark, restored with it.
	lastAdvance int64
	advanced    bool
	// clock is the raw partition's ingest clock (the bridges' heartbeats
	// read from it), restored from the changelog; clockDirty the bridges
	// whose latest heartbeat changed since the last changelog records.
	clock      ingestclock.Clock
	clockDirty map[string]bool

	dec    schemas.RawDecoder
	r      schemas.Reading
	mdec   schemas.MetricsDecoder
	mr     schemas.MetricsRecord
	events []*schemas.Alert
}

// restore applies one changelog record; records of the other input's
// task of this partition are skipped.
func (t *task) restore(key, value []byte) error {
	if len(key) > 0 && key[0] == prefixClock {
		if !t.raw || value == nil {
			return nil
		}
		if len(value) != 8 || len(key) == 1 {
			return fmt.Errorf("changelog ingest clock record %q: %w", key, eval.ErrCorrupt)
		}
		t.clock.Observe(schemas.Heartbeat{Bridge: string(key[1:]), Time: time.Unix(0, int64(binary.BigEndian.Uint64(value))).UTC()})
		return nil
	}
	if len(key) == 0 || key[0] != t.prefix {
		if len(key) == 0 || (key[0] != prefixRaw && key[0] != prefixMetrics) {
			return fmt.Errorf("changelog key %q: %w", key, eval.ErrCorrupt)
		}
		return nil
	}
	k, err := eval.DecodeKey(key[1:])
	if err != nil {
		return fmt.Errorf("changelog key: %w", err)
	}
	if value == nil {
		t.eng.Restore(k, nil)
		return nil
	}
	s, err := eval.DecodeState(value)
	if err != nil {
		return fmt.Errorf("changelog state of %v: %w", k, err)
	}
	if k == eval.WatermarkKey {
		t.lastAdvance, t.advanced = s.Last, s.Seen
	}
	t.eng.Restore(k, &s)
	return nil
}

// handle evaluates one input record, appending the events to t.events.
func (st *Stage) handle(t *task, rec *kgo.Record) {
	if t.raw {
		if schemas.IsHeartbeat(rec.Headers) {
			// A bridge's progress mark, not a reading: it moves the
			// partition's ingest clock, on which silences are measured.
			h, err := schemas.DecodeHeartbeat(rec.Value)
			if err != nil {
				st.m.heartbeats.WithLabelValues("invalid").Inc()
				return
			}
			st.m.heartbeats.WithLabelValues("read").Inc()
			t.clock.Observe(h)
			if t.clockDirty == nil {
				t.clockDirty = map[string]bool{}
			}
			t.clockDirty[h.Bridge] = true
			if now, ok := t.clock.Now(); ok {
				st.advance(t, now)
			}
			return
		}
		if err := t.dec.Decode(rec.Value, &t.r); err != nil {
			st.m.invalid.WithLabelValues(rec.Topic).Inc()
			return
		}
		st.m.readings.Inc()
		received := t.r.ReceivedTime
		if received.IsZero() {
			received = t.r.EventTime
		}
		if !t.clock.OK() {
			// No heartbeat on this partition (ever): its clock is the
			// largest received time of its readings. Checked before this
			// reading: a device silent past its rule's silence fires,
			// and its own reading resolves it.
			st.advance(t, received)
		}
		for _, m := range t.r.Measurements {
			t.events = t.eng.Reading(t.events, eval.Reading{DeviceID: t.r.DeviceID, Metric: m.Name, Value: m.Value,
				Time: t.r.EventTime, Received: received})
		}
		return
	}
	if err := t.mdec.Decode(rec.Value, &t.mr); err != nil {
		st.m.invalid.WithLabelValues(rec.Topic).Inc()
		return
	}
	if t.mr.Kind != schemas.KindMetric {
		return // activity records carry no statistic a rule compares
	}
	w := &t.mr.Metric
	st.m.windows.Inc()
	t.events = t.eng.Window(t.events, eval.Window{DeviceID: w.DeviceID, Metric: w.Metric, End: w.WindowEnd,
		Stats: map[string]float64{"mean": w.Mean, "min": w.Min, "max": w.Max, "p50": w.P50, "p95": w.P95, "p99": w.P99}})
}

// advance looks for silent devices (no_data rules) at now on t's clock
// each time it passes into a new NoDataResolution step.
func (st *Stage) advance(t *task, now time.Time) {
	n := now.UnixNano()
	if !st.applied.noData || (t.advanced && n/st.res <= t.lastAdvance/st.res) {
		return
	}
	t.events = t.eng.Advance(t.events, now)
	t.lastAdvance, t.advanced = n, true
}

// emit produces t's pending events to the alerts topic.
func (st *Stage) emit(t *task, out func(*kgo.Record)) {
	for _, ev := range t.events {
		v, err := schemas.EncodeAlert(ev)
		if err != nil {
			st.m.eventsInvalid.Inc()
			st.log.Error("alert event not produced: it does not validate", "event", ev.EventID, "rule", ev.RuleID, "device", ev.DeviceID, "err", err)
			continue
		}
		st.m.events.WithLabelValues(string(ev.State)).Inc()
		out(&kgo.Record{Topic: st.cfg.Topics.Alerts, Key: []byte(ev.DeviceID), Value: v, Timestamp: ev.EventTime,
			Headers: []kgo.RecordHeader{{Key: schemas.HeaderContentType, Value: []byte(schemas.ContentTypeJSON)}}})
	}
	clear(t.events)
	t.events = t.events[:0]
}

// changes writes the changelog records of t's series changed since the
// last call.
func (st *Stage) changes(t *task, out func(*kgo.Record)) {
	for _, c := range t.eng.Dirty() {
		key := c.Key.AppendBinary([]byte{t.prefix})
		r := &kgo.Record{Topic: st.cfg.Topics.Changelog, Partition: t.part.Partition, Key: key}
		if c.State != nil {
			r.Value = c.State.AppendBinary(nil)
		}
		st.m.changelogBytes.Add(float64(len(r.Key) + len(r.Value)))
		out(r)
	}
	for _, b := range slices.Sorted(maps.Keys(t.clockDirty)) {
		r := &kgo.Record{Topic: st.cfg.Topics.Changelog, Partition: t.part.Partition, Key: append([]byte{prefixClock}, b...)}
		if h, ok := t.clock.Latest(b); ok {
			r.Value = binary.BigEndian.AppendUint64(nil, uint64(h.UnixNano()))
		}
		st.m.changelogBytes.Add(float64(len(r.Key) + len(r.Value)))
		out(r)
	}
	clear(t.clockDirty)
}

// stats adds what t's engine counted since the last call to the metrics.
func (st *Stage) stats(t *task, before eval.Stats) {
	s := t.eng.Stats()
	st.m.evaluated.Add(float64(s.Evaluated - before.Evaluated))
	st.m.stale.Add(float64(s.Stale - before.Stale))
	st.m.refused.Add(float64(s.Refused - before.Refused))
}
