package processor

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestDevIndex checks the device index against a map through random adds
// and removals done as Engine.removeDevice does them (swap with the last).
func TestDevIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x devIndex
	var list []*device
	want := map[string]*device{}
	for step := range 200_000 {
		id := "d" + strconv.Itoa(rng.IntN(3000))
		if d := want[id]; d != nil && rng.IntN(2) == 0 {
			x.del(list, d)
			last := list[len(list)-1]
			if last != d {
				from := last.idx
				last.idx = d.idx
				x.moved(last, from)
			}
			list[d.idx] = last
			list = list[:len(list)-1]
			delete(want, id)
		} else if d == nil {
			d = &device{id: id, idx: int32(len(list))}
			list = append(list, d)
			x.put(list, d)
			want[id] = d
		}
		if step%997 == 0 || step > 199_000 {
			for k, d := range want {
				if got := x.get(list, k); got != d {
					t.Fatalf("step %d: get(%q) = %p, want %p", step, k, got, d)
				}
			}
			if x.get(list, "absent") != nil || x.n != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, x.n, len(want))
			}
		}
	}
	x.reset(list)
	for k, d := range want {
		if x.get(list, k) != d {
			t.Fatalf("after reset: %q not found", k)
		}
	}
}
