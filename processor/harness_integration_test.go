//go:build integration

package processor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// topics creates the five topics of one test: raw, readings and changelog
// with parts partitions.
func testTopics(t *testing.T, env *testenv.Env, parts int32) Topics {
	return Topics{
		Raw:       env.Topic(t, parts, nil),
		Metrics:   env.Topic(t, 3, nil),
		DLQ:       env.Topic(t, 1, nil),
		Changelog: env.Topic(t, parts, map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "60000"}),
		Readings:  env.Topic(t, parts, nil),
	}
}

// workload is a generated input: readings of devices taking a reading
// every step of event time, produced in rounds (one reading per device)
// shuffled within two rounds, with some MQTT redeliveries and some
// undecodable records.
type workload struct {
	readings []*schemas.Reading // every valid reading produced (duplicates included)
	invalid  int
	records  int
}

func genWorkload(rng *rand.Rand, n, devices int, t0 time.Time, step time.Duration) (*workload, [][]*kgo.Record) {
	w := &workload{}
	var batches [][]*kgo.Record
	seq := make([]int64, devices)
	var prev []*kgo.Record
	for round := 0; len(w.readings) < n; round++ {
		var batch []*kgo.Record
		for d := 0; d < devices && len(w.readings) < n; d++ {
			seq[d]++
			et := t0.Add(time.Duration(round)*step + time.Duration(rng.IntN(int(step/time.Microsecond)))*time.Microsecond).UTC().Truncate(time.Microsecond)
			r := &schemas.Reading{DeviceID: "dev-" + strconv.Itoa(d), EventTime: et, ReceivedTime: et, Seq: seq[d], HasSeq: true,
				Measurements: []schemas.Measurement{{Name: "hum", Value: 40 + rng.NormFloat64()*5}, {Name: "temp", Value: 20 + rng.NormFloat64()*3}}}
			if rng.IntN(50) == 0 {
				seq[d]++ // a message the device lost: a seq gap
			}
			w.readings = append(w.readings, r)
			rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
			batch = append(batch, rec)
			if rng.IntN(100) == 0 { // redelivered by MQTT: the same record again, a bit later
				w.readings = append(w.readings, r)
				dup := *rec
				prev = append(prev, &dup)
			}
		}
		if rng.IntN(40) == 0 {
			w.invalid++
			batch = append(batch, &kgo.Record{Key: []byte("dev-0"), Value: []byte(`{"schema_version":1,"device_id":`)})
		}
		batch = append(batch, prev...)
		prev = nil
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		w.records += len(batch)
		batches = append(batches, batch)
	}
	return w, batches
}

// produce writes the batches to topic at about rate records/s.
func produce(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, batches [][]*kgo.Record, rate float64) error {
	start := time.Now()
	sent := 0
	for _, b := range batches {
		for _, r := range b {
			r.Topic = topic
		}
		if err := cl.ProduceSync(ctx, b...).FirstErr(); err != nil {
			return err
		}
		sent += len(b)
		if ahead := time.Duration(float64(sent)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
			select {
			case <-time.After(ahead):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// outputReader reads the metrics and DLQ topics read_committed and keeps
// the last revision of each window, failing on a revision seen twice.
type outputReader struct {
	mu      sync.Mutex
	fin     *finals
	late    int
	invalid int
	records int
	// readings counts the records of the readings topic per identity
	// (device, event time, seq).
	readings map[string]int
	err      error
}

func readingID(r *schemas.Reading) string {
	return fmt.Sprintf("%s|%d|%d|%t", r.DeviceID, r.EventTime.UnixMicro(), r.Seq, r.HasSeq)
}

func readOutputs(ctx context.Context, t *testing.T, env *testenv.Env, topics Topics) *outputReader {
	o := &outputReader{fin: newFinals(), readings: map[string]int{}}
	consume := []string{topics.Metrics, topics.DLQ}
	if topics.Readings != SkipTopic && topics.Readings != "" {
		consume = append(consume, topics.Readings)
	}
	cl := env.Kafka(t, kgo.ConsumeTopics(consume...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	go func() {
		var dec schemas.MetricsDecoder
		var rec schemas.MetricsRecord
		var rdec schemas.RawDecoder
		var rd schemas.Reading
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			o.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				o.records++
				if r.Topic == topics.DLQ {
					d, err := schemas.RecordDeadLetter(r)
					switch {
					case err != nil:
						o.err = err
					case d.Reason == schemas.ReasonLate:
						o.late++
					case d.Reason == schemas.ReasonInvalidRecord:
						o.invalid++
					}
					return
				}
				if r.Topic == topics.Readings {
					if err := rdec.Decode(r.Value, &rd); err != nil {
						o.err = err
						return
					}
					o.readings[readingID(&rd)]++
					return
				}
				if err := dec.Decode(r.Value, &rec); err != nil {
					o.err = err
					return
				}
				if err := o.fin.add(&rec); err != nil && o.err == nil {
					o.err = err // a revision emitted twice: not exactly once
				}
			})
			o.mu.Unlock()
		}
	}()
	return o
}

// waitFinal polls until the final aggregates equal the batch computation.
func (o *outputReader) waitFinal(t *testing.T, w *workload, size time.Duration, timeout time.Duration) {
	t.Helper()
	want := batchCompute(w.readings, size)
	testenv.Eventually(t, timeout, 500*time.Millisecond, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.err != nil {
			t.Fatalf("output: %v", o.err)
		}
		if errs := o.fin.compare(want); len(errs) > 0 {
			return errs[0]
		}
		if o.invalid != w.invalid || o.late != 0 {
			return errorf("DLQ: %d invalid_record (want %d), %d late (want 0)", o.invalid, w.invalid, o.late)
		}
		// The readings topic: every distinct reading once, nothing else.
		distinct := map[string]bool{}
		for _, r := range w.readings {
			id := readingID(r)
			distinct[id] = true
			if n := o.readings[id]; n != 1 {
				return errorf("readings topic holds reading %s %d times, want once", id, n)
			}
		}
		if len(o.readings) != len(distinct) {
			return errorf("readings topic holds %d distinct readings, want %d", len(o.readings), len(distinct))
		}
		return nil
	})
	t.Logf("final aggregates of %d metric windows and %d activity windows equal the batch computation; %d output records; DLQ %d invalid, %d late; readings topic: %d distinct readings once each (input %d readings, duplicates included)",
		len(want.metrics), len(want.activity), o.records, o.invalid, o.late, len(o.readings), len(w.readings))
}

type errString string

func (e errString) Error() string { return string(e) }

func errorf(format string, a ...any) error { return errString(fmt.Sprintf(format, a...)) }
