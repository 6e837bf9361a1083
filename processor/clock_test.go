package processor

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

// at is goldenBase + d.
func at(d time.Duration) time.Time { return goldenBase.Add(d) }

// A device sends one reading a second (event time = wall time), 0..14 s;
// then the ingest path stalls for 25 s (longer than the 20 s idle timeout)
// and the first reading after it is an out-of-order one from window
// [0 s, 10 s), well within the 5 s lateness of the device's newest (14 s).
func stallEngine(t *testing.T) *Engine {
	t.Helper()
	eng, err := NewEngine(goldenWindow)
	if err != nil {
		t.Fatal(err)
	}
	for s := range 15 {
		d := time.Duration(s) * time.Second
		if o := eng.AddAt(v1Reading("d1", d, int64(s), 1), at(d), at(d), at(d)); o != Accepted {
			t.Fatalf("reading %d: %v", s, o)
		}
		eng.AdvanceAt(at(d), at(d), func(*Emission) {})
	}
	return eng
}

// On the wall clock (no heartbeats: main's rule), the stall looks like
// the device's silence and the reading is late; on an idle clock that
// stopped with the stall (no heartbeats during it) it is accepted, and
// the window is re-emitted with it.
func TestEngineStallIsNotSilence(t *testing.T) {
	late := v1Reading("d1", 9500*time.Millisecond, 15, 2)
	wall := at(39 * time.Second)

	eng := stallEngine(t)
	eng.AdvanceAt(wall, wall, func(*Emission) {})
	if o := eng.AddAt(late, wall, wall, wall); o != Late {
		t.Fatalf("wall clock: outcome %v, want Late (the rule the ingest clock replaces)", o)
	}

	eng = stallEngine(t)
	frozen := at(14500 * time.Millisecond) // the last heartbeat before the stall
	eng.AdvanceAt(wall, frozen, func(*Emission) {})
	if o := eng.AddAt(late, wall, frozen, frozen); o != Accepted {
		t.Fatalf("ingest clock held by the stall: outcome %v, want Accepted", o)
	}
	// The window is first emitted once the device's silence, on the idle
	// clock, passes the idle timeout: counted with the held-up reading.
	var got *schemas.WindowMetric
	for s := 40; s <= 80 && got == nil; s++ {
		now := at(time.Duration(s) * time.Second)
		eng.AdvanceAt(now, now.Add(-25*time.Second), func(em *Emission) {
			if em.Metric != nil && em.Metric.WindowStart.Equal(at(0)) {
				m := *em.Metric
				got = &m
			}
		})
	}
	if got == nil || got.Count != 11 || got.Sum != 12 || got.Revision != 1 {
		t.Fatalf("window [0s,10s) after the stall: %+v, want count 11 (ten readings and the held-up one), sum 12, revision 1", got)
	}
}

// With heartbeats flowing (the idle clock moving with the wall clock) a
// silent device's windows close as before: its final window is emitted by
// its end + the idle timeout (+ the heartbeats' 0.3 s lag), and the
// out-of-order reading after a real
// silence is late.
func TestEngineSilenceWithHeartbeatsFlowing(t *testing.T) {
	eng := stallEngine(t)
	emitted := map[time.Time]bool{}
	for s := 15; s <= 45; s++ {
		now := at(time.Duration(s) * time.Second)
		eng.AdvanceAt(now, now.Add(-300*time.Millisecond), func(em *Emission) {
			if em.Metric != nil && em.Metric.Revision == 1 {
				emitted[em.Metric.WindowStart] = true
				if s > 41 {
					t.Errorf("window %s first emitted at %ds, after end + idle timeout + 1 s", em.Metric.WindowStart.Sub(goldenBase), s)
				}
			}
		})
	}
	if !emitted[at(10*time.Second)] {
		t.Fatalf("the silent device's final window [10s,20s) was not emitted (emitted: %v)", emitted)
	}
	now := at(45 * time.Second)
	if o := eng.AddAt(v1Reading("d1", 9500*time.Millisecond, 15, 2), now, now.Add(-300*time.Millisecond), now.Add(-300*time.Millisecond)); o != Late {
		t.Fatalf("after 25 s of real silence: outcome %v, want Late", o)
	}
}

func heartbeat(bridge string, h time.Duration) *kgo.Record {
	return schemas.HeartbeatRecord("raw", 0, schemas.Heartbeat{Bridge: bridge, Time: at(h)})
}

func reading(r *schemas.Reading) *kgo.Record {
	return &kgo.Record{Topic: "raw", Key: []byte(r.DeviceID), Value: schemas.AppendRaw(nil, r), Headers: schemas.RecordHeaders("")}
}

// stallTask feeds a task the readings of stallEngine with heartbeats of
// bridges a and b every second; then bridge a goes on writing heartbeats
// (every second to 39 s) while b writes none, and the out-of-order
// reading comes (through b) at wall 39 s. It returns the DLQ records.
func stallTask(t *testing.T, expiry time.Duration) (dlq []*kgo.Record, m *metrics) {
	t.Helper()
	m = newMetrics(prometheus.NewRegistry())
	wc := goldenWindow
	wc.HeartbeatExpiry = expiry
	eng, err := NewEngine(wc)
	if err != nil {
		t.Fatal(err)
	}
	tk := newTask(0, eng, goldenTopics, m)
	out := func(r *kgo.Record) {
		if r.Topic == goldenTopics.DLQ {
			dlq = append(dlq, r)
		}
	}
	for s := range 15 {
		d := time.Duration(s) * time.Second
		tk.handle(heartbeat("a", d), at(d), out)
		tk.handle(heartbeat("b", d), at(d), out)
		tk.handle(reading(v1Reading("d1", d, int64(s), 1)), at(d), out)
		tk.advance(at(d), out)
	}
	for s := 15; s <= 39; s++ {
		d := time.Duration(s) * time.Second
		tk.handle(heartbeat("a", d), at(d), out)
		tk.advance(at(d), out)
	}
	r := v1Reading("d1", 9500*time.Millisecond, 15, 2)
	r.ReceivedTime = at(15 * time.Second) // b received it at 15 s, then stalled
	tk.handle(reading(r), at(39*time.Second), out)
	tk.advance(at(39*time.Second), out)
	return dlq, m
}

// Two bridges, one stalled: the stalled one holds the partition's clock
// (within the expiry), so nothing it held up is late; heartbeats are not
// readings (not counted as input, not copied, not dead-lettered).
func TestTaskStalledBridgeHoldsClock(t *testing.T) {
	dlq, m := stallTask(t, 2*time.Minute)
	if len(dlq) != 0 {
		d, _ := schemas.RecordDeadLetter(dlq[0])
		t.Fatalf("%d dead letters, first: %s %s", len(dlq), d.Reason, d.Error)
	}
	if in := testutil.ToFloat64(m.recordsIn); in != 16 {
		t.Errorf("records_in_total %v, want 16 (heartbeats are not input)", in)
	}
	if hb := testutil.ToFloat64(m.heartbeats.WithLabelValues("read")); hb != 55 {
		t.Errorf("heartbeats read %v, want 55", hb)
	}
}

// A bridge whose newest heartbeat is more than the expiry behind another
// bridge's (scaled away) no longer holds the clock: the silence measured
// by the other bridge's heartbeats closes the device's windows.
func TestTaskExpiredBridgeDoesNotHoldClock(t *testing.T) {
	dlq, _ := stallTask(t, 10*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("%d dead letters, want the one late reading", len(dlq))
	}
	d, err := schemas.RecordDeadLetter(dlq[0])
	if err != nil || d.Reason != schemas.ReasonLate {
		t.Fatalf("dead letter %+v (%v), want reason late", d, err)
	}
}

// An invalid heartbeat is counted and skipped, never dead-lettered or
// taken for a reading; a partition without heartbeats keeps the wall
// clock.
func TestTaskInvalidHeartbeat(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	eng, _ := NewEngine(goldenWindow)
	tk := newTask(0, eng, goldenTopics, m)
	bad := heartbeat("a", 0)
	bad.Value = []byte("{")
	n := 0
	tk.handle(bad, at(0), func(*kgo.Record) { n++ })
	if n != 0 || testutil.ToFloat64(m.heartbeats.WithLabelValues("invalid")) != 1 || testutil.ToFloat64(m.recordsIn) != 0 {
		t.Fatalf("invalid heartbeat: %d records out, invalid %v, records_in %v", n, testutil.ToFloat64(m.heartbeats.WithLabelValues("invalid")), testutil.ToFloat64(m.recordsIn))
	}
	if got := tk.clock.At(at(time.Hour)); !got.Equal(at(time.Hour)) {
		t.Fatalf("clock without a valid heartbeat %s, want the wall clock", got)
	}
}
