//go:build integration

package bridge

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// proc is a bridge running as a child process.
type proc struct {
	*testenv.Proc
}

// startProc starts `iotpipe bridge` with cfg's settings (flags only, no
// IOTPIPE_* variable) and waits until it has subscribed.
func startProc(t *testing.T, cfg Config, extra ...string) *proc {
	t.Helper()
	args := []string{"bridge",
		"--mqtt-url", strings.Join(cfg.MQTT.URLs, ","),
		"--mqtt-client-id", cfg.MQTT.ClientID,
		"--mqtt-username", cfg.MQTT.Username, "--mqtt-password", cfg.MQTT.Password,
		"--mqtt-share-group", cfg.MQTT.ShareGroup,
		"--mqtt-session-expiry", "10m",
		"--topic-raw", cfg.TopicRaw, "--topic-dlq", cfg.TopicDLQ,
		"--topic-template", cfg.TopicTemplate,
		"--http-addr", "", "--log-format", "json", "--log-level", "info",
	}
	args = append(args, testenv.KafkaCLIArgs(cfg.Kafka)...)
	p := &proc{testenv.StartProc(t, "bridge", nil, append(args, extra...)...)}
	t.Cleanup(func() {
		// Redeliveries are what the duplicate figures come from: show
		// them even when the test passes.
		for l := range strings.SplitSeq(p.Log(), "\n") {
			if !t.Failed() && strings.Contains(l, "redelivered") {
				t.Logf("bridge[%d]: %s", p.Pid(), l)
			}
		}
	})
	p.WaitLine(`"mqtt subscribed"`, 60*time.Second)
	return p
}

// kill SIGKILLs the bridge and waits for it to go.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.KillWait(10 * time.Second)
}

// term sends SIGTERM and fails the test unless the bridge exits 0 within
// the bound.
func (p *proc) term(t *testing.T, within time.Duration) {
	t.Helper()
	p.StopClean(within)
}

// peakRSS returns VmHWM of the process in KiB.
func (p *proc) peakRSS(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
