package processor

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

// iotpipe_processor_ignored_fields_total counts the ignored fields of
// accepted readings only: a re-send (duplicate) and a late reading add
// nothing.
func TestTaskIgnoredFieldsCounter(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	eng, _ := NewEngine(goldenWindow)
	tk := newTask(0, eng, goldenTopics, m)
	feed := func(ts, wall time.Duration, seq int64, ignored int) {
		r := v1Reading("d1", ts, seq, 1)
		r.IgnoredFields = ignored
		tk.handle(&kgo.Record{Topic: "raw", Key: []byte("d1"), Value: schemas.AppendRaw(nil, r)}, goldenBase.Add(wall), func(*kgo.Record) {})
		tk.advance(goldenBase.Add(wall), func(*kgo.Record) {})
	}
	feed(time.Second, time.Second, 1, 2)
	feed(time.Second, 2*time.Second, 1, 2) // re-send
	feed(3*time.Second, 3*time.Second, 2, 0)
	feed(30*time.Second, 30*time.Second, 3, 1)
	feed(4*time.Second, 31*time.Second, 4, 5) // late
	if got := testutil.ToFloat64(m.ignoredFields); got != 3 {
		t.Errorf("ignored_fields_total %v, want 3 (2 + 0 + 1)", got)
	}
	if d, l := testutil.ToFloat64(m.duplicates), testutil.ToFloat64(m.dropped.WithLabelValues(string(schemas.ReasonLate))); d != 1 || l != 1 {
		t.Errorf("duplicates %v, late %v; want 1, 1", d, l)
	}
}
