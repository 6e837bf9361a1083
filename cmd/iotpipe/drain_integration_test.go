//go:build integration

package main

// Every stage, run as the real binary on the real services, keeps
// /metrics up while it drains after SIGTERM and exits 0, the same way
// (service.Run). The drain is made to last by a test hook: the
// processor's --debug-commit-delay (the transaction in progress at SIGTERM
// takes 3s to commit), the lake sink's before-commit failpoint (the files
// sealed at SIGTERM wait 3s before their commit), and --debug-stop-delay
// for the others (the stage sees SIGTERM 3s late).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// stageProc is one `iotpipe <stage>` child process.
// TODO(merge): move onto testenv.Proc once it exists.
type stageProc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
	err  error
}

// startStage runs the binary with exactly env (plus PATH) and args.
func startStage(t *testing.T, env []string, args ...string) *stageProc {
	t.Helper()
	name := args[0]
	if name == "sink" {
		name += " " + args[1]
	}
	p := &stageProc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(testenv.Binary(t), args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.logText())
		}
	})
	return p
}

func (p *stageProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a log line holding s.
func (p *stageProc) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, 50*time.Millisecond, func() error {
		if strings.Contains(p.logText(), s) {
			return nil
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, s)
		default:
		}
		return fmt.Errorf("no %q in the log yet", s)
	})
}

// addr is where the stage serves /metrics (from its log).
func (p *stageProc) addr(t *testing.T) string {
	t.Helper()
	p.waitLog(t, "serving metrics and health", 30*time.Second)
	for _, l := range strings.Split(p.logText(), "\n") {
		var e struct{ Msg, Addr string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "serving metrics and health" {
			return e.Addr
		}
	}
	t.Fatalf("%s: no address in the log", p.name)
	return ""
}

func (p *stageProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// drain sends SIGTERM, scrapes /metrics while the process still runs and
// checks that it holds want, then that the process exits 0.
func (p *stageProc) drain(t *testing.T, addr, want string, after func()) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if after != nil {
		after()
	}
	body, err := get("http://" + addr + "/metrics")
	if !p.running() {
		t.Fatalf("%s exited before /metrics was scraped during its drain (%v)", p.name, p.err)
	}
	if err != nil || !strings.Contains(body, want) {
		t.Fatalf("/metrics during the drain: %v; want %q in:\n%.2000s", err, want, body)
	}
	if _, err := get("http://" + addr + "/healthz"); err != nil {
		t.Fatalf("/healthz during the drain: %v", err)
	}
	t.Logf("%s: /metrics answered during the drain (%d bytes)", p.name, len(body))
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		t.Fatalf("%s did not exit within 40s of SIGTERM", p.name)
	}
	if p.err != nil {
		t.Fatalf("%s exit after SIGTERM: %v (want 0)", p.name, p.err)
	}
	if !strings.Contains(p.logText(), `"msg":"stopping"`) {
		t.Errorf("%s: no stopping line in its log", p.name)
	}
}

func get(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}

func kafkaEnv(t testing.TB, env *testenv.Env, principal string) []string {
	return append(env.KafkaEnv(t, principal), "IOTPIPE_LOG_FORMAT=json", "IOTPIPE_HTTP_ADDR=127.0.0.1:0")
}

func produceRaw(t *testing.T, env *testenv.Env, topic string, n int) {
	t.Helper()
	cl := env.Kafka(t)
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	var recs []*kgo.Record
	for i := range n {
		r := &schemas.Reading{DeviceID: fmt.Sprintf("dev-%03d", i%10), EventTime: base.Add(time.Duration(i) * 10 * time.Millisecond),
			ReceivedTime: base.Add(time.Duration(i)*10*time.Millisecond + time.Millisecond), Seq: int64(i / 10), HasSeq: true,
			Measurements: []schemas.Measurement{{Name: "temp", Value: float64(i)}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
		rec.Topic = topic
		recs = append(recs, rec)
	}
	if err := cl.ProduceSync(testenv.Context(t, 30*time.Second), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestDrainBridge(t *testing.T) {
	env := testenv.Load(t)
	id := testenv.Name(t, "drain")
	p := startStage(t, append(kafkaEnv(t, env, testenv.Bridge),
		"IOTPIPE_MQTT_URL="+env.MQTTURL, "IOTPIPE_MQTT_USERNAME="+env.MQTTUsername, "IOTPIPE_MQTT_PASSWORD="+env.MQTTPassword),
		"bridge", "--topic-raw", env.Topic(t, 1, nil), "--topic-dlq", env.Topic(t, 1, nil),
		"--mqtt-client-id", id, "--mqtt-share-group", id, "--mqtt-session-expiry", "1s",
		"--topic-template", "devices/"+id+"/{device_id}/telemetry", "--debug-stop-delay", "3s")
	addr := p.addr(t)
	p.waitLog(t, "subscribed", 60*time.Second)
	p.drain(t, addr, "iotpipe_bridge_", nil)
}

func TestDrainProcessor(t *testing.T) {
	env := testenv.Load(t)
	raw := env.Topic(t, 2, nil)
	changelog := env.Topic(t, 2, map[string]string{"cleanup.policy": "compact"})
	produceRaw(t, env, raw, 200)
	p := startStage(t, kafkaEnv(t, env, testenv.Processor), "processor", "--topic-raw", raw, "--topic-metrics", env.Topic(t, 1, nil),
		"--topic-dlq", env.Topic(t, 1, nil), "--topic-processor-changelog", changelog, "--topic-readings", env.Topic(t, 2, nil),
		"--group", env.Group(t), "--instance-id", testenv.Name(t, "p"), "--session-timeout", "6s",
		"--commit-interval", "100ms", "--debug-commit-delay", "3s")
	addr := p.addr(t)
	// SIGTERM while a transaction commit sleeps: the soft stop waits for it.
	p.waitLog(t, "transaction commit started", 60*time.Second)
	p.drain(t, addr, "iotpipe_processor_records_in_total", nil)
}

func TestDrainSinkLake(t *testing.T) {
	env := testenv.Load(t)
	raw := env.Topic(t, 1, nil)
	produceRaw(t, env, raw, 200)
	p := startStage(t, append(kafkaEnv(t, env, testenv.SinkLake),
		"IOTPIPE_S3_ENDPOINT="+env.S3Config.Endpoint, "IOTPIPE_S3_ACCESS_KEY="+env.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY="+env.S3Config.SecretKey, "IOTPIPE_S3_REGION="+env.S3Config.Region, "IOTPIPE_S3_BUCKET="+env.Bucket(t),
		"IOTPIPE_S3_CA_FILE="+env.S3Config.CAFile),
		"sink", "lake", "--topic-readings", raw, "--topic-metrics", "-", "--topic-dlq", env.Topic(t, 1, nil),
		"--group", env.Group(t), "--instance-id", testenv.Name(t, "l"), "--session-timeout", "6s",
		"--max-age", "10m", "--test-failpoints", "before-commit=3s@1")
	addr := p.addr(t)
	// Every record is held in an open file (--max-age 10m): SIGTERM seals,
	// uploads and commits it, pausing 3s before the commit.
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		body, err := get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `iotpipe_lake_records_total{topic="`+raw+`"} 200`) {
			return errors.New("not all records consumed yet")
		}
		return nil
	})
	p.drain(t, addr, `iotpipe_lake_records_total{topic="`+raw+`"} 200`, func() { p.waitLog(t, "failpoint reached", 30*time.Second) })
}

func TestDrainSinkTimescale(t *testing.T) {
	env := testenv.Load(t)
	schema := env.Schema(t)
	initCmd := exec.Command(testenv.Binary(t), "init", "--skip", "kafka,s3", "--pg-schema", schema)
	initCmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IOTPIPE_PG_DSN=" + env.PGDSN}
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("iotpipe init: %v\n%s", err, out)
	}
	raw := env.Topic(t, 1, nil)
	produceRaw(t, env, raw, 200)
	p := startStage(t, append(kafkaEnv(t, env, testenv.SinkTimescale), "IOTPIPE_PG_WRITER_DSN="+env.PGWriterDSN),
		"sink", "timescale", "--pg-schema", schema, "--topic-readings", raw, "--topic-metrics", env.Topic(t, 1, nil),
		"--topic-dlq", env.Topic(t, 1, nil), "--group", env.Group(t), "--instance-id", testenv.Name(t, "ts"),
		"--session-timeout", "6s", "--debug-stop-delay", "3s")
	addr := p.addr(t)
	testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		_, err := get("http://" + addr + "/readyz")
		return err
	})
	p.drain(t, addr, "iotpipe_sink_timescale_", nil)
}

func TestDrainSimulate(t *testing.T) {
	env := testenv.Load(t)
	id := testenv.Name(t, "sim")
	p := startStage(t, []string{"IOTPIPE_LOG_FORMAT=json", "IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_MQTT_URL=" + env.MQTTURL,
		"IOTPIPE_MQTT_DEVICE_USERNAME=" + env.MQTTDeviceUsername, "IOTPIPE_MQTT_DEVICE_PASSWORD=" + env.MQTTDevicePassword},
		"simulate", "--devices", "2", "--rate", "5", "--topic-template", "devices/"+id+"/{device_id}/telemetry",
		"--debug-stop-delay", "3s")
	addr := p.addr(t)
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		_, err := get("http://" + addr + "/readyz")
		return err
	})
	p.drain(t, addr, "iotpipe_simulate_published_total", nil)
}

// A stage stuck in its drain past --shutdown-timeout is given up: the
// process exits 1 soon after, saying so (here the processor's commit
// sleeps 60s, far past its 1s budget).
func TestHardStopExitsNonZero(t *testing.T) {
	env := testenv.Load(t)
	raw := env.Topic(t, 1, nil)
	produceRaw(t, env, raw, 50)
	p := startStage(t, kafkaEnv(t, env, testenv.Processor), "processor", "--topic-raw", raw, "--topic-metrics", env.Topic(t, 1, nil),
		"--topic-dlq", env.Topic(t, 1, nil), "--topic-processor-changelog", env.Topic(t, 1, map[string]string{"cleanup.policy": "compact"}),
		"--topic-readings", env.Topic(t, 1, nil),
		"--group", env.Group(t), "--instance-id", testenv.Name(t, "p"), "--session-timeout", "6s",
		"--commit-interval", "100ms", "--debug-commit-delay", "60s", "--shutdown-timeout", "1s")
	p.waitLog(t, "transaction commit started", 60*time.Second)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit within 30s of SIGTERM")
	}
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want 1", p.err)
	}
	want := "iotpipe processor: the stage did not stop in time: still draining 6s after the stop signal (--shutdown-timeout (IOTPIPE_SHUTDOWN_TIMEOUT) is 1s; the stage gets 5s more)"
	if !strings.Contains(p.logText(), want) {
		t.Fatalf("stderr does not say %q", want)
	}
	if took < 6*time.Second || took > 15*time.Second {
		t.Errorf("hard stop %s after SIGTERM, want about 6s (1s + 5s grace)", took)
	}
	t.Logf("hard stop %s after SIGTERM, exit 1", took.Round(100*time.Millisecond))
}
