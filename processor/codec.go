package processor

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// Changelog record layout (all integers little-endian or varint):
//
//	key  "meta"                           → the partition's watermark
//	key  start(8 bytes BE µs) + device id → one device window's state
//
// Values start with a format version byte, so that a later version can read
// (or refuse with ErrBadState) what an earlier one wrote.
const (
	metaKey      = "meta"
	stateVersion = 1
)

func appendStateKey(b []byte, start int64, dev string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return append(b, dev...)
}

func parseStateKey(k []byte) (int64, string, error) {
	if len(k) < 9 || !utf8.Valid(k[8:]) {
		return 0, "", fmt.Errorf("%w: key %q", ErrBadState, k)
	}
	return int64(binary.BigEndian.Uint64(k)), string(k[8:]), nil
}

func (e *Engine) appendMeta(b []byte) []byte {
	b = append(b, stateVersion)
	b = binary.AppendVarint(b, e.maxEvent)
	b = binary.AppendVarint(b, e.wm)
	return b
}

func (e *Engine) decodeMeta(v []byte) error {
	r := reader{b: v}
	if r.byte() != stateVersion {
		return fmt.Errorf("%w: meta version", ErrBadState)
	}
	e.maxEvent = r.varint()
	e.wm = r.varint()
	if r.err != nil {
		return r.err
	}
	e.hasWM = true
	return nil
}

func appendF(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendDevWin(b []byte, dw *devWin) []byte {
	b = append(b, stateVersion)
	var flags byte
	if dw.closed {
		flags |= 1
	}
	if dw.actChanged {
		flags |= 2
	}
	b = append(b, flags)
	for _, v := range []int64{dw.messages, dw.dups, dw.late, dw.firstSeen, dw.lastSeen, dw.gaps, dw.actRev} {
		b = binary.AppendVarint(b, v)
	}
	if dw.closed {
		return b
	}
	// Identities: seq entries carry (t, seq); the others only ^t.
	b = binary.AppendUvarint(b, uint64(len(dw.seqs)))
	for _, s := range dw.seqs {
		b = binary.AppendVarint(b, s.t)
		b = binary.AppendVarint(b, s.seq)
	}
	nots := 0
	for nots < len(dw.ids) && dw.ids[nots] < 0 {
		nots++
	}
	b = binary.AppendUvarint(b, uint64(nots))
	for _, id := range dw.ids[:nots] {
		b = binary.AppendVarint(b, id)
	}
	b = binary.AppendUvarint(b, uint64(len(dw.aggs)))
	for _, a := range dw.aggs {
		b = binary.AppendUvarint(b, uint64(len(a.name)))
		b = append(b, a.name...)
		b = binary.AppendVarint(b, a.count)
		b = binary.AppendUvarint(b, uint64(len(a.partials)))
		for _, p := range a.partials {
			b = appendF(b, p)
		}
		for _, f := range []float64{a.min, a.max, a.wmean, a.m2, a.first, a.last} {
			b = appendF(b, f)
		}
		for _, v := range []int64{a.firstT, a.firstSeq, a.lastT, a.lastSeq, a.revision} {
			b = binary.AppendVarint(b, v)
		}
		var ch byte
		if a.changed {
			ch = 1
		}
		b = append(b, ch)
		var sk []byte
		a.sketch.Encode(&sk, true)
		b = binary.AppendUvarint(b, uint64(len(sk)))
		b = append(b, sk...)
	}
	return b
}

func decodeDevWin(v []byte, dev string, start int64) (*devWin, error) {
	r := reader{b: v}
	if r.byte() != stateVersion {
		return nil, fmt.Errorf("%w: version", ErrBadState)
	}
	flags := r.byte()
	dw := &devWin{dev: dev, start: start, closed: flags&1 != 0, actChanged: flags&2 != 0}
	for _, p := range []*int64{&dw.messages, &dw.dups, &dw.late, &dw.firstSeen, &dw.lastSeen, &dw.gaps, &dw.actRev} {
		*p = r.varint()
	}
	if dw.closed || r.err != nil {
		return dw, r.err
	}
	n := r.count()
	dw.seqs = make([]tseq, 0, n)
	for range n {
		s := tseq{r.varint(), r.varint()}
		dw.seqs = append(dw.seqs, s)
		dw.ids = append(dw.ids, s.seq)
	}
	n = r.count()
	for range n {
		dw.ids = append(dw.ids, r.varint())
	}
	slices.Sort(dw.ids)
	n = r.count()
	for range n {
		a := &agg{}
		a.name = string(r.bytes(r.count()))
		a.count = r.varint()
		np := r.count()
		for range np {
			a.partials = append(a.partials, r.f64())
		}
		for _, p := range []*float64{&a.min, &a.max, &a.wmean, &a.m2, &a.first, &a.last} {
			*p = r.f64()
		}
		for _, p := range []*int64{&a.firstT, &a.firstSeq, &a.lastT, &a.lastSeq, &a.revision} {
			*p = r.varint()
		}
		a.changed = r.byte() == 1
		sk := r.bytes(r.count())
		if r.err != nil {
			return nil, r.err
		}
		s, err := decodeSketch(sk)
		if err != nil {
			return nil, fmt.Errorf("%w: sketch of %q: %v", ErrBadState, a.name, err)
		}
		a.sketch = s
		dw.aggs = append(dw.aggs, a)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(r.b))
	}
	return dw, r.err
}

// reader decodes the changelog encoding; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated", ErrBadState)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length, bounded by the bytes left so a corrupt record
// cannot make us allocate much.
func (r *reader) count() int {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *reader) f64() float64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return f
}

func (r *reader) bytes(n int) []byte {
	if len(r.b) < n {
		r.fail()
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// maxSketchSpan bounds the bin index range of a decoded sketch: at 1 %
// accuracy every finite float64 magnitude fits in about 71,000 bins, so a
// wider range means a corrupt record (that would make a dense store
// allocate without bound).
const maxSketchSpan = 1 << 17

// decodeSketch decodes into sparse stores first, checks the index range,
// and only then builds the dense sketch the engine uses.
func decodeSketch(b []byte) (*ddsketch.DDSketch, error) {
	sparse, err := ddsketch.DecodeDDSketch(b, store.SparseStoreConstructor, sketchMapping)
	if err != nil {
		return nil, err
	}
	for _, st := range []store.Store{sparse.GetPositiveValueStore(), sparse.GetNegativeValueStore()} {
		if st.IsEmpty() {
			continue
		}
		lo, err1 := st.MinIndex()
		hi, err2 := st.MaxIndex()
		if err1 != nil || err2 != nil || hi-lo > maxSketchSpan || hi-lo < 0 {
			return nil, fmt.Errorf("sketch bins span [%d, %d]", lo, hi)
		}
	}
	dense := newSketch()
	if err := dense.MergeWith(sparse); err != nil {
		return nil, err
	}
	return dense, nil
}
