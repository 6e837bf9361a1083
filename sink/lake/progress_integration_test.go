//go:build integration

package lake

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestLagAndStall holds the sink's first commit at a failpoint on real
// Kafka and versitygw: while it is held, the consumer lag is every record
// produced, its age grows, and once the stall time has passed the
// "progress" readiness check fails naming the partition and the stalled
// gauge is 1; when the commit goes through, lag, age and stall go back to
// zero.
func TestLagAndStall(t *testing.T) {
	env := testenv.Load(t)
	raw, met, dlq := env.Topic(t, 1, nil), env.Topic(t, 1, nil), env.Topic(t, 1, nil)
	bucket, group := env.Bucket(t), env.Group(t)
	cl := env.Kafka(t)
	const n = 500
	produceReadings(t, cl, raw, 0, n, 10, pastBase(1), time.Second)
	produced := time.Now()

	cfg := testConfig(t, env, bucket, raw, met, dlq, group)
	cfg.MaxAge = 500 * time.Millisecond
	cfg.StallAfter = 2 * time.Second // stalled once nothing is committed for 2.5 s
	const hold = 12 * time.Second
	cfg.Failpoints = map[string]Failpoint{FailpointBeforeCommit: {Hit: 1, Pause: hold}}
	s, reg, stop := runSink(t, cfg)

	// Held before its first commit: all n records wait.
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if got := metricValue(reg, "iotpipe_lake_consumer_lag_records", raw); got != n {
			return fmt.Errorf("consumer_lag_records = %v, want %d", got, n)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		err := s.Checks()["progress"](context.Background())
		if !errors.Is(err, kafkax.ErrStalled) {
			return fmt.Errorf("progress check = %v, want a stall", err)
		}
		t.Logf("progress check while held: %v", err)
		if got := metricValue(reg, "iotpipe_lake_stalled", ""); got != 1 {
			return fmt.Errorf("stalled = %v, want 1", got)
		}
		return nil
	})
	// The records' Kafka timestamps are when they were produced: the age
	// is at least the time since then (minus clock rounding).
	if age, min := metricValue(reg, "iotpipe_lake_consumer_lag_seconds", raw), time.Since(produced).Seconds()-1; age < min {
		t.Fatalf("consumer_lag_seconds = %.1f, want at least %.1f", age, min)
	}

	// The failpoint lets go: the commit clears everything.
	testenv.Eventually(t, hold+30*time.Second, 200*time.Millisecond, func() error {
		if err := s.Checks()["progress"](context.Background()); err != nil {
			return err
		}
		if got := metricValue(reg, "iotpipe_lake_consumer_lag_records", raw); got != 0 {
			return fmt.Errorf("consumer_lag_records = %v after the commit, want 0", got)
		}
		if got := metricValue(reg, "iotpipe_lake_consumer_lag_seconds", raw); got != 0 {
			return fmt.Errorf("consumer_lag_seconds = %v after the commit, want 0", got)
		}
		if got := metricValue(reg, "iotpipe_lake_stalled", ""); got != 0 {
			return fmt.Errorf("stalled = %v after the commit, want 0", got)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
