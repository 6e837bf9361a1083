package main

// `iotpipe simulate`: a simulated device fleet, run as a stage
// (flags → devicesim.Config → devicesim.New → service.Run).

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
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

func simulateCmd(env Env) *stageCmd[devicesim.Config, *devicesim.Sim] {
	return &stageCmd[devicesim.Config, *devicesim.Sim]{
		name:   "simulate",
		help:   simulateSummary,
		addr:   "",
		config: devicesim.DefaultConfig,
		newFunc: func(c devicesim.Config, deps service.Deps) (*devicesim.Sim, error) {
			c.Progress = env.Stdout
			return devicesim.New(c, deps)
		},
		bind: func(f *Flags, c *devicesim.Config) {
			f.Duration(&c.Duration, "duration", "how long to run (0: until SIGINT/SIGTERM or --messages-per-device)")
			f.Duration(&c.ProgressInterval, "progress-interval", "how often to print progress (0: only the final summary)")
			f.Group("MQTT")
			f.String(&c.URL, "mqtt-url", "broker URL, mqtt://host:port or mqtts://host:port (TLS)")
			f.String(&c.Username, "mqtt-device-username", "user name the devices connect with (needs write access to the device topics)")
			f.Secret(&c.Password, "mqtt-device-password", "password of --mqtt-device-username")
			f.String(&c.CAFile, "mqtt-ca-file", "mqtts://: PEM file of the CA the broker's certificate must chain to (empty: the system's roots)")
			f.String(&c.CertFile, "mqtt-cert-file", "mqtts://: one client certificate for every connection (its CN must be the device id the broker's ACL expects)")
			f.String(&c.KeyFile, "mqtt-key-file", "mqtts://: the key of --mqtt-cert-file")
			f.String(&c.CertDir, "mqtt-cert-dir", "mqtts://: one identity per device, <dir>/<device id>.crt and .key as 'iotpipe devices add/import --out <dir>' write them; needs --devices-per-conn 1")
			f.String(&c.ServerName, "mqtt-server-name", "mqtts://: the name the broker's certificate must hold (empty: the URL's host)")
			f.Group("Fleet")
			f.Int(&c.Devices, "devices", "number of devices")
			f.Int(&c.FirstDevice, "first-device", "number of the first device, so that several simulators run disjoint fleets")
			f.String(&c.DeviceIDPrefix, "device-prefix", "start of every device id; the device number follows, 6 digits")
			f.Int(&c.DevicesPerConn, "devices-per-conn", "devices sharing one MQTT connection")
			f.String(&c.TopicTemplate, "topic-template", "MQTT topic template; {device_id} is replaced by the device id")
			f.Float(&c.Rate, "rate", "messages per second per device (0: as fast as the broker acknowledges)")
			f.Int(&c.MessagesPerDevice, "messages-per-device", "stop after this many messages per device (0: no limit)")
			f.Var((*format)(&c.ValidKinds), &c.ValidKinds, "format", "payloads: realistic (four measurements with plausible signals) or mixed (every timestamp format)")
			f.Group("Imperfections (fractions 0 to 1 of the messages)")
			f.Float(&c.InvalidFraction, "invalid-fraction", "malformed or rejected payloads (every kind of bad input; they go to the DLQ)")
			f.Float(&c.DuplicateFraction, "duplicate-fraction", "exact repeats of the device's previous message (same seq; the processor counts them once)")
			f.Float(&c.OutOfOrderFraction, "out-of-order-fraction", "valid messages with their event time --out-of-order-by in the past")
			f.Float(&c.LateFraction, "late-fraction", "valid messages with their event time --late-by in the past (the processor sends them to the DLQ as late)")
			f.Duration(&c.OutOfOrderBy, "out-of-order-by", "how far back an out-of-order message's event time is")
			f.Duration(&c.LateBy, "late-by", "how far back a late message's event time is (more than the processor's window plus lateness)")
		},
		describe: func(c *devicesim.Config, o *service.Options) string {
			return fmt.Sprintf("%s, %d devices (%s…) at %g msg/s each, format %s, topic %s, invalid %g, duplicate %g, out-of-order %g (by %s), late %g (by %s), duration %s, http %q",
				c.URL, c.Devices, devicesim.DeviceID(c.DeviceIDPrefix, c.FirstDevice), c.Rate, (*format)(&c.ValidKinds), c.TopicTemplate,
				c.InvalidFraction, c.DuplicateFraction, c.OutOfOrderFraction, c.OutOfOrderBy, c.LateFraction, c.LateBy, c.Duration, listenAddr(o))
		},
	}
}

func runSimulate(ctx context.Context, env Env, args []string) error {
	err := runStage(ctx, simulateCmd(env), env, args)
	var ue *UsageError
	if err != nil && !errors.As(err, &ue) && !errors.Is(err, service.ErrStopTimeout) {
		return fmt.Errorf("fleet stopped: %w (check --mqtt-device-username/--mqtt-device-password and the broker's ACL)", err)
	}
	return err
}

// format is the flag value of --format: the valid payload kinds.
type format []devicesim.Kind

func (f *format) String() string {
	switch {
	case f == nil:
		return ""
	case slices.Equal(*f, []devicesim.Kind{devicesim.Realistic}):
		return "realistic"
	case slices.Equal(*f, devicesim.AllValidKinds()):
		return "mixed"
	}
	return fmt.Sprint([]devicesim.Kind(*f))
}

func (f *format) Set(s string) error {
	switch s {
	case "realistic":
		*f = []devicesim.Kind{devicesim.Realistic}
	case "mixed":
		*f = devicesim.AllValidKinds()
	default:
		return errors.New("want realistic or mixed")
	}
	return nil
}
