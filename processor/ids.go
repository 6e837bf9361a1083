package processor

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// The identities (event time, seq) of a window's accepted readings are
// kept sorted in one byte string. Each is coded against the previous one
// (the first against (window start, no seq) with a previous gap of 0):
// the change of the time gap, as Gorilla codes timestamps, and the rise
// of seq+1:
//
//	uvarint h = zigzag(dd')<<2 | ms<<1 | seqNext
//	  dd = gap − previous gap (µs); dd' = dd/1000 when ms is 1 (dd a whole
//	  number of milliseconds), else dd
//	  seqNext = 1: seq+1 rose by the usual step (1 after a reading with a
//	  seq, 0 after one without or at the start); else varint of the rise
//	  follows
//
// A device that sends at a steady rate with the next seq takes 1 byte per
// reading while its gaps vary by less than ±16 ms (a []tseq takes 16),
// 2 bytes up to ±2 s. The changelog (version 4) holds the same bytes.

// idCursor is the coding state after an identity: its time, seq+1 and
// the gap before it.
type idCursor struct{ t, s, gap int64 }

// appendID appends id's coding after c and returns the new state.
func appendID(b []byte, c idCursor, id tseq) ([]byte, idCursor) {
	gap := id.t - c.t
	dd := gap - c.gap
	var h uint64
	if dd%1000 == 0 {
		h = zigzag(dd/1000)<<2 | 2
	} else {
		h = zigzag(dd) << 2
	}
	ds := id.seq + 1 - c.s
	if ds == seqStep(c.s) {
		b = binary.AppendUvarint(b, h|1)
	} else {
		b = binary.AppendUvarint(b, h)
		b = binary.AppendVarint(b, ds)
	}
	return b, idCursor{id.t, id.seq + 1, gap}
}

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func seqStep(prevS int64) int64 {
	if prevS > 0 {
		return 1
	}
	return 0
}

// idIter walks an identity string.
type idIter struct {
	b   []byte
	c   idCursor
	bad bool
}

func newIDIter(b []byte, start int64) idIter { return idIter{b: b, c: idCursor{t: start}} }

// next returns the next identity, false at the end or on a malformed
// string (bad set).
func (it *idIter) next() (tseq, bool) {
	if len(it.b) == 0 {
		return tseq{}, false
	}
	h, n := binary.Uvarint(it.b)
	if n <= 0 || h>>2 > 1<<52 {
		it.bad, it.b = true, nil
		return tseq{}, false
	}
	it.b = it.b[n:]
	dd := unzigzag(h >> 2)
	if h&2 != 0 {
		dd *= 1000
	}
	ds := seqStep(it.c.s)
	if h&1 == 0 {
		v, n := binary.Varint(it.b)
		if n <= 0 {
			it.bad, it.b = true, nil
			return tseq{}, false
		}
		it.b = it.b[n:]
		ds = v
	}
	it.c.gap += dd
	it.c.t += it.c.gap
	it.c.s += ds
	return tseq{it.c.t, it.c.s - 1}, true
}

// decodeIDs appends the identities of b to out.
func decodeIDs(out []tseq, b []byte, start int64) ([]tseq, bool) {
	it := newIDIter(b, start)
	for {
		id, ok := it.next()
		if !ok {
			return out, !it.bad
		}
		out = append(out, id)
	}
}

// encodeIDs codes sorted identities.
func encodeIDs(b []byte, ids []tseq, start int64) ([]byte, idCursor) {
	c := idCursor{t: start}
	for _, x := range ids {
		b, c = appendID(b, c, x)
	}
	return b, c
}

// idSet is the identity string of a device window with what makes the
// common case (an identity after every other) cheap. first and last are
// kept when the window closes (the activity record's first/last seen).
// The string is b[off:], off being devWin.idsOff: b starts with the
// window's sketch bins (see devWin.binsSection), one allocation for both.
// The smallest identity is the string's first (devWin.first), only its
// time is kept (for a closed window, whose string is dropped).
type idSet struct {
	b      []byte
	firstT int64 // the time of the smallest identity
	last   tseq  // the largest identity (the string not empty)
	gap    int64 // the time gap before last
	maxSeq int64 // the largest seq, −1 if none
}

// idBytes returns dw's identity string.
func (dw *devWin) idBytes() []byte { return dw.ids.b[dw.idsOff:] }

// noIDs reports whether dw holds no identity.
func (dw *devWin) noIDs() bool { return len(dw.ids.b) == int(dw.idsOff) }

// first returns dw's smallest identity (its time, and seq 0, when dw
// holds no identity string, as a restored closed window).
func (dw *devWin) first() tseq {
	it := newIDIter(dw.idBytes(), dw.start)
	if x, ok := it.next(); ok {
		return x
	}
	return tseq{dw.ids.firstT, 0}
}

// idCount returns the number of identities.
func (dw *devWin) idCount() int {
	n := 0
	it := newIDIter(dw.idBytes(), 0)
	for _, ok := it.next(); ok; _, ok = it.next() {
		n++
	}
	return n
}

// add records an identity in the string s.b[off:]; see devWin.addID.
func (s *idSet) add(id tseq, start int64, off int32, scratch *[]tseq) idResult {
	empty := len(s.b) == int(off)
	if !empty && id == s.last {
		return idDuplicate
	}
	res := idNew
	if id.seq >= 0 && id.seq <= s.maxSeq {
		it := newIDIter(s.b[off:], start)
		for x, ok := it.next(); ok; x, ok = it.next() {
			if x.seq == id.seq && x.t != id.t {
				res = idSeqReset
				break
			}
		}
	}
	switch {
	case empty:
		var c idCursor
		s.b, c = appendID(s.b, idCursor{t: start}, id)
		s.firstT, s.gap = id.t, c.gap
	case cmpTseq(id, s.last) > 0:
		var tmp [2 * binary.MaxVarintLen64]byte
		e, c := appendID(tmp[:0], idCursor{s.last.t, s.last.seq + 1, s.gap}, id)
		if len(s.b)+len(e) > cap(s.b) {
			// Grow by a quarter, not double: the slack stays for the
			// window's life.
			s.b = growBytes(s.b, max(len(e), len(s.b)/8))
		}
		s.b = append(s.b, e...)
		s.gap = c.gap
	default:
		ids, _ := decodeIDs((*scratch)[:0], s.b[off:], start)
		*scratch = ids
		i, found := slices.BinarySearchFunc(ids, id, cmpTseq)
		if found {
			return idDuplicate
		}
		ids = slices.Insert(ids, i, id)
		*scratch = ids
		var c idCursor
		s.b, c = encodeIDs(s.b[:off], ids, start)
		s.firstT, s.last, s.gap = ids[0].t, ids[len(ids)-1], c.gap
		s.maxSeq = max(s.maxSeq, id.seq)
		return res
	}
	s.last = id
	s.maxSeq = max(s.maxSeq, id.seq)
	return res
}

// load sets s to the identity string b (no bins before it), checking it.
func (s *idSet) load(b []byte, start int64) error {
	*s = idSet{b: b, maxSeq: -1}
	it := newIDIter(b, start)
	n := 0
	for x, ok := it.next(); ok; x, ok = it.next() {
		if x.t < start || x.seq < -1 || (n > 0 && cmpTseq(x, s.last) <= 0) {
			return fmt.Errorf("%w: identities out of order", ErrBadState)
		}
		if n == 0 {
			s.firstT = x.t
		}
		s.last, s.gap = x, it.c.gap
		n++
		s.maxSeq = max(s.maxSeq, x.seq)
	}
	if it.bad {
		return fmt.Errorf("%w: identities truncated", ErrBadState)
	}
	return nil
}

// growBytes returns b with room for at least n more bytes, allocating
// about that much (append and slices.Grow double small slices) and
// taking the whole of the allocation's size class as capacity.
func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	// Growing an empty slice to exactly len+n rounds the capacity up to
	// the size class (runtime.growslice) without doubling.
	nb := slices.Grow([]byte(nil), len(b)+n)
	return append(nb, b...)
}
