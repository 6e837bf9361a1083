//go:build integration

package compose

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestComposeBrokerOnMosquitto runs the compose stack's broker on a real
// Mosquitto (the local one, as scripts/services.sh installs it): the certs
// job's command makes the certificates, then the real entrypoint.sh runs,
// with the container's paths and ports moved into a temporary folder. Then:
// the healthcheck's client (the bridge's identity) reads $SYS, a device's
// reading on its own topic reaches the bridge's subscription, the same
// device on another device's topic is refused (Not authorized), a client
// without a certificate cannot connect, and the plaintext listener answers
// only with MQTT_PLAINTEXT=1 (then to the password users only).
func TestComposeBrokerOnMosquitto(t *testing.T) {
	t.Run("default", func(t *testing.T) { composeBroker(t, "0") })
	// MQTT_PLAINTEXT=1 adds the plaintext listener and the password users;
	// everything above still holds on the TLS listener.
	t.Run("MQTT_PLAINTEXT=1", func(t *testing.T) { composeBroker(t, "1") })
}

func composeBroker(t *testing.T, plaintext string) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Fatalf("no mosquitto binary (scripts/services.sh up installs it): %v", err)
		}
	}
	p := load(t)
	vols := t.TempDir()
	job := service(t, p, "certs")
	args := append([]string{}, job.Command...)
	for i, a := range args {
		args[i] = onHost(job, vols, a)
	}
	if code, _, errOut := iotpipe(t, nil, args...); code != 0 {
		t.Fatalf("certs job: exit %d: %s", code, errOut)
	}
	m := service(t, p, "mosquitto")
	certs := onHost(m, vols, "/certs")
	data := filepath.Join(vols, "mosquitto-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	root := repoRoot(t)
	port, plainPort := freePort(t), freePort(t)
	conf := readFile(t, filepath.Join(root, "deploy", "mosquitto", "mosquitto.conf"))
	conf = strings.ReplaceAll(conf, "/certs/", certs+"/")
	conf = strings.ReplaceAll(conf, "/mosquitto/data", data)
	conf = strings.Replace(conf, "\nlistener 8883\n", "\nlistener "+port+" 127.0.0.1\n", 1)
	// A log file (flushed per line, unlike stdout into a pipe) tells when
	// a client is connected.
	logPath := filepath.Join(vols, "mosquitto.log")
	conf = strings.Replace(conf, "\nlog_dest stdout\n", "\nlog_dest file "+logPath+"\n", 1)
	asRoot := false
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		asRoot = true
		conf += "\nuser root\n" // stay root: the files are the test's
	}
	confPath := filepath.Join(vols, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// The real entrypoint.sh, with the container's paths moved here.
	script := readFile(t, filepath.Join(root, "deploy", "mosquitto", "entrypoint.sh"))
	script = strings.ReplaceAll(script, "/mosquitto/config/mosquitto.conf", confPath)
	script = strings.ReplaceAll(script, "/mosquitto/config/", filepath.Join(root, "deploy", "mosquitto")+"/")
	script = strings.ReplaceAll(script, "/mosquitto/data", data)
	script = strings.ReplaceAll(script, "/certs/", certs+"/")
	script = strings.ReplaceAll(script, "listener 1883", "listener "+plainPort+" 127.0.0.1")
	if !asRoot {
		script = strings.ReplaceAll(script, "chown ", ": chown ") // as in the container, but without root
	}
	scriptPath := filepath.Join(vols, "entrypoint.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	errPath := filepath.Join(vols, "mosquitto.stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	broker := exec.Command("sh", scriptPath)
	// The passwords come from Docker secret files, as in docker-compose.yml.
	secret := func(name, value string) string {
		f := filepath.Join(vols, name)
		if err := os.WriteFile(f, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	broker.Env = []string{"PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "MQTT_PLAINTEXT=" + plaintext,
		"MQTT_BRIDGE_USERNAME=svc", "MQTT_BRIDGE_PASSWORD_FILE=" + secret("mqtt_bridge_password", "svc-pw"),
		"MQTT_DEVICE_USERNAME=dev", "MQTT_DEVICE_PASSWORD_FILE=" + secret("mqtt_device_password", "dev-pw")}
	broker.Stdout, broker.Stderr = errFile, errFile
	brokerLog := func() string {
		b, _ := os.ReadFile(logPath)
		e, _ := os.ReadFile(errPath)
		return string(b) + string(e)
	}
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = broker.Process.Kill()
		_ = broker.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", brokerLog())
		}
	})
	testenv.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			return err
		}
		return c.Close()
	})

	tlsArgs := func(cert string) []string {
		a := []string{"-h", "localhost", "-p", port, "-V", "mqttv5", "--cafile", filepath.Join(certs, "ca.crt")}
		if cert != "" {
			a = append(a, "--cert", cert+".crt", "--key", cert+".key")
		}
		return a
	}
	bridge := filepath.Join(certs, "clients", "iotpipe-bridge")
	dev0, dev1 := "dev-000000", "dev-000001"
	run := func(name string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("mosquitto_sub", append(tlsArgs(bridge), "-t", "$SYS/broker/version", "-C", "1", "-W", "5")...); err != nil {
		t.Fatalf("the healthcheck's client (iotpipe-bridge) cannot read $SYS: %v %s", err, out)
	}
	sub := exec.Command("mosquitto_sub", append(tlsArgs(bridge), "-t", "devices/#", "-v", "-C", "1", "-W", "8", "-q", "1")...)
	var got bytes.Buffer
	sub.Stdout, sub.Stderr = &got, &got
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// The subscription is in place once the broker logs the bridge's
	// second connection.
	testenv.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		if strings.Count(brokerLog(), "u'iotpipe-bridge'") < 2 {
			return fmt.Errorf("subscriber not connected yet")
		}
		return nil
	})
	devCert := filepath.Join(certs, "devices", dev0)
	out, err := run("mosquitto_pub", append(tlsArgs(devCert), "-q", "1", "-t", "devices/"+dev1+"/telemetry", "-m", "as-another")...)
	if !strings.Contains(out, "Not authorized") {
		t.Errorf("%s publishing on %s's topic: %v %q, want Not authorized", dev0, dev1, err, out)
	}
	if out, err := run("mosquitto_pub", append(tlsArgs(devCert), "-q", "1", "-t", "devices/"+dev0+"/telemetry", "-m", "own")...); err != nil || out != "" {
		t.Errorf("%s publishing on its own topic: %v %q", dev0, err, out)
	}
	_ = sub.Wait()
	if g := strings.TrimSpace(got.String()); g != "devices/"+dev0+"/telemetry own" {
		t.Errorf("the bridge's subscription got %q, want only the device's own reading", g)
	}
	if out, err := run("mosquitto_pub", append(tlsArgs(""), "-t", "devices/"+dev0+"/telemetry", "-m", "x")...); err == nil {
		t.Errorf("a client without a certificate could publish: %q", out)
	}
	if !strings.Contains(brokerLog(), "u'"+dev0+"'") {
		t.Error("the broker did not take the device's user name from its certificate")
	}
	plain := func(u, pw string) []string {
		return []string{"-h", "127.0.0.1", "-p", plainPort, "-V", "mqttv5", "-u", u, "-P", pw, "-q", "1", "-t", "devices/x/telemetry", "-m", "p"}
	}
	out, err = run("mosquitto_pub", plain("dev", "dev-pw")...)
	if plaintext != "1" {
		if err == nil {
			t.Errorf("the plaintext listener answers without MQTT_PLAINTEXT=1: %q", out)
		}
		return
	}
	if err != nil || strings.Contains(out, "Not authorized") {
		t.Errorf("MQTT_PLAINTEXT=1: the device password user cannot publish: %v %q", err, out)
	}
	if out, err := run("mosquitto_pub", plain("dev", "wrong")...); err == nil {
		t.Errorf("MQTT_PLAINTEXT=1: a wrong password was accepted: %q", out)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
