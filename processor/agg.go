package processor

import (
	"encoding/binary"
	"math"
	"slices"
	"unique"

	"github.com/DataDog/sketches-go/ddsketch/mapping"
)

// SketchRelativeAccuracy is the relative accuracy of the p50/p95/p99
// estimates: each is within 1 % of the exact value at its rank (DDSketch's
// guarantee; the rank of quantile q among n values is floor(q·(n−1))).
const SketchRelativeAccuracy = 0.01

// sketchMapping is DDSketch's logarithmic index mapping at 1 % relative
// accuracy (github.com/DataDog/sketches-go): value v > 0 falls in bin
// Index(v), whose representative Value(i) is within 1 % of every value of
// the bin. The bins are kept by the engine itself (binKey), sparse and
// compact; changelogs of versions 1–3 hold them as DDSketch encodings.
var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(SketchRelativeAccuracy)
	if err != nil {
		panic(err) // a constant that is known to be valid
	}
	return m
}()

// Sketch bins, kept per aggregate as one byte string of its occupied bins
// in key order, each as uvarint(key − previous key) (the first from 0) and
// uvarint(count): ~2 bytes a bin. The key orders bins by value: negative
// values by decreasing magnitude, then zero, then positive values by
// increasing magnitude.
const (
	// binIndexBias moves DDSketch indexes (|index| ≤ ~35,500 at 1 %
	// accuracy over the whole float64 range) to [0, 2·binIndexBias).
	binIndexBias = 1 << 16
	binZeroKey   = 2 * binIndexBias
	binKeyLimit  = 4*binIndexBias + 2 // keys are below it
)

var (
	sketchMinValue = sketchMapping.MinIndexableValue()
	sketchMaxValue = sketchMapping.MaxIndexableValue()
)

// binKey returns the bin key of v (not NaN). Magnitudes beyond the
// mapping's largest indexable value (about 1.8e308/1.02) go to its last
// bin; DDSketch dropped them.
func binKey(v float64) uint32 {
	switch {
	case v > sketchMinValue:
		return binZeroKey + 1 + uint32(sketchMapping.Index(min(v, sketchMaxValue))+binIndexBias)
	case v < -sketchMinValue:
		return binZeroKey - 1 - uint32(sketchMapping.Index(min(-v, sketchMaxValue))+binIndexBias)
	default:
		return binZeroKey
	}
}

// binCache memoises binKey for recent values, by their bits (direct
// mapped): sensors repeat values (their resolution is coarse: a
// temperature in tenths of a degree), and the logarithm is most of what a
// value costs the sketch. A hit returns exactly what binKey returns.
type binCache [binCacheSize]struct {
	bits uint64
	key  uint32 // 0: empty (binKey never returns 0)
}

const binCacheSize = 1024 // a power of two

// key returns binKey(v).
func (c *binCache) key(v float64) uint32 {
	b := math.Float64bits(v)
	e := &c[(b*0x9E3779B97F4A7C15)>>(64-10)]
	if e.key != 0 && e.bits == b {
		return e.key
	}
	k := binKey(v)
	e.bits, e.key = b, k
	return k
}

// binValue is the representative value of the bin with key k.
func binValue(k uint32) float64 {
	switch {
	case k > binZeroKey:
		return sketchMapping.Value(int(k) - binZeroKey - 1 - binIndexBias)
	case k < binZeroKey:
		return -sketchMapping.Value(binZeroKey - 1 - int(k) - binIndexBias)
	default:
		return 0
	}
}

// binIter walks a bins string.
type binIter struct {
	b   []byte
	pos int    // offset of the next entry
	key uint32 // key of the last entry
	bad bool
}

// next returns the next bin: its key, count, and the offsets of its entry
// and of its count.
func (it *binIter) next() (k uint32, c uint64, at, cat int, ok bool) {
	if it.pos >= len(it.b) {
		return 0, 0, 0, 0, false
	}
	at = it.pos
	d, n1 := binary.Uvarint(it.b[at:])
	if n1 <= 0 || d >= binKeyLimit || uint64(it.key)+d >= binKeyLimit || (d == 0 && at > 0) {
		it.bad, it.pos = true, len(it.b)
		return 0, 0, 0, 0, false
	}
	cat = at + n1
	c, n2 := binary.Uvarint(it.b[cat:])
	if n2 <= 0 || c == 0 {
		it.bad, it.pos = true, len(it.b)
		return 0, 0, 0, 0, false
	}
	it.key += uint32(d)
	it.pos = cat + n2
	return it.key, c, at, cat, true
}

// addBin counts one value of bin key k into the bins string b.
func addBin(b []byte, k uint32) []byte {
	var tmp [3 * binary.MaxVarintLen64]byte
	i, j, r := binEdit(b, k, tmp[:0])
	return spliceBins(b, i, j, r)
}

// binEdit returns the edit that counts one value of bin key k into the
// bins string b: replace b[i:j] with r (built in tmp). It is binEditIter
// with the walk inlined and one-byte varints read directly (a value's
// hottest path); a string that is not well formed goes to binEditIter.
func binEdit(b []byte, k uint32, tmp []byte) (i, j int, r []byte) {
	key, pos := uint32(0), 0
	for pos < len(b) {
		at := pos
		d := uint64(b[pos])
		if d < 0x80 {
			pos++
		} else {
			var n int
			if d, n = binary.Uvarint(b[pos:]); n <= 0 {
				return binEditIter(b, k, tmp)
			}
			pos += n
		}
		if d >= binKeyLimit || uint64(key)+d >= binKeyLimit || (d == 0 && at > 0) || pos >= len(b) {
			return binEditIter(b, k, tmp)
		}
		cat := pos
		c := uint64(b[pos])
		if c < 0x80 {
			pos++
		} else {
			var n int
			if c, n = binary.Uvarint(b[pos:]); n <= 0 {
				return binEditIter(b, k, tmp)
			}
			pos += n
		}
		if c == 0 {
			return binEditIter(b, k, tmp)
		}
		switch nk := key + uint32(d); {
		case nk == k:
			return cat, pos, binary.AppendUvarint(tmp, c+1)
		case nk > k:
			// A new entry before this one, whose delta shrinks.
			r = binary.AppendUvarint(tmp, uint64(k-key))
			r = append(r, 1)
			r = binary.AppendUvarint(r, uint64(nk-k))
			return at, cat, r
		default:
			key = nk
		}
	}
	r = binary.AppendUvarint(tmp, uint64(k-key))
	return len(b), len(b), append(r, 1)
}

// binEditIter is binEdit by binIter: a string that is not well formed is
// taken to end before its first bad entry.
func binEditIter(b []byte, k uint32, tmp []byte) (i, j int, r []byte) {
	it := binIter{b: b}
	prev := uint32(0)
	for {
		key, c, at, cat, ok := it.next()
		switch {
		case !ok:
			r = binary.AppendUvarint(tmp, uint64(k-prev))
			return len(b), len(b), append(r, 1)
		case key == k:
			return cat, it.pos, binary.AppendUvarint(tmp, c+1)
		case key > k:
			// A new entry before this one, whose delta shrinks.
			r = binary.AppendUvarint(tmp, uint64(k-prev))
			r = append(r, 1)
			r = binary.AppendUvarint(r, uint64(key-k))
			return at, cat, r
		}
		prev = key
	}
}

// A device window's sketch bins and identities share one byte string
// (devWin.ids.b), one allocation per window: for each aggregate, in
// dw.aggs order, uvarint(length) and its bins string; then, from
// dw.idsOff, the identity string, which grows at its end.

// binsSection returns where aggregate i's bins are in the window buffer:
// the offset of its length, of its bins, and their length.
func (dw *devWin) binsSection(i int) (hdr, at, n int) {
	b := dw.ids.b
	p := 0
	for j := 0; ; j++ {
		l, k := binary.Uvarint(b[p:])
		if j == i {
			return p, p + k, int(l)
		}
		p += k + int(l)
	}
}

// bins returns aggregate i's sketch bins (see binIter).
func (dw *devWin) bins(i int) []byte {
	_, at, n := dw.binsSection(i)
	return dw.ids.b[at : at+n : at+n]
}

// addBin counts one value of bin key k into aggregate i's bins.
func (dw *devWin) addBin(i int, k uint32) {
	hdr, at, n := dw.binsSection(i)
	var tmp [3 * binary.MaxVarintLen64]byte
	x, y, r := binEdit(dw.ids.b[at:at+n], k, tmp[:0])
	if len(r) == y-x {
		copy(dw.ids.b[at+x:], r)
		return
	}
	nn := n + len(r) - (y - x)
	b := spliceBins(dw.ids.b, at+x, at+y, r)
	var h [binary.MaxVarintLen64]byte
	hb := binary.AppendUvarint(h[:0], uint64(nn))
	dw.ids.b = spliceBins(b, hdr, at, hb)
	dw.idsOff += int32(nn - n + len(hb) - (at - hdr))
}

// insertBins adds an empty bins section for a new aggregate at position i
// of dw.aggs (before it is inserted there).
func (dw *devWin) insertBins(i int) {
	p := int(dw.idsOff)
	if i < len(dw.aggs) {
		p, _, _ = dw.binsSection(i)
	}
	dw.ids.b = spliceBins(dw.ids.b, p, p, []byte{0})
	dw.idsOff++
}

// setBins puts the bins sections (as binsSection reads them) before dw's
// identities, which must be the whole buffer.
func (dw *devWin) setBins(sections []byte) {
	b := make([]byte, 0, len(sections)+len(dw.ids.b))
	dw.ids.b = append(append(b, sections...), dw.ids.b...)
	dw.idsOff = int32(len(sections))
}

// spliceBins replaces b[i:j] with r, growing b by a quarter when needed
// (not double: most windows stop adding bins early, and slack would stay
// for the window's life).
func spliceBins(b []byte, i, j int, r []byte) []byte {
	if len(r) == j-i {
		copy(b[i:], r)
		return b
	}
	if need := len(b) + len(r) - (j - i); need > cap(b) {
		b = growBytes(b, max(need-len(b), len(b)/8+1))
	}
	return slices.Replace(b, i, j, r...)
}

// agg is the running aggregate of one metric of one device in one window.
// Every field but the Welford pair (mean, m2) is independent of the order in
// which readings arrive: the sum is exactly rounded (Shewchuk's algorithm, as
// Python's math.fsum), min/max/first/last are order-free by construction and
// the sketch counts bins. The Welford pair is merged stably, so stddev is
// reproducible to ~1e-15 relative whatever the order.
//
// Its first and last readings' identities are, as a rule, its window's
// first and last identities (every reading of the window carried the
// metric); only an aggregate that missed one holds its own (ext.edges).
type agg struct {
	name        unique.Handle[string] // the metric name, interned (8 bytes, shared by every window)
	min, max    float64
	wmean, m2   float64 // Welford running mean and sum of squared deviations
	first, last float64
	p           [2]float64 // the exact sum's partials while there are at most two
	ext         *aggExt    // rare parts; nil when none is needed
	// The count and the revision of the last emission (0 = never
	// emitted) keep their low bits here and the rest in ext (exact; the
	// revision stops at math.MaxInt32 as before), so that an agg is 88
	// bytes (TestStateLayout).
	cnt uint32
	rev uint16
	st  uint8 // partials in p (bits 0–1; 3 = in ext.partials), aggChangedBit, aggTouchedBit
}

const (
	aggNPMask     = 3
	aggChangedBit = 4 // updated since the last emission
	aggTouchedBit = 8 // updated by the reading being added (Engine.AddAt only)
)

// aggExt holds what most aggregates do not need.
type aggExt struct {
	partials []float64 // the exact sum's partials when more than two
	// own: first/last are this aggregate's first and last identities,
	// which differ from its window's.
	own         bool
	first, last tseq
	cntHi       uint32 // count >> 32
	revHi       uint16 // revision >> 16
}

func (a *agg) extra() *aggExt {
	if a.ext == nil {
		a.ext = &aggExt{}
	}
	return a.ext
}

// count returns the number of values.
func (a *agg) count() int64 {
	c := int64(a.cnt)
	if a.ext != nil {
		c += int64(a.ext.cntHi) << 32
	}
	return c
}

func (a *agg) setCount(c int64) {
	a.cnt = uint32(c)
	if c>>32 != 0 || a.ext != nil {
		a.extra().cntHi = uint32(c >> 32)
	}
}

// revision returns the revision of the last emission.
func (a *agg) revision() int32 {
	r := int32(a.rev)
	if a.ext != nil {
		r += int32(a.ext.revHi) << 16
	}
	return r
}

func (a *agg) setRevision(r int32) {
	a.rev = uint16(r)
	if r>>16 != 0 || a.ext != nil {
		a.extra().revHi = uint16(r >> 16)
	}
}

func (a *agg) np() uint8 { return a.st & aggNPMask }

func (a *agg) setNP(n uint8) { a.st = a.st&^aggNPMask | n }

func (a *agg) changed() bool { return a.st&aggChangedBit != 0 }

func (a *agg) touched() bool { return a.st&aggTouchedBit != 0 }

func (a *agg) setBit(bit uint8, on bool) {
	if on {
		a.st |= bit
	} else {
		a.st &^= bit
	}
}

// metric returns the metric name ("" for an aggregate without one, as
// tests build).
func (a *agg) metric() string {
	if a.name == (unique.Handle[string]{}) {
		return ""
	}
	return a.name.Value()
}

// sum returns the exactly rounded sum.
func (a *agg) sum() float64 { return sumPartials(a.partials()) }

func (a *agg) partials() []float64 {
	if a.np() > 2 {
		return a.ext.partials
	}
	return a.p[:a.np()]
}

func (a *agg) setPartials(p []float64) {
	if len(p) <= 2 {
		if a.np() > 2 {
			a.ext.partials = nil
		}
		a.setNP(uint8(copy(a.p[:], p)))
		return
	}
	x := a.extra()
	if a.np() <= 2 {
		x.partials = slices.Clone(p)
	} else {
		x.partials = append(x.partials[:0], p...)
	}
	a.setNP(3)
}

// edges returns the identities of a's first and last readings; wf and wl
// are its window's.
func (a *agg) edges(wf, wl tseq) (tseq, tseq) {
	if a.ext != nil && a.ext.own {
		return a.ext.first, a.ext.last
	}
	return wf, wl
}

// setEdges makes a hold its own first and last identities.
func (a *agg) setEdges(f, l tseq) {
	if a.ext == nil {
		a.ext = &aggExt{}
	}
	a.ext.own, a.ext.first, a.ext.last = true, f, l
}

// add folds one value with identity id in (its sketch bin is counted by
// devWin.addBin). f and l are a's first and last
// identities before it (meaningless while count is 0); own tells whether
// a's identities must be its own after it (its window's differ).
func (a *agg) add(v float64, id, f, l tseq, own bool) {
	if a.cnt++; a.cnt == 0 {
		a.extra().cntHi++
	}
	n := a.count()
	if n == 1 {
		a.min, a.max = v, v
		a.first, a.last = v, v
		f, l = id, id
	} else {
		a.min = math.Min(a.min, v)
		a.max = math.Max(a.max, v)
		// f ≤ l: at most one of them moves, and f is not read when id is
		// after l (AddAt passes a zero f then).
		if cmpTseq(id, l) > 0 {
			a.last, l = v, id
		} else if cmpTseq(id, f) < 0 {
			a.first, f = v, id
		}
	}
	if own {
		a.setEdges(f, l)
	} else if a.ext != nil {
		a.ext.own = false
	}
	var buf [8]float64
	a.setPartials(addPartials(append(buf[:0], a.partials()...), v))
	d := v - a.wmean
	a.wmean += d / float64(n)
	a.m2 += d * (v - a.wmean)
	a.st |= aggChangedBit | aggTouchedBit
}

// mean is the exactly rounded sum divided by the count.
func (a *agg) mean() float64 { return a.sum() / float64(a.count()) }

// stddev is the population standard deviation, sqrt(m2/n).
func (a *agg) stddev() float64 {
	if a.count() < 2 || a.m2 <= 0 {
		return 0
	}
	return math.Sqrt(a.m2 / float64(a.count()))
}

// quantile estimates the value of rank floor(q·(count−1)) among the
// window's sorted values: the representative value of the bin holding
// that rank, clamped to [min, max] (a bin's representative can lie just
// outside them). It gives what DDSketch's stores gave for the same bins.
func (a *agg) quantile(bins []byte, q float64) float64 {
	if a.count() == 0 || len(bins) == 0 {
		return 0
	}
	rank := uint64(math.Floor(q * float64(a.count()-1)))
	var n uint64
	var k uint32
	it := binIter{b: bins}
	for key, c, _, _, ok := it.next(); ok; key, c, _, _, ok = it.next() {
		k = key
		if n += c; n > rank {
			break
		}
	}
	return math.Min(math.Max(binValue(k), a.min), a.max)
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
