//go:build integration

package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// runFleet runs a fleet in the background and returns it with a channel
// that yields Run's error.
func (s *setup) runFleet(t *testing.T, env *testenv.Env, edit func(*devicesim.Config), e *expect) (*devicesim.Sim, chan error) {
	t.Helper()
	sim := s.newFleet(t, env, edit, e)
	done := make(chan error, 1)
	ctx := testenv.Context(t, 10*time.Minute)
	go func() { done <- sim.Run(ctx) }()
	return sim, done
}

func waitAcked(t *testing.T, sim *devicesim.Sim, n int64) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, 5*time.Millisecond, func() error {
		if a := sim.Stats().Acked; a < n {
			return fmt.Errorf("fleet acked %d of %d", a, n)
		}
		return nil
	})
}

func waitFleet(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("fleet did not finish")
	}
}

// SIGKILL the bridge process mid-stream and restart it: nothing acked to
// a device is missing (asserted on every broker); duplicates (Kafka
// acked, PUBACK not sent) are bounded by the in-flight limit per kill,
// asserted on a broker that honours the Receive Maximum (Mosquitto
// 2.0.13 on). Older Mosquitto overruns it (TestBrokerReceiveMaximumWhileAcking,
// docs/brokers.md): there the duplicate figure is reported, not asserted.
func TestBridgeSurvivesSIGKILL(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	kills := 2
	devices, per, rate := 200, 100, 40.0 // 8k msg/s for 2.5 s
	if full() {
		kills, devices, per = 10, 1000, 100
		rate = 10 // 10k msg/s for 10 s
	}
	p := startProc(t, cfg)
	e := newExpect()
	total := int64(devices * per)
	sim, done := s.runFleet(t, env, func(c *devicesim.Config) {
		c.Devices = devices
		c.MessagesPerDevice = per
		c.Rate = rate
		c.InvalidFraction = 0.02
		c.ValidKinds = devicesim.AllValidKinds()
	}, e)
	for k := 1; k <= kills; k++ {
		waitAcked(t, sim, total*int64(k)/int64(kills+1))
		p.kill(t)
		p = startProc(t, cfg)
	}
	waitFleet(t, done)
	st := sim.Stats()
	if st.Acked != total {
		t.Fatalf("fleet %+v", st)
	}
	valid, invalid := e.counts()
	g := s.readAll(t, env, e, 2*time.Minute)
	dups := g.check(t, e, true)
	t.Logf("%d kills, %d messages acked to devices: raw %d (valid %d), dlq %d (invalid %d), duplicates %d (bound %d per kill)",
		kills, st.Acked, g.rawN, valid, g.dlqN, invalid, dups, DefaultReceiveMaximum)
	// A duplicate is a message whose record Kafka stored but whose PUBACK
	// the broker had not processed when the bridge died. The bridge holds
	// at most ReceiveMaximum stored-but-unacknowledged messages (its
	// window releases them in receive order), and a broker that honours
	// the Receive Maximum has at most that many unacknowledged in flight,
	// so each kill duplicates at most ReceiveMaximum messages. Mosquitto
	// before 2.0.13 keeps sending past it once PUBACKs flow and, after a
	// kill, redelivers messages whose PUBACK the bridge had sent: there
	// the bound does not hold and the test reports the figure (doc.go).
	bound := kills * DefaultReceiveMaximum
	version := brokerVersion(t, env)
	switch {
	case dups <= bound:
		t.Logf("duplicate bound met on Mosquitto %s: %d duplicates ≤ %d kills × receive maximum %d", version, dups, kills, DefaultReceiveMaximum)
	case honoursReceiveMaximum(version):
		t.Errorf("Mosquitto %s: %d duplicates > %d kills × receive maximum %d", version, dups, kills, DefaultReceiveMaximum)
	default:
		t.Logf("duplicate bound NOT met on Mosquitto %s (inflight quota fixed in 2.0.13): %d duplicates > %d kills × receive maximum %d",
			version, dups, kills, DefaultReceiveMaximum)
	}
	p.term(t, 15*time.Second)
}

// Kafka (private) stopped while devices keep publishing: the bridge
// neither crashes nor grows, and every message arrives when Kafka
// returns. It keeps its MQTT connection throughout: a reconnect makes
// the broker redeliver everything in flight.
func TestBridgeKafkaOutage(t *testing.T) {
	priv := testenv.StartPrivate(t, "kafka")
	env := priv.Env
	s := newSetup(t, env)
	cfg := s.config(t, "")
	outage := 10 * time.Second
	if full() {
		outage = 30 * time.Second
	}
	p := startProc(t, cfg)
	e := newExpect()
	devices, rate := 100, 20.0 // 2k msg/s
	per := int(rate * (outage.Seconds() + 8))
	total := int64(devices * per)
	sim, done := s.runFleet(t, env, func(c *devicesim.Config) {
		c.Devices = devices
		c.MessagesPerDevice = per
		c.Rate = rate
		c.InvalidFraction = 0.02
		c.ValidKinds = devicesim.AllValidKinds()
	}, e)
	waitAcked(t, sim, total/8)
	rssBefore := p.peakRSS(t)
	priv.Stop("kafka")
	stopped := time.Now()
	waitAcked(t, sim, total/8+int64(outage.Seconds()*float64(devices)*rate*0.8))
	if d := outage - time.Since(stopped); d > 0 {
		// The outage must last its full length while devices publish;
		// nothing to poll for.
		time.Sleep(d)
	}
	if p.Exited() {
		t.Fatalf("bridge exited during the Kafka outage: %v\n%s", p.Err(), p.Tail(30))
	}
	rssOutage := p.peakRSS(t)
	priv.Start("kafka")
	t.Logf("kafka down for %s", time.Since(stopped).Round(time.Second))
	waitFleet(t, done)
	g := s.readAll(t, env, e, 3*time.Minute)
	dups := g.check(t, e, true)
	rss := p.peakRSS(t)
	t.Logf("%d messages: raw %d, dlq %d, duplicates %d; bridge peak RSS (VmHWM) %d KiB before the outage, %d KiB at its end, %d KiB after catching up",
		sim.Stats().Acked, g.rawN, g.dlqN, dups, rssBefore, rssOutage, rss)
	if rss > 200<<10 {
		t.Fatalf("peak RSS %d KiB: memory not bounded", rss)
	}
	if n := p.Count(`"mqtt connected"`); n != 1 {
		t.Errorf("bridge connected to MQTT %d times: it lost its connection while holding back", n)
	}
	p.term(t, 15*time.Second)
}

// Mosquitto (private) restarted mid-stream, the bridge on a shared
// subscription: the bridge reconnects and resumes its session; every
// message a device got a PUBACK with reason 0x00 for arrives. Mosquitto
// (every 2.0.x release, checked up to 2.0.20: persist__subs_save writes
// plain subscriptions only) does not keep shared subscriptions across its
// restart, so messages published before the bridge subscribes again are
// answered 0x10 "no matching subscribers" and dropped by the broker.
// Asserted: the reconnection and the arrival of every message acked with
// 0x00. Reported, not asserted: how many were answered 0x10 (0 to about
// 4k of 10k, depending on whether devices or the bridge reconnect first;
// docs/brokers.md); the plain subscription test below shows the way
// around it and asserts 0.
func TestBridgeMosquittoRestart(t *testing.T) {
	noSubs, version := mosquittoRestart(t, false)
	t.Logf("Mosquitto %s dropped %d messages published while the shared subscription was gone (answered 0x10)", version, noSubs)
}

// Mosquitto (private) restarted mid-stream, the bridge on a plain
// subscription (--mqtt-plain-subscription): the broker keeps it in the
// session across the restart, so no message is answered 0x10 and every
// message a device got a successful PUBACK for arrives, on any version.
func TestBridgeMosquittoRestartPlainSubscription(t *testing.T) {
	if noSubs, version := mosquittoRestart(t, true); noSubs > 0 {
		t.Errorf("Mosquitto %s answered %d messages with 0x10 (no matching subscribers) after its restart: they were dropped", version, noSubs)
	}
}

// mosquittoRestart runs a fleet through a bridge while the (private)
// broker restarts and checks that every message a device got a PUBACK
// 0x00 for arrives. It returns how many PUBACKs said 0x10 "no matching
// subscribers" (the broker dropped those) and the broker's version.
func mosquittoRestart(t *testing.T, plain bool) (noSubs int64, version string) {
	priv := testenv.StartPrivate(t, "mqtt")
	env := priv.Env
	version = brokerVersion(t, env)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	cfg.MQTT.PlainSubscription = plain
	r := startBridge(t, cfg)
	e := newExpect()
	devices, per := 100, 100
	total := int64(devices * per)
	sim, done := s.runFleet(t, env, func(c *devicesim.Config) {
		c.Devices = devices
		c.MessagesPerDevice = per
		c.Rate = 25
		c.InvalidFraction = 0.02
		c.ValidKinds = devicesim.AllValidKinds()
	}, e)
	waitAcked(t, sim, total/3)
	priv.Stop("mqtt")
	priv.Start("mqtt")
	waitFleet(t, done)
	st := sim.Stats()
	valid, invalid := e.counts()
	g := s.readAll(t, env, e, 2*time.Minute)
	dups := g.check(t, e, true)
	bs := r.b.Stats()
	t.Logf("Mosquitto %s, plain subscription %v: fleet %+v; raw %d, dlq %d (acked valid %d, invalid %d), duplicates %d; answered 0x10 (dropped by the broker) %d; bridge %+v",
		version, plain, st, g.rawN, g.dlqN, valid, invalid, dups, st.NoSubscribers, bs)
	if bs.Connections < 2 {
		t.Fatalf("bridge connected %d times, want a reconnection", bs.Connections)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	return st.NoSubscribers, version
}

// A backlog queued in the bridge's session while it was away, drained
// slowly (linger 300 ms: about 3k messages/s): a broker that sends past
// the Receive Maximum (Mosquitto 2.0.11) puts the PINGRESP behind
// thousands of messages the bridge reads only as Kafka acknowledges, far
// later than one keep-alive period (2 s here). The bridge must keep its
// connection: a reconnect would have the broker redeliver the whole
// backlog in flight, and the bridge would store it twice.
func TestBridgeKeepsConnectionDrainingBacklog(t *testing.T) {
	env := testenv.Load(t)
	s := newSetup(t, env)
	cfg := s.config(t, "")
	p := startProc(t, cfg)
	p.term(t, 15*time.Second)
	e := newExpect()
	const devices, per = 100, 200
	if st := s.fleet(t, env, func(c *devicesim.Config) {
		c.Devices = devices
		c.MessagesPerDevice = per
		c.Rate = 0
		c.ValidKinds = devicesim.AllValidKinds()
	}, e); st.Acked != devices*per {
		t.Fatalf("fleet %+v", st)
	}
	start := time.Now()
	p = startProc(t, cfg, "--mqtt-keepalive", "2s", "--kafka-linger", "300ms")
	g := s.readAll(t, env, e, 2*time.Minute)
	drain := time.Since(start)
	dups := g.check(t, e, true)
	conns := p.Count(`"mqtt connected"`)
	t.Logf("backlog of %d drained in %s with keep-alive 2s: %d connection(s), %d duplicates", devices*per, drain.Round(time.Millisecond), conns, dups)
	if conns != 1 {
		t.Errorf("bridge connected %d times while draining: it dropped a live connection", conns)
	}
	if dups != 0 {
		t.Errorf("%d duplicates without any failure", dups)
	}
	p.term(t, 15*time.Second)
}
