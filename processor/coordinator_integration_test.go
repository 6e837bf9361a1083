//go:build integration

package processor

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestTxnCoordinatorLostDuringCommit reproduces the processor's exit when
// the broker coordinating its transactions dies while a transaction ends:
// on a private three-broker cluster it finds the transaction coordinator
// of the processor's transactional id, waits until a commit has started
// (--debug-commit-delay says so in the log) and SIGKILLs that broker and a
// second one. Without a controller quorum the coordinator cannot move, so
// ending the transaction fails once the client's retries (30 s) run out,
// every time: the outcome of that commit is unknown to the processor. The
// processor must ride it out by itself (a new Kafka session from the
// committed offsets and state) once the brokers are back, and the outputs
// must stay exactly once: the final aggregates equal the batch
// computation, no revision twice, every reading once on the readings
// topic.
func TestTxnCoordinatorLostDuringCommit(t *testing.T) {
	cluster := testenv.StartPrivateCluster(t, 3, "kafka")
	env := cluster.Env
	ctx := testenv.Context(t, 12*time.Minute)
	topics := testTopics(t, env, 3)
	group := env.Group(t)
	seed := uint64(time.Now().UnixNano())
	n, devices, rate := 24_000, 40, 200.0 // two minutes of input: it spans the outage
	if os.Getenv("IOTPIPE_FULL") == "1" {
		n, devices, rate = 60_000, 100, 400.0
	}
	t.Logf("seed %d: %d readings from %d devices at %.0f/s", seed, n, devices, rate)
	rng := rand.New(rand.NewPCG(seed, 11))
	w, batches := genWorkload(rng, n, devices, time.Now().Add(-time.Hour).Truncate(2*time.Second), 20*time.Millisecond)
	testenv.Binary(t)
	out := readOutputs(ctx, t, env, topics)
	produced := make(chan error, 1)
	go func() { produced <- produce(ctx, t, env.Kafka(t), topics.Raw, batches, rate) }()

	a := startProc(t, env, topics, group, "a", "--debug-commit-delay", "300ms")
	a.waitLine(t, "restored state", 90*time.Second)
	a.waitLine(t, "transaction commit started", 60*time.Second)

	// The transaction coordinator of the processor's transactional id.
	txnID := "iotpipe-processor." + group + ".a"
	var coord int
	testenv.Eventually(t, time.Minute, 500*time.Millisecond, func() error {
		resp := kadm.NewClient(env.Kafka(t)).FindTxnCoordinators(ctx, txnID)
		r, ok := resp[txnID]
		if !ok {
			return errorf("no answer for %s", txnID)
		}
		if r.Err != nil {
			return r.Err
		}
		coord = int(r.NodeID)
		return nil
	})
	other := coord%3 + 1
	t.Logf("transaction coordinator of %s: broker %d", txnID, coord)

	a.waitLine(t, "transaction commit started", 60*time.Second)
	cluster.KillKafkaNode(coord)
	cluster.KillKafkaNode(other)
	killed := time.Now()
	t.Logf("SIGKILLed broker %d (transaction coordinator) and broker %d during a commit: no controller quorum, the coordinator cannot move", coord, other)

	// Ending that transaction must fail (the retries end after 30 s) and
	// the processor must carry on with a new session instead of exiting.
	l := a.WaitLine("starting a new Kafka session", 3*time.Minute)
	t.Logf("%s after the kill: %s", time.Since(killed).Round(time.Second), l)

	cluster.Start("kafka")
	t.Logf("brokers %d and %d back %s after the kill", coord, other, time.Since(killed).Round(time.Second))
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	out.waitFinal(t, w, 2*time.Second, 6*time.Minute)
	t.Logf("all windows final %s after the kill", time.Since(killed).Round(time.Second))
	a.stop(t)
}
