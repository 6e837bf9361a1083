//go:build integration

package alert

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/eval"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestNoDataOnSilentPartition runs the stage in-process on real Kafka and
// PostgreSQL with a no_data rule (silence 4 s). Raw partition 0 holds
// dev-a, partition 1 dev-b; each sends one reading and goes silent, and
// no other reading ever comes. Heartbeat records, produced as a bridge
// writes them (schemas.HeartbeatRecord, one per partition per 200 ms),
// keep flowing on partition 0: dev-a's FIRING arrives without any further
// reading, at its reading's received time + silence. Partition 1's
// bridge is stalled (no heartbeats): dev-b fires nothing while partition
// 0's clock runs far past its silence, and fires once heartbeats come
// again.
func TestNoDataOnSilentPartition(t *testing.T) {
	f := newFixture(t, 2, 1)
	ctx := testenv.Context(t, 3*time.Minute)
	f.rule(t, rules.Rule{ID: "silent", Kind: rules.KindNoData, Scope: rules.ScopeAll, Silence: 4 * time.Second})
	cfg := f.config(t, f.env.Group(t), "a")
	cfg.NoDataResolution = 100 * time.Millisecond
	reg := prometheus.NewRegistry()
	st, err := New(cfg, service.Deps{Registry: reg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	out := readAlerts(ctx, t, f.env, f.topics.Alerts)
	prod := f.env.Kafka(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))

	hbOn := func(p int32) {
		produce(t, prod, f.topics.Raw, schemas.HeartbeatRecord(f.topics.Raw, p, schemas.Heartbeat{Bridge: "bridge-1", Time: time.Now().UTC()}))
	}
	// The bridge is up on both partitions; then one reading each.
	hbOn(0)
	hbOn(1)
	now := time.Now().UTC().Truncate(time.Millisecond)
	devReading := func(dev string, p int32) (*kgo.Record, time.Time) {
		r := &schemas.Reading{DeviceID: dev, EventTime: now.Add(-time.Hour), ReceivedTime: now, Measurements: []schemas.Measurement{{Name: "temp", Value: 20}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "devices/"+dev+"/telemetry")
		rec.Partition = p
		return rec, now
	}
	ra, recvA := devReading("dev-a", 0)
	rb, recvB := devReading("dev-b", 1)
	produce(t, prod, f.topics.Raw, ra, rb)

	// Heartbeats on partition 0 only, like a bridge's ticker, until the
	// test says otherwise.
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	both := make(chan struct{})
	go func() {
		defer close(hbDone)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		p1 := false
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-both:
				p1, both = true, nil
			case <-tick.C:
			}
			hb := schemas.Heartbeat{Bridge: "bridge-1", Time: time.Now().UTC()}
			recs := []*kgo.Record{schemas.HeartbeatRecord(f.topics.Raw, 0, hb)}
			if p1 {
				recs = append(recs, schemas.HeartbeatRecord(f.topics.Raw, 1, hb))
			}
			if err := prod.ProduceSync(hbCtx, recs...).FirstErr(); err != nil && hbCtx.Err() == nil {
				t.Errorf("heartbeat: %v", err)
				return
			}
		}
	}()
	defer func() { stopHB(); <-hbDone }()

	firingAt := func(dev string, recv time.Time) error {
		for _, ev := range out.snapshot(t) {
			if ev.DeviceID != dev {
				continue
			}
			if ev.State != schemas.AlertFiring || !ev.EventTime.Equal(recv.Add(4*time.Second)) {
				t.Fatalf("%s: %s at %s, want FIRING at received + 4 s (%s)", dev, ev.State, ev.EventTime, recv.Add(4*time.Second))
			}
			if id := eval.EventID(eval.Key{RuleID: "silent", DeviceID: dev}, schemas.AlertFiring, ev.EventTime.UnixNano()); id != ev.EventID {
				t.Fatalf("%s: event id %s, want %s", dev, ev.EventID, id)
			}
			return nil
		}
		return fmt.Errorf("no event of %s yet", dev)
	}
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error { return firingAt("dev-a", recvA) })
	t.Logf("dev-a fired %s after its reading", time.Since(recvA).Round(time.Millisecond))

	// dev-b's partition is stalled: however far partition 0's heartbeats
	// go past dev-b's silence, nothing fires for it.
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		if n := testutil.ToFloat64(st.m.heartbeats.WithLabelValues("read")); n < 40 {
			return fmt.Errorf("%v heartbeats read", n)
		}
		if d := time.Since(recvB); d < 12*time.Second {
			return fmt.Errorf("only %s since dev-b's reading", d)
		}
		return nil
	})
	if err := firingAt("dev-b", recvB); err == nil {
		t.Fatal("dev-b fired while its partition had no heartbeats (a stall is not silence)")
	}
	if evs := out.snapshot(t); len(evs) != 1 {
		t.Fatalf("%d events during the stall, want only dev-a's FIRING", len(evs))
	}

	// The stall ends: dev-b's silence (it sent nothing since) fires.
	close(both)
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error { return firingAt("dev-b", recvB) })
	if evs := out.snapshot(t); len(evs) != 2 {
		t.Fatalf("%d events, want the two FIRINGs", len(evs))
	}
	if n := testutil.ToFloat64(st.m.readings); n != 2 {
		t.Fatalf("readings %v, want 2 (heartbeats are not readings)", n)
	}

	stopHB()
	<-hbDone
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
