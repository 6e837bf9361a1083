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
// without seq, some duplicated, some devices restarting their seq), in
// arrival order: each reading arrives at its true time plus a random delay
// below maxDisorder. With clocks, device 0's clock is 4 minutes fast (its
// event times are 4 minutes ahead of when it sends) and device 1 goes
// offline for 10 minutes and then uploads what it buffered, in order.
// Now and then a device sends an old reading again long after (a resend
// that may be late).
func genStream(rng *rand.Rand, n, devices, metrics int, start time.Time, maxDisorder time.Duration, clocks bool) (arrival []*schemas.Reading, arriveAt []time.Time) {
	type item struct {
		r  *schemas.Reading
		at time.Time
	}
	var items []item
	seq := make([]int64, devices)
	offlineFrom := start.Add(time.Duration(n/4) * 37 * time.Millisecond)
	offlineTo := offlineFrom.Add(10 * time.Minute)
	for i := 0; i < n; i++ {
		d := rng.IntN(devices)
		tt := start.Add(time.Duration(i) * 37 * time.Millisecond).Add(time.Duration(rng.IntN(1000)) * time.Microsecond)
		if clocks && i >= n/4 && d == 1 { // device 1's readings stretch over its offline time
			tt = tt.Add(time.Duration(i-n/4) * 10 * time.Minute / time.Duration(n))
		}
		et := tt
		if clocks && d == 0 {
			et = tt.Add(4 * time.Minute)
		}
		r := &schemas.Reading{DeviceID: "dev-" + string(rune('a'+d)), EventTime: et.UTC(), ReceivedTime: tt.UTC()}
		if rng.IntN(10) > 0 {
			seq[d] += 1 + int64(rng.IntN(10)/9) // occasional gap
			if rng.IntN(150) == 0 {
				seq[d] = int64(rng.IntN(3)) // the device restarted its counter
			}
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
		at := tt.Add(time.Duration(rng.Int64N(int64(maxDisorder))))
		if clocks && d == 1 && !tt.Before(offlineFrom) && tt.Before(offlineTo) {
			at = offlineTo.Add(tt.Sub(offlineFrom) / 100) // the backlog, uploaded in order
		}
		items = append(items, item{r, at})
		if rng.IntN(20) == 0 { // an MQTT redelivery
			if at.Sub(tt) < maxDisorder {
				items = append(items, item{r, tt.Add(time.Duration(rng.Int64N(int64(maxDisorder))))})
			} else { // of a backlog reading: right after it (the backlog goes 100× real time)
				items = append(items, item{r, at.Add(time.Duration(rng.Int64N(int64(maxDisorder / 100))))})
			}
		}
		if rng.IntN(100) == 0 { // a resend long after: late, or a duplicate
			items = append(items, item{r, at.Add(3*maxDisorder + time.Duration(rng.Int64N(int64(20*time.Second))))})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.at.Compare(b.at) })
	for _, it := range items {
		arrival = append(arrival, it.r)
		arriveAt = append(arriveAt, it.at)
	}
	return arrival, arriveAt
}

// modelLate is the lateness rule written from its definition, for devices
// that never fall silent for the idle timeout: a reading is late when its
// window ends at or before its own device's largest event time so far
// (readings that were not late) minus twice the lateness.
func modelLate(readings []*schemas.Reading, size, lateness time.Duration) []bool {
	late := make([]bool, len(readings))
	maxT := map[string]time.Time{}
	for i, r := range readings {
		end := r.EventTime.Truncate(size).Add(size) // UTC times after 1970: Truncate is the epoch-aligned floor
		if m, ok := maxT[r.DeviceID]; ok && !end.After(m.Add(-2*lateness)) {
			late[i] = true
			continue
		}
		if m, ok := maxT[r.DeviceID]; !ok || r.EventTime.After(m) {
			maxT[r.DeviceID] = r.EventTime
		}
	}
	return late
}

// TestPropertyFinalEqualsBatch: for random streams — one device's clock 4
// minutes fast, one device uploading a 10-minute backlog after being
// offline, seq restarts, redeliveries, resends — each reading is late
// exactly when the per-device rule (modelLate) says so (so never for
// readings within 2×lateness of disorder, whatever the other devices'
// clocks), and the last revision of every window equals the batch
// computation over the readings that were not late, whatever the batch
// boundaries and however often the state is rebuilt from the changelog in
// between (every third stream with every window's identities in chunk
// records). No device's watermark is ever ahead of the wall clock plus the
// allowed future skew.
func TestPropertyFinalEqualsBatch(t *testing.T) {
	const iterations = 40
	defer func(n int32) { chunkMinBase = n }(chunkMinBase)
	for it := range iterations {
		rng := rand.New(rand.NewPCG(uint64(it), 42))
		// Every third stream keeps every window's identities in chunk
		// records from the first bytes on.
		chunkMinBase = map[bool]int32{true: 4, false: 512}[it%3 == 0]
		wc := WindowConfig{Size: 10 * time.Second, Lateness: 5 * time.Second, IdleTimeout: time.Hour, LateRetention: 30 * time.Second, MaxFutureSkew: DefaultMaxFutureSkew, HeartbeatExpiry: DefaultHeartbeatExpiry}
		disorder := wc.Lateness // within the lateness: never re-emitted
		if it%2 == 1 {
			disorder = 2*wc.Lateness - time.Millisecond // re-emissions, never late
		}
		clocks := it%4 >= 2
		readings, at := genStream(rng, 300+rng.IntN(1500), 2+rng.IntN(5), 1+rng.IntN(3), time.Date(2026, 11, 27, 10, 0, 3, 0, time.UTC), disorder, clocks)
		wantLate := modelLate(readings, wc.Size, wc.Lateness)
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
		var accepted []*schemas.Reading
		lates := 0
		for i, r := range readings {
			out := eng.Add(r, at[i])
			if (out == Late) != wantLate[i] || out == TooFarAhead {
				t.Fatalf("iteration %d: reading %d (%s, %s) arriving at %s: outcome %d, model says late=%v", it, i, r.DeviceID, r.EventTime, at[i], out, wantLate[i])
			}
			if out == Late {
				lates++
			} else {
				accepted = append(accepted, r)
			}
			if rng.IntN(7) == 0 {
				eng.Advance(at[i], emit)
				for _, d := range eng.devList {
					if w := eng.watermark(d, at[i].UnixMicro()); w > at[i].Add(wc.MaxFutureSkew).UnixMicro() {
						t.Fatalf("iteration %d: device %s watermark %d ahead of the wall clock %s plus the skew", it, d.id, w, at[i])
					}
				}
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
				if err := fresh.FinishRestore(at[i]); err != nil {
					t.Fatal(err)
				}
				eng = fresh
			}
		}
		// Every device falls silent: after the idle timeout its windows are
		// emitted; after the device retention its state is gone.
		end := at[len(at)-1]
		eng.Advance(end.Add(3*time.Hour), emit)
		for _, err := range fin.compare(batchCompute(accepted, wc.Size)) {
			t.Errorf("iteration %d (disorder %s, clocks %v): %v", it, disorder, clocks, err)
		}
		eng.Advance(end.Add(DefaultDeviceRetention+time.Hour), emit)
		if eng.OpenKeys() != 0 || eng.DeviceWindows() != 0 || eng.Devices() != 0 {
			t.Errorf("iteration %d: %d open keys, %d device windows, %d devices left after the device retention", it, eng.OpenKeys(), eng.DeviceWindows(), eng.Devices())
		}
		if it < 4 || testing.Verbose() {
			t.Logf("iteration %d: %d readings, %d late (as the model says), clocks %v", it, len(readings), lates, clocks)
		}
	}
}
