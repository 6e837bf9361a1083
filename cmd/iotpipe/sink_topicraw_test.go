package main

import (
	"strings"
	"testing"
)

// TestSinksIgnoreTopicRaw: a pipeline-wide environment sets
// IOTPIPE_TOPIC_RAW for the bridge and the processor; the sinks must keep
// storing the readings topic (not the raw one) and say once that they
// ignore it. "-" still skips the readings, deprecated.
func TestSinksIgnoreTopicRaw(t *testing.T) {
	sinks := []struct {
		name              string
		args              []string
		readings, skipped string // in the settings line
	}{
		{"timescale", []string{"sink", "timescale", "--check-config"}, "topics readings=telemetry.readings metrics", "topics readings=- metrics"},
		{"lake", []string{"sink", "lake", "--check-config", "--s3-bucket", "lake", "--s3-access-key", "k", "--s3-secret-key", "s"}, "topics telemetry.readings telemetry.metrics", "topics - telemetry.metrics"},
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		skipped bool
		warn    string
	}{
		{"flag", nil, []string{"--topic-raw", "pipe.raw"}, false, topicRawWarning},
		{"env", map[string]string{"IOTPIPE_TOPIC_RAW": "pipe.raw"}, nil, false, topicRawWarning},
		{"env with readings", map[string]string{"IOTPIPE_TOPIC_RAW": "pipe.raw", "IOTPIPE_TOPIC_READINGS": "telemetry.readings"}, nil, false, topicRawWarning},
		{"flag skip", nil, []string{"--topic-raw", "-"}, true, "--topic-raw - (IOTPIPE_TOPIC_RAW=-) is deprecated: use --topic-readings -"},
		{"env skip", map[string]string{"IOTPIPE_TOPIC_RAW": "-"}, nil, true, "--topic-raw - (IOTPIPE_TOPIC_RAW=-) is deprecated: use --topic-readings -"},
	}
	for _, s := range sinks {
		for _, tt := range tests {
			t.Run(s.name+"/"+tt.name, func(t *testing.T) {
				code, out, errOut := run(t, tt.env, append(append([]string(nil), s.args...), tt.args...)...)
				want := s.readings
				if tt.skipped {
					want = s.skipped
				}
				if code != ExitOK || !strings.Contains(out, want) {
					t.Fatalf("exit %d, out %q, stderr %q; want exit 0 and %q", code, out, errOut, want)
				}
				if n := strings.Count(errOut, tt.warn); n != 1 {
					t.Errorf("warning %q %d times in stderr %q, want once", tt.warn, n, errOut)
				}
				if strings.Contains(errOut, "pipe.raw") || strings.Contains(out, "pipe.raw") {
					t.Errorf("the raw topic reached the sink's settings: out %q, stderr %q", out, errOut)
				}
			})
		}
	}
	// Without it, no warning.
	for _, s := range sinks {
		code, out, errOut := run(t, nil, s.args...)
		if code != ExitOK || strings.Contains(errOut, "topic-raw") {
			t.Errorf("%s without --topic-raw: exit %d, out %q, stderr %q", s.name, code, out, errOut)
		}
	}
}
