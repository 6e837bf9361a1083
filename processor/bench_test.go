package processor

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

// benchReadings returns n readings of devices devices at 1 Hz each, with
// two metrics, in event-time order.
func benchReadings(n, devices int) []*schemas.Reading {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	rs := make([]*schemas.Reading, n)
	for i := range rs {
		d := i % devices
		round := i / devices
		rs[i] = &schemas.Reading{
			DeviceID: "device-" + strconv.Itoa(d), EventTime: t0.Add(time.Duration(round)*time.Second + time.Duration(d)*time.Microsecond),
			Seq: int64(round), HasSeq: true,
			Measurements: []schemas.Measurement{{Name: "hum", Value: 40 + float64(i%17)}, {Name: "temp", Value: 20 + float64(i%13)/10}},
		}
	}
	return rs
}

// BenchmarkWindowUpdate measures Engine.Add in steady state: 1000 devices
// at 1 Hz, one reading with two metrics (two window updates) per op,
// including dedup, activity, emission and closing of windows (Advance once
// per 1000 readings).
func BenchmarkWindowUpdate(b *testing.B) {
	const devices = 1000
	tmpl := benchReadings(devices, devices)
	t0 := tmpl[0].EventTime
	eng, _ := NewEngine(benchWindow())
	now := time.Now()
	emit := func(*Emission) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := tmpl[i%devices]
		round := i / devices
		r.EventTime = t0.Add(time.Duration(round)*time.Second + time.Duration(i%devices)*time.Microsecond)
		r.Seq = int64(round)
		eng.Add(r, now)
		if i%devices == devices-1 {
			eng.Advance(now, emit)
		}
	}
}

// BenchmarkTaskHandle is the whole per-record path without Kafka: decode a
// telemetry.raw value, aggregate, emit and encode the metrics records.
func BenchmarkTaskHandle(b *testing.B) {
	rs := benchReadings(240_000, 1000)
	recs := make([]*kgo.Record, len(rs))
	for i, r := range rs {
		recs[i] = &kgo.Record{Topic: "raw", Key: []byte(r.DeviceID), Value: schemas.AppendRaw(nil, r)}
	}
	m := newMetrics(prometheus.NewRegistry())
	newT := func() *task {
		eng, _ := NewEngine(benchWindow())
		return newTask(0, eng, goldenTopics, m)
	}
	tk := newT()
	now := time.Now()
	out := func(*kgo.Record) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(recs) == 0 && i > 0 {
			b.StopTimer()
			tk = newT()
			b.StartTimer()
		}
		tk.handleRec(recs[i%len(recs)], now, out)
		if i%1000 == 999 {
			tk.flush()
			tk.advance(now, out)
		}
	}
}

// BenchmarkStateBytesPerKey reports the heap held per open metric window
// (device × metric × window) after a minute of 1 Hz readings with seq, two
// metrics per device (bytes/key), and what that state takes in the
// changelog (changelog-bytes/key). The 10Hz and 5Metrics variants change
// only the rate or the number of metrics.
func BenchmarkStateBytesPerKey(b *testing.B) { benchStateBytes(b, 2000, 1, 2) }

// BenchmarkStateBytesPerKey10Hz is BenchmarkStateBytesPerKey at 10 Hz.
func BenchmarkStateBytesPerKey10Hz(b *testing.B) { benchStateBytes(b, 500, 10, 2) }

// BenchmarkStateBytesPerKey5Metrics is BenchmarkStateBytesPerKey with five
// metrics per device.
func BenchmarkStateBytesPerKey5Metrics(b *testing.B) { benchStateBytes(b, 1000, 1, 5) }

// benchReadingsHz returns 59 s of readings of devices devices at hz, each
// with metrics measurements (values with a few significant digits, as
// sensors send), in event-time order.
func benchReadingsHz(devices, hz, metrics int) []*schemas.Reading {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	names := []string{"hum", "temp", "co2", "pressure", "voltage"}[:metrics]
	rounds := 59 * hz // all in one open window
	rs := make([]*schemas.Reading, 0, rounds*devices)
	for round := range rounds {
		for d := range devices {
			i := round*devices + d
			ms := make([]schemas.Measurement, metrics)
			for m, name := range names {
				ms[m] = schemas.Measurement{Name: name, Value: float64(10*(m+2)) + float64((i+7*m)%17)/float64(1+m%3*9)}
			}
			rs = append(rs, &schemas.Reading{
				DeviceID:  "device-" + strconv.Itoa(d),
				EventTime: t0.Add(time.Duration(round)*time.Second/time.Duration(hz) + time.Duration(d)*time.Microsecond),
				Seq:       int64(round), HasSeq: true, Measurements: ms,
			})
		}
	}
	return rs
}

func benchStateBytes(b *testing.B, devices, hz, metrics int) {
	var rs []*schemas.Reading
	if hz == 1 && metrics == 2 {
		rs = benchReadings(devices*59, devices) // the figures before 10Hz/5Metrics came from these
	} else {
		rs = benchReadingsHz(devices, hz, metrics)
	}
	for range b.N {
		// Per open key is what grows with the keys: measured from the
		// empty engine on. The empty engine's own memory (its memoised
		// sketch bin keys, 16 KiB, and small tables) is the same for 10
		// keys or 10 million and is reported apart (engine-bytes).
		runtime.GC()
		var start, before, after runtime.MemStats
		runtime.ReadMemStats(&start)
		eng, _ := NewEngine(benchWindow())
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.ReportMetric(float64(before.HeapAlloc)-float64(start.HeapAlloc), "engine-bytes")
		now := time.Now()
		for _, r := range rs {
			eng.Add(r, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		keys := eng.OpenKeys()
		if keys != devices*metrics {
			b.Fatalf("%d open keys, want %d", keys, devices*metrics)
		}
		b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/float64(keys), "bytes/key")
		var cl int
		eng.Changes(func(k, v []byte) { cl += len(k) + len(v) })
		b.ReportMetric(float64(cl)/float64(keys), "changelog-bytes/key")
		runtime.KeepAlive(eng)
	}
	runtime.KeepAlive(rs)
}

// benchWindow is the default window config with 1m windows and 5s
// lateness.
func benchWindow() WindowConfig {
	w := DefaultWindowConfig()
	w.Size, w.Lateness = time.Minute, 5*time.Second
	return w
}

// BenchmarkStateBytesPerIdleDevice reports what a silent device costs: a
// device that sent 20 s of 1 Hz readings (two metrics) and then fell
// silent keeps its clock and its newest window (emitted by its idle close,
// held open so that what it buffers while offline still counts) until the
// raw topic's retention passes. bytes/idle-device is the heap held per
// such device, changelog-bytes/idle-device what its state takes in the
// changelog.
func BenchmarkStateBytesPerIdleDevice(b *testing.B) {
	for range b.N {
		const devices = 2000
		rs := benchReadings(devices*20, devices)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		eng, _ := NewEngine(benchWindow())
		now := rs[len(rs)-1].EventTime
		for _, r := range rs {
			eng.Add(r, now)
		}
		eng.Advance(now.Add(time.Hour), func(*Emission) {}) // idle: every window emitted
		if eng.Devices() != devices || eng.DeviceWindows() != devices {
			b.Fatalf("%d devices, %d device windows held; want %d each", eng.Devices(), eng.DeviceWindows(), devices)
		}
		var cl int
		eng.Changes(func(k, v []byte) { cl += len(k) + len(v) })
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/devices, "bytes/idle-device")
		b.ReportMetric(float64(cl)/devices, "changelog-bytes/idle-device")
		runtime.KeepAlive(eng)
		runtime.KeepAlive(rs)
	}
}

// BenchmarkChangelogBytesPerCommit reports what the changelog receives per
// commit (every 500 ms of event time, as --commit-interval's default) for
// one device through a 59 s window at 1, 10 and 500 Hz with two metrics:
// bytes/commit/device (keys + values, averaged over the window's commits)
// and bytes/reading. What a commit writes should grow with what changed,
// not with the whole window.
func BenchmarkChangelogBytesPerCommit(b *testing.B) {
	for _, c := range []struct {
		name        string
		devices, hz int
	}{{"rate=1Hz", 1000, 1}, {"rate=10Hz", 200, 10}, {"rate=500Hz", 4, 500}} {
		b.Run(c.name, func(b *testing.B) {
			rs := benchReadingsHz(c.devices, c.hz, 2)
			for range b.N {
				eng, _ := NewEngine(benchWindow())
				now := time.Now()
				var bytes, commits int
				next := rs[0].EventTime.Add(500 * time.Millisecond)
				commit := func() {
					eng.Changes(func(k, v []byte) { bytes += len(k) + len(v) })
					commits++
				}
				for _, r := range rs {
					if !r.EventTime.Before(next) {
						commit()
						next = next.Add(500 * time.Millisecond)
					}
					eng.Add(r, now)
				}
				commit()
				b.ReportMetric(float64(bytes)/float64(commits)/float64(c.devices), "bytes/commit/device")
				b.ReportMetric(float64(bytes)/float64(len(rs)), "bytes/reading")
			}
		})
	}
}
