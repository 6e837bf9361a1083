package bridge

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestWindowReleasesInReceiveOrder(t *testing.T) {
	w := window{ring: make([]*inflight, 4)}
	var released []uint16
	rel := func(e *inflight) { released = append(released, e.p.PacketID) }
	push := func(id uint16) *inflight { return w.push(&paho.Publish{PacketID: id}, nil, time.Time{}) }

	a, b, c := push(1), push(2), push(3)
	w.complete(c, rel)
	w.complete(b, rel)
	if len(released) != 0 {
		t.Fatalf("released %v before the first message was done", released)
	}
	d := push(4) // the ring is full now
	w.complete(a, rel)
	if want := []uint16{1, 2, 3}; !slices.Equal(released, want) {
		t.Fatalf("released %v, want %v", released, want)
	}
	e, f := push(5), push(6) // wraps around
	w.complete(f, rel)
	w.complete(d, rel)
	w.complete(e, rel)
	if want := []uint16{1, 2, 3, 4, 5, 6}; !slices.Equal(released, want) {
		t.Fatalf("released %v, want %v", released, want)
	}
	if w.size != 0 {
		t.Fatalf("window holds %d after everything completed", w.size)
	}
}
