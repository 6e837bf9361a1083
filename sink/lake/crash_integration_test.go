//go:build integration

package lake

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// startChild starts `iotpipe sink lake args...` with exactly the
// environment env (and PATH, HOME, ...: see testenv.StartProc).
func startChild(t testing.TB, env []string, args ...string) *testenv.Proc {
	t.Helper()
	return testenv.StartProc(t, "sink lake", env, append([]string{"sink", "lake"}, args...)...)
}

// countInLog counts the lines of c's whole log file (not only the lines
// kept in memory) that contain s.
func countInLog(t testing.TB, c *testenv.Proc, s string) int {
	t.Helper()
	b, err := os.ReadFile(c.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// TestCrashExactlyOnce SIGKILLs the sink (a real child process) while input
// keeps arriving: during an upload, between upload and commit, between
// commit and intent deletion, and at random moments. The union of the
// objects in the bucket must hold every input record exactly once.
// IOTPIPE_FULL=1 runs a larger input with more kills.
func TestCrashExactlyOnce(t *testing.T) {
	env := testenv.Load(t)
	raw, dlq := env.Topic(t, 3, nil), env.Topic(t, 1, nil)
	bucket, group := env.Bucket(t), env.Group(t)
	n, randomKills, step, killWithin := 30_000, 3, 10*time.Second, 1500
	if os.Getenv("IOTPIPE_FULL") == "1" { // ~6 min of input, kills spread over it
		n, randomKills, step, killWithin = 1_000_000, 15, 400*time.Millisecond, 25_000
	}
	childEnv := append(env.KafkaEnv(t, testenv.SinkLake),
		"IOTPIPE_S3_ENDPOINT="+env.S3Config.Endpoint,
		"IOTPIPE_S3_ACCESS_KEY="+env.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY="+env.S3Config.SecretKey,
		"IOTPIPE_S3_CA_FILE="+env.S3Config.CAFile,
		"IOTPIPE_S3_REGION="+env.S3Config.Region,
		"IOTPIPE_S3_BUCKET="+bucket,
		"IOTPIPE_PREFIX=lake",
		"IOTPIPE_TOPIC_READINGS="+raw,
		"IOTPIPE_TOPIC_METRICS=-",
		"IOTPIPE_TOPIC_DLQ="+dlq,
		"IOTPIPE_GROUP="+group,
		"IOTPIPE_INSTANCE_ID="+group+"-0",
		"IOTPIPE_KAFKA_SESSION_TIMEOUT=6s",
		"IOTPIPE_MAX_AGE=400ms",
		"IOTPIPE_ROW_GROUP_ROWS=2000",
		"IOTPIPE_RETRY_MIN=50ms",
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0",
		"IOTPIPE_LOG_LEVEL=info",
	)

	// Input keeps arriving during the kills.
	cl := env.Kafka(t)
	base := pastBase(6) // 30k readings × 10 s ≈ 3.5 days (1M in FULL: use 1 s steps)
	produced := make(chan struct{})
	ctx := testenv.Context(t, 20*time.Minute)
	go func() {
		defer close(produced)
		// Slow enough that batches close by age (400ms) rather than by rows,
		// so that a replay after a kill would cut them differently.
		const chunk = 300
		for i := 0; i < n; i += chunk {
			produceReadings(t, cl, raw, i, min(chunk, n-i), 200, base, step)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // spread the input over the kills
			}
		}
	}()

	// Runs alternate between two file sizes, as after an operator changes
	// --max-rows: a restarted sink then cuts the same offsets differently.
	maxRows := [2]int{4000, 700}
	kills, replays := 0, 0
	// Each failpoint pauses at its 8th arrival: past the backlog read at
	// start-up. Event times advance 10 s per reading, so a batch spans
	// several hours and a replay cut shorter leaves other hour files.
	for _, fp := range []string{FailpointBeforeCommit, FailpointMidUpload, FailpointAfterCommit} {
		c := startChild(t, childEnv, "--test-failpoints", fp+"=1m@8", "--max-rows", fmt.Sprint(maxRows[kills%2]))
		l := c.WaitLine("failpoint reached", 90*time.Second)
		c.KillWait(10 * time.Second)
		replays += countInLog(t, c, "replaying the batch in flight")
		kills++
		t.Logf("kill %d at %s: %s", kills, fp, l)
	}
	for range randomKills {
		c := startChild(t, childEnv, "--max-rows", fmt.Sprint(maxRows[kills%2]))
		c.WaitLine("partition assigned", 60*time.Second)
		d := time.Duration(200+rand.IntN(killWithin)) * time.Millisecond
		select {
		case <-time.After(d): // the kill moment, not a synchronisation
		case <-c.Done():
			t.Fatalf("sink exited early: %v", c.Err())
		}
		c.KillWait(10 * time.Second)
		replays += countInLog(t, c, "replaying the batch in flight")
		kills++
		t.Logf("kill %d after %s", kills, d)
	}
	<-produced
	if t.Failed() {
		return
	}

	// A last run consumes everything, then stops cleanly on SIGTERM.
	c := startChild(t, childEnv)
	c.WaitLine("partition assigned", 60*time.Second)
	testenv.Eventually(t, 5*time.Minute, 250*time.Millisecond, func() error {
		return committedAll(ctx, env, t, group, raw)
	})
	c.StopClean(60 * time.Second)
	replays += countInLog(t, c, "replaying the batch in flight")

	want := offsetsOf(t, env, raw, n)
	lake := readLake(t, env.S3(t), bucket, "lake/")
	rows := readingRows(t, lake["readings"])
	checkExactlyOnce(t, rows, want)
	var intents []string
	for o := range env.S3(t).ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "lake/_intents/", Recursive: true}) {
		intents = append(intents, o.Key)
	}
	if len(intents) > 0 {
		t.Errorf("intents left after a clean stop: %v", intents)
	}
	t.Logf("%d kills, %d replayed batches; %d readings, %d rows in %d files, each exactly once",
		kills, replays, n, len(rows), lake["readings"].Files)
	if replays == 0 {
		t.Errorf("no batch was replayed: the kills did not hit an upload in flight")
	}
}
