//go:build integration

package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// full reports whether the full-size runs were asked for (IOTPIPE_FULL=1).
func full() bool { return os.Getenv("IOTPIPE_FULL") == "1" }

// setup is one test's topics, MQTT prefix and bridge settings.
type setup struct {
	env      *testenv.Env
	prefix   string
	raw, dlq string
	group    string
}

func newSetup(t *testing.T, env *testenv.Env) *setup {
	t.Helper()
	return &setup{
		env:    env,
		prefix: env.MQTTPrefix(t),
		raw:    env.Topic(t, 6, nil),
		dlq:    env.Topic(t, 2, nil),
		group:  testenv.Name(t, "share"),
	}
}

func (s *setup) template() string { return s.prefix + "/{device_id}/telemetry" }

// config returns a bridge config for this setup with a fresh client id
// whose session is removed when the test ends.
func (s *setup) config(t *testing.T, clientID string) Config {
	t.Helper()
	if clientID == "" {
		clientID = testenv.Name(t, "bridge")
	}
	t.Cleanup(func() { endSession(t, s.env, clientID) })
	c := DefaultConfig()
	c.MQTT.URLs, c.MQTT.ClientID = []string{s.env.MQTTURL}, clientID
	c.MQTT.Username, c.MQTT.Password = s.env.MQTTUsername, s.env.MQTTPassword
	c.MQTT.ShareGroup, c.MQTT.SessionExpiry = s.group, 10*time.Minute
	c.MQTT.ReconnectMin, c.MQTT.ReconnectMax = 100*time.Millisecond, time.Second
	c.Kafka = s.env.KafkaConfig(t, testenv.Bridge)
	c.Kafka.ClientID = clientID
	c.TopicRaw, c.TopicDLQ, c.TopicTemplate = s.raw, s.dlq, s.template()
	c.ShutdownTimeout = 10 * time.Second
	return c
}

// endSession removes a persistent MQTT session from the broker (a clean
// start with session expiry 0), so that tests leave nothing queued.
func endSession(t *testing.T, env *testenv.Env, clientID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", env.MQTTAddr(t))
	if err != nil {
		t.Logf("end session %s: %v", clientID, err)
		return
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true,
		Username: env.MQTTUsername, UsernameFlag: true, Password: []byte(env.MQTTPassword), PasswordFlag: true}); err != nil {
		t.Logf("end session %s: %v", clientID, err)
		return
	}
	_ = pc.Disconnect(&paho.Disconnect{})
}

// running is a bridge running in this process.
type running struct {
	b      *Bridge
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startBridge(t *testing.T, cfg Config) *running {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	b, err := New(cfg, service.Deps{Log: log, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{b: b, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("bridge stopped with %v", err)
		}
	})
	testenv.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-r.done:
			close(r.done)
			t.Fatalf("bridge stopped: %v", err)
		default:
		}
		return b.MQTTReady(ctx)
	})
	return r
}

// stop cancels the bridge and waits for Run (idempotent).
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(time.Minute):
		t.Fatal("bridge did not stop within a minute")
	}
	return nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// expect collects what the fleet got PUBACKs for.
type expect struct {
	mu    sync.Mutex
	valid map[string][]int64 // device id -> seqs acked, in order
	dlq   map[string]int     // topic + "\x00" + payload -> count
	why   map[string]schemas.Reason
	n     int
}

func newExpect() *expect {
	return &expect{valid: map[string][]int64{}, dlq: map[string]int{}, why: map[string]schemas.Reason{}}
}

func (e *expect) onAck(m *devicesim.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if m.Kind.Valid() {
		e.valid[m.DeviceID] = append(e.valid[m.DeviceID], m.Seq)
		return
	}
	k := m.Topic + "\x00" + string(m.Payload)
	e.dlq[k]++
	e.why[k] = m.Kind.Reason()
}

func (e *expect) counts() (valid, invalid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.valid {
		valid += len(s)
	}
	for _, n := range e.dlq {
		invalid += n
	}
	return
}

// fleet runs a simulated fleet on this setup's topics to the end.
func (s *setup) fleet(t *testing.T, env *testenv.Env, edit func(*devicesim.Config), e *expect) devicesim.Stats {
	t.Helper()
	sim := s.newFleet(t, env, edit, e)
	if err := sim.Run(testenv.Context(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	return sim.Stats()
}

// newFleet builds a fleet of devicesim.DefaultConfig changed by edit, on
// this setup's broker and topics.
func (s *setup) newFleet(t *testing.T, env *testenv.Env, edit func(*devicesim.Config), e *expect) *devicesim.Sim {
	t.Helper()
	cfg := devicesim.DefaultConfig()
	edit(&cfg)
	cfg.URL = env.MQTTURL
	cfg.Username, cfg.Password = env.MQTTUsername, env.MQTTPassword
	cfg.TopicTemplate = s.template()
	if e != nil {
		cfg.OnAck = e.onAck
	}
	sim, err := devicesim.New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

// got is what the bridge wrote to Kafka.
type got struct {
	raw        map[string][]int64 // device id -> seqs in partition order
	rawN       int
	heartbeats int // bridge heartbeat records (skipped)
	dlq        map[string]int
	dlqWhy     map[string]schemas.Reason
	dlqN       int
	reasons    map[schemas.Reason]int
}

// readAll consumes both topics from the start until every message e
// expects arrived (each acked valid reading in raw, each acked invalid
// message in the DLQ: counted by identity, since redelivered duplicates
// would make plain counts complete early) and the topics stay quiet for a
// moment (to catch late duplicates).
func (s *setup) readAll(t *testing.T, env *testenv.Env, e *expect, timeout time.Duration) *got {
	t.Helper()
	cl := env.Kafka(t, kgo.ConsumeTopics(s.raw, s.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	g := &got{raw: map[string][]int64{}, dlq: map[string]int{}, dlqWhy: map[string]schemas.Reason{}, reasons: map[schemas.Reason]int{}}
	var dec schemas.RawDecoder
	var r schemas.Reading
	deadline := time.Now().Add(timeout)
	quietSince := time.Time{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(rec *kgo.Record) {
			if schemas.IsHeartbeat(rec.Headers) {
				g.heartbeats++
				return
			}
			n++
			switch rec.Topic {
			case s.raw:
				if err := dec.Decode(rec.Value, &r); err != nil {
					t.Fatalf("raw record does not decode: %v", err)
				}
				if string(rec.Key) != r.DeviceID || !rec.Timestamp.Equal(r.EventTime.Truncate(time.Millisecond)) {
					t.Fatalf("raw record key %q / timestamp %v, reading %s / %v", rec.Key, rec.Timestamp, r.DeviceID, r.EventTime)
				}
				g.raw[r.DeviceID] = append(g.raw[r.DeviceID], r.Seq)
				g.rawN++
			case s.dlq:
				dl, err := schemas.RecordDeadLetter(rec)
				if err != nil {
					t.Fatalf("dlq record: %v", err)
				}
				k := dl.SourceMQTTTopic + "\x00" + string(dl.Value)
				g.dlq[k]++
				g.dlqWhy[k] = dl.Reason
				g.dlqN++
				g.reasons[dl.Reason]++
			}
		})
		if n > 0 {
			quietSince = time.Time{}
		} else if quietSince.IsZero() {
			quietSince = time.Now()
		}
		if !quietSince.IsZero() && time.Since(quietSince) > time.Second && g.missing(e) == 0 {
			return g
		}
		if time.Now().After(deadline) {
			valid, invalid := e.counts()
			t.Errorf("after %s: %d expected messages still missing (raw %d records for %d acked valid, dlq %d for %d acked invalid)",
				timeout, g.missing(e), g.rawN, valid, g.dlqN, invalid)
			return g // check names them
		}
	}
}

// missing returns how many messages e expects have not arrived.
func (g *got) missing(e *expect) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for dev, want := range e.valid {
		have := make(map[int64]bool, len(g.raw[dev]))
		for _, q := range g.raw[dev] {
			have[q] = true
		}
		for _, q := range want {
			if !have[q] {
				n++
			}
		}
	}
	for k, c := range e.dlq {
		if g.dlq[k] < c {
			n += c - g.dlq[k]
		}
	}
	return n
}

// check compares what arrived with what was acknowledged to the fleet:
// every acked message present, per-device order kept (duplicates from
// redelivery allowed only when dupsOK), and nothing that was not
// published. It returns the number of duplicates.
func (g *got) check(t *testing.T, e *expect, dupsOK bool) (dups int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for dev, want := range e.valid {
		have := g.raw[dev]
		seen := map[int64]int{}
		for _, q := range have {
			seen[q]++
		}
		for _, q := range want {
			if seen[q] == 0 {
				t.Errorf("device %s: acked seq %d missing from raw", dev, q)
			}
		}
		for _, n := range seen {
			dups += n - 1
		}
		// Order: the first copy of each seq comes after the first copy
		// of every lower seq (redelivered copies may repeat older ones).
		first := map[int64]bool{}
		top := int64(-1)
		for _, q := range have {
			if !first[q] {
				first[q] = true
				if q < top {
					t.Errorf("device %s: seq %d first seen after %d (order broken): %s", dev, q, top, trunc(have))
					break
				}
				top = q
			}
		}
	}
	for k, n := range e.dlq {
		if g.dlq[k] < n {
			t.Errorf("dlq: %d of %d copies of %.60q", g.dlq[k], n, k)
		}
		if g.dlqWhy[k] != e.why[k] {
			t.Errorf("dlq reason %q, want %q for %.60q", g.dlqWhy[k], e.why[k], k)
		}
		dups += g.dlq[k] - n
	}
	if !dupsOK && dups > 0 {
		t.Errorf("%d duplicates", dups)
	}
	return dups
}

func trunc(s []int64) string {
	if len(s) > 20 {
		return fmt.Sprint(s[:20]) + "…(" + strconv.Itoa(len(s)) + ")"
	}
	return fmt.Sprint(s)
}
