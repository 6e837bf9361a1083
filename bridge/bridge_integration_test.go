//go:build integration

package bridge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// QoS 1 messages from a fleet: exactly the valid ones in raw, the invalid
// ones in the DLQ with their reason, per-device order kept.
// IOTPIPE_FULL=1 runs the acceptance size (1k devices, 100k messages).
func TestBridgeDeliversEveryMessage(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	r := startBridge(t, s.config(t, ""))
	devices, per := 200, 100
	if full() {
		devices = 1000
	}
	e := newExpect()
	start := time.Now()
	st := s.fleet(t, env, func(c *devicesim.Config) {
		c.Devices = devices
		c.DevicesPerConn = 100
		c.MessagesPerDevice = per
		c.InvalidFraction = 0.05
		c.Rate = 0
		c.ValidKinds = devicesim.AllValidKinds()
	}, e)
	pub := time.Since(start)
	if st.Acked != int64(devices*per) {
		t.Fatalf("fleet stats %+v", st)
	}
	valid, invalid := e.counts()
	g := s.readAll(t, env, e, 2*time.Minute)
	t.Logf("%d messages (%d valid, %d invalid) published in %s, all in Kafka after %s; bridge %+v",
		st.Acked, valid, invalid, pub.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), r.b.Stats())
	g.check(t, e, false)
	if g.rawN != valid || g.dlqN != invalid {
		t.Fatalf("raw %d (want %d), dlq %d (want %d)", g.rawN, valid, g.dlqN, invalid)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if bs := r.b.Stats(); bs.ProducedRaw != int64(valid) || bs.ProducedDLQ != int64(invalid) || bs.Unacked != 0 {
		t.Fatalf("bridge stats %+v", bs)
	}
}

// Every kind of bad input lands in the DLQ with the right reason and is
// counted; the bridge keeps going.
func TestBridgeBadInput(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	r := startBridge(t, s.config(t, ""))
	e := newExpect()
	st := s.fleet(t, env, func(c *devicesim.Config) {
		c.Devices = 20
		c.MessagesPerDevice = 30
		c.InvalidFraction = 0.5
		c.InvalidKinds = devicesim.AllInvalidKinds
		c.Rate = 0
		c.ValidKinds = devicesim.AllValidKinds()
	}, e)
	valid, invalid := e.counts()
	g := s.readAll(t, env, e, time.Minute)
	g.check(t, e, false)
	if g.rawN != valid || g.dlqN != invalid {
		t.Fatalf("raw %d (want %d), dlq %d (want %d); fleet %+v", g.rawN, valid, g.dlqN, invalid, st)
	}
	want := map[schemas.Reason]int{}
	for k, n := range e.dlq {
		want[e.why[k]] += n
	}
	for _, k := range devicesim.AllInvalidKinds {
		if want[k.Reason()] == 0 {
			t.Errorf("no message of kind %v was sent", k)
		}
	}
	for reason, n := range want {
		if g.reasons[reason] != n {
			t.Errorf("reason %s: %d in the DLQ, want %d", reason, g.reasons[reason], n)
		}
	}
	t.Logf("DLQ by reason: %v", g.reasons)
	for reason, n := range want {
		if c := testutil.ToFloat64(r.b.m.rejected.WithLabelValues(string(reason))); int(c) != n {
			t.Errorf("iotpipe_bridge_rejected_total{reason=%q} = %v, want %d", reason, c, n)
		}
	}
	if c := testutil.ToFloat64(r.b.m.producedDLQ); int(c) != invalid {
		t.Errorf("produced dlq counter %v, want %d", c, invalid)
	}
}
