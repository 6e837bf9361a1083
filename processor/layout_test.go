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
		{"agg", unsafe.Sizeof(agg{}), 96},
		{"devWin", unsafe.Sizeof(devWin{}), 160},
		{"device", unsafe.Sizeof(device{}), 96},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}
