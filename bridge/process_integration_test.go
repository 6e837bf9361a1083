//go:build integration

package bridge

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// proc is a bridge running as a child process.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	ready  chan struct{}
	exited chan struct{}
	err    error
}

// startProc starts `iotpipe bridge` with cfg's settings and waits until it
// has subscribed.
func startProc(t *testing.T, cfg Config, extra ...string) *proc {
	t.Helper()
	args := []string{"bridge",
		"--mqtt-url", strings.Join(cfg.MQTT.URLs, ","),
		"--mqtt-client-id", cfg.MQTT.ClientID,
		"--mqtt-username", cfg.MQTT.Username, "--mqtt-password", cfg.MQTT.Password,
		"--mqtt-share-group", cfg.MQTT.ShareGroup,
		"--mqtt-session-expiry", "10m",
		"--kafka-brokers", strings.Join(cfg.Kafka.Brokers, ","),
		"--topic-raw", cfg.TopicRaw, "--topic-dlq", cfg.TopicDLQ,
		"--topic-template", cfg.TopicTemplate,
		"--http-addr", "", "--log-format", "json", "--log-level", "info",
	}
	args = append(args, extra...)
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			if strings.Contains(line, `"mqtt subscribed"`) {
				once.Do(func() { close(p.ready) })
			}
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		p.mu.Lock()
		for _, l := range p.lines {
			if t.Failed() || strings.Contains(l, "redelivered") {
				t.Logf("bridge[%d]: %s", cmd.Process.Pid, l)
			}
		}
		p.mu.Unlock()
	})
	select {
	case <-p.ready:
	case <-p.exited:
		t.Fatalf("bridge exited: %v\n%s", p.err, strings.Join(p.lines, "\n"))
	case <-time.After(60 * time.Second):
		t.Fatal("bridge did not subscribe within 60s")
	}
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// logCount returns how many log lines so far contain s.
func (p *proc) logCount(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// kill SIGKILLs the bridge and waits for it to go.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// term sends SIGTERM and returns the exit error (nil for status 0).
func (p *proc) term(t *testing.T, within time.Duration) error {
	t.Helper()
	if err := syscall.Kill(p.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(within):
		t.Fatalf("bridge did not exit within %s of SIGTERM", within)
	}
	return nil
}

// peakRSS returns VmHWM of the process in KiB.
func (p *proc) peakRSS(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid()) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

var _ = testenv.Name
