//go:build integration

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestStallIsNotSilence reproduces the last open item of issue 18 on real
// services of its own (Mosquitto and a single-broker Kafka, so that the
// shared ones are never paused): the bridge and the processor run as child
// processes (idle timeout 3 s, lateness 4 s, windows of 2 s). A device
// sends in order; then a part of the ingest path stalls for 10 s (longer
// than the idle timeout plus the lateness, after which silence closes a
// device's windows up to its newest reading), and meanwhile the device
// sends a newer reading and then an out-of-order one 3 s older, within the
// lateness. After
// the stall nothing the device sent may be late: the DLQ holds no late
// record, the readings topic holds every reading once, and the last
// revision of every window equals a recomputation from what was sent.
//
// Stalls: the Kafka broker (SIGSTOP: the bridge cannot produce, the
// processor cannot fetch or commit), Mosquitto (SIGSTOP: a frozen broker,
// the bridge's connection stays up) and the bridge (SIGSTOP: Mosquitto
// queues for its session). "wall clock" runs the Kafka stall with the
// bridge's heartbeats off, the processor's rule before heartbeats: there
// the out-of-order reading must be late, which shows the scenario does
// reproduce the bug.
func TestStallIsNotSilence(t *testing.T) {
	p := testenv.StartPrivate(t, "mqtt", "kafka")
	bin := testenv.Binary(t)
	for _, v := range []struct {
		name, stall string
		heartbeats  bool
	}{
		{"kafka", "kafka", true},
		{"mosquitto", "mqtt", true},
		{"bridge", "bridge", true},
		{"wall clock", "kafka", false},
	} {
		t.Run(v.name, func(t *testing.T) {
			stallRun(t, p, bin, v.stall, v.heartbeats)
		})
	}
}

// sentReading is one reading the device sent.
type sentReading struct {
	seq int64
	at  time.Time
	v   float64
}

func stallRun(t *testing.T, p *testenv.Private, bin, stall string, heartbeats bool) {
	env := p.Env
	ctx := testenv.Context(t, 5*time.Minute)
	const window, lateness, idle, stallFor = 2 * time.Second, 4 * time.Second, 3 * time.Second, 10 * time.Second
	id := testenv.Name(t, "stall")
	raw, metrics, dlq := env.Topic(t, 2, nil), env.Topic(t, 1, nil), env.Topic(t, 1, nil)
	readings := env.Topic(t, 2, nil)
	changelog := env.Topic(t, 2, map[string]string{"cleanup.policy": "compact"})
	template := "devices/" + id + "/{device_id}/telemetry"
	hb := "1s"
	if !heartbeats {
		hb = "0"
	}
	bridge := testenv.StartProcPath(t, bin, "bridge", nil, append([]string{"bridge",
		"--mqtt-url", env.MQTTURL, "--mqtt-username", env.MQTTUsername, "--mqtt-password", env.MQTTPassword,
		"--mqtt-client-id", id + "-bridge", "--mqtt-plain-subscription", "--mqtt-session-expiry", "5m",
		"--topic-template", template, "--topic-raw", raw, "--topic-dlq", dlq,
		"--heartbeat-interval", hb, "--http-addr", "127.0.0.1:0", "--log-format", "json"},
		testenv.KafkaCLIArgs(env.KafkaConfig(t, testenv.Bridge))...)...)
	t.Cleanup(func() {
		_ = syscall.Kill(bridge.Pid(), syscall.SIGCONT)
		bridge.Stop(30 * time.Second)
	})
	processor := testenv.StartProcPath(t, bin, "processor", nil, append([]string{"processor",
		"--group", id + "-processor", "--instance-id", id + "-p1",
		"--topic-raw", raw, "--topic-metrics", metrics, "--topic-dlq", dlq,
		"--topic-processor-changelog", changelog, "--topic-readings", readings,
		"--window", window.String(), "--lateness", lateness.String(), "--idle-timeout", idle.String(),
		"--commit-interval", "200ms", "--http-addr", "127.0.0.1:0", "--log-format", "json"},
		testenv.KafkaCLIArgs(env.KafkaConfig(t, testenv.Processor))...)...)
	t.Cleanup(func() { processor.Stop(30 * time.Second) })
	bridge.WaitLine("mqtt subscribed", time.Minute)
	processor.WaitLine("restored state", time.Minute)

	out := readStallOutputs(ctx, t, env, readings, metrics, dlq)

	dev := id + "-d1"
	topic := strings.Replace(template, "{device_id}", dev, 1)
	cl := env.MQTTClient(t, env.MQTTDeviceUsername, env.MQTTDevicePassword, nil)
	var mu sync.Mutex
	var sent []sentReading
	send := func(at time.Time, async bool) {
		mu.Lock()
		r := sentReading{seq: int64(len(sent) + 1), at: at.UTC().Truncate(time.Millisecond), v: float64(len(sent)%7) + 0.5}
		sent = append(sent, r)
		mu.Unlock()
		payload := fmt.Sprintf(`{"seq":%d,"ts":%q,"metrics":{"v":%g}}`, r.seq, r.at.Format(time.RFC3339Nano), r.v)
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		o := paho.PublishOptions{}
		if async {
			// Into the connection without waiting for the PUBACK, which a
			// frozen Mosquitto does not send (every reading is checked at
			// the end).
			o.Method = paho.PublishMethod_AsyncSend
		}
		if _, err := cl.PublishWithOptions(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}, o); err != nil {
			t.Errorf("publish seq %d: %v", r.seq, err)
		}
	}

	// In order, 250 ms apart, until the processor has accepted them all
	// and heartbeats are flowing.
	for range 12 {
		send(time.Now(), false)
		time.Sleep(250 * time.Millisecond) // the device's own pace, not a synchronisation
	}
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		if n := out.readingsCount(); n < 12 {
			return fmt.Errorf("%d of 12 readings accepted", n)
		}
		return nil
	})

	// The stall.
	var pid int
	switch stall {
	case "kafka":
		pid = p.KafkaNodePID(1)
	case "mqtt":
		pid = pidFile(t, filepath.Join(p.StateDir, "mqtt", "pid"))
	case "bridge":
		pid = bridge.Pid()
	}
	if pid == 0 {
		t.Fatalf("no pid for %s", stall)
	}
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s (pid %d): %v", stall, pid, err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT %s (pid %d): %v", stall, pid, err)
			}
		}
	}
	t.Cleanup(resume)
	// Newest first, then the out-of-order one, 3 s older.
	newest := time.Now()
	send(newest, true)
	send(newest.Add(-3*time.Second), true)
	time.Sleep(stallFor - time.Since(stopped)) // the fault lasts this long: part of the scenario
	resume()
	t.Logf("%s stalled for %s (idle timeout %s)", stall, time.Since(stopped).Round(100*time.Millisecond), idle)

	// Then in order again for a few seconds.
	for range 8 {
		send(time.Now(), false)
		time.Sleep(250 * time.Millisecond) // the device's own pace
	}
	mu.Lock()
	all := append([]sentReading(nil), sent...)
	mu.Unlock()
	ooo := all[13] // the out-of-order reading

	// Everything is either accepted or dead-lettered.
	testenv.Eventually(t, 2*time.Minute, 200*time.Millisecond, func() error {
		if n, d := out.readingsCount(), out.dlqCount(); n+d < len(all) {
			return fmt.Errorf("%d readings accepted and %d dead-lettered of %d sent", n, d, len(all))
		}
		return nil
	})
	late := out.late()
	if !heartbeats {
		// The rule before heartbeats: the stall looked like the device's
		// silence, and the out-of-order reading was late.
		if len(late) != 1 || late[0] != ooo.seq {
			t.Fatalf("wall clock: late dead letters for seqs %v, want exactly the out-of-order reading %d (the bug this test reproduces)", late, ooo.seq)
		}
		t.Logf("wall clock: the out-of-order reading (seq %d, %s behind the newest) sent during a %s stall was dead-lettered as late, as before heartbeats", ooo.seq, newest.Sub(ooo.at).Round(time.Millisecond), stallFor)
		return
	}
	if len(late) > 0 {
		t.Fatalf("%s stall: readings sent on time were dead-lettered as late: seqs %v (the out-of-order one is %d)", stall, late, ooo.seq)
	}
	if d := out.dlqCount(); d != 0 {
		t.Fatalf("%s stall: %d dead letters, want none", stall, d)
	}
	// Every reading once in the readings topic; every window exact.
	want := map[int64]agg{}
	for _, r := range all {
		ws := r.at.Truncate(window).UnixMicro()
		a := want[ws]
		a.count++
		a.sum += r.v
		want[ws] = a
	}
	testenv.Eventually(t, time.Minute, 200*time.Millisecond, func() error {
		return out.check(len(all), want)
	})
	t.Logf("%s stall: %d readings, the out-of-order one (seq %d) accepted; %d windows exact, no dead letter", stall, len(all), ooo.seq, len(want))
}

type agg struct {
	count int64
	sum   float64
}

// stallOutputs collects what the processor wrote.
type stallOutputs struct {
	mu       sync.Mutex
	readings map[int64]int            // seq -> copies
	dlq      map[int64]schemas.Reason // seq -> reason
	windows  map[int64]schemas.WindowMetric
}

func readStallOutputs(ctx context.Context, t *testing.T, env *testenv.Env, readings, metrics, dlq string) *stallOutputs {
	o := &stallOutputs{readings: map[int64]int{}, dlq: map[int64]schemas.Reason{}, windows: map[int64]schemas.WindowMetric{}}
	cl := env.Kafka(t, kgo.ConsumeTopics(readings, metrics, dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		var r schemas.Reading
		var mr schemas.MetricsRecord
		for rctx.Err() == nil {
			fs := cl.PollFetches(rctx)
			fs.EachRecord(func(rec *kgo.Record) {
				o.mu.Lock()
				defer o.mu.Unlock()
				switch rec.Topic {
				case readings:
					if err := schemas.DecodeRaw(rec.Value, &r); err != nil {
						t.Errorf("readings record: %v", err)
						return
					}
					o.readings[r.Seq]++
				case metrics:
					if err := schemas.DecodeMetricsRecord(rec.Value, &mr); err != nil {
						t.Errorf("metrics record: %v", err)
						return
					}
					if mr.Kind != schemas.KindMetric {
						return
					}
					k := mr.Metric.WindowStart.UnixMicro()
					if prev, ok := o.windows[k]; !ok || mr.Metric.Revision > prev.Revision {
						o.windows[k] = mr.Metric
					}
				case dlq:
					dl, err := schemas.RecordDeadLetter(rec)
					if err != nil {
						t.Errorf("dlq record: %v", err)
						return
					}
					if err := schemas.DecodeRaw(dl.Value, &r); err != nil {
						t.Errorf("dead letter (%s) does not hold a reading: %v", dl.Reason, err)
						return
					}
					o.dlq[r.Seq] = dl.Reason
				}
			})
		}
	}()
	return o
}

func (o *stallOutputs) readingsCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.readings)
}

func (o *stallOutputs) dlqCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.dlq)
}

func (o *stallOutputs) late() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int64
	for seq, why := range o.dlq {
		if why == schemas.ReasonLate {
			out = append(out, seq)
		}
	}
	return out
}

// check compares the readings topic (every seq 1..n once) and the last
// revision of every window with want.
func (o *stallOutputs) check(n int, want map[int64]agg) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for seq := int64(1); seq <= int64(n); seq++ {
		if c := o.readings[seq]; c != 1 {
			return fmt.Errorf("reading %d is %d times in the readings topic", seq, c)
		}
	}
	for ws, a := range want {
		m, ok := o.windows[ws]
		switch {
		case !ok:
			return fmt.Errorf("window %s not emitted", time.UnixMicro(ws).UTC().Format(time.TimeOnly))
		case m.Count != a.count || m.Sum != a.sum:
			return fmt.Errorf("window %s: count %d sum %g (revision %d), want %d and %g",
				time.UnixMicro(ws).UTC().Format(time.TimeOnly), m.Count, m.Sum, m.Revision, a.count, a.sum)
		}
	}
	if len(o.windows) != len(want) {
		return fmt.Errorf("%d windows emitted, want %d", len(o.windows), len(want))
	}
	return nil
}

func pidFile(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}
