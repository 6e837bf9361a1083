package cli

// This file is `iotpipe simulate`: a simulated device fleet.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

const simulateSummary = `Run a simulated device fleet against an MQTT broker: --devices devices publish
at --rate messages per second each, QoS 1, with a per-device seq. With
--format realistic (the default) every message carries temperature (daily
cycle, drift, noise, occasional spikes), humidity, pressure and battery; with
--format mixed the messages rotate through every timestamp format the bridge
accepts. Fractions of the messages can be invalid (they go to the DLQ),
duplicated (the previous message again), out of order (event time a few
seconds back) or late (event time --late-by back, beyond the processor's
lateness). Progress is printed every --progress-interval: rate achieved,
acknowledged, invalid, and the simulator's own CPU per message. SIGINT or
SIGTERM stops it, prints a summary and exits 0.`

type simulateFlags struct {
	url, user, pass          string
	devices, first, perConn  int
	prefix, template, format string
	rate                     string
	invalid, dup, ooo, late  string
	oooBy, lateBy            time.Duration
	duration, progress       time.Duration
	perDevice                int
	checkConfig              bool
	http                     httpFlags
}

func (o *simulateFlags) bind(f *Flags) {
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without contacting anything")
	f.Duration(&o.duration, "duration", 0, "how long to run (0: until SIGINT/SIGTERM or --messages-per-device)")
	f.Duration(&o.progress, "progress-interval", 5*time.Second, "how often to print progress (0: only the final summary)")
	f.Group("MQTT")
	f.String(&o.url, "mqtt-url", "mqtt://localhost:1883", "broker URL, mqtt://host:port")
	f.String(&o.user, "mqtt-device-username", "", "user name the devices connect with (needs write access to the device topics)")
	f.Secret(&o.pass, "mqtt-device-password", "", "password of --mqtt-device-username")
	f.Group("Fleet")
	f.Int(&o.devices, "devices", 10, "number of devices")
	f.Int(&o.first, "first-device", 0, "number of the first device, so that several simulators run disjoint fleets")
	f.String(&o.prefix, "device-prefix", "dev-", "start of every device id; the device number follows, 6 digits")
	f.Int(&o.perConn, "devices-per-conn", 100, "devices sharing one MQTT connection")
	f.String(&o.template, "topic-template", schemas.DefaultTopicTemplate, "MQTT topic template; {device_id} is replaced by the device id")
	f.String(&o.rate, "rate", "1", "messages per second per device (0: as fast as the broker acknowledges)")
	f.Int(&o.perDevice, "messages-per-device", 0, "stop after this many messages per device (0: no limit)")
	f.String(&o.format, "format", "realistic", "payloads: realistic (four measurements with plausible signals) or mixed (every timestamp format)")
	f.Group("Imperfections (fractions 0 to 1 of the messages)")
	f.String(&o.invalid, "invalid-fraction", "0", "malformed or rejected payloads (every kind of bad input; they go to the DLQ)")
	f.String(&o.dup, "duplicate-fraction", "0", "exact repeats of the device's previous message (same seq; the processor counts them once)")
	f.String(&o.ooo, "out-of-order-fraction", "0", "valid messages with their event time --out-of-order-by in the past")
	f.String(&o.late, "late-fraction", "0", "valid messages with their event time --late-by in the past (the processor sends them to the DLQ as late)")
	f.Duration(&o.oooBy, "out-of-order-by", devicesim.DefaultOutOfOrderBy, "how far back an out-of-order message's event time is")
	f.Duration(&o.lateBy, "late-by", devicesim.DefaultLateBy, "how far back a late message's event time is (more than the processor's window plus lateness)")
	o.http.bind(f, "")
}

// simulateConfig turns the flags into a devicesim config; errors name the
// setting.
func (o *simulateFlags) config() (devicesim.Config, error) {
	var errs []error
	num := func(name, v string, lo, hi float64) float64 {
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch {
		case err != nil:
			errs = append(errs, settingErr(name, v, errors.New("not a number")))
		case math.IsNaN(x) || x < lo || x > hi:
			errs = append(errs, settingErr(name, v, fmt.Errorf("must be between %g and %g", lo, hi)))
		}
		return x
	}
	c := devicesim.Config{
		URL: o.url, Username: o.user, Password: o.pass,
		Devices: o.devices, FirstDevice: o.first, DeviceIDPrefix: o.prefix, DevicesPerConn: o.perConn,
		TopicTemplate: o.template, MessagesPerDevice: o.perDevice,
		Rate:               num("rate", o.rate, 0, 1e6),
		InvalidFraction:    num("invalid-fraction", o.invalid, 0, 1),
		DuplicateFraction:  num("duplicate-fraction", o.dup, 0, 1),
		OutOfOrderFraction: num("out-of-order-fraction", o.ooo, 0, 1),
		LateFraction:       num("late-fraction", o.late, 0, 1),
		OutOfOrderBy:       o.oooBy, LateBy: o.lateBy,
	}
	if !strings.HasPrefix(o.url, "mqtt://") && !strings.HasPrefix(o.url, "tcp://") {
		errs = append(errs, settingErr("mqtt-url", o.url, errors.New("want mqtt://host:port")))
	}
	if o.devices < 1 {
		errs = append(errs, settingErr("devices", strconv.Itoa(o.devices), errors.New("must be at least 1")))
	}
	if o.first < 0 {
		errs = append(errs, settingErr("first-device", strconv.Itoa(o.first), errors.New("must not be negative")))
	}
	if o.perConn < 1 {
		errs = append(errs, settingErr("devices-per-conn", strconv.Itoa(o.perConn), errors.New("must be at least 1")))
	}
	if o.perDevice < 0 {
		errs = append(errs, settingErr("messages-per-device", strconv.Itoa(o.perDevice), errors.New("must not be negative")))
	}
	if o.prefix == "" || len(devicesim.DeviceID(o.prefix, o.first+o.devices)) > schemas.MaxDeviceIDLen || strings.ContainsAny(o.prefix, "/+#") {
		errs = append(errs, settingErr("device-prefix", o.prefix, fmt.Errorf("must be non-empty, without / + #, and leave device ids of at most %d bytes", schemas.MaxDeviceIDLen)))
	}
	if strings.Count(o.template, schemas.DeviceIDPlaceholder) != 1 {
		errs = append(errs, settingErr("topic-template", o.template, fmt.Errorf("must hold %s exactly once", schemas.DeviceIDPlaceholder)))
	}
	switch o.format {
	case "realistic":
		c.ValidKinds = []devicesim.Kind{devicesim.Realistic}
	case "mixed":
	default:
		errs = append(errs, settingErr("format", o.format, errors.New("want realistic or mixed")))
	}
	if o.oooBy <= 0 {
		errs = append(errs, settingErr("out-of-order-by", o.oooBy.String(), errors.New("must be positive")))
	}
	if o.lateBy <= 0 {
		errs = append(errs, settingErr("late-by", o.lateBy.String(), errors.New("must be positive")))
	}
	if o.duration < 0 {
		errs = append(errs, settingErr("duration", o.duration.String(), errors.New("must not be negative")))
	}
	if o.progress < 0 {
		errs = append(errs, settingErr("progress-interval", o.progress.String(), errors.New("must not be negative")))
	}
	return c, errors.Join(errs...)
}

func runSimulate(ctx context.Context, env Env, args []string) error {
	var o simulateFlags
	f := newFlags(env, "iotpipe simulate", simulateSummary)
	o.bind(f)
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	sim, err := devicesim.New(cfg)
	if err != nil {
		return &UsageError{err}
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: %s, %d devices (%s…) at %g msg/s each, format %s, topic %s, invalid %g, duplicate %g, out-of-order %g (by %s), late %g (by %s), duration %s\n",
			cfg.URL, cfg.Devices, devicesim.DeviceID(cfg.DeviceIDPrefix, cfg.FirstDevice), cfg.Rate, o.format, cfg.TopicTemplate,
			cfg.InvalidFraction, cfg.DuplicateFraction, cfg.OutOfOrderFraction, cfg.OutOfOrderBy, cfg.LateFraction, cfg.LateBy, o.duration)
		return nil
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	fmt.Fprintf(env.Stdout, "simulate: %d devices at %g msg/s each (%g msg/s), format %s, %s as %q\n",
		cfg.Devices, cfg.Rate, cfg.Rate*float64(cfg.Devices), o.format, cfg.URL, cfg.Username)
	srv, err := simulateServer(o.http.c, sim)
	if err != nil {
		return settingErr("http-addr", o.http.c.Addr, err)
	}
	sctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	defer func() { stopServer(); <-served }()
	start := time.Now()
	cpu0 := cpuTime()
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	var tick <-chan time.Time
	if o.progress > 0 {
		t := time.NewTicker(o.progress)
		defer t.Stop()
		tick = t.C
	}
	prev := simSample{at: start, cpu: cpu0}
	for {
		select {
		case now := <-tick:
			cur := simSample{at: now, cpu: cpuTime(), st: sim.Stats()}
			fmt.Fprintln(env.Stdout, formatSimProgress(prev, cur, start))
			prev = cur
		case err := <-done:
			cur := simSample{at: time.Now(), cpu: cpuTime(), st: sim.Stats()}
			writeSimSummary(env.Stdout, simSample{at: start, cpu: cpu0}, cur)
			if err != nil {
				return fmt.Errorf("fleet stopped: %w (check --mqtt-device-username/--mqtt-device-password and the broker's ACL)", err)
			}
			return nil
		}
	}
}

// simSample is the fleet's counters and the process CPU time at one
// moment.
type simSample struct {
	at  time.Time
	cpu time.Duration
	st  devicesim.Stats
}

// formatSimProgress is one progress line over the interval prev → cur.
func formatSimProgress(prev, cur simSample, start time.Time) string {
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

func writeSimSummary(w io.Writer, first, last simSample) {
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

// simulateServer serves the fleet's counters on /metrics and, on /readyz,
// whether it has connected to the broker (for container healthchecks).
// With an empty address it serves nothing.
func simulateServer(c service.Config, sim *devicesim.Sim) (*service.Server, error) {
	srv := service.New(c, nil)
	counter := func(name, help string, v func(devicesim.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iotpipe", Subsystem: "simulate", Name: name, Help: help},
			func() float64 { return float64(v(sim.Stats())) })
	}
	srv.Registry.MustRegister(
		counter("published_total", "PUBLISH packets written.", func(s devicesim.Stats) int64 { return s.Published }),
		counter("acked_total", "Messages the broker acknowledged with success.", func(s devicesim.Stats) int64 { return s.Acked }),
		counter("acked_invalid_total", "Acknowledged messages that carried an invalid payload on purpose.", func(s devicesim.Stats) int64 { return s.AckedInvalid }),
		counter("refused_total", "Messages the broker refused (error reason code).", func(s devicesim.Stats) int64 { return s.Refused }),
		counter("no_subscribers_total", "Messages the broker dropped for lack of a subscriber (PUBACK 0x10).", func(s devicesim.Stats) int64 { return s.NoSubscribers }),
		counter("unconfirmed_total", "Messages whose connection dropped before their PUBACK.", func(s devicesim.Stats) int64 { return s.Unconfirmed }),
		counter("connections_total", "MQTT connections made.", func(s devicesim.Stats) int64 { return s.Connections }),
	)
	srv.AddCheck("mqtt", func(context.Context) error {
		if sim.Stats().Connections == 0 {
			return errors.New("not connected to the broker yet")
		}
		return nil
	})
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	return srv, nil
}
