//go:build integration

package bridge

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestBrokerDropsExported overflows a real Mosquitto's queue for the
// bridge's session and checks that the bridge exports the broker's drop
// count and logs it. The broker is a private one with a queue of 10
// messages per session (max_queued_messages) and $SYS every second: the
// bridge subscribes with a persistent session and is stopped, 50 messages
// are published for it (Mosquitto acknowledges every one to the device),
// and when the bridge comes back it receives 10 and the broker reports 40
// dropped.
func TestBrokerDropsExported(t *testing.T) {
	env := testenv.Load(t)
	mosq := "mosquitto"
	if p := os.Getenv("IOTPIPE_MOSQUITTO_BIN"); p != "" {
		mosq = p
	} else if _, err := exec.LookPath(mosq); err != nil {
		mosq = "/usr/sbin/mosquitto"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`listener %s 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 10
max_queued_bytes 0
sys_interval 1
log_dest stderr
log_type error
log_type warning
`, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mosq, "-c", conf)
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", mosq, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", logs.String())
		}
	})
	testenv.WaitPort(t, addr, 10*time.Second)

	s := newSetup(t, env)
	cfg := DefaultConfig()
	clientID := testenv.Name(t, "bridge")
	cfg.MQTT.URLs, cfg.MQTT.ClientID = []string{"mqtt://" + addr}, clientID
	cfg.MQTT.PlainSubscription, cfg.MQTT.SessionExpiry = true, 10*time.Minute
	cfg.MQTT.ReconnectMin, cfg.MQTT.ReconnectMax = 100*time.Millisecond, time.Second
	cfg.Kafka = env.KafkaConfig(t, testenv.Bridge)
	cfg.Kafka.ClientID = clientID
	cfg.TopicRaw, cfg.TopicDLQ, cfg.TopicTemplate = s.raw, s.dlq, s.template()
	cfg.ShutdownTimeout = 10 * time.Second

	r := startBridge(t, cfg)
	testenv.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if v := testutil.ToFloat64(r.b.stats.dropped); v != 0 {
			return fmt.Errorf("broker_dropped_messages = %v before any drop, want 0 (subscribed, nothing reported)", v)
		}
		return nil
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("bridge stopped with %v", err)
	}

	// 50 messages for the offline bridge's session, each acknowledged.
	ctx := testenv.Context(t, time.Minute)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	dev := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := dev.Connect(ctx, &paho.Connect{ClientID: testenv.Name(t, "dev"), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	const sent, queue = 50, 10
	for i := range sent {
		payload := fmt.Sprintf(`{"ts":%q,"seq":%d,"temp":21.5}`, time.Now().UTC().Format(time.RFC3339Nano), i)
		if _, err := dev.Publish(ctx, &paho.Publish{Topic: s.prefix + "/d1/telemetry", QoS: 1, Payload: []byte(payload)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	_ = dev.Disconnect(&paho.Disconnect{})

	r2 := startBridge(t, cfg)
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if v := testutil.ToFloat64(r2.b.stats.dropped); v != sent-queue {
			return fmt.Errorf("broker_dropped_messages = %v, want %d", v, sent-queue)
		}
		if v := testutil.ToFloat64(r2.b.m.producedRaw); v != queue {
			return fmt.Errorf("produced to raw = %v, want the %d the broker kept", v, queue)
		}
		return nil
	})
	if v := testutil.ToFloat64(r2.b.stats.stored); v < 0 {
		t.Fatalf("broker_stored_messages = %v, want the broker's count", v)
	}
}
