package processor

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"
	"unique"

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
//
// Version 4 (written now for every window record; device records stay
// version 2) is the compact state: the identities as the engine keeps
// them (idSet: ~2 bytes each in order), and per metric the sketch's
// occupied bins only (key delta and count, ~2 bytes a bin, as the engine
// keeps them) instead of a
// DDSketch encoding, the first/last identities only when they differ from
// the window's, the exact sum's partials, min, max, the Welford pair,
// first and last value, and the revision. Versions 1–3 still restore; a
// processor that reads at most version 3 refuses a version 4 record
// (ErrBadState) instead of misreading it.
const (
	metaKey              = "meta"
	stateVersion1        = 1
	stateVersion         = 2
	stateVersion3Ignored = 3
	stateVersion4        = 4
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
	keyChunk
)

// chunkMark separates a window key from the number of one of its identity
// chunks (version 4): 0xFF is in no UTF-8 text, so in no device id, and a
// processor that reads at most version 3 refuses such a key (ErrBadState).
const chunkMark = 0xff

// chunkKey names an identity chunk record while a restore collects them.
type chunkKey struct {
	start int64
	dev   string
	n     uint8
}

// appendChunkKey appends chunk n's suffix to a window key.
func appendChunkKey(b []byte, n uint8) []byte { return append(b, chunkMark, n) }

// appendChunk encodes an identity chunk: version 4, then identity bytes
// that continue the window's identity string.
func appendChunk(b, ids []byte) []byte {
	b = append(b, stateVersion4)
	return append(b, ids...)
}

func decodeChunk(v []byte) ([]byte, error) {
	if len(v) < 2 || v[0] != stateVersion4 {
		return nil, fmt.Errorf("%w: identity chunk version", ErrBadState)
	}
	return slices.Clone(v[1:]), nil
}

func appendStateKey(b []byte, start int64, dev string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return append(b, dev...)
}

func appendDeviceKey(b []byte, dev string) []byte {
	b = append(b, deviceKeyPrefix[:]...)
	return append(b, dev...)
}

func parseKey(k []byte) (kind keyKind, start int64, dev string, chunk uint8, err error) {
	if string(k) == metaKey {
		return keyMeta, 0, "", 0, nil
	}
	if n := len(k); n >= 11 && k[n-2] == chunkMark && [8]byte(k[:8]) != deviceKeyPrefix && k[n-1] > 0 && utf8.Valid(k[8:n-2]) {
		return keyChunk, int64(binary.BigEndian.Uint64(k)), string(k[8 : n-2]), k[n-1], nil
	}
	if len(k) < 9 || !utf8.Valid(k[8:]) {
		return 0, 0, "", 0, fmt.Errorf("%w: key %q", ErrBadState, k)
	}
	if [8]byte(k[:8]) == deviceKeyPrefix {
		return keyDevice, 0, string(k[8:]), 0, nil
	}
	return keyWindow, int64(binary.BigEndian.Uint64(k)), string(k[8:]), 0, nil
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
	b = append(b, stateVersion4)
	var flags byte
	if dw.closed {
		flags |= flagClosed
	}
	if dw.is(wActChanged) {
		flags |= flagActChanged
	}
	if dw.emitted {
		flags |= flagEmitted
	}
	b = append(b, flags)
	for _, v := range []int64{dw.messages, int64(dw.dups), int64(dw.late), int64(dw.resets), int64(dw.ignored),
		dw.ids.firstT - dw.start, dw.ids.last.t - dw.start, dw.gaps, int64(dw.actRev)} {
		b = binary.AppendVarint(b, v)
	}
	if dw.closed {
		return b
	}
	// The identities: the bytes in this record, then how many chunk
	// records hold the rest (see Engine.sendIDs).
	ids := dw.idBytes()
	if dw.chunks > 0 {
		ids = nil
	}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	b = append(b, ids...)
	b = binary.AppendUvarint(b, uint64(dw.chunks))
	b = binary.AppendUvarint(b, uint64(len(dw.aggs)))
	for i := range dw.aggs {
		b = appendAgg(b, &dw.aggs[i], dw.bins(i), dw.start)
	}
	return b
}

const (
	aggChanged = 1
	aggOwn     = 2
)

func appendAgg(b []byte, a *agg, bins []byte, start int64) []byte {
	name := a.metric()
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendVarint(b, a.count())
	p := a.partials()
	b = binary.AppendUvarint(b, uint64(len(p)))
	for _, x := range p {
		b = appendF(b, x)
	}
	for _, f := range []float64{a.min, a.max, a.wmean, a.m2, a.first, a.last} {
		b = appendF(b, f)
	}
	b = binary.AppendVarint(b, int64(a.revision()))
	var fl byte
	if a.changed() {
		fl |= aggChanged
	}
	own := a.ext != nil && a.ext.own
	if own {
		fl |= aggOwn
	}
	b = append(b, fl)
	if own {
		f, l := a.ext.first, a.ext.last
		for _, v := range []int64{f.t - start, f.seq + 1, l.t - start, l.seq + 1} {
			b = binary.AppendVarint(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(bins)))
	return append(b, bins...)
}

func decodeDevWin(v []byte, start int64) (*devWin, error) {
	return decodeDevWinChunks(v, start, nil)
}

// decodeDevWinChunks decodes a window record; chunk returns the identity
// chunk records read before it (version 4).
func decodeDevWinChunks(v []byte, start int64, chunk func(uint8) ([]byte, bool)) (*devWin, error) {
	r := reader{b: v}
	version := r.byte()
	switch version {
	case stateVersion1, stateVersion, stateVersion3Ignored:
		return decodeDevWinV123(r, version, start)
	case stateVersion4:
	default:
		return nil, fmt.Errorf("%w: version %d", ErrBadState, version)
	}
	flags := r.byte()
	dw := &devWin{start: start, ids: idSet{maxSeq: -1}, closed: flags&flagClosed != 0, emitted: flags&flagEmitted != 0}
	dw.set(wActChanged, flags&flagActChanged != 0)
	var firstSeen, lastSeen, dups, late, resets, actRev, ignored int64
	for _, p := range []*int64{&dw.messages, &dups, &late, &resets, &ignored,
		&firstSeen, &lastSeen, &dw.gaps, &actRev} {
		*p = r.varint()
	}
	dw.setCounters(dups, late, resets, actRev)
	dw.ignored = clamp32(ignored)
	dw.ids.firstT, dw.ids.last.t = start+firstSeen, start+lastSeen
	if ignored < 0 && r.err == nil {
		r.err = fmt.Errorf("%w: negative ignored fields", ErrBadState)
	}
	if dw.closed || r.err != nil {
		return dw, r.err
	}
	inline := r.bytes(r.count())
	nc := r.uvarint()
	if r.err != nil {
		return nil, r.err
	}
	if nc > maxChunks {
		return nil, fmt.Errorf("%w: %d identity chunks", ErrBadState, nc)
	}
	ids := slices.Clone(inline)
	base := len(inline)
	for c := 1; c <= int(nc); c++ {
		var b []byte
		ok := false
		if chunk != nil {
			b, ok = chunk(uint8(c))
		}
		if !ok {
			return nil, fmt.Errorf("%w: identity chunk %d of %d missing", ErrBadState, c, nc)
		}
		ids = append(ids, b...)
		if c == 1 {
			base = len(ids)
		}
	}
	if len(ids) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: identities too long", ErrBadState)
	}
	if err := dw.ids.load(ids, start); err != nil {
		return nil, err
	}
	dw.idsBase, dw.idsSent, dw.chunks = int32(base), int32(len(ids)), uint8(nc)
	if len(ids) == 0 {
		dw.ids.firstT, dw.ids.last.t = start+firstSeen, start+lastSeen
	}
	n := r.count()
	dw.aggs = make([]agg, 0, n)
	var sections []byte
	for range n {
		var a agg
		a.name = unique.Make(string(r.bytes(r.count())))
		if c := r.varint(); c >= 0 {
			a.setCount(c)
		} else if r.err == nil {
			r.err = fmt.Errorf("%w: negative count", ErrBadState)
		}
		np := r.count()
		var buf [8]float64
		p := buf[:0]
		for range np {
			p = append(p, r.f64())
		}
		a.setPartials(p)
		for _, p := range []*float64{&a.min, &a.max, &a.wmean, &a.m2, &a.first, &a.last} {
			*p = r.f64()
		}
		a.setRevision(clamp32(r.varint()))
		fl := r.byte()
		a.setBit(aggChangedBit, fl&aggChanged != 0)
		if fl&aggOwn != 0 {
			var e [4]int64
			for i := range e {
				e[i] = r.varint()
			}
			a.setEdges(tseq{start + e[0], e[1] - 1}, tseq{start + e[2], e[3] - 1})
		}
		bins := r.bytes(r.count())
		sections = binary.AppendUvarint(sections, uint64(len(bins)))
		sections = append(sections, bins...)
		it := binIter{b: bins}
		for _, _, _, _, ok := it.next(); ok; _, _, _, _, ok = it.next() {
		}
		if it.bad && r.err == nil {
			r.err = fmt.Errorf("%w: sketch bins of %q", ErrBadState, a.metric())
		}
		if r.err != nil {
			return nil, r.err
		}
		dw.aggs = append(dw.aggs, a)
	}
	if r.err == nil && !slices.IsSortedFunc(dw.aggs, func(a, b agg) int { return cmp.Compare(a.metric(), b.metric()) }) {
		r.err = fmt.Errorf("%w: metrics out of order", ErrBadState)
	}
	dw.setBins(sections)
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(r.b))
	}
	return dw, r.err
}

// decodeDevWinV123 reads the window records of versions 1 to 3 (r after
// the version byte) into the compact state.
func decodeDevWinV123(r reader, version byte, start int64) (*devWin, error) {
	flags := r.byte()
	dw := &devWin{start: start, ids: idSet{maxSeq: -1}, closed: flags&flagClosed != 0}
	dw.set(wActChanged, flags&flagActChanged != 0)
	var ids []tseq
	var firstSeen, lastSeen, dups, late, resets, actRev int64
	defer func() {
		dw.setCounters(dups, late, resets, actRev)
		if dw.noIDs() {
			dw.ids.firstT, dw.ids.last.t = firstSeen, lastSeen
		}
	}()
	if version == stateVersion1 {
		dw.set(wLegacy, true)
		for _, p := range []*int64{&dw.messages, &dups, &late, &firstSeen, &lastSeen, &dw.gaps, &actRev} {
			*p = r.varint()
		}
		if dw.closed || r.err != nil {
			return dw, r.err
		}
		n := r.count()
		for range n {
			ids = append(ids, tseq{r.varint(), r.varint()})
		}
		n = r.count()
		for range n {
			ids = append(ids, tseq{^r.varint(), -1}) // stored as ^t
		}
		slices.SortFunc(ids, cmpTseq)
		ids = slices.CompactFunc(ids, func(a, b tseq) bool { return a == b })
		if len(ids) > 0 && (ids[0].t < start || ids[0].seq < -1) && r.err == nil {
			r.err = fmt.Errorf("%w: identities out of range", ErrBadState)
		}
	} else {
		dw.emitted = flags&flagEmitted != 0
		for _, p := range []*int64{&dw.messages, &dups, &late, &resets} {
			*p = r.varint()
		}
		if version == stateVersion3Ignored {
			ignored := r.varint()
			if dw.ignored = clamp32(ignored); ignored < 0 && r.err == nil {
				r.err = fmt.Errorf("%w: negative ignored fields", ErrBadState)
			}
		}
		for _, p := range []*int64{&firstSeen, &lastSeen, &dw.gaps, &actRev} {
			*p = r.varint()
		}
		firstSeen += start
		lastSeen += start
		if dw.closed || r.err != nil {
			return dw, r.err
		}
		n := r.count()
		ids = make([]tseq, 0, n)
		pt, ps := start, int64(0)
		for range n {
			d := r.uvarint()
			pt += int64(d)
			ps += r.varint()
			if d > math.MaxInt64/2 || ps < 0 || (len(ids) > 0 && cmpTseq(tseq{pt, ps - 1}, ids[len(ids)-1]) <= 0) {
				r.err = fmt.Errorf("%w: identities out of order", ErrBadState)
				break
			}
			ids = append(ids, tseq{pt, ps - 1})
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	b, _ := encodeIDs(nil, ids, start)
	if err := dw.ids.load(b, start); err != nil {
		return nil, err
	}
	n := r.count()
	var binsOf [][]byte
	for range n {
		var a agg
		a.name = unique.Make(string(r.bytes(r.count())))
		if c := r.varint(); c >= 0 {
			a.setCount(c)
		} else if r.err == nil {
			r.err = fmt.Errorf("%w: negative count", ErrBadState)
		}
		np := r.count()
		p := make([]float64, 0, np)
		for range np {
			p = append(p, r.f64())
		}
		a.setPartials(p)
		for _, p := range []*float64{&a.min, &a.max, &a.wmean, &a.m2, &a.first, &a.last} {
			*p = r.f64()
		}
		var f, l tseq
		var rev int64
		for _, p := range []*int64{&f.t, &f.seq, &l.t, &l.seq, &rev} {
			*p = r.varint()
		}
		a.setRevision(clamp32(rev))
		if f != dw.first() || l != dw.ids.last {
			a.setEdges(f, l)
		}
		a.setBit(aggChangedBit, r.byte() == 1)
		sk := r.bytes(r.count())
		if r.err != nil {
			return nil, r.err
		}
		bins, err := decodeSketch(sk)
		if err != nil {
			return nil, fmt.Errorf("%w: sketch of %q: %v", ErrBadState, a.metric(), err)
		}
		dw.aggs = append(dw.aggs, a)
		binsOf = append(binsOf, bins)
	}
	order := make([]int, len(dw.aggs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return cmp.Compare(dw.aggs[i].metric(), dw.aggs[j].metric()) })
	aggs := make([]agg, 0, len(dw.aggs))
	var sections []byte
	for _, i := range order {
		aggs = append(aggs, dw.aggs[i])
		sections = binary.AppendUvarint(sections, uint64(len(binsOf[i])))
		sections = append(sections, binsOf[i]...)
	}
	dw.aggs = aggs
	dw.setBins(sections)
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(r.b))
	}
	return dw, r.err
}

// setCounters sets the per-window counters kept as int32 (records of
// versions 1–3 held int64; a value beyond int32 stops at its largest).
func (dw *devWin) setCounters(dups, late, resets, actRev int64) {
	dw.dups, dw.late, dw.resets, dw.actRev = clamp32(dups), clamp32(late), clamp32(resets), clamp32(actRev)
}

func clamp32(v int64) int32 { return int32(min(max(v, 0), math.MaxInt32)) }

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
// ±36,000, so an index beyond this means a corrupt record (the fuzzer
// found indexes near the int limits).
const maxSketchSpan = binIndexBias - 1

// decodeSketch reads a DDSketch encoding (changelog versions 1–3) into
// sparse stores, checks the index range, and returns its bins as the
// engine keeps them (see binKey).
func decodeSketch(b []byte) ([]byte, error) {
	sparse, err := ddsketch.DecodeDDSketch(b, store.SparseStoreConstructor, sketchMapping)
	if err != nil {
		return nil, err
	}
	type bin struct {
		k uint32
		n float64
	}
	var bins []bin
	var bad error
	collect := func(st store.Store, key func(int) uint32) {
		st.ForEach(func(i int, c float64) bool {
			if i < -maxSketchSpan || i > maxSketchSpan || c < 0 || c != math.Trunc(c) || c > 1<<53 {
				bad = fmt.Errorf("sketch bin %d count %v", i, c)
				return true
			}
			if c > 0 {
				bins = append(bins, bin{key(i), c})
			}
			return false
		})
	}
	collect(sparse.GetPositiveValueStore(), func(i int) uint32 { return uint32(binZeroKey + 1 + i + binIndexBias) })
	collect(sparse.GetNegativeValueStore(), func(i int) uint32 { return uint32(binZeroKey - 1 - i - binIndexBias) })
	if z := sparse.GetZeroCount(); z != 0 {
		if z < 0 || z != math.Trunc(z) || z > 1<<53 {
			bad = fmt.Errorf("zero count %v", z)
		}
		bins = append(bins, bin{binZeroKey, z})
	}
	if bad != nil {
		return nil, bad
	}
	slices.SortFunc(bins, func(a, b bin) int { return cmp.Compare(a.k, b.k) })
	var out []byte
	prev := uint32(0)
	for _, x := range bins {
		out = binary.AppendUvarint(out, uint64(x.k-prev))
		out = binary.AppendUvarint(out, uint64(x.n))
		prev = x.k
	}
	return out, nil
}
