//go:build integration

package timescale

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// fixture is one test's schema and topics.
type fixture struct {
	env                 *testenv.Env
	schema              string
	raw, metrics, dlq   string
	alerts              string // "" : the sink skips alerts (the shared telemetry.alerts is not this test's)
	group               string
	owner               *pgxpool.Pool
	writerDSN, ownerDSN string
	kafka               kafkax.Config
}

// newFixture migrates a unique schema (plain PostgreSQL flavor) on the
// database of env and creates unique topics on its Kafka.
func newFixture(t testing.TB, env *testenv.Env, rawParts, metricsParts int32) *fixture {
	t.Helper()
	return newFixtureFlavor(t, env, migrations.FlavorPostgres, rawParts, metricsParts)
}

func newFixtureFlavor(t testing.TB, env *testenv.Env, flavor migrations.Flavor, rawParts, metricsParts int32) *fixture {
	t.Helper()
	f := &fixture{env: env, schema: env.Schema(t), group: env.Group(t),
		writerDSN: env.PGWriterDSN, ownerDSN: env.PGDSN, kafka: env.KafkaConfig(t, testenv.SinkTimescale)}
	ctx := testenv.Context(t, time.Minute)
	conn, err := pgx.Connect(ctx, env.PGDSN)
	if err != nil {
		t.Fatalf("connect as owner: %v", err)
	}
	defer conn.Close(ctx)
	opts := migrations.DefaultOptions()
	opts.Schema = f.schema
	opts.Flavor = flavor
	if _, err := migrations.Apply(ctx, conn, opts); err != nil {
		t.Fatalf("migrations: %v", err)
	}
	f.owner = env.PG(t)
	f.raw = env.Topic(t, rawParts, nil)
	f.metrics = env.Topic(t, metricsParts, nil)
	f.dlq = env.Topic(t, 1, nil)
	return f
}

// alertsTopic is the fixture's alerts topic, or SkipTopic when the test
// has none.
func (f *fixture) alertsTopic() string {
	if f.alerts == "" {
		return SkipTopic
	}
	return f.alerts
}

func (f *fixture) config() Config {
	c := DefaultConfig()
	c.Kafka = f.kafka
	c.Kafka.ClientID = "test-sink"
	c.InstanceID = "" // several sinks of one group run in one process
	c.Group = f.group
	c.TopicRaw, c.TopicMetrics, c.TopicDLQ = f.raw, f.metrics, f.dlq
	c.TopicAlerts = f.alertsTopic()
	c.DSN = f.writerDSN
	c.Schema = f.schema
	c.BatchDelay = 50 * time.Millisecond
	c.RetryMin = 50 * time.Millisecond
	c.RetryMax = 500 * time.Millisecond
	return c
}

// runSink runs a sink in-process; the returned stop cancels it and checks
// that Run returned nil.
func runSink(t testing.TB, cfg Config) (stop func()) {
	t.Helper()
	stop, _ = runSinkReg(t, cfg, nil)
	return stop
}

// runSinkReg is runSink with the sink's collectors registered in reg.
func runSinkReg(t testing.TB, cfg Config, reg prometheus.Registerer) (stop func(), s *Sink) {
	t.Helper()
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg, service.Deps{Log: lg, Registry: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30s of cancel")
		}
	}
	t.Cleanup(stop)
	return stop, s
}

func (f *fixture) produce(t testing.TB, recs []*kgo.Record) {
	t.Helper()
	cl := f.env.Kafka(t)
	ctx := testenv.Context(t, 2*time.Minute)
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func (f *fixture) count(t testing.TB, query string, args ...any) int64 {
	t.Helper()
	n, err := f.tryCount(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) tryCount(query string, args ...any) (int64, error) {
	var n int64
	q := strings.ReplaceAll(query, "$S.", pgx.Identifier{f.schema}.Sanitize()+".")
	if err := f.owner.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	return n, nil
}

// waitCount polls until the query returns want. A failing query is retried
// like a wrong count: tests restart the database under it.
func (f *fixture) waitCount(t testing.TB, timeout time.Duration, want int64, query string, args ...any) {
	t.Helper()
	testenv.Eventually(t, timeout, 100*time.Millisecond, func() error {
		got, err := f.tryCount(query, args...)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s = %d, want %d", query, got, want)
		}
		return nil
	})
}

// readingRecord returns a raw record for device dev with seq and two
// measurements.
func readingRecord(topic, dev string, seq int64, at time.Time, temp float64) *kgo.Record {
	r := schemas.Reading{
		DeviceID: dev, EventTime: at.UTC().Truncate(time.Microsecond), ReceivedTime: at.UTC().Truncate(time.Microsecond).Add(time.Millisecond),
		Seq: seq, HasSeq: true,
		Measurements: []schemas.Measurement{{Name: "humidity", Value: 40 + float64(seq%10)}, {Name: "temp", Value: temp}},
	}
	rec := schemas.RawRecord(schemas.AppendRaw(nil, &r), &r, "devices/"+dev+"/telemetry")
	rec.Topic = topic
	return rec
}

func metricRecord(topic string, m *schemas.WindowMetric) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(m.DeviceID), Value: schemas.AppendMetric(nil, m), Headers: schemas.RecordHeaders("")}
}

func activityRecord(topic string, a *schemas.Activity) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(a.DeviceID), Value: schemas.AppendActivity(nil, a), Headers: schemas.RecordHeaders("")}
}

// window returns a valid WindowMetric for dev/metric starting at start
// whose values are derived from rev, so that the revision written can be
// told from the row.
func window(dev, metric string, start time.Time, rev int64) schemas.WindowMetric {
	start = start.UTC().Truncate(time.Microsecond)
	v := float64(rev) * 10
	return schemas.WindowMetric{
		DeviceID: dev, Metric: metric, WindowStart: start, WindowEnd: start.Add(time.Minute),
		Count: rev, Sum: v * float64(rev), Min: v - 1, Max: v + 1, Mean: v, Stddev: 0.5,
		First: v - 1, Last: v + 1, P50: v, P95: v + 0.9, P99: v + 0.99,
		FirstTime: start, LastTime: start.Add(30 * time.Second),
		Revision: rev, EmittedAt: start.Add(2 * time.Minute),
	}
}

func activity(dev string, start time.Time, rev int64) schemas.Activity {
	start = start.UTC().Truncate(time.Microsecond)
	return schemas.Activity{
		DeviceID: dev, WindowStart: start, WindowEnd: start.Add(time.Minute),
		Messages: 10 * rev, SeqGaps: rev, SeqResets: rev, IgnoredFields: 3 * rev, Late: 0, Duplicates: 0,
		FirstSeen: start, LastSeen: start.Add(50 * time.Second), Revision: rev, EmittedAt: start.Add(2 * time.Minute),
	}
}

// readDLQ returns every dead letter on the fixture's DLQ topic once there
// are want of them.
func (f *fixture) readDLQ(t testing.TB, want int) []*schemas.DeadLetter {
	t.Helper()
	cl := f.env.Kafka(t, kgo.ConsumeTopics(f.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*schemas.DeadLetter
	ctx := testenv.Context(t, time.Minute)
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("DLQ: got %d dead letters, want %d", len(out), want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			d, err := schemas.RecordDeadLetter(r)
			if err != nil {
				t.Fatalf("DLQ record: %v", err)
			}
			out = append(out, d)
		})
	}
	return out
}
