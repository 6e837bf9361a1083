package main

import (
	"strings"
	"testing"
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
		{"fraction above 1", nil, []string{"--check-config", "--invalid-fraction", "1.5"}, ExitUsage, "--invalid-fraction (IOTPIPE_INVALID_FRACTION): must be between 0 and 1"},
		{"fraction not a number", map[string]string{"IOTPIPE_DUPLICATE_FRACTION": "lots"}, []string{"--check-config"}, ExitUsage, "IOTPIPE_DUPLICATE_FRACTION (--duplicate-fraction): invalid value \"lots\": not a number"},
		{"negative late", nil, []string{"--check-config", "--late-fraction", "-0.1"}, ExitUsage, "--late-fraction"},
		{"out of order", nil, []string{"--check-config", "--out-of-order-fraction", "2"}, ExitUsage, "--out-of-order-fraction"},
		{"rate", nil, []string{"--check-config", "--rate", "-1"}, ExitUsage, "--rate"},
		{"devices", nil, []string{"--check-config", "--devices", "0"}, ExitUsage, "--devices (IOTPIPE_DEVICES): must be at least 1"},
		{"url", nil, []string{"--check-config", "--mqtt-url", "http://x"}, ExitUsage, "--mqtt-url"},
		{"template", nil, []string{"--check-config", "--topic-template", "devices/x"}, ExitUsage, "--topic-template"},
		{"format", nil, []string{"--check-config", "--format", "csv"}, ExitUsage, "--format (IOTPIPE_FORMAT): invalid value \"csv\": want realistic or mixed"},
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
