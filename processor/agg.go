package processor

import (
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// SketchRelativeAccuracy is the relative accuracy of the p50/p95/p99
// estimates: each is within 1 % of the exact value at its rank (DDSketch's
// guarantee; the rank of quantile q among n values is floor(q·(n−1))).
const SketchRelativeAccuracy = 0.01

var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(SketchRelativeAccuracy)
	if err != nil {
		panic(err) // a constant that is known to be valid
	}
	return m
}()

func newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketchFromStoreProvider(sketchMapping, store.DenseStoreConstructor)
}

// agg is the running aggregate of one metric of one device in one window.
// Every field but the Welford pair (mean, m2) is independent of the order in
// which readings arrive: the sum is exactly rounded (Shewchuk's algorithm, as
// Python's math.fsum), min/max/first/last are order-free by construction and
// the sketch counts bins. The Welford pair is merged stably, so stddev is
// reproducible to ~1e-15 relative whatever the order.
type agg struct {
	name      string
	count     int64
	partials  []float64 // exact sum as non-overlapping partials
	min, max  float64
	wmean, m2 float64 // Welford running mean and sum of squared deviations
	first     float64
	firstT    int64
	firstSeq  int64
	last      float64
	lastT     int64
	lastSeq   int64
	sketch    *ddsketch.DDSketch
	revision  int64 // revision of the last emission; 0 = never emitted
	changed   bool  // updated since the last emission
}

func newAgg(name string) *agg {
	return &agg{name: name, sketch: newSketch()}
}

// add folds one value with event time t (µs) and seq (−1 without seq) in.
func (a *agg) add(v float64, t, seq int64) {
	a.count++
	if a.count == 1 {
		a.min, a.max = v, v
		a.first, a.firstT, a.firstSeq = v, t, seq
		a.last, a.lastT, a.lastSeq = v, t, seq
	} else {
		a.min = math.Min(a.min, v)
		a.max = math.Max(a.max, v)
		if t < a.firstT || (t == a.firstT && seq < a.firstSeq) {
			a.first, a.firstT, a.firstSeq = v, t, seq
		}
		if t > a.lastT || (t == a.lastT && seq > a.lastSeq) {
			a.last, a.lastT, a.lastSeq = v, t, seq
		}
	}
	a.partials = addPartials(a.partials, v)
	d := v - a.wmean
	a.wmean += d / float64(a.count)
	a.m2 += d * (v - a.wmean)
	_ = a.sketch.Add(v) // only NaN fails, and NaN never reaches an aggregate
	a.changed = true
}

func (a *agg) sum() float64 { return sumPartials(a.partials) }

// mean is the exactly rounded sum divided by the count.
func (a *agg) mean() float64 { return a.sum() / float64(a.count) }

// stddev is the population standard deviation, sqrt(m2/n).
func (a *agg) stddev() float64 {
	if a.count < 2 || a.m2 <= 0 {
		return 0
	}
	return math.Sqrt(a.m2 / float64(a.count))
}

// quantile estimates the value of rank floor(q·(count−1)) among the
// window's sorted values. It reads the sketch's stores itself:
// DDSketch.GetValueAtQuantile uses the fractional rank q·(count−1), which
// for negative values (kept by magnitude) picks the neighbour above the
// wanted rank.
func (a *agg) quantile(q float64) float64 {
	if a.count == 0 {
		return 0
	}
	rank := math.Floor(q * float64(a.count-1))
	neg, pos := a.sketch.GetNegativeValueStore(), a.sketch.GetPositiveValueStore()
	nneg := neg.TotalCount()
	var v float64
	switch {
	case rank < nneg:
		v = -sketchMapping.Value(neg.KeyAtRank(nneg - 1 - rank))
	case rank < nneg+a.sketch.GetZeroCount():
		v = 0
	default:
		v = sketchMapping.Value(pos.KeyAtRank(rank - nneg - a.sketch.GetZeroCount()))
	}
	// The sketch returns a bin's representative value, which can lie just
	// outside [min, max]; clamp so the record stays consistent.
	return math.Min(math.Max(v, a.min), a.max)
}

// addPartials adds x to the non-overlapping partials of an exact sum
// (Shewchuk, "Adaptive Precision Floating-Point Arithmetic", as in
// Python's math.fsum).
func addPartials(p []float64, x float64) []float64 {
	i := 0
	for _, y := range p {
		if math.Abs(x) < math.Abs(y) {
			x, y = y, x
		}
		hi := x + y
		lo := y - (hi - x)
		if lo != 0 {
			p[i] = lo
			i++
		}
		x = hi
	}
	return append(p[:i], x)
}

// sumPartials rounds the exact sum held in partials to the nearest float64
// (ties to even), like math.fsum's final step.
func sumPartials(p []float64) float64 {
	n := len(p)
	if n == 0 {
		return 0
	}
	n--
	hi := p[n]
	var lo float64
	for n > 0 {
		x := hi
		n--
		y := p[n]
		hi = x + y
		yr := hi - x
		lo = y - yr
		if lo != 0 {
			break
		}
	}
	if n > 0 && ((lo < 0 && p[n-1] < 0) || (lo > 0 && p[n-1] > 0)) {
		y := lo * 2
		x := hi + y
		yr := x - hi
		if y == yr {
			hi = x
		}
	}
	return hi
}
