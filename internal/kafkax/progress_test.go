package kafkax

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func fetch(topic string, part int32, hwm int64, t0 time.Time, offsets ...int64) kgo.Fetches {
	fp := kgo.FetchPartition{Partition: part, HighWatermark: hwm}
	for _, o := range offsets {
		fp.Records = append(fp.Records, &kgo.Record{Topic: topic, Partition: part, Offset: o,
			Timestamp: t0.Add(time.Duration(o) * time.Second)})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{fp}}}}}
}

func newTestProgress(t *testing.T, stall time.Duration) (*Progress, *clock, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := NewProgress("iotpipe", "test", reg, stall)
	c := &clock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	p.now = c.now
	return p, c, reg
}

func gauge(t *testing.T, v *prometheus.GaugeVec, labels ...string) float64 {
	t.Helper()
	return testutil.ToFloat64(v.WithLabelValues(labels...))
}

func TestProgressLagAndCommit(t *testing.T) {
	p, c, _ := newTestProgress(t, time.Minute)
	t0 := c.t.Add(-100 * time.Second) // record at offset o has time t0+o s

	// Fetched 10..14 of a partition that ends at 30: 20 records wait from
	// offset 10 on (where this consumer started).
	p.Fetched(fetch("raw", 3, 30, t0, 10, 11, 12, 13, 14))
	if got := gauge(t, p.recs, "raw", "3"); got != 20 {
		t.Fatalf("lag records after the first fetch = %v, want 20", got)
	}
	if got := gauge(t, p.secs, "raw", "3"); got != 90 { // record 10 is 90 s old
		t.Fatalf("lag seconds = %v, want 90", got)
	}
	p.Fetched(fetch("raw", 3, 31, t0, 15, 16))
	// A commit of the first fetch: the oldest waiting record is 15.
	p.Committed("raw", 3, 15)
	if got := gauge(t, p.recs, "raw", "3"); got != 16 {
		t.Fatalf("lag records after commit at 15 = %v, want 16", got)
	}
	if got := gauge(t, p.secs, "raw", "3"); got != 85 {
		t.Fatalf("lag seconds after commit at 15 = %v, want 85", got)
	}
	// Everything up to the end committed: no lag, age 0.
	p.Fetched(fetch("raw", 3, 31, t0, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30))
	p.CommittedAll()
	if r, s := gauge(t, p.recs, "raw", "3"), gauge(t, p.secs, "raw", "3"); r != 0 || s != 0 {
		t.Fatalf("caught up: lag %v records, %v s; want 0, 0", r, s)
	}
	// A commit going backwards (a stale callback) changes nothing.
	p.Committed("raw", 3, 5)
	if r := gauge(t, p.recs, "raw", "3"); r != 0 {
		t.Fatalf("after a stale commit: lag %v, want 0", r)
	}
}

func TestProgressRewindAfterAbort(t *testing.T) {
	p, c, _ := newTestProgress(t, time.Minute)
	t0 := c.t.Add(-100 * time.Second)
	p.Fetched(fetch("raw", 0, 20, t0, 0, 1, 2))
	p.Committed("raw", 0, 3)
	p.Fetched(fetch("raw", 0, 20, t0, 3, 4, 5))
	p.Fetched(fetch("raw", 0, 20, t0, 6, 7))
	// The transaction aborted: the consumer reads 3.. again.
	p.Fetched(fetch("raw", 0, 20, t0, 3, 4))
	if got := gauge(t, p.secs, "raw", "0"); got != 97 {
		t.Fatalf("lag seconds after the rewind = %v, want 97 (record 3)", got)
	}
	p.CommittedAll() // commits what was (re)fetched: up to 5
	if got := gauge(t, p.recs, "raw", "0"); got != 15 {
		t.Fatalf("lag records = %v, want 15 (20 - 5)", got)
	}
}

func TestProgressStall(t *testing.T) {
	p, c, reg := newTestProgress(t, time.Minute)
	t0 := c.t
	// Idle for an hour with nothing waiting: not stalled.
	p.Fetched(fetch("raw", 1, 5, t0, 0, 1, 2, 3, 4))
	p.CommittedAll()
	c.t = c.t.Add(time.Hour)
	if err := p.Check(); err != nil {
		t.Fatalf("idle and caught up: %v", err)
	}
	// Input arrives; the stall clock starts when it starts waiting, not at
	// the last commit an hour ago.
	p.Fetched(fetch("raw", 1, 9, t0, 5, 6))
	if err := p.Check(); err != nil {
		t.Fatalf("input waiting for 0 s: %v", err)
	}
	c.t = c.t.Add(59 * time.Second)
	if err := p.Check(); err != nil {
		t.Fatalf("input waiting for 59 s: %v", err)
	}
	c.t = c.t.Add(2 * time.Second)
	err := p.Check()
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("input waiting 61 s with no commit: got %v, want ErrStalled", err)
	}
	if !strings.Contains(err.Error(), "4 records wait on raw/1") || !strings.Contains(err.Error(), "for 1m1s") {
		t.Fatalf("stall error does not say where and how long: %v", err)
	}
	if got := testutil.ToFloat64(p.stalled); got != 1 {
		t.Fatalf("stalled gauge = %v, want 1", got)
	}
	// Progress clears it.
	p.Committed("raw", 1, 6)
	if err := p.Check(); err != nil {
		t.Fatalf("after progress: %v", err)
	}
	if got := testutil.ToFloat64(p.stalled); got != 0 {
		t.Fatalf("stalled gauge after progress = %v, want 0", got)
	}
	// A revoked partition is forgotten, series included.
	p.Forget(map[string][]int32{"raw": {1}})
	n, err := testutil.GatherAndCount(reg, "iotpipe_test_consumer_lag_records")
	if err != nil || n != 0 {
		t.Fatalf("series after Forget: %d (%v), want 0", n, err)
	}
}

func TestProgressStallDisabled(t *testing.T) {
	p, c, _ := newTestProgress(t, 0)
	p.Fetched(fetch("raw", 0, 100, c.t, 0))
	c.t = c.t.Add(24 * time.Hour)
	if err := p.Check(); err != nil {
		t.Fatalf("stall detection off: %v", err)
	}
}

func TestProgressChunksBounded(t *testing.T) {
	p, c, _ := newTestProgress(t, time.Minute)
	for o := int64(0); o < 10*maxChunks; o++ {
		p.Fetched(fetch("raw", 0, 1<<20, c.t.Add(-time.Hour), o))
	}
	if n := len(p.parts[tp{"raw", 0}].chunks); n > maxChunks {
		t.Fatalf("%d chunks kept, want at most %d", n, maxChunks)
	}
	p.Committed("raw", 0, 10*maxChunks)
	if n := len(p.parts[tp{"raw", 0}].chunks); n != 0 {
		t.Fatalf("%d chunks after committing everything", n)
	}
}
