//go:build integration

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type lockedLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *lockedLines) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }
func (l *lockedLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type demoProc struct {
	cmd    *exec.Cmd
	out    *lockedLines
	errOut *strings.Builder
	done   chan error
	state  string
	bucket string
	schema string
	// devicePrefix starts the fleet's device ids (unique to the test).
	devicePrefix string
}

// startDemo builds the binary and starts `iotpipe demo` on unique topics,
// schema, bucket, groups and MQTT topics, with extra environment.
func startDemo(t *testing.T, env *testenv.Env, ctx context.Context, extra ...string) *demoProc {
	t.Helper()
	bin := testenv.Binary(t)

	id := testenv.Name(t, "demo")
	d := &demoProc{out: &lockedLines{}, errOut: &strings.Builder{}, done: make(chan error, 1), state: t.TempDir(),
		schema: env.Schema(t), bucket: env.BucketName(t), devicePrefix: id + "-"}
	topics := []string{id + ".raw", id + ".metrics", id + ".dlq", id + ".changelog", id + ".readings", id + ".alerts", id + ".alertchangelog"}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = env.KafkaAdmin(t).DeleteTopics(cctx, topics...)
	})
	d.cmd = exec.Command(bin, "demo", "--devices", "20", "--rate", "2", "--progress-interval", "1s",
		"--bridge-http-addr", freeAddr(t), "--processor-http-addr", freeAddr(t),
		"--sink-timescale-http-addr", freeAddr(t), "--sink-lake-http-addr", freeAddr(t))
	d.cmd.Env = append(append(os.Environ(),
		"IOTPIPE_TOPIC_RAW="+topics[0], "IOTPIPE_TOPIC_METRICS="+topics[1], "IOTPIPE_TOPIC_DLQ="+topics[2],
		"IOTPIPE_TOPIC_PROCESSOR_CHANGELOG="+topics[3], "IOTPIPE_TOPIC_READINGS="+topics[4],
		"IOTPIPE_TOPIC_ALERTS="+topics[5], "IOTPIPE_TOPIC_ALERT_CHANGELOG="+topics[6],
		"IOTPIPE_PG_SCHEMA="+d.schema, "IOTPIPE_S3_BUCKET="+d.bucket, "IOTPIPE_STATE_DIR="+d.state,
		// Mutual TLS: the ACL lets a device write only devices/<its CN>/...,
		// so the test's own level comes after the device id; without the
		// catch-all (devices/#) the bridge takes only this test's topics.
		"IOTPIPE_GROUP_PREFIX="+id, "IOTPIPE_TOPIC_TEMPLATE=devices/{device_id}/"+id+"/telemetry",
		"IOTPIPE_MQTT_CATCH_ALL=false", "IOTPIPE_DEVICE_PREFIX="+d.devicePrefix,
		"IOTPIPE_RAW_PARTITIONS=2", "IOTPIPE_METRICS_PARTITIONS=1", "IOTPIPE_DLQ_PARTITIONS=1",
		"IOTPIPE_LOG_FORMAT=json"), extra...)
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.errOut
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.out.add(sc.Text())
		}
	}()
	go func() { <-scanned; d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			if err := <-d.done; err == nil {
				t.Log("demo exited cleanly before the kill reached it")
			}
		}
		if t.Failed() {
			t.Logf("demo stdout:\n%s\nstderr:\n%s", d.out, d.errOut.String())
			for _, f := range []string{"bridge", "processor", "sink-timescale", "sink-lake", "simulate", "alert", "notify"} {
				t.Logf("--- %s.log:\n%s", f, tail(filepath.Join(d.state, "demo", f+".log"), 15))
			}
		}
	})
	return d
}

// checkNoChild checks that every child pid the demo recorded is gone and
// that at least want were recorded.
func (d *demoProc) checkNoChild(t *testing.T, want int) {
	t.Helper()
	pids, err := os.ReadFile(filepath.Join(d.state, "demo", "pids"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(pids)), "\n") {
		f := strings.Fields(line)
		pid, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			t.Fatalf("pids line %q", line)
		}
		n++
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %q (pid %d) still exists after the demo exited (kill -0: %v)", line, pid, err)
		}
	}
	if n < want {
		t.Errorf("%d child pids recorded, want at least %d:\n%s", n, want, pids)
	}
}

// `iotpipe demo` runs the whole pipeline as child processes on the real
// services, prints progress and the first metric row, and stops every
// child on SIGINT, exiting 0.
func TestDemoRunsAndStopsCleanly(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 150*time.Second)
	// An alert threshold most of the fleet is above: alerts fire at once.
	d := startDemo(t, env, ctx, "IOTPIPE_ALERT_THRESHOLD=15")
	cmd, out, done, state, bucket, schema := d.cmd, d.out, d.done, d.state, d.bucket, d.schema

	testenv.Eventually(t, 120*time.Second, 500*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("demo exited early: %v", err)
		default:
		}
		s := out.String()
		if !strings.Contains(s, "first metric row after") {
			return errors.New("no first metric row reported yet")
		}
		if strings.Count(s, "] bridge ") < 3 {
			return errors.New("fewer than 3 progress lines")
		}
		if !strings.Contains(s, "demo: alert FIRING ") {
			return errors.New("no alert printed yet")
		}
		if !strings.Contains(s, "demo: notification received: webhook ") || !strings.Contains(s, "signature verified") {
			return errors.New("no notification received yet")
		}
		return nil
	})
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "demo: alert") || strings.HasPrefix(l, "demo: notification") {
			t.Log(l)
		}
	}
	var rows int64
	if err := env.PG(t).QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s.device_metrics", schema)).Scan(&rows); err != nil || rows == 0 {
		t.Fatalf("device_metrics rows: %d (%v)", rows, err)
	}
	s := out.String()
	certDir := filepath.Join(state, "demo", "devices")
	for _, want := range []string{"psql \"$IOTPIPE_PG_READER_DSN\"", "s3://" + bucket + "/readings/", "duckdb -c", "dlq: ", state + "/demo",
		"demo: mutual TLS on " + os.Getenv("IOTPIPE_MQTT_TLS_URL") + ": 20 device certificates", certDir + " (20 registered now, 0 reissued, 0 kept)"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	d.checkTLS(t, env, ctx, 20)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exit after SIGINT: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("demo still running 45s after SIGINT")
	}
	s = out.String()
	for _, name := range []string{"simulate", "bridge", "processor", "sink timescale", "sink lake", "alert", "notify"} {
		if !strings.Contains(s, fmt.Sprintf("demo: %-14s exit 0", name)) {
			t.Errorf("no clean exit reported for %s", name)
		}
	}
	d.checkNoChild(t, 8) // init, 4 stages, simulate, alert, notify
}

// checkTLS checks that the pipeline ran over mutual TLS: the bridge and the
// fleet connected to the TLS listener (their start lines), every device has
// its own certificate and is registered (group demo), and the metric rows
// are those devices'.
func (d *demoProc) checkTLS(t *testing.T, env *testenv.Env, ctx context.Context, devices int) {
	t.Helper()
	tlsURL := os.Getenv("IOTPIPE_MQTT_TLS_URL")
	if !strings.HasPrefix(tlsURL, "mqtts://") {
		t.Fatalf("IOTPIPE_MQTT_TLS_URL = %q: the services have no TLS listener", tlsURL)
	}
	logs := filepath.Join(d.state, "demo")
	if b, _ := os.ReadFile(filepath.Join(logs, "bridge.log")); !strings.Contains(string(b), `"mqtt":["`+tlsURL+`"]`) ||
		!strings.Contains(string(b), `"msg":"mqtt subscribed"`) {
		t.Errorf("the bridge did not start on %s:\n%s", tlsURL, tail(filepath.Join(logs, "bridge.log"), 5))
	}
	// The shadow consumer runs as its own Kafka principal (demoKafkaEnv),
	// which init's ACLs let into its group and topic only.
	sc := filepath.Join(logs, "shadow-consumer.log")
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		if b, _ := os.ReadFile(sc); !strings.Contains(string(b), `"msg":"partitions assigned"`) {
			return fmt.Errorf("the shadow consumer has not joined its group:\n%s", tail(sc, 5))
		}
		return nil
	})
	if b, _ := os.ReadFile(filepath.Join(logs, "simulate.log")); !strings.Contains(string(b), "format realistic, "+tlsURL+" as") {
		t.Errorf("the simulator did not start on %s:\n%s", tlsURL, tail(filepath.Join(logs, "simulate.log"), 5))
	}
	for i := range devices {
		id := devicesim.DeviceID(d.devicePrefix, i)
		c, err := certs.LoadCertFile(filepath.Join(logs, "devices", id+".crt"))
		if err != nil || c.Subject.CommonName != id {
			t.Fatalf("device %s: certificate: %v", id, err)
		}
		if st, err := os.Stat(filepath.Join(logs, "devices", id+".key")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("device %s: key: %v", id, err)
		}
	}
	var registered, seen int
	q := fmt.Sprintf(`SELECT count(*) FROM %[1]s.devices d JOIN %[1]s.device_group_members m USING (device_id)
		WHERE m.group_id = 'demo' AND d.status = 'active' AND d.device_id LIKE $1`, d.schema)
	if err := env.PG(t).QueryRow(ctx, q, d.devicePrefix+"%").Scan(&registered); err != nil || registered != devices {
		t.Errorf("registered demo devices: %d, want %d (%v)", registered, devices, err)
	}
	q = fmt.Sprintf(`SELECT count(DISTINCT device_id) FROM %s.device_metrics WHERE device_id LIKE $1`, d.schema)
	if err := env.PG(t).QueryRow(ctx, q, d.devicePrefix+"%").Scan(&seen); err != nil || seen == 0 {
		t.Errorf("devices with metric rows: %d (%v)", seen, err)
	}
}

// A stage that dies early (here the lake sink, given a bad setting) makes
// the demo say which one, show its log, stop the others and exit 1.
func TestDemoStopsWhenAChildDies(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 60*time.Second)
	// Without TLS (the plaintext listener and password users), which this
	// test exercises too.
	d := startDemo(t, env, ctx, "IOTPIPE_ZSTD_LEVEL=99", "IOTPIPE_MQTT_TLS=false")
	select {
	case err := <-d.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != ExitFailed {
			t.Fatalf("demo exit: %v, want exit %d", err, ExitFailed)
		}
	case <-ctx.Done():
		t.Fatal("demo did not stop after a child died")
	}
	if e := d.errOut.String(); !strings.Contains(e, "sink lake exited early (exit 2)") || !strings.Contains(e, "--zstd-level") {
		t.Errorf("stderr does not name the dead child and its log tail: %q", e)
	}
	if !strings.Contains(d.out.String(), "demo: --mqtt-tls=false: the bridge and the fleet use the plaintext listener") {
		t.Errorf("the demo did not say it runs without TLS:\n%s", d.out)
	}
	if _, err := os.Stat(filepath.Join(d.state, "demo", "devices")); err == nil {
		t.Error("without TLS the demo issued device certificates")
	}
	d.checkNoChild(t, 5) // init and the 4 stages (and the simulator if the bridge was ready first)
}
