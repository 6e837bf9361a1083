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

// Changelog record layout (integers varint unless said otherwise):
//
//	key  start(8 bytes BE µs) + device id → one device window's state
//	key  8 bytes 0xFF + device id         → one device's clock (version 2)
//	key  "meta"                           → the partition's watermark
//	                                         (version 1 only; read, never written)
//
// Values start with a format version byte. Version 2 (written now) keeps a
// clock per device; version 1 (the per-partition watermark) is still read:
// its meta record becomes a floor below which every device's windows stay
// closed, its window records are converted (see FinishRestore).
//
// Version 3 is a version 2 window record with one more counter, the
// ignored payload fields, after the seq resets. It is written only for a
// window whose accepted readings had ignored fields; every other record is
// still written as version 2, byte for byte what the processor before
// ignored fields wrote (a version 2 window record reads as 0 ignored
// fields). So the state of a pipeline whose devices send clean payloads
// is unchanged, and a processor of that earlier release, which reads
// versions 1 and 2, refuses a version 3 record (ErrBadState) instead of
// misreading it.
const (
	metaKey              = "meta"
	stateVersion1        = 1
	stateVersion         = 2
	stateVersion3Ignored = 3
)

// deviceKeyPrefix starts a device record's key: as a window start it would
// be −1 µs, which is never one (window starts are multiples of at least
// 1000 µs).
var deviceKeyPrefix = [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

type keyKind int

const (
	keyWindow keyKind = iota
	keyDevice
	keyMeta
)

func appendStateKey(b []byte, start int64, dev string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return append(b, dev...)
}

func appendDeviceKey(b []byte, dev string) []byte {
	b = append(b, deviceKeyPrefix[:]...)
	return append(b, dev...)
}

func parseKey(k []byte) (keyKind, int64, string, error) {
	if string(k) == metaKey {
		return keyMeta, 0, "", nil
	}
	if len(k) < 9 || !utf8.Valid(k[8:]) {
		return 0, 0, "", fmt.Errorf("%w: key %q", ErrBadState, k)
	}
	if [8]byte(k[:8]) == deviceKeyPrefix {
		return keyDevice, 0, string(k[8:]), nil
	}
	return keyWindow, int64(binary.BigEndian.Uint64(k)), string(k[8:]), nil
}

// decodeMeta reads a version 1 meta record: the partition's largest event
// time and watermark. Windows ending at or before watermark − lateness had
// closed for good for every device.
func (e *Engine) decodeMeta(v []byte) error {
	r := reader{b: v}
	if r.byte() != stateVersion1 {
		return fmt.Errorf("%w: meta version", ErrBadState)
	}
	_ = r.varint() // largest event time
	wm := r.varint()
	if r.err != nil {
		return r.err
	}
	e.hasFloor, e.legacyWM, e.floor = true, wm, wm-e.lateness
	return nil
}

// appendDevice encodes a device's clock: largest event time, how far its
// close point is below it, and its last input's wall-clock time relative
// to it.
func appendDevice(b []byte, d *device) []byte {
	b = append(b, stateVersion)
	b = binary.AppendVarint(b, d.maxEvent)
	b = binary.AppendVarint(b, d.maxEvent-d.closeTo)
	return binary.AppendVarint(b, d.lastInput-d.maxEvent)
}

func decodeDevice(v []byte, d *device) error {
	r := reader{b: v}
	if r.byte() != stateVersion {
		return fmt.Errorf("%w: device version", ErrBadState)
	}
	maxEvent := r.varint()
	closeTo := maxEvent - r.varint()
	lastInput := maxEvent + r.varint()
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(r.b))
	}
	if r.err != nil {
		return r.err
	}
	d.maxEvent, d.closeTo, d.lastInput = maxEvent, closeTo, lastInput
	return nil
}

func appendF(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

const (
	flagClosed     = 1
	flagActChanged = 2
	flagEmitted    = 4
)

func appendDevWin(b []byte, dw *devWin) []byte {
	version := byte(stateVersion)
	if dw.ignored != 0 {
		version = stateVersion3Ignored
	}
	b = append(b, version)
	var flags byte
	if dw.closed {
		flags |= flagClosed
	}
	if dw.actChanged {
		flags |= flagActChanged
	}
	if dw.emitted {
		flags |= flagEmitted
	}
	b = append(b, flags)
	for _, v := range []int64{dw.messages, dw.dups, dw.late, dw.resets} {
		b = binary.AppendVarint(b, v)
	}
	if version == stateVersion3Ignored {
		b = binary.AppendVarint(b, dw.ignored)
	}
	for _, v := range []int64{dw.firstSeen - dw.start, dw.lastSeen - dw.start, dw.gaps, dw.actRev} {
		b = binary.AppendVarint(b, v)
	}
	if dw.closed {
		return b
	}
	// Identities, sorted: event time as the rise from the previous one
	// (from the window start for the first), seq+1 (0 = none) as the
	// change from the previous one. In order at 1 Hz that is ~4 bytes.
	b = binary.AppendUvarint(b, uint64(len(dw.ids)))
	pt, ps := dw.start, int64(0)
	for _, x := range dw.ids {
		b = binary.AppendUvarint(b, uint64(x.t-pt))
		b = binary.AppendVarint(b, x.seq+1-ps)
		pt, ps = x.t, x.seq+1
	}
	b = binary.AppendUvarint(b, uint64(len(dw.aggs)))
	for _, a := range dw.aggs {
		b = appendAgg(b, a)
	}
	return b
}

func appendAgg(b []byte, a *agg) []byte {
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
	return append(b, sk...)
}

func decodeDevWin(v []byte, start int64) (*devWin, error) {
	r := reader{b: v}
	version := r.byte()
	if version != stateVersion && version != stateVersion1 && version != stateVersion3Ignored {
		return nil, fmt.Errorf("%w: version %d", ErrBadState, version)
	}
	flags := r.byte()
	dw := &devWin{start: start, maxSeq: -1, closed: flags&flagClosed != 0, actChanged: flags&flagActChanged != 0}
	if version == stateVersion1 {
		dw.legacy = true
		for _, p := range []*int64{&dw.messages, &dw.dups, &dw.late, &dw.firstSeen, &dw.lastSeen, &dw.gaps, &dw.actRev} {
			*p = r.varint()
		}
		if dw.closed || r.err != nil {
			return dw, r.err
		}
		n := r.count()
		for range n {
			dw.ids = append(dw.ids, tseq{r.varint(), r.varint()})
		}
		n = r.count()
		for range n {
			dw.ids = append(dw.ids, tseq{^r.varint(), -1}) // stored as ^t
		}
		slices.SortFunc(dw.ids, cmpTseq)
	} else {
		dw.emitted = flags&flagEmitted != 0
		for _, p := range []*int64{&dw.messages, &dw.dups, &dw.late, &dw.resets} {
			*p = r.varint()
		}
		if version == stateVersion3Ignored {
			if dw.ignored = r.varint(); dw.ignored < 0 && r.err == nil {
				r.err = fmt.Errorf("%w: negative ignored fields", ErrBadState)
			}
		}
		for _, p := range []*int64{&dw.firstSeen, &dw.lastSeen, &dw.gaps, &dw.actRev} {
			*p = r.varint()
		}
		dw.firstSeen += start
		dw.lastSeen += start
		if dw.closed || r.err != nil {
			return dw, r.err
		}
		n := r.count()
		dw.ids = make([]tseq, 0, n)
		pt, ps := start, int64(0)
		for range n {
			d := r.uvarint()
			pt += int64(d)
			ps += r.varint()
			if d > math.MaxInt64/2 || ps < 0 || (len(dw.ids) > 0 && cmpTseq(tseq{pt, ps - 1}, dw.ids[len(dw.ids)-1]) <= 0) {
				r.err = fmt.Errorf("%w: identities out of order", ErrBadState)
				break
			}
			dw.ids = append(dw.ids, tseq{pt, ps - 1})
		}
	}
	for _, x := range dw.ids {
		dw.maxSeq = max(dw.maxSeq, x.seq)
	}
	n := r.count()
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

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
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

// maxSketchSpan bounds the bin indexes of a decoded sketch: at 1 %
// accuracy every finite float64 magnitude has an index within about
// ±36,000 (71,000 bins in all), so an index or a range beyond this means a
// corrupt record (that would make a dense store allocate without bound:
// the fuzzer found indexes near the int limits with a small range).
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
		if err1 != nil || err2 != nil || hi-lo > maxSketchSpan || hi-lo < 0 || lo < -maxSketchSpan || hi > maxSketchSpan {
			return nil, fmt.Errorf("sketch bins span [%d, %d]", lo, hi)
		}
	}
	dense := newSketch()
	if err := dense.MergeWith(sparse); err != nil {
		return nil, err
	}
	return dense, nil
}
