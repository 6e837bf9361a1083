package devicesim

// The simulator as a stage of the one shape: counters on the registry of
// service.Run, a readiness check, and progress lines for a terminal.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/internal/service"
)

// register adds the fleet's counters (iotpipe_simulate_*) to reg.
func (s *Sim) register(reg prometheus.Registerer) error {
	counter := func(name, help string, v func(Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iotpipe", Subsystem: "simulate", Name: name, Help: help},
			func() float64 { return float64(v(s.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		counter("published_total", "PUBLISH packets written.", func(s Stats) int64 { return s.Published }),
		counter("acked_total", "Messages the broker acknowledged with success.", func(s Stats) int64 { return s.Acked }),
		counter("acked_invalid_total", "Acknowledged messages that carried an invalid payload on purpose.", func(s Stats) int64 { return s.AckedInvalid }),
		counter("refused_total", "Messages the broker refused (error reason code).", func(s Stats) int64 { return s.Refused }),
		counter("no_subscribers_total", "Messages the broker dropped for lack of a subscriber (PUBACK 0x10).", func(s Stats) int64 { return s.NoSubscribers }),
		counter("unconfirmed_total", "Messages whose connection dropped before their PUBACK.", func(s Stats) int64 { return s.Unconfirmed }),
		counter("connections_total", "MQTT connections made.", func(s Stats) int64 { return s.Connections }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Checks are the readiness checks: "mqtt" passes once a connection to the
// broker was made.
func (s *Sim) Checks() map[string]service.Check {
	return map[string]service.Check{"mqtt": func(context.Context) error {
		if s.Stats().Connections == 0 {
			return errors.New("not connected to the broker yet")
		}
		return nil
	}}
}

// runWithProgress is run with a progress line every ProgressInterval and
// a summary at the end, written to Progress.
func (s *Sim) runWithProgress(ctx context.Context) error {
	w := s.cfg.Progress
	c := &s.cfg
	format := "mixed"
	if len(c.ValidKinds) == 1 && c.ValidKinds[0] == Realistic {
		format = "realistic"
	}
	fmt.Fprintf(w, "simulate: %d devices at %g msg/s each (%g msg/s), format %s, %s as %q\n",
		c.Devices, c.Rate, c.Rate*float64(c.Devices), format, c.URL, c.Username)
	start := time.Now()
	cpu0 := cpuTime()
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	var tick <-chan time.Time
	if s.cfg.ProgressInterval > 0 {
		t := time.NewTicker(s.cfg.ProgressInterval)
		defer t.Stop()
		tick = t.C
	}
	prev := sample{at: start, cpu: cpu0}
	for {
		select {
		case now := <-tick:
			cur := sample{at: now, cpu: cpuTime(), st: s.Stats()}
			fmt.Fprintln(w, formatProgress(prev, cur, start))
			prev = cur
		case err := <-done:
			writeSummary(w, sample{at: start, cpu: cpu0}, sample{at: time.Now(), cpu: cpuTime(), st: s.Stats()})
			return err
		}
	}
}

// sample is the fleet's counters and the process CPU time at one moment.
type sample struct {
	at  time.Time
	cpu time.Duration
	st  Stats
}

// formatProgress is one progress line over the interval prev → cur.
func formatProgress(prev, cur sample, start time.Time) string {
	dt := cur.at.Sub(prev.at).Seconds()
	sent := cur.st.Published - prev.st.Published
	rate := 0.0
	if dt > 0 {
		rate = float64(sent) / dt
	}
	return fmt.Sprintf("simulate: %5.0fs  %8.1f msg/s  published %d  acked %d (invalid %d)  unconfirmed %d  refused %d  no-subscribers %d  cpu %s/msg",
		cur.at.Sub(start).Seconds(), rate, cur.st.Published, cur.st.Acked, cur.st.AckedInvalid,
		cur.st.Unconfirmed, cur.st.Refused, cur.st.NoSubscribers, perMsg(cur.cpu-prev.cpu, sent))
}

func writeSummary(w io.Writer, first, last sample) {
	dt := last.at.Sub(first.at).Seconds()
	st := last.st
	rate := 0.0
	if dt > 0 {
		rate = float64(st.Published) / dt
	}
	fmt.Fprintf(w, "simulate: done after %.1fs: published %d (%.1f msg/s), acked %d (valid %d, invalid %d), duplicates %d, out-of-order %d, late %d, unconfirmed %d, refused %d, no-subscribers %d, connections %d, cpu %s/msg\n",
		dt, st.Published, rate, st.Acked, st.AckedValid, st.AckedInvalid, st.Duplicates, st.OutOfOrder, st.Late,
		st.Unconfirmed, st.Refused, st.NoSubscribers, st.Connections, perMsg(last.cpu-first.cpu, st.Published))
}

// perMsg formats CPU time per message in µs ("-" with no message).
func perMsg(cpu time.Duration, n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fµs", float64(cpu.Microseconds())/float64(n))
}

// cpuTime is the user plus system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
