package e2e

import (
	"context"
	"sort"
	"sync"
	"time"
)

// watched is one process (or process tree) whose resource use is measured.
type watched struct {
	name string
	pids func() []int // the pids to add up, looked up at every sample
	// pss: memory is the sum of the processes' PSS (PostgreSQL: shared
	// buffers are counted once); otherwise VmRSS.
	pss bool
	// hwm: also read the kernel's VmHWM (peak RSS since the process
	// started); used for our own children, which start with the phase.
	hwm  bool
	note string
}

type pidTicks struct {
	start, first, last uint64
}

type watchState struct {
	w     watched
	ticks map[int]*pidTicks
	peak  int64
}

// monitor samples CPU time and memory of a set of processes every second.
type monitor struct {
	mu            sync.Mutex
	states        []*watchState
	t0            time.Time
	busy0, total0 uint64 // /proc/stat at the start
}

func newMonitor(ws []watched) *monitor {
	m := &monitor{t0: time.Now()}
	m.busy0, m.total0 = readCPUTimes()
	for _, w := range ws {
		m.states = append(m.states, &watchState{w: w, ticks: map[int]*pidTicks{}})
	}
	m.sample()
	return m
}

func (m *monitor) sample() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.states {
		var mem int64
		for _, pid := range s.w.pids() {
			st, err := readStat(pid)
			if err != nil {
				continue
			}
			t := s.ticks[pid]
			if t == nil || t.start != st.StartTicks {
				t = &pidTicks{start: st.StartTicks, first: st.CPUTicks}
				s.ticks[pid] = t
			}
			t.last = st.CPUTicks
			if s.w.pss {
				mem += pss(pid)
			} else {
				mem += statusKB(pid, "VmRSS")
			}
			if s.w.hwm {
				s.peak = max(s.peak, statusKB(pid, "VmHWM"))
			}
		}
		s.peak = max(s.peak, mem)
	}
}

// run samples every second until ctx ends.
func (m *monitor) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample()
		}
	}
}

// result takes a last sample and returns CPU cores (CPU seconds per wall
// second since the monitor started) and peak memory per process, in the
// order given.
func (m *monitor) result() []Proc {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	wall := time.Since(m.t0).Seconds()
	out := make([]Proc, 0, len(m.states))
	for _, s := range m.states {
		var ticks uint64
		for _, t := range s.ticks {
			ticks += t.last - t.first
		}
		p := Proc{Name: s.w.name, PeakRSSBytes: s.peak, Note: s.w.note, Pids: len(s.ticks)}
		if wall > 0 {
			p.CPUCores = float64(ticks) / clockTicks / wall
		}
		out = append(out, p)
	}
	return out
}

// limitedBy names what bounds a throughput from the CPU use measured
// during it: a process using ≥ 0.85 of a core (the simulator's publisher
// and Mosquitto are essentially single-threaded), else the machine when
// ≥ 90 % of all cores were busy (whoever used them), else nothing
// CPU-bound (then round trips bound it: QoS 1 in-flight windows).
func limitedBy(ps []Proc, machineBusy float64) string {
	name, cores := busiest(ps)
	switch {
	case cores >= 0.85:
		return name
	case machineBusy >= 0.9:
		return "machine (all cores busy)"
	default:
		return "no process CPU-bound (round trips: QoS 1 in-flight windows)"
	}
}

// busiest returns the name and CPU cores of the process that used the
// most CPU.
func busiest(ps []Proc) (string, float64) {
	s := append([]Proc(nil), ps...)
	sort.Slice(s, func(i, j int) bool { return s[i].CPUCores > s[j].CPUCores })
	if len(s) == 0 {
		return "", 0
	}
	return s[0].Name, s[0].CPUCores
}

// machineBusy returns the share (0 to 1) of all cores' time that was busy
// since the monitor started, whoever used it.
func (m *monitor) machineBusy() float64 {
	busy, total := readCPUTimes()
	if total <= m.total0 {
		return 0
	}
	return float64(busy-m.busy0) / float64(total-m.total0)
}
