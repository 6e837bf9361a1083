package processor

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"slices"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// This file holds the reference ("batch") computation that the property
// and crash tests compare the processor's output with: every window
// aggregate computed from scratch over the deduplicated readings, with an
// exact sum and two-pass standard deviation. It shares no code with the
// engine: identities, seq gaps and seq resets are computed here from their
// definitions in the package comment.

type winKey struct {
	dev, metric string
	start       int64
}

type batchAgg struct {
	values                  []float64
	ts, seqs                []int64
	count                   int64
	sum, min, max, mean, sd float64
	first, last             float64
	firstT, lastT           int64
	q50, q95, q99           float64
}

type batchAct struct {
	messages, dups, gaps, resets int64
	firstSeen, lastSeen          int64
	seqs                         []batchID // accepted readings with a seq
}

// batchID is a reading's identity: device (implied), event time, and seq
// when it has one.
type batchID struct {
	t, seq int64
	hasSeq bool
}

// batchWindowStart is the start of the window holding t (µs), for windows
// aligned to the Unix epoch.
func batchWindowStart(t, size int64) int64 {
	s := t - t%size
	if t%size < 0 {
		s -= size
	}
	return s
}

type batchResult struct {
	metrics  map[winKey]*batchAgg
	activity map[winKey]*batchAct // metric ""
}

// batchCompute aggregates readings (in any order) into windows of size.
func batchCompute(readings []*schemas.Reading, size time.Duration) *batchResult {
	res := &batchResult{metrics: map[winKey]*batchAgg{}, activity: map[winKey]*batchAct{}}
	seen := map[winKey]map[batchID]bool{}
	sz := size.Microseconds()
	for _, r := range readings {
		t := r.EventTime.UnixMicro()
		seq := int64(-1)
		if r.HasSeq {
			seq = r.Seq
		}
		wk := winKey{dev: r.DeviceID, start: batchWindowStart(t, sz)}
		if seen[wk] == nil {
			seen[wk] = map[batchID]bool{}
			res.activity[wk] = &batchAct{}
		}
		act := res.activity[wk]
		id := batchID{t: t, seq: r.Seq, hasSeq: r.HasSeq}
		if seen[wk][id] {
			act.dups++
			continue
		}
		seen[wk][id] = true
		if act.messages == 0 || t < act.firstSeen {
			act.firstSeen = t
		}
		if act.messages == 0 || t > act.lastSeen {
			act.lastSeen = t
		}
		act.messages++
		if r.HasSeq {
			act.seqs = append(act.seqs, id)
		}
		for _, m := range r.Measurements {
			k := winKey{r.DeviceID, m.Name, wk.start}
			a := res.metrics[k]
			if a == nil {
				a = &batchAgg{}
				res.metrics[k] = a
			}
			a.values = append(a.values, m.Value)
			a.ts = append(a.ts, t)
			a.seqs = append(a.seqs, seq)
		}
	}
	for _, act := range res.activity {
		// Gaps: in (event time, seq) order, a rise of seq by d > 1 counts
		// d−1. Resets: readings whose seq another reading of the window
		// (with another time) already used.
		slices.SortFunc(act.seqs, func(a, b batchID) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.seq, b.seq)) })
		distinct := map[int64]bool{}
		for i, x := range act.seqs {
			if i > 0 && x.seq > act.seqs[i-1].seq+1 {
				act.gaps += x.seq - act.seqs[i-1].seq - 1
			}
			distinct[x.seq] = true
		}
		act.resets = int64(len(act.seqs) - len(distinct))
	}
	for _, a := range res.metrics {
		a.count = int64(len(a.values))
		exact := new(big.Float).SetPrec(4096)
		a.min, a.max = math.Inf(1), math.Inf(-1)
		fi, li := 0, 0
		for i, v := range a.values {
			exact.Add(exact, new(big.Float).SetPrec(4096).SetFloat64(v))
			a.min, a.max = math.Min(a.min, v), math.Max(a.max, v)
			if a.ts[i] < a.ts[fi] || (a.ts[i] == a.ts[fi] && a.seqs[i] < a.seqs[fi]) {
				fi = i
			}
			if a.ts[i] > a.ts[li] || (a.ts[i] == a.ts[li] && a.seqs[i] > a.seqs[li]) {
				li = i
			}
		}
		a.sum, _ = exact.Float64()
		a.mean = a.sum / float64(a.count)
		var ss float64
		for _, v := range a.values {
			ss += (v - a.mean) * (v - a.mean)
		}
		a.sd = math.Sqrt(ss / float64(a.count))
		a.first, a.firstT, a.last, a.lastT = a.values[fi], a.ts[fi], a.values[li], a.ts[li]
		sorted := slices.Clone(a.values)
		slices.Sort(sorted)
		q := func(p float64) float64 { return sorted[int(math.Floor(p*float64(len(sorted)-1)))] }
		a.q50, a.q95, a.q99 = q(0.5), q(0.95), q(0.99)
	}
	return res
}

func relClose(a, b, tol float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= tol*math.Max(math.Abs(a), math.Abs(b))
}

// checkMetric compares an emitted aggregate with the batch one: count,
// sum, min, max, first, last exactly; mean and stddev to 1e-9 relative;
// quantiles within the sketch's relative accuracy.
func checkMetric(m *schemas.WindowMetric, a *batchAgg) error {
	var errs []string
	exact := func(name string, got, want float64) {
		if got != want {
			errs = append(errs, fmt.Sprintf("%s %v, want %v", name, got, want))
		}
	}
	if m.Count != a.count {
		errs = append(errs, fmt.Sprintf("count %d, want %d", m.Count, a.count))
	}
	exact("sum", m.Sum, a.sum)
	exact("min", m.Min, a.min)
	exact("max", m.Max, a.max)
	exact("first", m.First, a.first)
	exact("last", m.Last, a.last)
	if m.FirstTime.UnixMicro() != a.firstT || m.LastTime.UnixMicro() != a.lastT {
		errs = append(errs, "first/last time differ")
	}
	if !relClose(m.Mean, a.mean, 1e-9) {
		errs = append(errs, fmt.Sprintf("mean %v, want %v", m.Mean, a.mean))
	}
	if !relClose(m.Stddev, a.sd, 1e-9) && math.Abs(m.Stddev-a.sd) > 1e-12*math.Max(math.Abs(a.mean), 1) {
		errs = append(errs, fmt.Sprintf("stddev %v, want %v", m.Stddev, a.sd))
	}
	for _, q := range []struct {
		name      string
		got, want float64
	}{{"p50", m.P50, a.q50}, {"p95", m.P95, a.q95}, {"p99", m.P99, a.q99}} {
		if math.Abs(q.got-q.want) > SketchRelativeAccuracy*math.Abs(q.want)*(1+1e-9) {
			errs = append(errs, fmt.Sprintf("%s %v, want %v ±1%%", q.name, q.got, q.want))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s/%s@%s: %v", m.DeviceID, m.Metric, m.WindowStart.Format(time.RFC3339), errs)
	}
	return nil
}

func checkActivity(ac *schemas.Activity, b *batchAct) error {
	got := [6]int64{ac.Messages, ac.Duplicates, ac.SeqGaps, ac.SeqResets, 0, 0}
	want := [6]int64{b.messages, b.dups, b.gaps, b.resets, 0, 0}
	if ac.Messages > 0 {
		got[4], got[5] = ac.FirstSeen.UnixMicro(), ac.LastSeen.UnixMicro()
		want[4], want[5] = b.firstSeen, b.lastSeen
	}
	if got != want {
		return fmt.Errorf("activity %s@%s: messages,dups,gaps,resets,first,last = %v, want %v", ac.DeviceID, ac.WindowStart.Format(time.RFC3339), got, want)
	}
	return nil
}

// finals keeps the last revision of every window, and checks that
// revisions only rise.
type finals struct {
	metrics  map[winKey]schemas.WindowMetric
	activity map[winKey]schemas.Activity
}

func newFinals() *finals {
	return &finals{metrics: map[winKey]schemas.WindowMetric{}, activity: map[winKey]schemas.Activity{}}
}

func (f *finals) add(rec *schemas.MetricsRecord) error {
	switch rec.Kind {
	case schemas.KindMetric:
		m := rec.Metric
		k := winKey{m.DeviceID, m.Metric, m.WindowStart.UnixMicro()}
		if old, ok := f.metrics[k]; ok && old.Revision >= m.Revision {
			return fmt.Errorf("metric %v: revision %d after %d", k, m.Revision, old.Revision)
		}
		f.metrics[k] = m
	case schemas.KindActivity:
		a := rec.Activity
		k := winKey{a.DeviceID, "", a.WindowStart.UnixMicro()}
		if old, ok := f.activity[k]; ok && old.Revision >= a.Revision {
			return fmt.Errorf("activity %v: revision %d after %d", k, a.Revision, old.Revision)
		}
		f.activity[k] = a
	}
	return nil
}

// compare checks every batch window against the final emissions and that
// nothing else was emitted; it returns up to a few errors.
func (f *finals) compare(b *batchResult) []error {
	var errs []error
	keys := make([]winKey, 0, len(b.metrics))
	for k := range b.metrics {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y winKey) int {
		return cmp.Or(cmp.Compare(x.start, y.start), cmp.Compare(x.dev, y.dev), cmp.Compare(x.metric, y.metric))
	})
	for _, k := range keys {
		m, ok := f.metrics[k]
		if !ok {
			errs = append(errs, fmt.Errorf("window %v never emitted", k))
		} else if err := checkMetric(&m, b.metrics[k]); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 5 {
			return errs
		}
	}
	if len(f.metrics) != len(b.metrics) {
		errs = append(errs, fmt.Errorf("%d metric windows emitted, batch has %d", len(f.metrics), len(b.metrics)))
	}
	for k, act := range b.activity {
		a, ok := f.activity[k]
		if !ok {
			errs = append(errs, fmt.Errorf("activity %v never emitted", k))
		} else if err := checkActivity(&a, act); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 10 {
			return errs
		}
	}
	return errs
}
