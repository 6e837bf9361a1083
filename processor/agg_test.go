package processor

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// sketchCases are value sets for the quantile tests: sizes from one value
// to a 10 Hz hour, sensor-like narrow ranges, wide ranges, negatives,
// zeros, mixed signs, repeated values and extreme magnitudes (up to
// 1e307: beyond about 1.7e308 DDSketch's mapping indexes nothing; the
// engine counts such values in its last bin, and their estimate is that
// bin's, clamped to [min, max], not within 1 %).
func sketchCases() map[string][]float64 {
	rng := rand.New(rand.NewPCG(19, 2026))
	gen := func(n int, f func(i int) float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return v
	}
	return map[string][]float64{
		"one":            {21.5},
		"two":            {3, -3},
		"temp 1Hz":       gen(60, func(int) float64 { return 20 + math.Round(rng.NormFloat64()*30)/10 }),
		"hum 10Hz":       gen(600, func(int) float64 { return 40 + float64(rng.IntN(17)) }),
		"lognormal":      gen(5000, func(int) float64 { return math.Exp(rng.NormFloat64() * 3) }),
		"mixed signs":    gen(2000, func(int) float64 { return rng.NormFloat64() * 1e4 }),
		"negatives":      gen(999, func(int) float64 { return -rng.ExpFloat64() * 100 }),
		"zeros and more": gen(300, func(i int) float64 { return float64(i%3) * rng.Float64() }),
		"extremes":       {1e-300, -1e-300, 1e300, -1e300, 5e-324, 1e307, -1e307, 0, 1, -1},
		"one bin 36000":  gen(36000, func(int) float64 { return 7 }), // a bin counted past 2^14 times
	}
}

// TestQuantileAccuracy: p50/p95/p99 (and other q) of an aggregate are
// within 1 % relative (SketchRelativeAccuracy) of the exact value of rank
// floor(q·(n−1)) among the sorted values, whatever order the values come
// in, and after a round trip through the changelog.
func TestQuantileAccuracy(t *testing.T) {
	for name, vals := range sketchCases() {
		sorted := slices.Clone(vals)
		slices.Sort(sorted)
		rng := rand.New(rand.NewPCG(7, uint64(len(vals))))
		shuffled := slices.Clone(vals)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for _, order := range [][]float64{vals, shuffled} {
			var a agg
			var bins []byte
			for i, v := range order {
				a.add(v, tseq{int64(i), int64(i)}, tseq{0, 0}, tseq{int64(i - 1), int64(i - 1)}, false)
				bins = addBin(bins, binKey(v))
			}
			dw := &devWin{start: 0, ids: idSet{maxSeq: -1}, aggs: []agg{a}}
			dw.setBins(append(binary.AppendUvarint(nil, uint64(len(bins))), bins...))
			restored, err := decodeDevWin(appendDevWin(nil, dw), 0)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1} {
				exact := sorted[int(math.Floor(q*float64(len(sorted)-1)))]
				for _, got := range []float64{a.quantile(bins, q), restored.aggs[0].quantile(restored.bins(0), q)} {
					if d := math.Abs(got - exact); d > SketchRelativeAccuracy*math.Abs(exact) {
						t.Errorf("%s: p%v = %v, exact %v: relative error %.4f > %v", name, q*100, got, exact, d/math.Abs(exact), SketchRelativeAccuracy)
					}
				}
			}
		}
	}
}

// TestQuantileMatchesDDSketch: the engine's sparse bins give the same
// quantiles as DDSketch's dense stores with the same mapping gave (the
// previous implementation, and the bins of changelog versions 1–3), and a
// DDSketch encoding converts to the same bins.
func TestQuantileMatchesDDSketch(t *testing.T) {
	for name, vals := range sketchCases() {
		sk := ddsketch.NewDDSketchFromStoreProvider(sketchMapping, store.DenseStoreConstructor)
		var a agg
		var abins []byte
		for i, v := range vals {
			if math.Abs(v) <= sketchMaxValue { // DDSketch refuses the rest
				_ = sk.Add(v)
			}
			a.add(v, tseq{int64(i), 0}, tseq{}, tseq{}, false)
			abins = addBin(abins, binKey(v))
		}
		var enc []byte
		sk.Encode(&enc, true)
		bins, err := decodeSketch(enc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(bins, abins) {
			t.Errorf("%s: bins from the DDSketch encoding differ from the engine's", name)
		}
		for _, q := range []float64{0, 0.5, 0.95, 0.99, 1} {
			if got, want := a.quantile(abins, q), ddsketchQuantile(sk, q, a.min, a.max); got != want {
				t.Errorf("%s: p%v = %v, DDSketch's stores give %v", name, q*100, got, want)
			}
		}
	}
}

// ddsketchQuantile is the previous implementation of agg.quantile, on a
// DDSketch.
func ddsketchQuantile(s *ddsketch.DDSketch, q, lo, hi float64) float64 {
	n := s.GetCount()
	rank := math.Floor(q * (n - 1))
	neg, pos := s.GetNegativeValueStore(), s.GetPositiveValueStore()
	nneg := neg.TotalCount()
	var v float64
	switch {
	case rank < nneg:
		v = -sketchMapping.Value(neg.KeyAtRank(nneg - 1 - rank))
	case rank < nneg+s.GetZeroCount():
		v = 0
	default:
		v = sketchMapping.Value(pos.KeyAtRank(rank - nneg - s.GetZeroCount()))
	}
	return math.Min(math.Max(v, lo), hi)
}

// TestAddBinsSplice: bins stay sorted, one entry per key, with the right
// counts, whatever order keys arrive in (new keys before, between and after
// others; counts whose varint grows).
func TestAddBinsSplice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[uint32]uint64{}
	var b []byte
	for range 20000 {
		k := uint32(binZeroKey - 300 + rng.IntN(600))
		if rng.IntN(10) == 0 {
			k = uint32(rng.IntN(binKeyLimit))
		}
		b = addBin(b, k)
		want[k]++
	}
	it := binIter{b: b}
	prev, n := -1, 0
	for k, c, _, _, ok := it.next(); ok; k, c, _, _, ok = it.next() {
		if int(k) <= prev || want[k] != c {
			t.Fatalf("bin %d count %d (previous key %d), want count %d", k, c, prev, want[k])
		}
		prev = int(k)
		n++
	}
	if it.bad || n != len(want) {
		t.Fatalf("%d bins read (bad %v), want %d", n, it.bad, len(want))
	}
}

// TestBinCache: the memoised bin key is binKey's, for repeated values,
// values whose cache slots collide, zeros of both signs and extremes.
func TestBinCache(t *testing.T) {
	var c binCache
	vals := []float64{0, math.Copysign(0, -1), 1e-320, -1e-320, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64}
	for _, vs := range sketchCases() {
		vals = append(vals, vs...)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		vals = append(vals, math.Round(rng.NormFloat64()*300)/10)
	}
	for pass := range 2 {
		for _, v := range vals {
			if got, want := c.key(v), binKey(v); got != want {
				t.Fatalf("pass %d: key(%v) = %d, binKey %d", pass, v, got, want)
			}
		}
	}
}

// TestBinEditFast: binEdit and binEditIter agree on well-formed strings
// (built by counting random values, up to multi-byte counts and deltas)
// and on corrupt ones.
func TestBinEditFast(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	check := func(b []byte, k uint32) {
		t.Helper()
		var t1, t2 [3 * binary.MaxVarintLen64]byte
		i1, j1, r1 := binEdit(b, k, t1[:0])
		i2, j2, r2 := binEditIter(b, k, t2[:0])
		if i1 != i2 || j1 != j2 || !slices.Equal(r1, r2) {
			t.Fatalf("bins %x key %d: binEdit %d %d %x, binEditIter %d %d %x", b, k, i1, j1, r1, i2, j2, r2)
		}
	}
	for range 200 {
		var b []byte
		scale := []float64{1, 100, 1e6}[rng.IntN(3)]
		for range rng.IntN(600) {
			k := binKey(rng.NormFloat64() * scale)
			check(b, k)
			b = addBin(b, k)
		}
		for range 20 {
			check(b, binKey(rng.NormFloat64()*scale))
		}
		if len(b) > 0 {
			c := slices.Clone(b)
			c[rng.IntN(len(c))] = byte(rng.IntN(256))
			check(c, binKey(rng.NormFloat64()*scale))
			check(b[:rng.IntN(len(b))], binKey(rng.NormFloat64()*scale))
		}
	}
	check([]byte{0x80}, binZeroKey)
	check([]byte{5, 0}, binZeroKey)
	check([]byte{5, 1, 0, 1}, binZeroKey)
}

// BenchmarkBinEdit: counting a value into a bins string of 17 bins (a
// sensor's minute).
func BenchmarkBinEdit(b *testing.B) {
	var bins []byte
	vals := make([]uint32, 64)
	for i := range vals {
		vals[i] = binKey(40 + float64(i%17))
		bins = addBin(bins, vals[i])
	}
	var tmp [3 * binary.MaxVarintLen64]byte
	for i := 0; b.Loop(); i++ {
		binEdit(bins, vals[i%len(vals)], tmp[:0])
	}
}
