package lake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// Unit tests of the upload loop's ordering, in milliseconds: the real Sink
// against an in-memory objectStore and an in-process Kafka (kfake), which
// here is only plumbing for the consumer group and its offset commits.
// The crash tests (crash_integration_test.go) do the same against the real
// servers with SIGKILL.

// event is one step the sink took, in the order it took them.
type event struct {
	op     string // "put", "delete" or "commit"
	key    string // object key (put, delete)
	offset int64  // committed offset (commit)
}

// journal records the sink's steps on the store and on Kafka in one
// order, and can "crash" the sink: once the step crashAt matches, every
// later operation fails, as if the process had died there. With
// crashBefore, the matching step itself is not done (only for commits).
type journal struct {
	mu          sync.Mutex
	events      []event
	crashAt     func(event) bool
	crashBefore bool
	frozen      bool
}

// add records e; it returns true when e must not be done (the sink has
// crashed).
func (j *journal) add(e event) (refused bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.frozen {
		return true
	}
	if j.crashAt != nil && j.crashAt(e) {
		j.frozen = true
		if j.crashBefore {
			return true
		}
	}
	j.events = append(j.events, e)
	return false
}

func (j *journal) isFrozen() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.frozen
}

func (j *journal) snapshot() []event {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

var errFrozen = errors.New("memstore: the sink crashed here")

// memStore is an objectStore in memory. Several stores (one per sink run)
// may share one bucket.
type memStore struct {
	b *bucket
	j *journal
}

type bucket struct {
	mu      sync.Mutex
	objs    map[string][]byte
	intents map[string][]byte // every intent ever stored, deleted or not
}

func newBucket() *bucket {
	return &bucket{objs: map[string][]byte{}, intents: map[string][]byte{}}
}

func (s *memStore) Put(_ context.Context, key string, data []byte) error {
	if s.j.isFrozen() {
		return errFrozen
	}
	s.b.mu.Lock()
	s.b.objs[key] = slices.Clone(data)
	if strings.Contains(key, "/_intents/") {
		s.b.intents[key] = slices.Clone(data)
	}
	s.b.mu.Unlock()
	if s.j.add(event{op: "put", key: key}) {
		return errFrozen
	}
	return nil
}

func (s *memStore) Get(_ context.Context, key string) ([]byte, error) {
	if s.j.isFrozen() {
		return nil, errFrozen
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	d, ok := s.b.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, errNotFound)
	}
	return slices.Clone(d), nil
}

func (s *memStore) Delete(_ context.Context, key string) error {
	if s.j.isFrozen() {
		return errFrozen
	}
	s.b.mu.Lock()
	delete(s.b.objs, key)
	s.b.mu.Unlock()
	s.j.add(event{op: "delete", key: key})
	return nil
}

func (s *memStore) List(_ context.Context, prefix string) ([]string, error) {
	if s.j.isFrozen() {
		return nil, errFrozen
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	var keys []string
	for k := range s.b.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (s *memStore) Ping(context.Context) error { return nil }

// fakeKafka is a kfake cluster with the raw and DLQ topics, n readings
// (two measurements each) in raw's single partition, and every offset
// commit recorded in the journal of the run in progress.
type fakeKafka struct {
	c   *kfake.Cluster
	mu  sync.Mutex
	j   *journal
	raw string
}

const orderRecords = 600

func newFakeKafka(t *testing.T) *fakeKafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "raw", "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	fk := &fakeKafka{c: c, raw: "raw"}
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		fk.mu.Lock()
		j := fk.j
		fk.mu.Unlock()
		for _, tp := range req.(*kmsg.OffsetCommitRequest).Topics {
			for _, p := range tp.Partitions {
				if j != nil && j.add(event{op: "commit", offset: p.Offset}) {
					// The sink died before it sent the commit.
					return nil, errFrozen, true
				}
			}
		}
		return nil, nil, false // kfake commits it
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := range orderRecords {
		// A minute apart: a batch of 150 records spans three hours, so
		// it has several objects.
		r := &schemas.Reading{DeviceID: fmt.Sprintf("dev-%d", i%7), EventTime: base.Add(time.Duration(i) * time.Minute),
			ReceivedTime: base.Add(time.Duration(i) * time.Minute), Seq: int64(i), HasSeq: true,
			Measurements: []schemas.Measurement{{Name: "temp", Value: float64(i)}, {Name: "humidity", Value: 50}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
		rec.Topic = fk.raw
		recs = append(recs, rec)
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return fk
}

// run runs one sink over the fake Kafka and the bucket, recording into j,
// until done(j) holds (then a clean stop) or j freezes (then a crash: the
// sink is stopped at once, nothing more reaches the store).
func (fk *fakeKafka) run(t *testing.T, b *bucket, j *journal, done func([]event) bool) {
	t.Helper()
	fk.mu.Lock()
	fk.j = j
	fk.mu.Unlock()
	cfg := validConfig()
	cfg.Kafka.Brokers = fk.c.ListenAddrs()
	cfg.RawTopic, cfg.MetricsTopic, cfg.DLQTopic = fk.raw, "-", "dlq"
	cfg.Group, cfg.Prefix = "lake-order", "lake/"
	cfg.MaxRows = 300 // 150 records a batch
	cfg.MaxAge = time.Hour
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	s, err := newSink(cfg, service.Deps{}, &memStore{b: b, j: j})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !j.isFrozen() && !done(j.snapshot()) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the sink did not get there within 30s; steps: %v", j.snapshot())
		}
		select {
		case err := <-runErr:
			t.Fatalf("Run ended early: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	if j.isFrozen() {
		// A crash: abandon the uploads at once (the hard stop), as a
		// killed process would.
		s.cfg.ShutdownTimeout = 0
	}
	cancel()
	if err := <-runErr; err != nil && !j.isFrozen() {
		t.Fatalf("Run: %v", err)
	}
	fk.mu.Lock()
	fk.j = nil
	fk.mu.Unlock()
}

// inputCommitted is a done condition: the whole input is committed.
func inputCommitted(ev []event) bool {
	return slices.ContainsFunc(ev, func(e event) bool { return e.op == "commit" && e.offset == orderRecords })
}

// checkOrder checks, for every batch of a run, intent → objects → commit
// → intent deletion.
func checkOrder(t *testing.T, b *bucket, ev []event) {
	t.Helper()
	at := func(match func(event) bool) int { return slices.IndexFunc(ev, match) }
	intents := 0
	for i, e := range ev {
		if e.op != "put" || !strings.Contains(e.key, "/_intents/") {
			continue
		}
		intents++
		body := findIntentBody(t, b, ev, i)
		for _, k := range body.Keys {
			if p := at(func(x event) bool { return x.op == "put" && x.key == k }); p < i {
				t.Errorf("object %s stored at step %d, before its intent (step %d)", k, p, i)
			}
		}
		c := at(func(x event) bool { return x.op == "commit" && x.offset == body.End })
		if c < 0 {
			t.Errorf("intent %s: its end offset %d was never committed", e.key, body.End)
		}
		if len(body.Keys) == 0 {
			t.Errorf("intent %s names no object", e.key)
		}
		for _, k := range body.Keys {
			if p := at(func(x event) bool { return x.op == "put" && x.key == k }); c < p {
				t.Errorf("offset %d committed at step %d, before object %s (step %d)", body.End, c, k, p)
			}
		}
		if d := at(func(x event) bool { return x.op == "delete" && x.key == e.key }); d >= 0 && d < c {
			t.Errorf("intent %s deleted at step %d, before the commit (step %d)", e.key, d, c)
		}
	}
	if intents < 3 {
		t.Errorf("%d batches: the test needs several", intents)
	}
}

// findIntentBody returns the intent stored at step i.
func findIntentBody(t *testing.T, b *bucket, ev []event, i int) intent {
	t.Helper()
	b.mu.Lock()
	data := b.intents[ev[i].key]
	b.mu.Unlock()
	var in intent
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatalf("intent %s: %v", ev[i].key, err)
	}
	return in
}

// checkExactlyOnceInBucket reads every readings object of the bucket and
// checks that each input offset is there exactly once per measurement,
// and that no intent is left.
func checkExactlyOnceInBucket(t *testing.T, b *bucket) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	rows := map[int64]int{}
	for k, data := range b.objs {
		if strings.Contains(k, "/_intents/") {
			t.Errorf("intent %s left after a clean stop", k)
			continue
		}
		tbl, _ := readBack(t, data)
		idx := tbl.Schema().FieldIndices(colOffset)
		if len(idx) != 1 {
			t.Fatalf("%s: no %s column", k, colOffset)
		}
		for _, ch := range tbl.Column(idx[0]).Data().Chunks() {
			for _, off := range ch.(*array.Int64).Int64Values() {
				rows[off]++
			}
		}
	}
	for off := range int64(orderRecords) {
		if rows[off] != 2 {
			t.Errorf("offset %d: %d rows, want 2 (one per measurement)", off, rows[off])
		}
	}
	if len(rows) != orderRecords {
		t.Errorf("%d offsets in the lake, want %d", len(rows), orderRecords)
	}
}

func TestUploadOrder(t *testing.T) {
	fk := newFakeKafka(t)
	b := newBucket()
	j := &journal{}
	fk.run(t, b, j, inputCommitted)
	checkOrder(t, b, j.snapshot())
	checkExactlyOnceInBucket(t, b)
}

// A run crashes right after one step of the second batch's upload; the
// next run recovers from what is in the bucket and the committed offset.
// Whatever the step, the lake ends with every record exactly once.
func TestCrashBetweenSteps(t *testing.T) {
	isIntent := func(e event) bool { return e.op == "put" && strings.Contains(e.key, "/_intents/") }
	isObject := func(e event) bool { return e.op == "put" && !strings.Contains(e.key, "/_intents/") }
	isCommit := func(e event) bool { return e.op == "commit" }
	// nth is true at the n-th event matching f.
	nth := func(n int, f func(event) bool) func(event) bool {
		seen := 0
		return func(e event) bool {
			if !f(e) {
				return false
			}
			seen++
			return seen == n
		}
	}
	// firstObjectOfBatch2 is true at the first object stored after the
	// second intent (batch 2 has several objects: a crash mid-upload).
	firstObjectOfBatch2 := func() func(event) bool {
		second := nth(2, isIntent)
		in2 := false
		return func(e event) bool {
			if second(e) {
				in2 = true
				return false
			}
			return in2 && isObject(e)
		}
	}
	for _, tc := range []struct {
		name   string
		at     func(event) bool
		before bool
	}{
		{"after the intent", nth(2, isIntent), false},
		{"between objects", firstObjectOfBatch2(), false},
		{"after the objects, before the commit", nth(2, isCommit), true},
		{"after the commit, before the intent is deleted", nth(1, isCommit), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fk := newFakeKafka(t)
			b := newBucket()
			crashed := &journal{crashAt: tc.at, crashBefore: tc.before}
			fk.run(t, b, crashed, func([]event) bool { return false })
			if !crashed.isFrozen() {
				t.Fatal("the run did not reach the crash point")
			}
			j := &journal{}
			fk.run(t, b, j, inputCommitted)
			checkExactlyOnceInBucket(t, b)
			t.Logf("crashed after %d steps; the recovering run took %d", len(crashed.snapshot()), len(j.snapshot()))
		})
	}
}
