//go:build integration

// Package chaos runs the whole pipeline on services of its own (Mosquitto,
// a three-broker Kafka, PostgreSQL, versitygw) under a fleet that sends
// duplicates, out-of-order and late readings and bad input, while a
// schedule SIGKILLs random stages (restarting them, as a supervisor would)
// and restarts Kafka brokers (SIGKILL), PostgreSQL, the object store and
// Mosquitto. At the end every store is compared with a recomputation from
// the fleet's own record of what the MQTT broker acknowledged: windows
// exact, readings and lake rows once per device message, the DLQ by reason
// equal to what was sent bad.
//
// CI size (make test): 30 devices at 10 msg/s, 8 faults (each kind once),
// under 5 minutes on a busy 2-core machine.
// IOTPIPE_FULL=1: 100 devices, 30 minutes of faults (60 or more).
// IOTPIPE_CHAOS_SEED reproduces a schedule.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/test/internal/pipecheck"
)

// supervisor runs the stages and restarts one that exits, as docker
// compose's restart: unless-stopped does; it counts exits it did not cause.
type supervisor struct {
	t      *testing.T
	bin    string
	env    []string
	kafka  map[string][]string // each stage's principal (testenv.KafkaEnv)
	args   map[string][]string
	mu     sync.Mutex
	stages map[string]*pipecheck.Stage
	// selfExits lists the exits the schedule did not cause.
	selfExits []string
}

func (s *supervisor) start(name string) {
	st := pipecheck.StartStage(s.t, s.bin, append(append([]string(nil), s.env...), s.kafka[name]...), name, s.args[name]...)
	s.mu.Lock()
	s.stages[name] = st
	s.mu.Unlock()
}

func (s *supervisor) get(name string) *pipecheck.Stage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stages[name]
}

// kill SIGKILLs a stage and restarts it after pause.
func (s *supervisor) kill(name string, pause time.Duration) {
	s.get(name).Kill()
	time.Sleep(pause) // the stage stays dead this long: part of the fault, not a synchronisation
	s.start(name)
}

// check restarts every stage that exited by itself.
func (s *supervisor) check() {
	s.mu.Lock()
	var dead []string
	for name, st := range s.stages {
		if exited, err := st.Exited(); exited {
			s.selfExits = append(s.selfExits, fmt.Sprintf("%s exited by itself (%v): %s", name, err, pipecheck.Tail(st.Log(), 600)))
			dead = append(dead, name)
		}
	}
	s.mu.Unlock()
	for _, name := range dead {
		s.t.Logf("supervisor: restarting %s, which exited by itself", name)
		s.start(name)
	}
}

func TestChaos(t *testing.T) {
	devices, rate, faults, interval := 30, 10.0, 8, 4*time.Second
	timeout := 9 * time.Minute
	if pipecheck.Full() {
		devices, faults, interval, timeout = 100, 60, 30*time.Second, 60*time.Minute
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("IOTPIPE_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("IOTPIPE_CHAOS_SEED=%q: %v", v, err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 18))
	t.Logf("seed %d (IOTPIPE_CHAOS_SEED reproduces the schedule)", seed)

	begin := time.Now()
	p := testenv.StartPrivateCluster(t, 3, "mqtt", "kafka", "postgres", "s3")
	t.Logf("private services up in %s", time.Since(begin).Round(time.Second))
	env := p.Env
	ctx := testenv.Context(t, timeout)
	bin := testenv.Binary(t)

	id := testenv.Name(t, "chaos")
	schema := env.Schema(t)
	bucket := env.BucketName(t)
	raw, metrics, dlq, changelog, readings := id+".raw", id+".metrics", id+".dlq", id+".changelog", id+".readings"
	base := append(append(os.Environ(), env.KafkaEnv(t, testenv.Admin)...),
		"IOTPIPE_MQTT_URL="+env.MQTTURL,
		"IOTPIPE_PG_DSN="+env.PGDSN, "IOTPIPE_PG_WRITER_DSN="+env.PGWriterDSN,
		"IOTPIPE_S3_ENDPOINT="+env.S3Config.Endpoint, "IOTPIPE_S3_CA_FILE="+env.S3Config.CAFile, // the private store's own CA
		"IOTPIPE_TOPIC_RAW="+raw, "IOTPIPE_TOPIC_METRICS="+metrics, "IOTPIPE_TOPIC_DLQ="+dlq,
		// The processor's accepted readings, which the sinks store (init
		// creates the topic).
		"IOTPIPE_TOPIC_PROCESSOR_CHANGELOG="+changelog, "IOTPIPE_TOPIC_READINGS="+readings,
		"IOTPIPE_PG_SCHEMA="+schema, "IOTPIPE_S3_BUCKET="+bucket,
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_LOG_FORMAT=json",
	)
	initCmd := exec.CommandContext(ctx, bin, "init", "--raw-partitions", "6", "--metrics-partitions", "3", "--dlq-partitions", "2")
	initCmd.Env = base
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("iotpipe init: %v\n%s", err, out)
	}

	template := "devices/" + id + "/{device_id}/telemetry"
	sup := &supervisor{t: t, bin: bin, env: base, stages: map[string]*pipecheck.Stage{}, kafka: map[string][]string{
		"bridge": env.KafkaEnv(t, testenv.Bridge), "processor": env.KafkaEnv(t, testenv.Processor),
		"sink timescale": env.KafkaEnv(t, testenv.SinkTimescale), "sink lake": env.KafkaEnv(t, testenv.SinkLake),
	}, args: map[string][]string{
		// One bridge with a plain subscription of its persistent session:
		// Mosquitto 2.0.x drops shared subscriptions when it restarts (see
		// bridge/doc.go), and devices would get "no matching subscribers".
		"bridge": {"bridge", "--topic-template", template, "--mqtt-plain-subscription", "--mqtt-client-id", id + "-bridge"},
		// Lateness and the idle timeout cover the outages of the schedule
		// (a Kafka broker: about 25 s on 2 cores), so held-up readings are
		// not late. Before the bridge's heartbeats the processor took a
		// device that sent nothing for the idle timeout of its own wall
		// clock as silent, so a stall of the pipeline looked like silence:
		// with 5 s, an out-of-order reading or a redelivered copy at the
		// head of a backlog held up by a Mosquitto restart or a broker kill
		// was dead-lettered as late (12 readings sent on time in a run at a
		// load average of 30), and with 20 s still 17 in a full-size run (a
		// broker kill that stalled the pipeline for 64 s). Silence is now
		// measured on the heartbeats, which stop while the path is stalled
		// (docs/FAILOVER.md); the idle timeout stays at 20 s: the Mosquitto
		// restarts pause the load, and with it the devices, for real.
		"processor": {"processor", "--group", id + "-processor", "--instance-id", id + "-p1",
			"--window", "5s", "--lateness", "20s", "--idle-timeout", "20s", "--commit-interval", "300ms"},
		"sink timescale": {"sink", "timescale", "--group", id + "-sink-ts", "--instance-id", id + "-ts1", "--batch-delay", "300ms"},
		"sink lake":      {"sink", "lake", "--group", id + "-sink-lake", "--instance-id", id + "-lake1", "--max-age", "2s"},
	}}
	names := []string{"bridge", "processor", "sink timescale", "sink lake"}
	for _, n := range names {
		sup.start(n)
	}
	testenv.Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		if !strings.Contains(sup.get("bridge").Log(), "subscribed") {
			return errors.New("bridge not subscribed yet")
		}
		return nil
	})

	// The fleet. Its first segment sends nothing late, so that every
	// partition has a watermark before the first late reading.
	sent := pipecheck.NewSent(5 * time.Second).LateAfter(time.Minute)
	// A Mosquitto restart happens between load segments: a device whose
	// connection drops before its PUBACK cannot know whether the broker
	// kept the message, and the recomputation needs to know. The load
	// pauses; the test goroutine restarts Mosquitto and lets it go on.
	type pause struct{ paused, resume chan struct{} }
	mqttRestart := make(chan pause, 1)
	cfg := devicesim.DefaultConfig()
	cfg.URL, cfg.Username, cfg.Password = env.MQTTURL, env.MQTTDeviceUsername, env.MQTTDevicePassword
	cfg.Devices, cfg.DeviceIDPrefix, cfg.TopicTemplate, cfg.Rate = devices, id+"-", template, rate
	cfg.ValidKinds = []devicesim.Kind{devicesim.ValidRFC3339Metrics}
	cfg.InvalidKinds = []devicesim.Kind{devicesim.MalformedJSON, devicesim.BinaryGarbage, devicesim.MissingTimestamp, devicesim.FutureTimestamp, devicesim.PastTimestamp, devicesim.NaNValue, devicesim.InfValue, devicesim.EmptyPayload, devicesim.DeeplyNested}
	cfg.InvalidFraction, cfg.DuplicateFraction, cfg.OutOfOrderFraction = 0.03, 0.03, 0.05
	cfg.OnAck = sent.OnAck
	cfg.Now = func() time.Time { return time.Now().Truncate(time.Millisecond) }
	ld := &pipecheck.Load{Segment: 5 * time.Second, Cfg: cfg}
	ld.Between = func(seg int) {
		if seg == 0 {
			ld.Cfg.LateFraction = 0.02
		}
		select {
		case req := <-mqttRestart:
			close(req.paused)
			<-req.resume
		default:
		}
	}
	stop := make(chan struct{})
	loadDone := make(chan error, 1)
	go func() { loadDone <- ld.Run(ctx, stop) }()
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		if n, _ := ld.Segments(); n < 2 {
			return fmt.Errorf("%d segments of load", n)
		}
		return nil
	})

	// The schedule: each fault once in a random order, then random ones.
	kinds := []string{"kill bridge", "kill processor", "kill sink timescale", "kill sink lake",
		"restart postgres", "restart s3", "restart mqtt", "kill kafka broker"}
	schedule := slices.Clone(kinds)
	rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
	for len(schedule) < faults {
		schedule = append(schedule, kinds[rng.IntN(len(kinds))])
	}
	done := map[string]int{}
	tick := time.NewTicker(interval)
	for i, f := range schedule {
		<-tick.C
		sup.check()
		at := time.Now()
		switch f {
		case "kill bridge", "kill processor", "kill sink timescale", "kill sink lake":
			sup.kill(strings.TrimPrefix(f, "kill "), time.Duration(200+rng.IntN(2000))*time.Millisecond)
		case "restart postgres":
			p.Stop("postgres")
			p.Start("postgres")
		case "restart s3":
			p.Stop("s3")
			p.Start("s3")
		case "restart mqtt":
			req := pause{make(chan struct{}), make(chan struct{})}
			mqttRestart <- req
			select {
			case <-req.paused:
			case <-time.After(2 * time.Minute):
				t.Fatal("the load did not pause between segments for the Mosquitto restart")
			}
			p.Stop("mqtt")
			p.Start("mqtt")
			close(req.resume)
		case "kill kafka broker":
			node := 1 + rng.IntN(p.KafkaNodes())
			p.KillKafkaNode(node)
			time.Sleep(5 * time.Second) // the broker stays dead this long: part of the fault
			p.Start("kafka")
		}
		done[f]++
		t.Logf("fault %d/%d at %s: %s (%s)", i+1, len(schedule), time.Since(begin).Round(time.Second), f, time.Since(at).Round(100*time.Millisecond))
	}
	tick.Stop()
	before, _ := ld.Segments()
	testenv.Eventually(t, 2*time.Minute, 100*time.Millisecond, func() error {
		sup.check()
		if n, _ := ld.Segments(); n < before+2 {
			return fmt.Errorf("%d segments since the last fault", n-before)
		}
		return nil
	})
	close(stop)
	if err := <-loadDone; err != nil {
		t.Fatalf("fleet: %v", err)
	}
	segments, st := ld.Segments()
	t.Logf("fleet: %d segments, %+v", segments, st)
	if err := sent.Err(); err != nil {
		t.Fatal(err)
	}
	if st.Unconfirmed != 0 || st.Refused != 0 || st.NoSubscribers != 0 {
		t.Fatalf("fleet: every message must be acknowledged: %+v", st)
	}
	valid, invalid, values := sent.Counts()
	late := sent.Late()
	t.Logf("acknowledged: %d distinct valid device messages (%d late on purpose), %d invalid, %d values", valid, len(late), invalid, values)

	// Everything arrives: windows exact (they close through the idle
	// watermark), then the other stores. A reading sent late on purpose
	// is accepted or dead-lettered as late by its own device's clock: the
	// DLQ tells which, and the windows are recomputed from the rest.
	// Until the processor has seen everything the DLQ may still grow, so
	// it is read again on each try; once the windows match, every
	// acknowledged reading is either counted or a late dead letter.
	pg := env.PG(t)
	var want map[pipecheck.WindowKey]pipecheck.Agg
	var gotBad map[string]int
	var lateCopies, rawSeen map[pipecheck.MsgID]int
	var dead map[pipecheck.MsgID]bool
	testenv.Eventually(t, 3*time.Minute, time.Second, func() error {
		sup.check()
		rawSeen = pipecheck.ReadRaw(t, ctx, env, raw)
		gotBad, lateCopies = readDLQ(t, ctx, env, dlq)
		dead = pipecheck.Dead(rawSeen, lateCopies)
		want = sent.Windows(dead)
		return pipecheck.CheckMetrics(ctx, pg, schema, want)
	})
	if err := sent.CheckLate(rawSeen, lateCopies); err != nil {
		t.Errorf("dlq reason late: %v", err)
	}
	accepted, acceptedValues := sent.Accepted(dead)
	t.Logf("device_metrics: %d windows equal the recomputation from %d accepted device messages (%d values; %d of the %d sent late on purpose dead-lettered, %d with a late copy in the DLQ)",
		len(want), accepted, acceptedValues, len(dead), len(late), len(lateCopies))

	missing, rawDups, unknown := sent.CompareRaw(rawSeen)
	t.Logf("raw: %d device messages, %d extra copies (devices' re-sends and redeliveries), missing %d, unknown %d", len(rawSeen), rawDups, missing, unknown)
	if missing > 0 || unknown > 0 {
		t.Errorf("raw: %d acknowledged device messages missing, %d never acknowledged", missing, unknown)
	}
	// The readings topic: each accepted device message exactly once, no
	// late one.
	rdSeen := pipecheck.ReadRaw(t, ctx, env, readings)
	missing, dups, notAccepted := sent.CompareAccepted(rdSeen, dead)
	t.Logf("readings topic: %d device messages, %d extra copies, missing %d, not accepted %d", len(rdSeen), dups, missing, notAccepted)
	if missing > 0 || dups > 0 || notAccepted > 0 {
		t.Errorf("readings topic: %d accepted device messages missing, %d extra copies, %d not accepted (late dead letters or never acknowledged)", missing, dups, notAccepted)
	}

	var rows, distinct int64
	var perMsg map[pipecheck.MsgID]int
	testenv.Eventually(t, time.Minute, time.Second, func() error {
		var err error
		if perMsg, rows, distinct, err = pipecheck.ReadingsRows(ctx, pg, schema); err != nil {
			return err
		}
		if distinct < acceptedValues {
			return fmt.Errorf("readings hold %d distinct (device, metric, seq) of %d", distinct, acceptedValues)
		}
		return nil
	})
	missing, _, notAccepted = sent.CompareAccepted(perMsg, dead)
	t.Logf("readings: %d rows, %d distinct device readings (want %d, each once); device messages missing %d, not accepted %d", rows, distinct, acceptedValues, missing, notAccepted)
	if distinct != acceptedValues || rows != acceptedValues || missing > 0 || notAccepted > 0 {
		t.Errorf("readings: %d rows, %d distinct, %d accepted device messages missing, %d not accepted; want %d rows, each accepted reading once", rows, distinct, missing, notAccepted, acceptedValues)
	}
	var lakeRows int64
	testenv.Eventually(t, time.Minute, time.Second, func() error {
		n, err := pipecheck.LakeRows(ctx, env.S3(t), bucket, "readings/")
		if err != nil {
			return err
		}
		if lakeRows = n; n < acceptedValues {
			return fmt.Errorf("lake readings rows %d, want %d", n, acceptedValues)
		}
		return nil
	})
	t.Logf("lake: %d readings rows (want %d, once per accepted reading)", lakeRows, acceptedValues)
	if lakeRows != acceptedValues {
		t.Errorf("lake: %d readings rows, want %d (once per accepted reading)", lakeRows, acceptedValues)
	}

	// Dead letters by reason, each distinct bad message once.
	wantBad := sent.BadByReason()
	for r, n := range wantBad {
		if gotBad[r] != n {
			t.Errorf("dlq reason %s: %d distinct messages, want %d", r, gotBad[r], n)
		}
	}
	for r, n := range gotBad {
		if _, ok := wantBad[r]; !ok {
			t.Errorf("dlq reason %s: %d messages, none sent", r, n)
		}
	}
	t.Logf("dlq: by reason %v (sent %v), late: %d device messages (sent late on purpose %d)", gotBad, wantBad, len(lateCopies), len(late))

	sup.check()
	for _, e := range sup.selfExits {
		t.Errorf("a stage exited by itself: %s", e)
	}
	for _, n := range names {
		sup.get(n).Stop(t, 30*time.Second)
	}
	t.Logf("CHAOS: %d faults %v in %s; %d acknowledged messages (%d valid distinct, %d late, %d invalid); windows %d exact; total %s",
		len(schedule), done, time.Since(begin).Round(time.Second), st.Acked, valid, len(late), invalid, len(want), time.Since(begin).Round(time.Second))
}

// readDLQ counts the dead letters: per bridge reason the distinct (MQTT
// topic, payload) pairs, and per device message the copies the processor
// found late.
func readDLQ(t *testing.T, ctx context.Context, env *testenv.Env, dlq string) (map[string]int, map[pipecheck.MsgID]int) {
	t.Helper()
	bad := map[string]map[string]bool{}
	late := map[pipecheck.MsgID]int{}
	pipecheck.DrainTopic(t, ctx, env, dlq, func(r *kgo.Record) {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		reason := h[schemas.HeaderReason]
		if h[schemas.HeaderStage] == schemas.StageProcessor && reason == "late" {
			var rd schemas.Reading
			if err := schemas.DecodeRaw(r.Value, &rd); err != nil {
				t.Errorf("late dead letter does not hold a raw reading: %v", err)
				return
			}
			late[pipecheck.MsgID{Device: rd.DeviceID, Seq: rd.Seq}]++
			return
		}
		if bad[reason] == nil {
			bad[reason] = map[string]bool{}
		}
		bad[reason][h[schemas.HeaderSourceMQTTTopic]+"\x00"+string(r.Value)] = true
	})
	out := map[string]int{}
	for r, set := range bad {
		out[r] = len(set)
	}
	return out, late
}
