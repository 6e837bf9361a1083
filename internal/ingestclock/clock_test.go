package ingestclock

import (
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

var base = time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func TestIngestClock(t *testing.T) {
	c := New(time.Minute)
	wall := at(time.Hour)
	if got := c.At(wall); !got.Equal(wall) {
		t.Fatalf("no heartbeat: %s, want the wall clock", got)
	}
	if _, ok := c.Now(); ok || c.OK() {
		t.Fatal("no heartbeat: Now reports a clock")
	}
	obs := func(b string, h time.Duration) {
		c.Observe(schemas.Heartbeat{Bridge: b, Time: at(h)})
	}
	obs("a", 10*time.Second)
	obs("b", 12*time.Second)
	if got := c.At(wall); !got.Equal(at(10 * time.Second)) {
		t.Fatalf("min of a 10s, b 12s: %s", got.Sub(base))
	}
	if now, ok := c.Now(); !ok || !now.Equal(at(10*time.Second)) {
		t.Fatalf("Now: %s %v, want 10s true", now.Sub(base), ok)
	}
	obs("a", 5*time.Second) // older than a's latest: ignored
	obs("b", 50*time.Second)
	if got := c.At(wall); !got.Equal(at(10 * time.Second)) {
		t.Fatalf("a stalled at 10s within the expiry: %s", got.Sub(base))
	}
	obs("b", 71*time.Second) // a is 61 s behind: expired
	if got := c.At(wall); !got.Equal(at(71 * time.Second)) {
		t.Fatalf("a expired: %s, want b's 71s", got.Sub(base))
	}
	obs("a", 72*time.Second) // back
	if got := c.At(wall); !got.Equal(at(71 * time.Second)) {
		t.Fatalf("a back at 72s: %s, want 71s", got.Sub(base))
	}
	if got := c.At(at(60 * time.Second)); !got.Equal(at(60 * time.Second)) {
		t.Fatalf("a clock ahead of the wall clock: %s, want the wall clock", got.Sub(base))
	}
}
