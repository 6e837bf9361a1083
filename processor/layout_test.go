package processor

import (
	"testing"
	"unsafe"
)

// TestStateLayout pins the sizes of the per-key structs: BytesPerKey
// (docs/BENCHMARKS.md) depends on them landing in small allocation size
// classes, and a field added carelessly moves a struct to the next class.
func TestStateLayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"agg", unsafe.Sizeof(agg{}), 88},
		{"devWin", unsafe.Sizeof(devWin{}), 160},
		{"device", unsafe.Sizeof(device{}), 96},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}

// TestAggWideCounters: the count and the revision carry into aggExt
// beyond the bits kept inline, exactly, and survive a changelog round
// trip.
func TestAggWideCounters(t *testing.T) {
	var a agg
	a.setCount(1<<32 - 2)
	a.setRevision(1<<16 - 1)
	for i := range 3 {
		a.add(float64(i), tseq{int64(i), -1}, tseq{}, tseq{}, false)
	}
	a.setRevision(a.revision() + 1)
	if a.count() != 1<<32+1 || a.revision() != 1<<16 {
		t.Fatalf("count %d revision %d, want %d %d", a.count(), a.revision(), int64(1<<32+1), 1<<16)
	}
	dw := &devWin{ids: idSet{maxSeq: -1}, aggs: []agg{a}}
	dw.setBins([]byte{0})
	got, err := decodeDevWin(appendDevWin(nil, dw), 0)
	if err != nil {
		t.Fatal(err)
	}
	if g := &got.aggs[0]; g.count() != a.count() || g.revision() != a.revision() {
		t.Fatalf("restored count %d revision %d, want %d %d", g.count(), g.revision(), a.count(), a.revision())
	}
}
