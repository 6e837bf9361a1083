//go:build integration

package timescale

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}

// sinkProcess starts `iotpipe sink timescale` for the fixture, with flags
// only (no IOTPIPE_* variable reaches it).
func (f *fixture) sinkProcess(t testing.TB, extra ...string) *testenv.Proc {
	t.Helper()
	args := append([]string{"sink", "timescale"}, testenv.KafkaCLIArgs(f.kafka)...)
	args = append(args,
		"--group", f.group, "--instance-id", f.group+"-0",
		"--topic-readings", f.raw, "--topic-metrics", f.metrics, "--topic-dlq", f.dlq, "--topic-alerts", f.alertsTopic(),
		"--pg-writer-dsn", f.writerDSN, "--pg-schema", f.schema,
		"--http-addr", "", "--log-level", "warn", "--retry-min", "50ms", "--retry-max", "500ms",
	)
	return testenv.StartProc(t, "sink timescale", nil, append(args, extra...)...)
}

// TestSinkCrash kills the sink process with SIGKILL in the middle of its
// batches, again and again, and restarts it: readings must hold every
// record exactly once, device_metrics the highest revision of every
// window and alert_events every alert event once (repeats included in the
// input). IOTPIPE_FULL=1 runs a larger version.
func TestSinkCrash(t *testing.T) {
	readings, kills, windows := 3000, 5, 300
	if os.Getenv("IOTPIPE_FULL") == "1" {
		readings, kills, windows = 200_000, 20, 5000
	}
	env := testenv.Load(t)
	f := newFixture(t, env, 3, 3)
	f.alerts = env.Topic(t, 2, nil)
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)

	// All input, cut into kills+1 chunks: each run gets new work, so every
	// kill lands while batches are being written.
	var raw, met []*kgo.Record
	for i := range readings {
		dev := fmt.Sprintf("dev-%03d", i%50)
		raw = append(raw, readingRecord(f.raw, dev, int64(i), base.Add(time.Duration(i)*time.Millisecond), float64(i)))
	}
	for w := range windows {
		dev := fmt.Sprintf("dev-%03d", w%50)
		start := base.Add(time.Duration(w/50) * time.Minute)
		revs := []int64{1, 2, 3}
		rand.Shuffle(3, func(i, j int) { revs[i], revs[j] = revs[j], revs[i] })
		for _, r := range revs {
			m := window(dev, "temp", start, r)
			met = append(met, metricRecord(f.metrics, &m))
		}
		a2, a1 := activity(dev, start, 2), activity(dev, start, 1)
		met = append(met, activityRecord(f.metrics, &a2), activityRecord(f.metrics, &a1))
	}
	// Alert events: a FIRING and a RESOLVED per crossing, every fifth
	// event sent twice (the alert stage repeating a crossing).
	var alerts []*kgo.Record
	events := 0
	for c := range windows / 2 {
		dev := fmt.Sprintf("dev-%03d", c%50)
		at := base.Add(time.Duration(c) * time.Second)
		fire := firing(fmt.Sprintf("hot/%s/%d", dev, c), dev, at, 95)
		res := resolved(fmt.Sprintf("hot/%s/%d-r", dev, c), fire.EventID, dev, at.Add(time.Second), 80)
		for _, a := range []*schemas.Alert{fire, res} {
			events++
			alerts = append(alerts, alertRecord(t, f.alerts, a))
			if events%5 == 0 {
				alerts = append(alerts, alertRecord(t, f.alerts, a))
			}
		}
	}
	chunk := func(recs []*kgo.Record, i, n int) []*kgo.Record {
		return recs[len(recs)*i/n : len(recs)*(i+1)/n]
	}

	// Small batches, so that a run's rows take many transactions and a
	// kill lands among them: mid-COPY, mid-upsert, before or during COMMIT.
	last, midRun := int64(0), 0
	for k := range kills {
		f.produce(t, chunk(raw, k, kills+1))
		f.produce(t, chunk(met, k, kills+1))
		f.produce(t, chunk(alerts, k, kills+1))
		runRows := int64(2*readings*(k+1)/(kills+1)) - last // readings rows this run can write
		// Batches of 10 rows: a run takes 100 transactions, long enough
		// on a quiet machine for a kill to land among them.
		p := f.sinkProcess(t, "--batch-rows", "10", "--batch-delay", "200ms")
		// Kill once this run has committed a random part of the first half
		// of its rows: the next batch is then in flight.
		step := 1 + rand.Int64N(max(1, runRows/2))
		testenv.Eventually(t, 2*time.Minute, 2*time.Millisecond, func() error {
			if n := f.count(t, `SELECT count(*) FROM $S.readings`); n < last+step {
				return fmt.Errorf("run %d: readings = %d, waiting for > %d", k, n, last+step)
			}
			return nil
		})
		// Then a random moment later (fault injection, not synchronisation).
		<-time.After(time.Duration(rand.IntN(20)) * time.Millisecond)
		if p.Exited() {
			t.Fatalf("run %d: the sink exited before its kill: %v", k, p.Err())
		}
		p.KillWait(10 * time.Second)
		n := f.count(t, `SELECT count(*) FROM $S.readings`)
		if n < last+runRows {
			midRun++
		}
		t.Logf("kill %d: %d readings rows committed (%d of the %d this run could write)", k+1, n, n-last, runRows)
		last = n
	}
	// The kills must have interrupted the sink at work, or the test
	// shows nothing about a crash mid-batch.
	if midRun == 0 {
		t.Fatalf("none of the %d kills landed before its run had written everything", kills)
	}
	t.Logf("%d of %d kills landed while the run was still writing", midRun, kills)
	f.produce(t, chunk(raw, kills, kills+1))
	f.produce(t, chunk(met, kills, kills+1))
	f.produce(t, chunk(alerts, kills, kills+1))
	p := f.sinkProcess(t, "--batch-rows", "500", "--batch-delay", "200ms")
	want := int64(2 * readings)
	f.waitCount(t, 5*time.Minute, want, `SELECT count(*) FROM $S.readings`)
	f.waitCount(t, time.Minute, int64(windows), `SELECT count(*) FROM $S.device_metrics`)
	f.waitCount(t, time.Minute, int64(windows), `SELECT count(*) FROM $S.device_activity`)
	f.waitCount(t, time.Minute, int64(events), `SELECT count(*) FROM $S.alert_events`)
	f.waitCount(t, time.Minute, int64(len(raw)+len(met)+len(alerts)), `SELECT sum(next_offset)::bigint FROM $S.sink_offsets`)
	if n := f.count(t, `SELECT count(*) FROM $S.alert_events WHERE (state = 'FIRING') = (fired_event_id IS NULL) AND source_topic = $1`, f.alerts); n != int64(events) {
		t.Fatalf("alert events stored whole = %d, want %d", n, events)
	}

	if n := f.count(t, `SELECT count(*) FROM (SELECT DISTINCT device_id, metric, seq FROM $S.readings) d`); n != want {
		t.Fatalf("distinct readings = %d, want %d (duplicates or losses)", n, want)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.readings WHERE metric = 'temp' AND value <> seq`); n != 0 {
		t.Fatalf("%d readings with wrong values", n)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.device_metrics WHERE revision = 3 AND count = 3 AND mean = 30 AND min = 29 AND max = 31 AND p95 = 30.9`); n != int64(windows) {
		t.Fatalf("device_metrics at the final revision = %d, want %d", n, windows)
	}
	if n := f.count(t, `SELECT count(*) FROM $S.device_activity WHERE revision = 2 AND messages = 20`); n != int64(windows) {
		t.Fatalf("device_activity at the final revision = %d, want %d", n, windows)
	}

	// Clean stop: SIGTERM, exit 0.
	p.StopClean(30 * time.Second)
}
