// Package ingestclock is the clock on which a telemetry.raw partition's
// device silences are measured: the bridges' heartbeats read from it so
// far (schemas.Heartbeat). The processor closes silent devices' windows on
// it and the alert stage fires no_data rules on it.
//
// A bridge's heartbeat at time H says every message it received before H
// is before the heartbeat in the partition; a bridge writes none while its
// ingest path may be stalled. The clock is the smallest latest H of the
// bridges seen, leaving out a bridge whose latest H is more than the
// expiry behind the newest one (scaled away). So it does not move while
// any live bridge is stalled, nor while its reader reads nothing (it moves
// only as heartbeats are read), and a device's silence counts only while
// the whole ingest path was flowing. It is a pure function of the
// heartbeats observed, in order, and holds memory only: a reader that
// restores a partition starts without one.
package ingestclock

import (
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// Clock is one partition's ingest clock. The zero value has expiry 0
// (every bridge but the newest expires at once); use New. It is not safe
// for concurrent use.
type Clock struct {
	expiry  time.Duration
	bridges map[string]time.Time // latest heartbeat per bridge instance
	now     time.Time
	ok      bool // a heartbeat was seen
}

// New returns a clock without heartbeats whose bridges expire expiry
// behind the newest.
func New(expiry time.Duration) Clock { return Clock{expiry: expiry} }

// Observe takes in one heartbeat. A heartbeat not after its bridge's
// latest is ignored.
func (c *Clock) Observe(h schemas.Heartbeat) {
	if c.bridges == nil {
		c.bridges = map[string]time.Time{}
	}
	if prev, ok := c.bridges[h.Bridge]; ok && !h.Time.After(prev) {
		return
	}
	c.bridges[h.Bridge] = h.Time
	var newest time.Time
	for _, t := range c.bridges {
		if t.After(newest) {
			newest = t
		}
	}
	c.now = newest
	for b, t := range c.bridges {
		if newest.Sub(t) > c.expiry {
			delete(c.bridges, b)
		} else if t.Before(c.now) {
			c.now = t
		}
	}
	c.ok = true
}

// Now returns the ingest clock and true, or false while no heartbeat was
// observed. It may go back when a bridge not seen before (or back from
// expiry) is behind the others.
func (c *Clock) Now() (time.Time, bool) { return c.now, c.ok }

// Latest returns bridge's latest heartbeat time, false when the clock
// holds none of it (never seen, or expired).
func (c *Clock) Latest(bridge string) (time.Time, bool) {
	t, ok := c.bridges[bridge]
	return t, ok
}

// OK reports whether a heartbeat was observed.
func (c *Clock) OK() bool { return c.ok }

// At returns the idle clock at wall-clock time wall: the ingest clock
// (never ahead of wall), or wall on a partition without heartbeats.
func (c *Clock) At(wall time.Time) time.Time {
	if !c.ok || c.now.After(wall) {
		return wall
	}
	return c.now
}
