package e2e

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// percentile returns the p-th percentile (0 < p ≤ 100) of xs by the
// nearest-rank method; xs need not be sorted and is not changed. It
// returns 0 for no samples.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(s) {
		rank = len(s)
	}
	return s[rank-1]
}

// lagSample is the backlog of every part of the pipeline at one moment,
// in records (one record = one device message).
type lagSample struct {
	At        time.Duration // since the start of the phase
	Bridge    int64         // acknowledged by the broker to the devices, not yet in raw+dlq
	Processor int64         // raw records after the processor group's committed offsets
	Timescale int64         // raw records after the TimescaleDB sink group's committed offsets
	Lake      int64         // raw records after the lake sink group's committed offsets
}

// Total is the sum of the four backlogs.
func (s lagSample) Total() int64 { return s.Bridge + s.Processor + s.Timescale + s.Lake }

// stepRule holds the thresholds of the sustained-step decision; see the
// package documentation.
type stepRule struct {
	MinAchieved float64       // achieved/offered at least this (0.95)
	Growth      float64       // lag growth at most this fraction of the step's input (0.05)
	Bound       time.Duration // end lag of bridge, processor and TimescaleDB sink at most this much input (5 s)
	LakeBound   time.Duration // end lag of the lake sink at most this much input (lake max age + 5 s)
}

// verdict is the outcome of decide.
type verdict struct {
	Sustained bool
	Reason    string // why not, empty when sustained
	MaxLag    int64  // largest total lag sampled
	EndLag    int64  // total lag at the end (minimum over the last third)
	Growth    int64  // end minus start lag of bridge+processor+TimescaleDB sink
}

// windowMin returns, per part, the minimum over the samples whose At lies
// in [from, to]; ok is false when there is none.
func windowMin(samples []lagSample, from, to time.Duration) (m lagSample, ok bool) {
	first := true
	for _, s := range samples {
		if s.At < from || s.At > to {
			continue
		}
		if first {
			m, first = s, false
			continue
		}
		m.Bridge = min(m.Bridge, s.Bridge)
		m.Processor = min(m.Processor, s.Processor)
		m.Timescale = min(m.Timescale, s.Timescale)
		m.Lake = min(m.Lake, s.Lake)
	}
	return m, !first
}

// decide says whether a step of the given length, offered and achieved
// rates (messages/s) and lag samples was sustained. Start and end lags are
// the per-part minima over the first and last third of the step, which
// removes the saw-tooth of batching sinks.
func decide(r stepRule, offered, achieved float64, dur time.Duration, samples []lagSample) verdict {
	var v verdict
	for _, s := range samples {
		v.MaxLag = max(v.MaxLag, s.Total())
	}
	third := dur / 3
	start, ok1 := windowMin(samples, 0, third)
	end, ok2 := windowMin(samples, dur-third, dur+time.Hour)
	if ok2 {
		v.EndLag = end.Total()
	}
	v.Growth = (end.Bridge + end.Processor + end.Timescale) - (start.Bridge + start.Processor + start.Timescale)
	switch {
	case offered <= 0:
		v.Reason = "no offered load"
	case achieved < r.MinAchieved*offered:
		v.Reason = fmt.Sprintf("achieved %.0f msg/s < %.0f%% of offered %.0f msg/s", achieved, 100*r.MinAchieved, offered)
	case !ok1 || !ok2:
		v.Reason = "too few lag samples"
	case float64(v.Growth) > r.Growth*offered*dur.Seconds():
		v.Reason = fmt.Sprintf("lag grew by %d records (> %.0f%% of the step's input)", v.Growth, 100*r.Growth)
	case float64(end.Bridge) > offered*r.Bound.Seconds():
		v.Reason = fmt.Sprintf("bridge backlog %d at the end (> %s of input)", end.Bridge, r.Bound)
	case float64(end.Processor) > offered*r.Bound.Seconds():
		v.Reason = fmt.Sprintf("processor lag %d at the end (> %s of input)", end.Processor, r.Bound)
	case float64(end.Timescale) > offered*r.Bound.Seconds():
		v.Reason = fmt.Sprintf("TimescaleDB sink lag %d at the end (> %s of input)", end.Timescale, r.Bound)
	case float64(end.Lake) > offered*r.LakeBound.Seconds():
		v.Reason = fmt.Sprintf("lake sink lag %d at the end (> %s of input)", end.Lake, r.LakeBound)
	default:
		v.Sustained = true
	}
	return v
}
