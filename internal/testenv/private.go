package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Private is a set of real services of the test's own, started by
// scripts/services.sh in a temporary state folder on free ports, reusing
// the installs of the shared services. A test that stops or restarts a
// service (an outage under load) uses a private one, so that tests running
// at the same time against the shared services are not disturbed.
type Private struct {
	*Env
	t        testing.TB
	script   string
	environ  []string
	services []string
	// kafkaNodes is the number of Kafka nodes (1: the single-node layout).
	kafkaNodes int
}

// repoRoot finds the repository root from this source file.
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a port free now that this process has not handed out
// before (the kernel may offer a port just closed again, and two
// services of one private set must not get the same).
func freePort(t testing.TB) string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[p] {
			portsGiven[p] = true
			return strconv.Itoa(p)
		}
	}
	t.Fatal("free port: the kernel offered only ports handed out before")
	return ""
}

// StartPrivate starts the named services ("mqtt", "kafka", "postgres",
// "s3") of the test's own and stops them, deleting their data, when the
// test ends. Settings of services not started are those of the shared
// ones.
func StartPrivate(t testing.TB, services ...string) *Private {
	t.Helper()
	return startPrivate(t, 1, services)
}

// StartPrivateWith is StartPrivate with extra variables for
// scripts/services.sh, e.g. IOTPIPE_KAFKA_SECURITY=plaintext for the
// PLAINTEXT baseline of a benchmark.
func StartPrivateWith(t testing.TB, environ []string, services ...string) *Private {
	t.Helper()
	return startPrivate(t, 1, services, environ...)
}

// StartPrivateCluster is StartPrivate with Kafka (which must be among the
// services) as a KRaft cluster of kafkaNodes combined broker+controller
// nodes (IOTPIPE_KAFKA_NODES), each on its own free ports: replication
// factor 3 and min.insync.replicas 2 by default for three nodes or more.
func StartPrivateCluster(t testing.TB, kafkaNodes int, services ...string) *Private {
	t.Helper()
	if !slices.Contains(services, "kafka") {
		t.Fatal("StartPrivateCluster: kafka is not among the services")
	}
	return startPrivate(t, kafkaNodes, services)
}

func startPrivate(t testing.TB, kafkaNodes int, services []string, extra ...string) *Private {
	t.Helper()
	shared := Load(t)
	root := repoRoot(t)
	install := shared.StateDir
	if install == "" {
		install = filepath.Join(root, ".state")
	}
	state, err := os.MkdirTemp("", "iotpipe-private-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Private{t: t, script: filepath.Join(root, "scripts", "services.sh"), services: services, kafkaNodes: kafkaNodes}
	p.environ = append(os.Environ(),
		"IOTPIPE_KAFKA_NODES="+strconv.Itoa(kafkaNodes),
		"IOTPIPE_STATE_DIR="+state,
		"IOTPIPE_INSTALL_DIR="+install,
		"IOTPIPE_MQTT_PORT="+freePort(t),
		"IOTPIPE_MQTT_TLS_PORT="+freePort(t),
		"IOTPIPE_KAFKA_PORT="+freePort(t),
		"IOTPIPE_KAFKA_CONTROLLER_PORT="+freePort(t),
		"IOTPIPE_PG_PORT="+freePort(t),
		"IOTPIPE_S3_PORT="+freePort(t),
	)
	p.environ = append(p.environ, extra...)
	if kafkaNodes > 1 {
		var ports, cports []string
		for range kafkaNodes {
			ports, cports = append(ports, freePort(t)), append(cports, freePort(t))
		}
		p.environ = append(p.environ, "IOTPIPE_KAFKA_PORTS="+strings.Join(ports, ","),
			"IOTPIPE_KAFKA_CONTROLLER_PORTS="+strings.Join(cports, ","))
	}
	t.Cleanup(func() {
		p.run(2*time.Minute, append([]string{"down", "--purge"}, services...)...)
		_ = os.RemoveAll(state)
	})
	p.Start(services...)
	env := *shared
	vars := p.vars()
	for _, s := range services {
		switch s {
		case "mqtt":
			env.MQTTURL = vars["IOTPIPE_MQTT_URL"]
		case "kafka":
			env.KafkaBrokers = strings.Split(vars["IOTPIPE_KAFKA_BROKERS"], ",")
			// The private Kafka has its own state dir, so its own CA.
			env.KafkaSec = loadKafkaSecurity(func(k string) string { return vars[k] }, func(k string) string { return vars[k] })
		case "postgres":
			env.PGDSN, env.PGWriterDSN = vars["IOTPIPE_PG_DSN"], vars["IOTPIPE_PG_WRITER_DSN"]
			env.PGReaderDSN, env.PGAdminDSN = vars["IOTPIPE_PG_READER_DSN"], vars["IOTPIPE_PG_ADMIN_DSN"]
			env.CAFile = vars["IOTPIPE_PG_CA_FILE"] // its own CA (the DSNs name it too)
		case "s3":
			// Its own CA (the private state dir's) and its own IAM (the same
			// users as the shared store's, made by services.sh).
			env.S3Config.Endpoint, env.S3Config.CAFile = vars["IOTPIPE_S3_ENDPOINT"], vars["IOTPIPE_S3_CA_FILE"]
			env.S3Admin.Endpoint, env.S3Admin.CAFile = env.S3Config.Endpoint, env.S3Config.CAFile
		default:
			t.Fatalf("unknown service %q", s)
		}
	}
	env.StateDir = state
	p.Env = &env
	return p
}

func (p *Private) run(timeout time.Duration, args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.script, args...)
	cmd.Env = p.environ
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		p.t.Fatalf("scripts/services.sh %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

func (p *Private) vars() map[string]string {
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(p.run(time.Minute, "env", "--plain")))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// Stop stops the named private services (SIGTERM, as an operator would);
// their data is kept.
func (p *Private) Stop(services ...string) {
	p.t.Helper()
	p.run(2*time.Minute, append([]string{"down"}, services...)...)
}

// Start starts the named private services and waits until they answer.
func (p *Private) Start(services ...string) {
	p.t.Helper()
	p.run(5*time.Minute, append([]string{"up"}, services...)...)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/iotpipe once per test process and returns its path,
// for tests that run a stage as a child process (to SIGKILL it, or to run
// the pipeline the way an operator does).
func Binary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iotpipe-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "iotpipe")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/iotpipe")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/iotpipe: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// RemoveBinary deletes what Binary built; call it from TestMain after
// m.Run.
func RemoveBinary() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// KafkaNodes is the number of Kafka nodes of the private cluster (1 for
// StartPrivate).
func (p *Private) KafkaNodes() int { return p.kafkaNodes }

// KafkaNodeAddr is the broker address (host:port) of node 1..KafkaNodes.
func (p *Private) KafkaNodeAddr(node int) string {
	p.t.Helper()
	if node < 1 || node > len(p.KafkaBrokers) {
		p.t.Fatalf("kafka node %d: the private cluster has %d", node, len(p.KafkaBrokers))
	}
	return p.KafkaBrokers[node-1]
}

// KafkaNodePID returns the pid of node 1..KafkaNodes, or 0 when it is not
// running.
func (p *Private) KafkaNodePID(node int) int {
	p.t.Helper()
	f := filepath.Join(p.StateDir, "kafka", "pid")
	if p.kafkaNodes > 1 {
		f = filepath.Join(p.StateDir, "kafka", "node-"+strconv.Itoa(node), "pid")
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return 0
	}
	return pid
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// KillKafkaNode SIGKILLs node 1..KafkaNodes (a crash: no controlled
// shutdown) and waits until the process is gone. Start("kafka") restarts
// it.
func (p *Private) KillKafkaNode(node int) {
	p.t.Helper()
	pid := p.KafkaNodePID(node)
	if pid == 0 {
		p.t.Fatalf("kafka node %d is not running", node)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill kafka node %d (pid %d): %v", node, pid, err)
	}
	Eventually(p.t, 30*time.Second, 20*time.Millisecond, func() error {
		if alive(pid) {
			return fmt.Errorf("kafka node %d (pid %d) still running after SIGKILL", node, pid)
		}
		return nil
	})
}
