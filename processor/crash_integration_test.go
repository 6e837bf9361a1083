//go:build integration

package processor

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// proc is one `iotpipe processor` child process.
type proc struct {
	*testenv.Proc
}

// startProc starts `iotpipe processor` as instance of group, with flags
// only (no IOTPIPE_* variable reaches it).
func startProc(t *testing.T, env *testenv.Env, topics Topics, group, instance string, extra ...string) *proc {
	t.Helper()
	args := append(append([]string{"processor"}, testenv.KafkaCLIArgs(env.KafkaConfig(t, testenv.Processor))...),
		"--group", group, "--instance-id", instance,
		"--topic-raw", topics.Raw, "--topic-metrics", topics.Metrics, "--topic-dlq", topics.DLQ,
		"--topic-processor-changelog", topics.Changelog, "--topic-readings", topics.Readings,
		"--window", "2s", "--lateness", "1s", "--idle-timeout", "4s",
		"--commit-interval", "200ms", "--session-timeout", "6s", "--transaction-timeout", "10s",
		"--http-addr", "127.0.0.1:0", "--log-format", "json",
	)
	args = append(args, extra...)
	return &proc{testenv.StartProc(t, "processor "+instance, nil, args...)}
}

// waitLine waits for the next log line containing s.
func (p *proc) waitLine(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	p.WaitLine(s, timeout)
}

// stop sends SIGTERM and waits for exit status 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.StopClean(30 * time.Second)
}

func (p *proc) sigkill(t *testing.T) {
	t.Helper()
	p.KillWait(10 * time.Second)
}

// TestCrashExactlyOnce is the crash test: a processor child process is
// SIGKILLed at random moments (one of them inside a transaction commit)
// and restarted while input flows, and for a while a second instance joins
// and leaves (two rebalances). The final aggregates, read read_committed,
// must equal the batch computation over the input, with no revision
// emitted twice and nothing late, and the readings topic must hold every
// distinct reading exactly once. CI size: 50k readings, 100 devices, 3
// kills; IOTPIPE_FULL=1: 1M readings, 1k devices, 6 kills.
func TestCrashExactlyOnce(t *testing.T) {
	env := testenv.Load(t)
	n, devices, kills, rate := 50_000, 100, 3, 4000.0
	if os.Getenv("IOTPIPE_FULL") == "1" {
		n, devices, kills, rate = 1_000_000, 1000, 6, 25000.0
	}
	ctx := testenv.Context(t, 15*time.Minute)
	topics := testTopics(t, env, 6)
	group := env.Group(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: %d readings from %d devices at %.0f/s, %d kills", seed, n, devices, rate, kills)
	rng := rand.New(rand.NewPCG(seed, 7))
	step := 20 * time.Millisecond
	w, batches := genWorkload(rng, n, devices, time.Now().Add(-time.Hour).Truncate(2*time.Second), step)
	testenv.Binary(t)
	out := readOutputs(ctx, t, env, topics)

	prod := env.Kafka(t)
	produced := make(chan error, 1)
	go func() { produced <- produce(ctx, t, prod, topics.Raw, batches, rate) }()
	start := time.Now()
	produceFor := time.Duration(float64(w.records) / rate * float64(time.Second))

	a := startProc(t, env, topics, group, "a")
	a.waitLine(t, "restored state", 60*time.Second)
	randomWait := func() time.Duration {
		return time.Duration(500+rng.IntN(int(produceFor.Milliseconds())/(kills+3)+1)) * time.Millisecond
	}
	for k := 0; k < kills; k++ {
		if k == 1 {
			// Kill inside a transaction commit: this run sleeps 300ms
			// between flushing the outputs and committing offsets and the
			// transaction, and says so in its log.
			a.sigkill(t)
			a = startProc(t, env, topics, group, "a", "--debug-commit-delay", "300ms")
			a.waitLine(t, "restored state", 60*time.Second)
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
			a.waitLine(t, "transaction commit started", 30*time.Second)
			time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
			t.Logf("kill %d (inside a transaction commit) at %s", k+1, time.Since(start).Round(time.Millisecond))
			a.sigkill(t)
		} else {
			time.Sleep(randomWait())
			t.Logf("kill %d at %s", k+1, time.Since(start).Round(time.Millisecond))
			a.sigkill(t)
		}
		a = startProc(t, env, topics, group, "a")
		if k == 0 {
			// Two instances: b joins (rebalance), works a while, and
			// leaves with SIGTERM (rebalance back).
			a.waitLine(t, "restored state", 60*time.Second)
			b := startProc(t, env, topics, group, "b")
			b.waitLine(t, "restored state", 60*time.Second)
			a.waitLine(t, "partitions revoked", 30*time.Second)
			t.Logf("rebalance: instance b joined at %s", time.Since(start).Round(time.Millisecond))
			time.Sleep(randomWait())
			b.stop(t)
			t.Logf("instance b left at %s", time.Since(start).Round(time.Millisecond))
		}
	}
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	t.Logf("input produced: %d records in %s", w.records, time.Since(start).Round(time.Millisecond))
	out.waitFinal(t, w, 2*time.Second, 5*time.Minute)
	t.Logf("all windows final %s after start", time.Since(start).Round(time.Millisecond))
	a.stop(t)
}
