//go:build integration

package lake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// repoRoot is the module root, found from this file.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	pyOnce sync.Once
	pyPath string
	pyErr  error
)

// python returns the interpreter of the venv with pyarrow, installed on
// first use by scripts/pyenv.sh. A missing reader fails the test.
func python(t testing.TB) string {
	t.Helper()
	pyOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "pyenv.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		pyPath, pyErr = strings.TrimSpace(string(out)), err
	})
	if pyErr != nil || pyPath == "" {
		t.Fatalf("independent Parquet reader (pyarrow) unavailable: scripts/pyenv.sh: %v", pyErr)
	}
	return pyPath
}

// genReading is reading i of a deterministic test stream: devices d0..d(n-1),
// event times step apart, two or three measurements, some
// without seq, some with tags.
func genReading(i, devices int, base time.Time, step time.Duration) *schemas.Reading {
	at := time.Duration(i) * step
	r := &schemas.Reading{
		DeviceID:     fmt.Sprintf("dev-%04d", i%devices),
		EventTime:    base.Add(at).Add(time.Duration(i%997) * time.Microsecond),
		ReceivedTime: base.Add(at + 20*time.Millisecond),
		Seq:          int64(i / devices),
		HasSeq:       i%11 != 0,
		Measurements: []schemas.Measurement{
			{Name: "humidity", Value: 40 + float64(i%500)/10},
			{Name: "temp", Value: 21.5 + rand.NormFloat64()},
		},
	}
	if !r.HasSeq {
		r.Seq = 0
	}
	if i%3 == 0 {
		r.Measurements = append(r.Measurements, schemas.Measurement{Name: "vbat", Value: 3.7 - float64(i%100)/1000})
	}
	if i%13 == 0 {
		r.Tags = map[string]string{"site": "north", "fw": "1.2.3"}
	}
	return r
}

// produceReadings writes n readings to topic (key = device id) and returns
// them by value encoding, so that tests can match rows to input.
func produceReadings(t testing.TB, cl *kgo.Client, topic string, from, n, devices int, base time.Time, step time.Duration) []*schemas.Reading {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	out := make([]*schemas.Reading, 0, n)
	recs := make([]*kgo.Record, 0, 1000)
	flush := func() {
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Errorf("produce: %v", err) // not Fatal: also called from goroutines
		}
		recs = recs[:0]
	}
	for i := from; i < from+n && !t.Failed(); i++ {
		r := genReading(i, devices, base, step)
		out = append(out, r)
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
		rec.Topic = topic
		recs = append(recs, rec)
		if len(recs) == cap(recs) {
			flush()
		}
	}
	flush()
	return out
}

// lakeRow is one readings row as the independent reader returns it.
type lakeRow struct {
	Time      int64
	Device    string
	Metric    string
	Value     float64
	Seq       *int64
	Received  int64
	Tags      *string
	Partition int32
	Offset    int64
	File      string
}

type readback struct {
	Files      int                  `json:"files"`
	RowGroups  int                  `json:"row_groups"`
	Columns    map[string][2]string `json:"columns"`
	Arrow      map[string]string    `json:"arrow"`
	Codecs     []string             `json:"codecs"`
	Dictionary []string             `json:"dictionary"`
	Rows       [][]any              `json:"rows"`
	Names      []string             `json:"names"`
	HiveFields []string             `json:"hive_fields"`
	HiveRows   int                  `json:"hive_rows"`
}

// downloadLake copies every object under prefix except intents to a
// temporary folder and returns it.
func downloadLake(t testing.TB, cl *minio.Client, bucket, prefix string) string {
	t.Helper()
	ctx := testenv.Context(t, 2*time.Minute)
	dir := t.TempDir()
	for o := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list lake: %v", o.Err)
		}
		rel := strings.TrimPrefix(o.Key, prefix)
		if strings.HasPrefix(rel, "_") {
			continue
		}
		if err := cl.FGetObject(ctx, bucket, o.Key, filepath.Join(dir, rel), minio.GetObjectOptions{}); err != nil {
			t.Fatalf("download %s: %v", o.Key, err)
		}
	}
	return dir
}

// readLake reads the lake back with pyarrow.
func readLake(t testing.TB, cl *minio.Client, bucket, prefix string) map[string]*readback {
	t.Helper()
	dir := downloadLake(t, cl, bucket, prefix)
	cmd := exec.Command(python(t), filepath.Join(repoRoot(t), "sink", "lake", "testdata", "readback.py"), dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pyarrow readback: %v", err)
	}
	res := map[string]*readback{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("readback output: %v", err)
	}
	return res
}

func readingRows(t testing.TB, rb *readback) []lakeRow {
	t.Helper()
	if rb == nil {
		return nil
	}
	rows := make([]lakeRow, 0, len(rb.Rows))
	for _, r := range rb.Rows {
		lr := lakeRow{
			Time: int64(r[0].(float64)), Device: r[1].(string), Metric: r[2].(string), Value: r[3].(float64),
			Received: int64(r[5].(float64)), Partition: int32(r[7].(float64)), Offset: int64(r[8].(float64)),
			File: r[9].(string),
		}
		if r[4] != nil {
			s := int64(r[4].(float64))
			lr.Seq = &s
		}
		if r[6] != nil {
			s := r[6].(string)
			lr.Tags = &s
		}
		rows = append(rows, lr)
	}
	return rows
}

// checkExactlyOnce checks that rows hold every measurement of every input
// record exactly once (by partition, offset and metric) and nothing else;
// want maps (partition, offset) to the reading produced there.
func checkExactlyOnce(t testing.TB, rows []lakeRow, want map[[2]int64]*schemas.Reading) {
	t.Helper()
	type k struct {
		p, o int64
		m    string
	}
	seen := map[k]string{}
	dups, extra := 0, 0
	for _, r := range rows {
		key := k{int64(r.Partition), r.Offset, r.Metric}
		if f, ok := seen[key]; ok {
			if dups < 5 {
				t.Errorf("row %v twice: in %s and %s", key, f, r.File)
			}
			dups++
			continue
		}
		seen[key] = r.File
		in := want[[2]int64{int64(r.Partition), r.Offset}]
		if in == nil {
			extra++
			continue
		}
		v, ok := in.Value(r.Metric)
		if !ok || v != r.Value || in.DeviceID != r.Device || in.EventTime.UnixMicro() != r.Time ||
			in.ReceivedTime.UnixMicro() != r.Received || (r.Seq != nil) != in.HasSeq || (r.Seq != nil && *r.Seq != in.Seq) ||
			(r.Tags != nil) != (in.Tags != nil) {
			t.Fatalf("row %+v does not match input %+v", r, in)
		}
	}
	missing := 0
	for po, in := range want {
		for _, m := range in.Measurements {
			if _, ok := seen[k{po[0], po[1], m.Name}]; !ok {
				if missing < 5 {
					t.Errorf("measurement %s of partition %d offset %d missing", m.Name, po[0], po[1])
				}
				missing++
			}
		}
	}
	if dups+extra+missing > 0 {
		t.Fatalf("lake vs input: %d duplicate rows, %d rows not in input, %d missing rows (of %d rows read)", dups, extra, missing, len(rows))
	}
}

// offsetsOf reads back topic from the start and maps (partition, offset)
// to the reading, so that expectations do not depend on partitioning.
func offsetsOf(t testing.TB, env *testenv.Env, topic string, n int) map[[2]int64]*schemas.Reading {
	t.Helper()
	cl := env.Kafka(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx := testenv.Context(t, time.Minute)
	out := map[[2]int64]*schemas.Reading{}
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read back %s: %d of %d records: %v", topic, len(out), n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var rd schemas.Reading
			if schemas.DecodeRaw(r.Value, &rd) == nil {
				out[[2]int64{int64(r.Partition), r.Offset}] = rd.Clone()
			}
		})
	}
	return out
}

// committedAll reports nil once the group has committed the end of every
// partition of topics.
func committedAll(ctx context.Context, env *testenv.Env, t testing.TB, group string, topics ...string) error {
	adm := env.KafkaAdmin(t)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return err
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return err
	}
	var lag []string
	ends.Each(func(e kadm.ListedOffset) {
		c, ok := offs.Lookup(e.Topic, e.Partition)
		if e.Offset > 0 && (!ok || c.At < e.Offset) {
			lag = append(lag, fmt.Sprintf("%s/%d committed %d of %d", e.Topic, e.Partition, c.At, e.Offset))
		}
	})
	if len(lag) > 0 {
		return fmt.Errorf("not all committed: %s", strings.Join(lag, ", "))
	}
	return nil
}

// testConfig is a sink config for the test's topics and bucket.
func testConfig(t testing.TB, env *testenv.Env, bucket, raw, metrics, dlq, group string) Config {
	s3 := env.S3Config
	s3.Bucket = bucket
	c := DefaultConfig()
	c.Kafka, c.S3 = kafkaConfig(t, env), s3
	c.Prefix, c.RawTopic, c.MetricsTopic, c.DLQTopic, c.Group = "lake/", raw, metrics, dlq, group
	c.InstanceID = "" // several sinks of one group run in one process
	c.SessionTimeout, c.RebalanceTimeout = 6*time.Second, 10*time.Second
	c.RetryMin, c.RetryMax, c.ShutdownTimeout = 50*time.Millisecond, time.Second, 30*time.Second
	return c
}

// runSink runs a sink in the background; stop cancels it and returns Run's
// error.
func runSink(t testing.TB, cfg Config) (s *Sink, reg *prometheus.Registry, stop func() error) {
	t.Helper()
	reg = prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(cfg, service.Deps{Log: log, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return s, reg, stop
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ = io.Discard
var _ = objstore.Config{}

func kafkaConfig(t testing.TB, env *testenv.Env) kafkax.Config {
	c := env.KafkaConfig(t, testenv.SinkLake)
	c.ClientID = "lake-test"
	return c
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// metricValue returns the value of a counter or gauge of reg with the given
// label value ("" for an unlabelled metric), 0 when absent.
func metricValue(reg *prometheus.Registry, name, label string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func listOpts(prefix string) minio.ListObjectsOptions {
	return minio.ListObjectsOptions{Prefix: prefix, Recursive: true}
}

// pastBase is a start for event times, days back so that a test's whole
// range is in the past (Kafka rejects record timestamps far in the future).
func pastBase(days int) time.Time {
	return time.Now().UTC().Add(-time.Duration(days) * 24 * time.Hour).Truncate(time.Hour)
}
