//go:build integration

// Package kafka3 runs the pipeline on a three-broker Kafka cluster of its
// own (scripts/services.sh with IOTPIPE_KAFKA_NODES=3: replication factor
// 3, min.insync.replicas 2) and SIGKILLs brokers under load: the leader of
// partitions the stages use, then, once it is back in every ISR, a second
// one. The bridge, the processor and both sinks run as processes, as an
// operator runs them, and are never restarted. At the end every message a
// device got a PUBACK for is in telemetry.raw, device_metrics equals a
// recomputation from what the fleet sent (parsed from its own payloads,
// without project code), readings and the lake hold each value once, the
// dead letters are the invalid messages, and the time each stage took to
// recover from each kill is logged.
//
// CI size (make test): 40 devices at 10 msg/s, 2 kills, the second broker
// left down to the end (the cluster runs on two); about 2.5 minutes on a
// busy 2-core machine. IOTPIPE_FULL=1: 200 devices at 10 msg/s, 6 kills,
// each broker restarted and back in every ISR before the next.
package kafka3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/test/internal/pipecheck"
)

type killResult struct {
	node       int32
	roles      string
	rawResumed time.Duration            // every raw partition written again
	caughtUp   map[string]time.Duration // group → committed past the kill point on every raw partition
	up         time.Duration            // services.sh up: the broker is back in the cluster metadata
	isrFull    time.Duration            // from the restart until every partition's ISR is full again (0: not waited for)
}

func TestBrokerFailoverUnderLoad(t *testing.T) {
	devices, rate, kills := 40, 10.0, 2
	timeout := 5 * time.Minute
	if pipecheck.Full() {
		devices, kills, timeout = 200, 6, 20*time.Minute
	}
	const recoverWithin = 90 * time.Second
	start := time.Now()
	p := testenv.StartPrivateCluster(t, 3, "kafka")
	t.Logf("3-broker cluster up in %s: %s", time.Since(start).Round(time.Second), strings.Join(p.KafkaBrokers, ","))
	env := p.Env
	ctx := testenv.Context(t, timeout)
	bin := testenv.Binary(t)
	adm := env.KafkaAdmin(t)

	id := testenv.Name(t, "k3")
	schema := env.Schema(t)
	bucket := env.BucketName(t)
	raw, metrics, dlq, changelog, readings := id+".raw", id+".metrics", id+".dlq", id+".changelog", id+".readings"
	groups := map[string]string{"processor": id + "-processor", "sink timescale": id + "-sink-ts", "sink lake": id + "-sink-lake"}
	base := append(append(os.Environ(), env.KafkaEnv(t, testenv.Admin)...),
		"IOTPIPE_TOPIC_RAW="+raw, "IOTPIPE_TOPIC_METRICS="+metrics, "IOTPIPE_TOPIC_DLQ="+dlq,
		"IOTPIPE_TOPIC_PROCESSOR_CHANGELOG="+changelog, "IOTPIPE_TOPIC_READINGS="+readings,
		"IOTPIPE_PG_SCHEMA="+schema, "IOTPIPE_S3_BUCKET="+bucket,
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_LOG_FORMAT=json",
	)

	// 1. init with the broker defaults (rf 3, min.insync.replicas 2), twice
	// in quick succession (issue 13: the second run reported "created"),
	// and an unsafe setting refused.
	initRun := func(args ...string) (string, int) {
		cmd := exec.CommandContext(ctx, bin, append([]string{"init", "--raw-partitions", "6", "--metrics-partitions", "3",
			"--dlq-partitions", "1"}, args...)...)
		cmd.Env = base
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("iotpipe init: %v", err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := initRun()
	if code != 0 || strings.Count(out, ": created") != 9 || // eight topics (with telemetry.alerts, devices.shadow and the alert changelog) and the bucket
		!strings.Contains(out, "kafka: 3 live brokers; new topics: replication factor 3, min.insync.replicas 2") {
		t.Fatalf("first init (exit %d):\n%s", code, out)
	}
	out, code = initRun()
	if code != 0 || strings.Contains(out, "created") || strings.Contains(out, "warning") {
		t.Fatalf("second init right after the first (exit %d) should create nothing:\n%s", code, out)
	}
	out, code = initRun("--min-insync-replicas", "3")
	if code != 1 || !strings.Contains(out, "--min-insync-replicas (IOTPIPE_MIN_INSYNC_REPLICAS) 3 (replication factor: broker default): writes would stop whenever any one broker is down") {
		t.Fatalf("init --min-insync-replicas 3 should be refused (exit %d):\n%s", code, out)
	}
	out, code = initRun("--replication-factor", "4", "--min-insync-replicas", "2")
	if code != 1 || !strings.Contains(out, "only 3 live broker(s) to place 4 replicas on") {
		t.Fatalf("init --replication-factor 4 should be refused (exit %d):\n%s", code, out)
	}
	checkTopicReplication(t, ctx, adm, raw, metrics, dlq, changelog, readings)

	// 2. The stages, never restarted by the test.
	template := "devices/" + id + "/{device_id}/telemetry"
	stages := []*pipecheck.Stage{
		pipecheck.StartStage(t, bin, append(append([]string(nil), base...), env.KafkaEnv(t, testenv.Bridge)...), "bridge", "bridge",
			"--topic-template", template, "--mqtt-share-group", id, "--mqtt-client-id", id+"-bridge"),
		// Lateness covers a broker outage: readings held up by it are not late.
		pipecheck.StartStage(t, bin, append(append([]string(nil), base...), env.KafkaEnv(t, testenv.Processor)...), "processor", "processor",
			"--group", groups["processor"], "--instance-id", id+"-p1",
			"--window", "5s", "--lateness", "10s", "--idle-timeout", "5s", "--commit-interval", "200ms"),
		pipecheck.StartStage(t, bin, append(append([]string(nil), base...), env.KafkaEnv(t, testenv.SinkTimescale)...), "sink timescale", "sink", "timescale",
			"--group", groups["sink timescale"], "--instance-id", id+"-ts1", "--batch-delay", "300ms"),
		pipecheck.StartStage(t, bin, append(append([]string(nil), base...), env.KafkaEnv(t, testenv.SinkLake)...), "sink lake", "sink", "lake",
			"--group", groups["sink lake"], "--instance-id", id+"-lake1", "--max-age", "2s"),
	}
	allRunning := func() {
		t.Helper()
		for _, s := range stages {
			s.Running(t)
		}
	}
	testenv.Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		allRunning()
		if !strings.Contains(stages[0].Log(), "subscribed") {
			return errors.New("bridge not subscribed yet")
		}
		return nil
	})

	// 3. Load, in the background until the kills are done.
	sent := pipecheck.NewSent(5 * time.Second)
	cfg := devicesim.DefaultConfig()
	cfg.URL, cfg.Username, cfg.Password = env.MQTTURL, env.MQTTDeviceUsername, env.MQTTDevicePassword
	cfg.Devices, cfg.DeviceIDPrefix, cfg.TopicTemplate, cfg.Rate = devices, id+"-", template, rate
	cfg.ValidKinds, cfg.InvalidFraction = []devicesim.Kind{devicesim.ValidRFC3339Metrics}, 0.02
	cfg.OnAck = sent.OnAck
	// Millisecond event times: the stores keep microseconds.
	cfg.Now = func() time.Time { return time.Now().Truncate(time.Millisecond) }
	ld := &pipecheck.Load{Segment: 5 * time.Second, Cfg: cfg}
	stop := make(chan struct{})
	loadDone := make(chan error, 1)
	go func() { loadDone <- ld.Run(ctx, stop) }()

	// Warm up: every group has committed on every partition of its input
	// (the processor raw, the sinks the processor's readings).
	input := func(name string) string {
		if name == "processor" {
			return raw
		}
		return readings
	}
	testenv.Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		allRunning()
		for name, g := range groups {
			if c := pipecheck.Committed(ctx, adm, g, input(name)); len(c) < 6 {
				return fmt.Errorf("%s committed on %d of 6 %s partitions", name, len(c), input(name))
			}
		}
		return nil
	})

	// 4. Kill the leader of raw partitions, wait until every stage has
	// processed past the kill point by itself, restart the broker, wait
	// until it is back in every ISR, then kill another.
	var results []killResult
	var prev int32 = -1
	for k := 0; k < kills; k++ {
		victim, roles := pickVictim(t, ctx, adm, raw, prev, groups)
		r := killResult{node: victim, roles: roles, caughtUp: map[string]time.Duration{}}
		var before, beforeReadings map[int32]int64
		testenv.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
			if before = pipecheck.EndOffsets(ctx, adm, raw); len(before) < 6 {
				return fmt.Errorf("end offsets of %d of 6 raw partitions", len(before))
			}
			if beforeReadings = pipecheck.EndOffsets(ctx, adm, readings); len(beforeReadings) < 6 {
				return fmt.Errorf("end offsets of %d of 6 readings partitions", len(beforeReadings))
			}
			return nil
		})
		killAt := time.Now()
		p.KillKafkaNode(int(victim))
		t.Logf("kill %d: SIGKILL broker %d (%s)", k+1, victim, roles)
		deadline := killAt.Add(recoverWithin)
		poll := time.NewTicker(50 * time.Millisecond)
		for r.rawResumed == 0 || len(r.caughtUp) < len(groups) {
			<-poll.C
			allRunning()
			if time.Now().After(deadline) {
				t.Fatalf("kill %d (broker %d): not recovered within %s: raw resumed %s, caught up %v", k+1, victim, recoverWithin, r.rawResumed, r.caughtUp)
			}
			if r.rawResumed == 0 && pipecheck.Beyond(pipecheck.EndOffsets(ctx, adm, raw), before) {
				r.rawResumed = time.Since(killAt)
			}
			for name, g := range groups {
				at := before
				if input(name) == readings {
					at = beforeReadings
				}
				if _, ok := r.caughtUp[name]; !ok && pipecheck.Beyond(pipecheck.Committed(ctx, adm, g, input(name)), at) {
					r.caughtUp[name] = time.Since(killAt)
				}
			}
		}
		poll.Stop()
		t.Logf("kill %d: raw written on every partition again after %s; processed past the kill point: %s",
			k+1, r.rawResumed.Round(10*time.Millisecond), fmtDurations(r.caughtUp))
		results = append(results, r)
		prev = victim
		if k == kills-1 && !pipecheck.Full() {
			// The CI size ends on two brokers (min.insync.replicas 2 still
			// met): a restart under load takes half a minute on 2 cores.
			t.Logf("kill %d: broker %d stays down for the rest of the run", k+1, victim)
			break
		}
		// The next kill waits until the broker is back in every ISR.
		restartAt := time.Now()
		p.Start("kafka")
		results[k].up = time.Since(restartAt)
		waitISRFull(t, ctx, adm, 3, raw, readings, metrics, dlq, changelog, "__consumer_offsets", "__transaction_state")
		results[k].isrFull = time.Since(restartAt)
		t.Logf("kill %d: broker %d restarted: in the cluster metadata after %s, back in every ISR after %s", k+1, victim,
			results[k].up.Round(100*time.Millisecond), results[k].isrFull.Round(100*time.Millisecond))
	}
	// Load for two more whole segments, then stop.
	healed, _ := ld.Segments()
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		if n, _ := ld.Segments(); n < healed+2 {
			return fmt.Errorf("%d segments of load since the last kill", n-healed)
		}
		return nil
	})
	close(stop)
	select {
	case err := <-loadDone:
		if err != nil {
			t.Fatalf("fleet: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("fleet did not finish its last segment")
	}
	segments, st := ld.Segments()
	t.Logf("fleet: %d segments, %+v", segments, st)
	if err := sent.Err(); err != nil {
		t.Fatal(err)
	}
	if st.Unconfirmed != 0 || st.Refused != 0 || st.NoSubscribers != 0 {
		t.Fatalf("fleet: every message must be acknowledged: %+v", st)
	}
	valid, invalid, values := sent.Counts()
	if valid != st.AckedValid || invalid != st.AckedInvalid {
		t.Fatalf("acknowledgements recorded %d valid, %d invalid; stats say %d, %d", valid, invalid, st.AckedValid, st.AckedInvalid)
	}

	// 5. Nothing acknowledged is lost: every PUBACKed valid message is in
	// raw, once.
	rawSeen := pipecheck.ReadRaw(t, ctx, env, raw)
	missing, dups, _ := sent.CompareRaw(rawSeen)
	t.Logf("raw: %d device messages for %d acknowledged valid ones; missing %d, duplicated %d", len(rawSeen), valid, missing, dups)
	if missing > 0 || dups > 0 || len(rawSeen) != int(valid) {
		t.Fatalf("raw: %d acknowledged messages missing, %d duplicates, %d distinct (want %d)", missing, dups, len(rawSeen), valid)
	}

	// 6. Exactly-once outputs: windows equal the recomputation, readings
	// and lake rows once per value, dead letters = invalid messages.
	pg := env.PG(t)
	want := sent.Windows(nil) // nothing is sent late on purpose: no reading may be late
	testenv.Eventually(t, 90*time.Second, time.Second, func() error {
		allRunning()
		var rows, counted int64
		if err := pg.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM %[1]s.readings),
			(SELECT coalesce(sum(count), 0) FROM %[1]s.device_metrics)`, schema)).Scan(&rows, &counted); err != nil {
			return err
		}
		if rows != values || counted != values {
			return fmt.Errorf("readings %d, counted in windows %d; want %d each", rows, counted, values)
		}
		return pipecheck.CheckMetrics(ctx, pg, schema, want)
	})
	var dupReadings int64
	if err := pg.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT 1 FROM %s.readings GROUP BY device_id, metric, seq HAVING count(*) > 1) d`,
		schema)).Scan(&dupReadings); err != nil || dupReadings != 0 {
		t.Fatalf("readings stored more than once: %d (%v)", dupReadings, err)
	}
	t.Logf("device_metrics: %d windows equal the recomputation; readings %d", len(want), values)
	s3 := env.S3(t)
	testenv.Eventually(t, 60*time.Second, time.Second, func() error {
		n, err := pipecheck.LakeRows(ctx, s3, bucket, "readings/")
		if err != nil {
			return err
		}
		if n != values {
			return fmt.Errorf("lake readings rows %d, want %d", n, values)
		}
		return nil
	})
	dead := pipecheck.CountRecords(t, ctx, env, dlq)
	if dead != invalid {
		t.Fatalf("dead letters %d, want %d (the invalid messages; none late)", dead, invalid)
	}
	t.Logf("lake: %d readings rows; dlq: %d = invalid messages", values, dead)

	// 7. Every stage rode it out and still stops cleanly.
	for _, s := range stages {
		s.Running(t)
	}
	for _, s := range stages {
		s.Stop(t, 30*time.Second)
	}
	for i, r := range results {
		t.Logf("RECOVERY kill %d broker %d [%s]: raw writable on every partition %s; past the kill point: %s; restart: in metadata %s, ISR full %s",
			i+1, r.node, r.roles, r.rawResumed.Round(10*time.Millisecond), fmtDurations(r.caughtUp),
			r.up.Round(100*time.Millisecond), r.isrFull.Round(100*time.Millisecond))
	}
	for _, s := range stages {
		t.Logf("%s log: %s", s.Name(), logSummary(s.Log()))
	}
	t.Logf("total %s", time.Since(start).Round(time.Second))
}

func fmtDurations(m map[string]time.Duration) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + m[k].Round(10*time.Millisecond).String()
	}
	return strings.Join(parts, ", ")
}

// pickVictim returns the broker leading raw partition 0, or, when that is
// the previous victim, the one leading the most raw partitions, with what
// it does for the stages.
func pickVictim(t *testing.T, ctx context.Context, adm *kadm.Client, raw string, prev int32, groups map[string]string) (int32, string) {
	t.Helper()
	tds, err := adm.ListTopics(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	led := map[int32][]int32{}
	var p0 int32 = -1
	for _, p := range tds[raw].Partitions {
		led[p.Leader] = append(led[p.Leader], p.Partition)
		if p.Partition == 0 {
			p0 = p.Leader
		}
	}
	victim := p0
	if victim == prev || victim < 0 {
		victim = -1
		for b, ps := range led {
			if b != prev && (victim < 0 || len(ps) > len(led[victim])) {
				victim = b
			}
		}
	}
	if victim < 0 {
		t.Fatalf("no leader of %s to kill: %v", raw, led)
	}
	ps := led[victim]
	slices.Sort(ps)
	roles := []string{fmt.Sprintf("leader of raw partitions %v", ps)}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, c := range adm.FindGroupCoordinators(ctx, groups[name]) {
			if c.Err == nil && c.NodeID == victim {
				roles = append(roles, "coordinator of the "+name+" group")
			}
		}
	}
	return victim, strings.Join(roles, ", ")
}

// waitISRFull waits until every partition of the topics has n in-sync
// replicas (a restarted broker has caught up).
func waitISRFull(t *testing.T, ctx context.Context, adm *kadm.Client, n int, topics ...string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, 200*time.Millisecond, func() error {
		tds, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			return err
		}
		for _, topic := range topics {
			td, ok := tds[topic]
			if !ok || td.Err != nil {
				return fmt.Errorf("topic %s not listed (%v)", topic, td.Err)
			}
			for _, p := range td.Partitions {
				if len(p.ISR) != n {
					return fmt.Errorf("%s/%d in-sync replicas %v, want %d", topic, p.Partition, p.ISR, n)
				}
			}
		}
		return nil
	})
}

// checkTopicReplication checks that every topic init created has 3
// replicas per partition and min.insync.replicas 2.
func checkTopicReplication(t *testing.T, ctx context.Context, adm *kadm.Client, topics ...string) {
	t.Helper()
	tds, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range topics {
		for _, p := range tds[topic].Partitions {
			if len(p.Replicas) != 3 {
				t.Errorf("%s/%d has replicas %v, want 3", topic, p.Partition, p.Replicas)
			}
		}
		rc, err := rcs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		misr := ""
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" {
				misr = c.MaybeValue()
			}
		}
		if misr != strconv.Itoa(2) {
			t.Errorf("%s has min.insync.replicas %q, want 2", topic, misr)
		}
	}
}

// logSummary counts a stage's WARN and ERROR lines and quotes the first
// few distinct messages.
func logSummary(log string) string {
	counts := map[string]int{}
	var first []string
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Err   string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		key := rec.Level + " " + rec.Msg
		if counts[key] == 0 && len(first) < 6 {
			first = append(first, key+" ("+pipecheck.Tail(rec.Err, 160)+")")
		}
		counts[key]++
	}
	if len(counts) == 0 {
		return "no warnings or errors"
	}
	var parts []string
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%dx %s", n, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ") + " | first: " + strings.Join(first, " | ")
}
