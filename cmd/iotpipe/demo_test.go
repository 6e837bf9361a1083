package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// demoTLSEnv is what 'scripts/services.sh env' gives the demo for mutual TLS.
var demoTLSEnv = map[string]string{"IOTPIPE_MQTT_TLS_URL": "mqtts://127.0.0.1:18883", "IOTPIPE_MQTT_TLS_CA_FILE": "/s/ca/ca.crt",
	"IOTPIPE_MQTT_TLS_BRIDGE_CERT_FILE": "/s/mqtt/tls/iotpipe-bridge.crt", "IOTPIPE_MQTT_TLS_BRIDGE_KEY_FILE": "/s/mqtt/tls/iotpipe-bridge.key",
	"IOTPIPE_CA_DIR": "/s/ca", "IOTPIPE_PG_REGISTRY_DSN": "postgres://u:secret-from-env@h/db"}

func withTLSEnv(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range demoTLSEnv {
		out[k] = v
	}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestDemoSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"defaults", demoTLSEnv, []string{"--check-config"}, ExitOK, "50 devices at 1 msg/s, MQTT over mutual TLS (mqtts://127.0.0.1:18883, one certificate per device in .state/demo/devices), window 10s, lateness 2s, idle timeout 5s, lake max age 10s"},
		{"state dir from env", withTLSEnv(map[string]string{"IOTPIPE_STATE_DIR": "/tmp/st"}), []string{"--check-config"}, ExitOK, "logs in /tmp/st/demo"},
		{"no TLS settings", nil, []string{"--check-config"}, ExitUsage, "--mqtt-tls-url (IOTPIPE_MQTT_TLS_URL): want mqtts://host:port"},
		{"no CA dir", withTLSEnv(map[string]string{"IOTPIPE_CA_DIR": ""}), []string{"--check-config"}, ExitUsage, "--ca-dir (IOTPIPE_CA_DIR): not set"},
		{"plain URL", withTLSEnv(map[string]string{"IOTPIPE_MQTT_TLS_URL": "mqtt://h:1883"}), []string{"--check-config"}, ExitUsage, "IOTPIPE_MQTT_TLS=false"},
		{"without TLS", nil, []string{"--check-config", "--mqtt-tls=false"}, ExitOK, "MQTT without TLS (IOTPIPE_MQTT_URL, password users)"},
		{"bad device prefix", withTLSEnv(nil), []string{"--check-config", "--device-prefix", "a/b-"}, ExitUsage, "--device-prefix (IOTPIPE_DEVICE_PREFIX): a/b-"},
		{"zero window", demoTLSEnv, []string{"--check-config", "--window", "0s"}, ExitUsage, "--window (IOTPIPE_WINDOW): 0s: must be positive"},
		{"negative lateness", nil, []string{"--check-config", "--lateness", "-1s"}, ExitUsage, "--lateness"},
		{"bad fraction", map[string]string{"IOTPIPE_INVALID_FRACTION": "2"}, []string{"--check-config"}, ExitUsage, "--invalid-fraction (IOTPIPE_INVALID_FRACTION): 2: want a number between 0 and 1"},
		{"devices", nil, []string{"--check-config", "--devices", "0"}, ExitUsage, "--devices"},
		{"same port", nil, []string{"--check-config", "--processor-http-addr", "127.0.0.1:9101"}, ExitUsage, "--processor-http-addr (IOTPIPE_PROCESSOR_HTTP_ADDR): 127.0.0.1:9101: same address as --bridge-http-addr"},
		{"port 0", nil, []string{"--check-config", "--sink-lake-http-addr", "127.0.0.1:0"}, ExitUsage, "fixed port"},
		{"no port", nil, []string{"--check-config", "--bridge-http-addr", "localhost"}, ExitUsage, "--bridge-http-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.env, append([]string{"demo"}, tc.args...)...)
			got := out
			if tc.code != ExitOK {
				got = errOut
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("exit %d (want %d)\nstdout %q\nstderr %q\nwant %q", code, tc.code, out, errOut, tc.want)
			}
		})
	}
}

func TestDemoHelpSaysShortWindows(t *testing.T) {
	code, out, _ := run(t, map[string]string{"IOTPIPE_S3_SECRET_KEY": "secret-from-env", "IOTPIPE_PG_READER_DSN": "postgres://u:secret-from-env@h/db"}, "demo", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--window 10s", "--lateness 2s", "--idle-timeout 5s", "IOTPIPE_STATE_DIR", "IOTPIPE_PG_READER_DSN", "Ctrl-C"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, "secret-from-env") {
		t.Error("help printed a secret")
	}
}

func TestScrapeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9101": "http://127.0.0.1:9101/metrics",
		":9102":          "http://127.0.0.1:9102/metrics",
		"0.0.0.0:9103":   "http://127.0.0.1:9103/metrics",
		"[::]:9104":      "http://127.0.0.1:9104/metrics",
		"myhost:1":       "http://myhost:1/metrics",
	} {
		if got := scrapeURL(in, "/metrics"); got != want {
			t.Errorf("scrapeURL(%q) = %q, want %q", in, got, want)
		}
	}
	if hostOf("http://127.0.0.1:17070") != "127.0.0.1:17070" {
		t.Error(hostOf("http://127.0.0.1:17070"))
	}
}

func TestTailAndLastLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	var b strings.Builder
	for i := range 50 {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%3))
		if i == 40 {
			b.WriteString(" simulate: here")
		}
		b.WriteString("\n")
	}
	b.WriteString("simulate: last one\nother\n")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tail(p, 2); got != "simulate: last one\nother" {
		t.Errorf("tail: %q", got)
	}
	if got := lastLineWith(p, "simulate:"); got != "simulate: last one" {
		t.Errorf("lastLineWith: %q", got)
	}
	if got := tail(filepath.Join(t.TempDir(), "none"), 3); !strings.Contains(got, "cannot read") {
		t.Errorf("tail of a missing file: %q", got)
	}
}
