//go:build integration

package alert

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// fixture is one test's topics, schema and rule store.
type fixture struct {
	env    *testenv.Env
	topics Topics
	schema string
	regDSN string // a member of the registry role
	store  *rules.Store
}

func newFixture(t testing.TB, rawParts, metricsParts int32) *fixture {
	t.Helper()
	env := testenv.Load(t)
	schema, regDSN := registrytest.Schema(t, env)
	ctx := testenv.Context(t, time.Minute)
	store, err := rules.Open(ctx, regDSN, schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &fixture{env: env, schema: schema, regDSN: regDSN, store: store, topics: Topics{
		Raw: env.Topic(t, rawParts, nil), Metrics: env.Topic(t, metricsParts, nil), Alerts: env.Topic(t, 3, nil),
		Changelog: env.Topic(t, max(rawParts, metricsParts), map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
	}}
}

func (f *fixture) config(t testing.TB, group, instance string) Config {
	cfg := DefaultConfig()
	cfg.Kafka = f.env.KafkaConfig(t, testenv.Alert)
	cfg.Group, cfg.InstanceID, cfg.Topics = group, instance, f.topics
	cfg.DSN, cfg.Schema = f.env.PGReaderDSN, f.schema
	cfg.CommitInterval, cfg.SessionTimeout = 200*time.Millisecond, 6*time.Second
	return cfg
}

func (f *fixture) rule(t testing.TB, r rules.Rule) {
	t.Helper()
	r.Enabled = true
	r.Normalize()
	if _, err := f.store.Create(testenv.Context(t, 30*time.Second), r); err != nil {
		t.Fatal(err)
	}
}

// reading returns the raw record of one reading.
func reading(dev string, at time.Time, seq int64, ms ...schemas.Measurement) *kgo.Record {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	r := &schemas.Reading{DeviceID: dev, EventTime: at, ReceivedTime: at, Seq: seq, HasSeq: true, Measurements: ms}
	return schemas.RawRecord(schemas.AppendRaw(nil, r), r, "devices/"+dev+"/telemetry")
}

func m(name string, v float64) schemas.Measurement { return schemas.Measurement{Name: name, Value: v} }

// alertReader collects the events of the alerts topic, read_committed.
type alertReader struct {
	mu     sync.Mutex
	events []*schemas.Alert
	err    error
}

func readAlerts(ctx context.Context, t *testing.T, env *testenv.Env, topic string) *alertReader {
	a := &alertReader{}
	cl := env.Kafka(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	go func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			a.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				ev, err := schemas.DecodeAlert(r.Value)
				if err != nil {
					a.err = fmt.Errorf("offset %d: %w", r.Offset, err)
					return
				}
				if string(r.Key) != ev.DeviceID {
					a.err = fmt.Errorf("event %s keyed %q, want the device id", ev.EventID, r.Key)
				}
				a.events = append(a.events, ev)
			})
			a.mu.Unlock()
		}
	}()
	return a
}

func (a *alertReader) snapshot(t *testing.T) []*schemas.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		t.Fatalf("alerts topic: %v", a.err)
	}
	return append([]*schemas.Alert(nil), a.events...)
}

// describe is an event in one line: state rule device metric @time.
func describe(ev *schemas.Alert, t0 time.Time) string {
	return fmt.Sprintf("%s %s %s %s @%s", ev.State, ev.RuleID, ev.DeviceID, ev.Metric, ev.EventTime.Sub(t0))
}

func produce(t *testing.T, cl *kgo.Client, topic string, recs ...*kgo.Record) {
	t.Helper()
	for _, r := range recs {
		r.Topic = topic
	}
	if err := cl.ProduceSync(testenv.Context(t, time.Minute), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func joinLines(ss []string) string { return "\n  " + strings.Join(ss, "\n  ") }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
