//go:build integration

package kafka3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/schemas"
)

func full() bool { return os.Getenv("IOTPIPE_FULL") == "1" }

// stage is one iotpipe command run as a child process, as an operator runs
// it; the test never restarts it, so an exit is a failure to recover.
type stage struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startStage(t *testing.T, bin string, env []string, name string, args ...string) *stage {
	t.Helper()
	s := &stage{name: name, log: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("--- %s log (tail):\n%s", name, tail(s.log.String(), 6000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// running fails the test when the stage has exited.
func (s *stage) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("%s exited by itself (%v): a stage must ride out a broker failure\n%s", s.name, err, tail(s.log.String(), 4000))
	default:
	}
}

// stop sends SIGTERM and expects exit code 0 within the bound.
func (s *stage) stop(t *testing.T, within time.Duration) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", s.name, err, tail(s.log.String(), 3000))
		}
	case <-time.After(within):
		t.Errorf("%s still running %s after SIGTERM", s.name, within)
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// sent is the fleet's own record of what the broker acknowledged (PUBACK),
// parsed from the payloads it published: the independent reference every
// store is compared with.
type sent struct {
	mu       sync.Mutex
	valid    map[msgID]reading
	invalid  int64
	window   int64 // µs
	parseErr error
}

type msgID struct {
	device string
	seq    int64
}

type reading struct {
	at     time.Time
	values map[string]float64
}

func newSent(window time.Duration) *sent {
	return &sent{valid: map[msgID]reading{}, window: window.Microseconds()}
}

// onAck is devicesim's OnAck: payloads are ValidRFC3339Metrics,
// {"seq":N,"ts":"<RFC 3339>","metrics":{...}}, parsed here with
// encoding/json (no project code).
func (s *sent) onAck(m *devicesim.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !m.Kind.Valid() {
		s.invalid++
		return
	}
	var p struct {
		Seq     int64              `json:"seq"`
		TS      time.Time          `json:"ts"`
		Metrics map[string]float64 `json:"metrics"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		s.parseErr = fmt.Errorf("payload %q: %w", m.Payload, err)
		return
	}
	s.valid[msgID{m.DeviceID, p.Seq}] = reading{at: p.TS, values: p.Metrics}
}

type windowKey struct {
	device, metric string
	start          int64 // µs since the epoch
}

type agg struct {
	count    int64
	sum      float64
	min, max float64
}

// windows recomputes every window aggregate from what was acknowledged.
func (s *sent) windows() map[windowKey]agg {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[windowKey]agg{}
	for id, r := range s.valid {
		us := r.at.UnixMicro()
		start := us - ((us%s.window)+s.window)%s.window
		for name, v := range r.values {
			k := windowKey{id.device, name, start}
			a, ok := out[k]
			if !ok {
				a = agg{min: v, max: v}
			}
			a.count++
			a.sum += v
			a.min, a.max = math.Min(a.min, v), math.Max(a.max, v)
			out[k] = a
		}
	}
	return out
}

func (s *sent) counts() (valid, invalid, values int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.valid {
		values += int64(len(r.values))
	}
	return int64(len(s.valid)), s.invalid, values
}

// readRaw reads a topic of canonical readings from the start (read
// committed) until it has been quiet for 3 s, and returns how often each
// device message is in it.
func readRaw(t *testing.T, ctx context.Context, cl *kgo.Client) map[msgID]int {
	t.Helper()
	seen := map[msgID]int{}
	idle := time.Now()
	for time.Since(idle) < 3*time.Second {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("read %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			idle = time.Now()
			var rd schemas.Reading
			if err := schemas.DecodeRaw(r.Value, &rd); err != nil {
				t.Errorf("raw record %s/%d@%d does not decode: %v", r.Topic, r.Partition, r.Offset, err)
				return
			}
			seen[msgID{rd.DeviceID, rd.Seq}]++
		})
	}
	return seen
}

// countRecords counts a topic's committed records.
func countRecords(t *testing.T, ctx context.Context, cl *kgo.Client) int64 {
	t.Helper()
	var n int64
	idle := time.Now()
	for time.Since(idle) < 3*time.Second {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		if c := fs.NumRecords(); c > 0 {
			n += int64(c)
			idle = time.Now()
		}
	}
	return n
}

// checkMetrics compares device_metrics with the recomputation: every
// window present once with the same count, sum, min and max, none extra.
func checkMetrics(ctx context.Context, pg *pgxpool.Pool, schema string, want map[windowKey]agg) error {
	rows, err := pg.Query(ctx, fmt.Sprintf(`SELECT device_id, metric, bucket, count, sum, min, max FROM %s.device_metrics`, schema))
	if err != nil {
		return err
	}
	defer rows.Close()
	got := map[windowKey]agg{}
	for rows.Next() {
		var k windowKey
		var a agg
		var bucket time.Time
		if err := rows.Scan(&k.device, &k.metric, &bucket, &a.count, &a.sum, &a.min, &a.max); err != nil {
			return err
		}
		k.start = bucket.UnixMicro()
		got[k] = a
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s/%s@%s (count %d)", k.device, k.metric, time.UnixMicro(k.start).UTC().Format(time.TimeOnly), w.count))
		case g.count != w.count || !near(g.sum, w.sum) || g.min != w.min || g.max != w.max:
			diffs = append(diffs, fmt.Sprintf("%s/%s@%s: got count %d sum %g min %g max %g, want %d %g %g %g", k.device, k.metric,
				time.UnixMicro(k.start).UTC().Format(time.TimeOnly), g.count, g.sum, g.min, g.max, w.count, w.sum, w.min, w.max))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %s/%s@%s (count %d)", k.device, k.metric, time.UnixMicro(k.start).UTC().Format(time.TimeOnly), g.count))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("%d of %d windows differ (of %d in the table), e.g.:\n  %s", len(diffs), len(want), len(got), strings.Join(diffs[:min(len(diffs), 10)], "\n  "))
	}
	return nil
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// lakeRows sums the row counts of the Parquet files under prefix, read
// from their footers.
func lakeRows(ctx context.Context, cl *minio.Client, bucket, prefix string) (int64, error) {
	var total int64
	for obj := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return 0, obj.Err
		}
		o, err := cl.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			return 0, err
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(o)
		_ = o.Close()
		if err != nil {
			return 0, err
		}
		r, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", obj.Key, err)
		}
		total += r.NumRows()
		_ = r.Close()
	}
	return total, nil
}

// endOffsets returns the end offset of each partition of topic; a
// partition without a reachable leader is missing.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) map[int32]int64 {
	out := map[int32]int64{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return out
	}
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

// committed returns the group's committed offsets on topic.
func committed(ctx context.Context, adm *kadm.Client, group, topic string) map[int32]int64 {
	out := map[int32]int64{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return out
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

// atLeast reports whether have reaches want on every partition of want.
func atLeast(have, want map[int32]int64) bool {
	for p, w := range want {
		if have[p] < w {
			return false
		}
	}
	return true
}

// beyond reports whether have is past want on every partition of want.
func beyond(have, want map[int32]int64) bool {
	for p, w := range want {
		h, ok := have[p]
		if !ok || h <= w {
			return false
		}
	}
	return true
}
