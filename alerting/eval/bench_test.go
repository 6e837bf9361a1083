package eval

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/schemas"
)

// benchInput is 1,000 reading rules over 100 metrics (10 per metric,
// scope all) and readings of 1,000 devices with 4 of those metrics each,
// values walking across the thresholds.
func benchInput() ([]*rules.Rule, []Reading) {
	var set []*rules.Rule
	for i := range 1000 {
		set = append(set, &rules.Rule{ID: fmt.Sprintf("r%d", i), Kind: rules.KindReading, Scope: rules.ScopeAll,
			Metric: fmt.Sprintf("m%d", i%100), Operator: rules.GT, Trigger: float64(50 + i%10), Clear: float64(45 + i%10),
			ForCount: 1, Severity: rules.SeverityWarning, Enabled: true, Version: 1})
	}
	base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var rs []Reading
	for i := range 100_000 {
		d := i % 1000
		rs = append(rs, Reading{DeviceID: fmt.Sprintf("dev-%d", d), Metric: fmt.Sprintf("m%d", (d+i/1000)%4), Value: float64(30 + i%10),
			Time: base.Add(time.Duration(i) * time.Millisecond)})
		if i%500 == 0 {
			rs[i].Value = 99
		}
	}
	return set, rs
}

// BenchmarkReading measures readings/s through the engine (one core):
// each reading meets the 10 rules of its metric. BenchmarkReadingCeiling
// is the same loop doing only the rule lookup, for comparison.
func BenchmarkReading(b *testing.B) {
	set, rs := benchInput()
	e := New(set, nil)
	var out []*schemas.Alert
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		r := rs[i%len(rs)]
		r.Time = r.Time.Add(time.Duration(i/len(rs)) * 100 * time.Second)
		out = e.Reading(out[:0], r)
	}
	report(b, cpu0)
}

// cpuTime is the process's user+system CPU time: on a shared machine the
// wall clock overstates the cost, so readings per CPU-second is reported
// too (the loop is single-threaded; GC adds some other-core time).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "readings/cpu-s")
	}
}

func BenchmarkReadingCeiling(b *testing.B) {
	set, rs := benchInput()
	e := New(set, nil)
	n := 0
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		r := rs[i%len(rs)]
		n += len(e.byMetric[r.Metric])
	}
	report(b, cpu0)
	_ = n
}
