package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// fixedDesc describes how the fixed offered load will be chosen.
func (o *Options) fixedDesc() string {
	if o.FixedRate > 0 {
		return fmt.Sprintf("%.0f msg/s (FixedRate)", o.FixedRate)
	}
	return fmt.Sprintf("%.2f × the highest sustained step", o.FixedOfSustained)
}

// fixedRate chooses the fixed phase's offered load (messages/s) from the
// stepped search: FixedOfSustained × the highest sustained step's offered
// load, or FixedRate when set. With no sustained step it falls back to
// FixedOfSustained × half the lowest step, and a note says so.
func (r *runner) fixedRate(best *Step) (float64, string) {
	if r.o.FixedRate > 0 {
		basis := fmt.Sprintf("FixedRate %.0f msg/s", r.o.FixedRate)
		switch {
		case best == nil:
			r.note("fixed: FixedRate %.0f msg/s, but no step was sustained: the fixed phase may overload the pipeline", r.o.FixedRate)
		case r.o.FixedRate > best.OfferedMsgsPerS:
			r.note("fixed: FixedRate %.0f msg/s exceeds the highest sustained step (%.0f msg/s): the fixed phase may overload the pipeline",
				r.o.FixedRate, best.OfferedMsgsPerS)
		}
		return r.o.FixedRate, basis
	}
	if best == nil {
		low := r.o.Steps[0] * r.res.BrokerCeilingMsgsPerS
		rate := r.o.FixedOfSustained * low / 2
		r.note("fixed: no step was sustained; the fixed load is %.2f × half the lowest step (%.0f msg/s), not known to be sustainable",
			r.o.FixedOfSustained, rate)
		return rate, fmt.Sprintf("%.2f × half the lowest step (%.2f × ceiling, %.0f msg/s offered; no step sustained)", r.o.FixedOfSustained, r.o.Steps[0], low)
	}
	rate := r.o.FixedOfSustained * best.OfferedMsgsPerS
	return rate, fmt.Sprintf("%.2f × the highest sustained step (%s: %.0f msg/s offered, %.2f × ceiling)",
		r.o.FixedOfSustained, best.Phase, best.OfferedMsgsPerS, best.Fraction)
}

// settle waits, after the stepped search, until the bridge backlog and
// the processor's and TimescaleDB sink's lags are back to about zero (at
// most 0.1 s of the next phase's input, at least 100 records) and the
// lake sink's is within its saw-tooth (lake max age of input), or
// DrainTimeout.
func (r *runner) settle(ctx context.Context, nextRate float64) error {
	tol := max(100, int64(nextRate/10))
	lakeTol := max(tol, int64(nextRate*lakeMaxAge.Seconds()))
	t0 := time.Now()
	lastLog := t0
	for {
		s, _, _, err := r.lagNow(ctx)
		if err == nil && s.Bridge <= tol && s.Processor <= tol && s.Timescale <= tol && s.Lake <= lakeTol {
			r.res.StepsDrainS = time.Since(t0).Seconds()
			r.logf("settle: drained in %.0fs (lag bridge %d processor %d timescale %d, each ≤ %d; lake %d ≤ %d)",
				r.res.StepsDrainS, s.Bridge, s.Processor, s.Timescale, tol, s.Lake, lakeTol)
			return nil
		}
		if time.Since(t0) >= r.o.DrainTimeout {
			r.res.StepsDrainS = time.Since(t0).Seconds()
			r.note("settle: the steps' backlog was not worked off within %s (lag bridge %d processor %d timescale %d lake %d, err %v); the fixed phase starts anyway",
				r.o.DrainTimeout, s.Bridge, s.Processor, s.Timescale, s.Lake, err)
			return nil
		}
		if time.Since(lastLog) >= progressEvery {
			lastLog = time.Now()
			r.logf("settle %3.0fs: lag bridge %d processor %d timescale %d lake %d", time.Since(t0).Seconds(), s.Bridge, s.Processor, s.Timescale, s.Lake)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case dead := <-r.cs.died:
			return fmt.Errorf("%s exited %d while settling; log %s:\n%s", dead.name, dead.exitCode(), dead.logPath, tail(dead.logPath, 15))
		case <-time.After(time.Second):
		}
	}
}

// mqttEvent reports whether a bridge JSON log line is about its MQTT
// connection after the first connect: lost, disconnected by the broker,
// a failed connect, a client error, or a connect other than the first.
func mqttEvent(line string) bool {
	var l struct {
		Msg        string `json:"msg"`
		Connection int    `json:"connection"`
	}
	if json.Unmarshal([]byte(line), &l) != nil {
		return false
	}
	switch {
	case l.Msg == "mqtt connected":
		return l.Connection > 1
	case strings.HasPrefix(l.Msg, "mqtt connection lost"), strings.HasPrefix(l.Msg, "mqtt broker disconnected"),
		strings.HasPrefix(l.Msg, "mqtt connect failed"), strings.HasPrefix(l.Msg, "mqtt client error"):
		return true
	}
	return false
}

// bridgeEvents collects the bridge's MQTT connection events from its log
// (before it is stopped, so that its own shutdown is not among them).
func (r *runner) bridgeEvents() {
	r.eventsRead = true
	r.res.BridgeMQTTEvents = []string{}
	c := r.stages["bridge"]
	if c == nil {
		return
	}
	f, err := os.Open(c.logPath)
	if err != nil {
		r.note("bridge log: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		if mqttEvent(sc.Text()) {
			n++
			if len(r.res.BridgeMQTTEvents) < 20 {
				r.res.BridgeMQTTEvents = append(r.res.BridgeMQTTEvents, sc.Text())
			}
		}
	}
	if n > 0 {
		r.note("bridge: %d MQTT connection events (lost connection / reconnect: Mosquitto redelivers unacknowledged messages, which shows as duplicates in raw); see bridge_mqtt_events and %s",
			n, c.logPath)
	}
}

// latencyText formats p50/p99 and the sample count; "n/a" without
// samples, so that a missing figure does not read as 0 s.
func latencyText(p50, p99 float64, n int) string {
	if n == 0 {
		return "n/a (0 samples)"
	}
	return fmt.Sprintf("p50 %.2fs p99 %.2fs (n=%d)", p50, p99, n)
}
