package processor

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// genStream returns readings of a few devices with random values (some
// without seq, some duplicated), in arrival order: each reading arrives at
// its event time plus a random delay below maxDisorder.
func genStream(rng *rand.Rand, n, devices, metrics int, start time.Time, maxDisorder time.Duration) (arrival []*schemas.Reading, arriveAt []time.Time) {
	type item struct {
		r  *schemas.Reading
		at time.Time
	}
	var items []item
	seq := make([]int64, devices)
	for i := 0; i < n; i++ {
		d := rng.IntN(devices)
		t := start.Add(time.Duration(i) * 37 * time.Millisecond).Add(time.Duration(rng.IntN(1000)) * time.Microsecond)
		r := &schemas.Reading{DeviceID: "dev-" + string(rune('a'+d)), EventTime: t.UTC(), ReceivedTime: t.UTC()}
		if rng.IntN(10) > 0 {
			seq[d] += 1 + int64(rng.IntN(10)/9) // occasional gap
			r.Seq, r.HasSeq = seq[d], true
		}
		for m := 0; m < metrics; m++ {
			if rng.IntN(4) == 0 && m > 0 {
				continue
			}
			v := rng.NormFloat64()*10 + 20
			if rng.IntN(20) == 0 {
				v = -v * 1e3
			}
			r.Measurements = append(r.Measurements, schemas.Measurement{Name: "m" + string(rune('0'+m)), Value: v})
		}
		at := t.Add(time.Duration(rng.Int64N(int64(maxDisorder))))
		items = append(items, item{r, at})
		if rng.IntN(20) == 0 { // an MQTT redelivery
			items = append(items, item{r, t.Add(time.Duration(rng.Int64N(int64(maxDisorder))))})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.at.Compare(b.at) })
	for _, it := range items {
		arrival = append(arrival, it.r)
		arriveAt = append(arriveAt, it.at)
	}
	return arrival, arriveAt
}

// TestPropertyFinalEqualsBatch: for random streams whose disorder stays
// within what the engine accepts (under 2×lateness: a reading then always
// reaches a window that is still held, possibly re-emitting it), the last
// revision of every window equals the batch computation over the same
// readings, whatever the batch boundaries and however often the state is
// rebuilt from the changelog in between.
func TestPropertyFinalEqualsBatch(t *testing.T) {
	const iterations = 40
	for it := range iterations {
		rng := rand.New(rand.NewPCG(uint64(it), 42))
		wc := WindowConfig{Size: 10 * time.Second, Lateness: 5 * time.Second, IdleTimeout: time.Hour, LateRetention: 30 * time.Second}
		disorder := wc.Lateness // within the lateness: never re-emitted
		if it%2 == 1 {
			disorder = 2*wc.Lateness - time.Millisecond // re-emissions, never late
		}
		readings, at := genStream(rng, 300+rng.IntN(1500), 1+rng.IntN(5), 1+rng.IntN(3), time.Date(2026, 11, 27, 10, 0, 3, 0, time.UTC), disorder)
		eng, _ := NewEngine(wc)
		fin := newFinals()
		changelog := map[string][]byte{}
		emit := func(em *Emission) {
			var rec schemas.MetricsRecord
			var b []byte
			if em.Metric != nil {
				b = schemas.AppendMetric(nil, em.Metric)
			} else {
				b = schemas.AppendActivity(nil, em.Activity)
			}
			if err := schemas.DecodeMetricsRecord(b, &rec); err != nil {
				t.Fatalf("emitted an invalid record %s: %v", b, err)
			}
			if err := fin.add(&rec); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range readings {
			if out := eng.Add(r, at[i]); out == Late {
				t.Fatalf("iteration %d: reading %d (%s) late with disorder %s", it, i, r.EventTime, disorder)
			}
			if rng.IntN(7) == 0 {
				eng.Advance(at[i], emit)
			}
			if rng.IntN(50) == 0 { // a commit, then a crash and restore
				eng.Advance(at[i], emit)
				eng.Changes(func(k, v []byte) {
					if v == nil {
						delete(changelog, string(k))
					} else {
						changelog[string(k)] = bytes.Clone(v)
					}
				})
				fresh, _ := NewEngine(wc)
				for k, v := range changelog {
					if err := fresh.Restore([]byte(k), v); err != nil {
						t.Fatal(err)
					}
				}
				fresh.FinishRestore(at[i])
				eng = fresh
			}
		}
		eng.Advance(at[len(at)-1].Add(3*time.Hour), emit)
		if eng.OpenKeys() != 0 || eng.DeviceWindows() != 0 {
			t.Errorf("iteration %d: %d open keys, %d device windows left after the final close", it, eng.OpenKeys(), eng.DeviceWindows())
		}
		for _, err := range fin.compare(batchCompute(readings, wc.Size)) {
			t.Errorf("iteration %d (disorder %s): %v", it, disorder, err)
		}
	}
}
