package main

import (
	"strings"
	"testing"
)

func TestSinkTimescaleHelp(t *testing.T) {
	code, out, _ := run(t, nil, "sink", "timescale", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--pg-writer-dsn", "IOTPIPE_PG_WRITER_DSN", "IOTPIPE_PG_SCHEMA", "--batch-rows", "--batch-delay", "--readings", "--group-instance-id", "--check-config", "--http-addr"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestSinkTimescaleCheckConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"valid", nil, nil, ExitOK, "settings are valid"},
		{"env", map[string]string{"IOTPIPE_BATCH_ROWS": "100", "IOTPIPE_READINGS": "false"}, nil, ExitOK, "batch 100 rows"},
		{"bad batch", nil, []string{"--batch-rows", "0"}, ExitUsage, "--batch-rows (IOTPIPE_BATCH_ROWS): 0 is not between"},
		{"bad delay", map[string]string{"IOTPIPE_BATCH_DELAY": "-1s"}, nil, ExitUsage, "--batch-delay"},
		{"bad brokers", nil, []string{"--kafka-brokers", "nope"}, ExitUsage, "--kafka-brokers"},
		{"bad schema", nil, []string{"--pg-schema", "Bad-Name"}, ExitUsage, "--pg-schema (IOTPIPE_PG_SCHEMA): \"Bad-Name\" is not a lower-case SQL identifier"},
		{"no readings topic", nil, []string{"--topic-readings", ""}, ExitUsage, "--topic-readings (IOTPIPE_TOPIC_READINGS): must not be empty (- skips the topic)"},
		{"readings topic skipped", nil, []string{"--topic-readings", "-"}, ExitOK, "topics readings=- metrics"},
		{"default readings topic", nil, nil, ExitOK, "topics readings=telemetry.readings metrics"},
		{"old topic-raw -", nil, []string{"--topic-raw", "-"}, ExitOK, "topics readings=- metrics"},
		{"topic-raw ignored", nil, []string{"--topic-raw", "telemetry.raw"}, ExitOK, "topics readings=telemetry.readings metrics"},
		{"old readings=false", map[string]string{"IOTPIPE_READINGS": "false"}, nil, ExitOK, "topics readings=- metrics"},
		{"old group-instance-id", nil, []string{"--group-instance-id", "pod-7"}, ExitOK, `instance "pod-7"`},
		{"old drain-timeout", nil, []string{"--drain-timeout", "0s"}, ExitUsage, "--shutdown-timeout (IOTPIPE_SHUTDOWN_TIMEOUT): must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, tt.env, append([]string{"sink", "timescale", "--check-config"}, tt.args...)...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("exit %d (want %d), out %q, stderr %q, want %q", code, tt.code, out, errOut, tt.want)
			}
		})
	}
}
