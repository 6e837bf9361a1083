//go:build integration

package lake

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestS3Outage stops the (private) object store for 30 s while readings
// keep arriving: the sink retries, stops consuming with bounded memory,
// resumes, and the lake ends up with every reading exactly once.
func TestS3Outage(t *testing.T) {
	p := testenv.StartPrivate(t, "s3")
	env := p.Env
	raw, dlq := env.Topic(t, 3, nil), env.Topic(t, 1, nil)
	bucket, group := env.Bucket(t), env.Group(t)
	cfg := testConfig(t, env, bucket, raw, "-", dlq, group)
	cfg.MaxAge = 300 * time.Millisecond
	cfg.MaxBytes = 256 << 10
	cfg.MaxBuffered = 512 << 10 // small, so that the outage fills it
	cfg.RetryMax = 2 * time.Second
	_, reg, stop := runSink(t, cfg)

	cl := env.Kafka(t)
	base := pastBase(5) // 60k readings × 5 s ≈ 3.5 days
	const n, chunk = 60_000, 500
	ctx := testenv.Context(t, 5*time.Minute)
	produced := make(chan struct{})
	go func() { // load for the whole test: ~1.5k readings/s
		defer close(produced)
		for i := 0; i < n && ctx.Err() == nil; i += chunk {
			produceReadings(t, cl, raw, i, chunk, 100, base, 5*time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(330 * time.Millisecond):
			}
		}
	}()

	rowsTotal := func() float64 { return metricValue(reg, "iotpipe_lake_rows_total", "readings") }
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if rowsTotal() == 0 {
			return errorf("nothing uploaded yet")
		}
		return nil
	})
	p.Stop("s3")
	stoppedAt := time.Now()
	rowsAtStop := rowsTotal()
	maxBuffered := 0.0
	outage := time.NewTimer(30 * time.Second) // the outage's length, not a synchronisation
	tick := time.NewTicker(200 * time.Millisecond)
watch:
	for {
		select {
		case <-outage.C:
			break watch
		case <-tick.C:
			b := metricValue(reg, "iotpipe_lake_buffered_bytes", "")
			maxBuffered = max(maxBuffered, b)
			if b > float64(cfg.MaxBuffered) {
				t.Errorf("buffered %v bytes > MaxBuffered %d", b, cfg.MaxBuffered)
			}
		}
	}
	tick.Stop()
	retries := metricValue(reg, "iotpipe_lake_retries_total", "put") +
		metricValue(reg, "iotpipe_lake_retries_total", "intent")
	rowsDuring := rowsTotal() - rowsAtStop
	p.Start("s3")
	t.Logf("S3 down %s: %v upload retries, max buffered %v bytes (limit %d), %v rows committed during the outage",
		time.Since(stoppedAt).Round(time.Second), retries, maxBuffered, cfg.MaxBuffered, rowsDuring)
	if retries == 0 {
		t.Errorf("no upload retries during the outage")
	}
	<-produced
	if t.Failed() {
		t.FailNow()
	}
	testenv.Eventually(t, 2*time.Minute, 250*time.Millisecond, func() error {
		return committedAll(ctx, env, t, group, raw)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := offsetsOf(t, env, raw, n)
	lake := readLake(t, env.S3(t), bucket, "lake/")
	rows := readingRows(t, lake["readings"])
	checkExactlyOnce(t, rows, want)
	t.Logf("after the outage: %d readings, %d rows in %d files, each exactly once", n, len(rows), lake["readings"].Files)
}

// TestQuietPartition checks that the rows of a partition that gets a few
// records and then nothing reach the lake within MaxAge (plus the upload).
func TestQuietPartition(t *testing.T) {
	env := testenv.Load(t)
	raw, dlq := env.Topic(t, 1, nil), env.Topic(t, 1, nil)
	bucket, group := env.Bucket(t), env.Group(t)
	cfg := testConfig(t, env, bucket, raw, "-", dlq, group)
	cfg.MaxAge = 2 * time.Second
	runSink(t, cfg)
	ctx := testenv.Context(t, time.Minute)
	adm := env.KafkaAdmin(t)
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return err
		}
		if g := gs[group]; g.State != "Stable" || len(g.Members) == 0 {
			return errorf("group %s: %s", group, g.State)
		}
		return nil
	})
	cl := env.Kafka(t)
	t0 := time.Now()
	produceReadings(t, cl, raw, 0, 7, 3, pastBase(1), time.Second)
	if t.Failed() {
		t.FailNow()
	}
	s3 := env.S3(t)
	var seen time.Duration
	testenv.Eventually(t, cfg.MaxAge+20*time.Second, 50*time.Millisecond, func() error {
		n := 0
		for o := range s3.ListObjects(ctx, bucket, listOpts("lake/readings/")) {
			if o.Err != nil {
				return o.Err
			}
			n++
		}
		if n == 0 {
			return errorf("no readings file yet after %s", time.Since(t0))
		}
		seen = time.Since(t0)
		return nil
	})
	t.Logf("quiet partition: rows visible %s after produce (max age %s)", seen.Round(time.Millisecond), cfg.MaxAge)
	if limit := cfg.MaxAge + 3*time.Second; seen > limit {
		t.Errorf("rows took %s to appear, want <= max age + upload (%s)", seen, limit)
	}
	want := offsetsOf(t, env, raw, 7)
	checkExactlyOnce(t, readingRows(t, readLake(t, s3, bucket, "lake/")["readings"]), want)
	_ = kgo.Record{}
}
