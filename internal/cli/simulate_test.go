package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/devicesim"
)

func TestSimulateSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string // in stdout (exit 0) or stderr
	}{
		{"defaults", nil, []string{"--check-config"}, ExitOK, "10 devices (dev-000000…) at 1 msg/s each, format realistic"},
		{"env", map[string]string{"IOTPIPE_DEVICES": "3", "IOTPIPE_LATE_FRACTION": "0.5", "IOTPIPE_MQTT_URL": "mqtt://h:1"}, []string{"--check-config"}, ExitOK, "mqtt://h:1, 3 devices"},
		{"flag beats env", map[string]string{"IOTPIPE_RATE": "7"}, []string{"--check-config", "--rate", "2.5"}, ExitOK, "at 2.5 msg/s"},
		{"fraction above 1", nil, []string{"--check-config", "--invalid-fraction", "1.5"}, ExitUsage, "--invalid-fraction (IOTPIPE_INVALID_FRACTION=\"1.5\"): must be between 0 and 1"},
		{"fraction not a number", map[string]string{"IOTPIPE_DUPLICATE_FRACTION": "lots"}, []string{"--check-config"}, ExitUsage, "--duplicate-fraction (IOTPIPE_DUPLICATE_FRACTION=\"lots\"): not a number"},
		{"negative late", nil, []string{"--check-config", "--late-fraction", "-0.1"}, ExitUsage, "--late-fraction"},
		{"out of order", nil, []string{"--check-config", "--out-of-order-fraction", "2"}, ExitUsage, "--out-of-order-fraction"},
		{"rate", nil, []string{"--check-config", "--rate", "-1"}, ExitUsage, "--rate"},
		{"devices", nil, []string{"--check-config", "--devices", "0"}, ExitUsage, "--devices (IOTPIPE_DEVICES=\"0\")"},
		{"url", nil, []string{"--check-config", "--mqtt-url", "http://x"}, ExitUsage, "--mqtt-url"},
		{"template", nil, []string{"--check-config", "--topic-template", "devices/x"}, ExitUsage, "--topic-template"},
		{"format", nil, []string{"--check-config", "--format", "csv"}, ExitUsage, "--format (IOTPIPE_FORMAT=\"csv\"): want realistic or mixed"},
		{"prefix", nil, []string{"--check-config", "--device-prefix", "a/b"}, ExitUsage, "--device-prefix"},
		{"duration", nil, []string{"--check-config", "--duration", "-1s"}, ExitUsage, "--duration"},
		{"late-by", nil, []string{"--check-config", "--late-by", "0s"}, ExitUsage, "--late-by"},
		{"unknown flag", nil, []string{"--nope"}, ExitUsage, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.env, append([]string{"simulate"}, tc.args...)...)
			got := out
			if tc.code != ExitOK {
				got = errOut
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("exit %d (want %d)\nstdout %q\nstderr %q\nwant %q", code, tc.code, out, errOut, tc.want)
			}
			if tc.code != ExitOK && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("error is not one line: %q", errOut)
			}
		})
	}
}

func TestSimulateHelpNamesEnv(t *testing.T) {
	code, out, _ := run(t, map[string]string{"IOTPIPE_MQTT_DEVICE_PASSWORD": "secret-from-env"}, "simulate", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--mqtt-device-username", "IOTPIPE_MQTT_DEVICE_USERNAME", "IOTPIPE_MQTT_DEVICE_PASSWORD",
		"--late-fraction", "--out-of-order-fraction", "--duplicate-fraction", "--invalid-fraction", "--topic-template", "--device-prefix"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, "secret-from-env") {
		t.Error("help printed a secret")
	}
}

func TestSimulateProgressFormat(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := simSample{at: start.Add(5 * time.Second), cpu: 10 * time.Millisecond, st: devicesim.Stats{Published: 1000}}
	cur := simSample{at: start.Add(10 * time.Second), cpu: 30 * time.Millisecond,
		st: devicesim.Stats{Published: 2000, Acked: 1990, AckedInvalid: 20, Unconfirmed: 3}}
	got := formatSimProgress(prev, cur, start)
	want := "simulate:    10s     200.0 msg/s  published 2000  acked 1990 (invalid 20)  unconfirmed 3  refused 0  no-subscribers 0  cpu 20.0µs/msg"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if s := perMsg(time.Second, 0); s != "-" {
		t.Errorf("perMsg with no message: %q", s)
	}
	var b strings.Builder
	writeSimSummary(&b, simSample{at: start}, simSample{at: start.Add(10 * time.Second), cpu: 50 * time.Millisecond,
		st: devicesim.Stats{Published: 5000, Acked: 5000, AckedValid: 4950, AckedInvalid: 50, Duplicates: 7, Late: 2, OutOfOrder: 9, Connections: 1}})
	for _, w := range []string{"published 5000 (500.0 msg/s)", "valid 4950, invalid 50", "duplicates 7, out-of-order 9, late 2", "cpu 10.0µs/msg"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("summary %q lacks %q", b.String(), w)
		}
	}
	if cpuTime() <= 0 {
		t.Error("cpuTime is not positive")
	}
}
