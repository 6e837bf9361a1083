//go:build integration

package processor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

func testConfig(env *testenv.Env, t *testing.T, topics Topics, group, instance string) Config {
	c := DefaultConfig()
	c.Kafka = env.KafkaConfig(t, testenv.Processor)
	c.Kafka.ClientID = "test-processor"
	c.Group, c.InstanceID, c.Topics = group, instance, topics
	c.Window.Size, c.Window.Lateness, c.Window.IdleTimeout = 2*time.Second, time.Second, 3*time.Second
	c.CommitInterval, c.SessionTimeout = 200*time.Millisecond, 6*time.Second
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestProcessorExactlyOnce runs the processor in process against the real
// Kafka, stops it with a cancel (a SIGTERM) halfway and starts it again:
// the final aggregates equal the batch computation and no revision is
// emitted twice.
func TestProcessorExactlyOnce(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 2*time.Minute)
	topics := testTopics(t, env, 3)
	group := env.Group(t)
	rng := rand.New(rand.NewPCG(1, 2))
	w, batches := genWorkload(rng, 6000, 30, time.Now().Add(-time.Hour).Truncate(2*time.Second), 20*time.Millisecond)
	prod := env.Kafka(t)
	out := readOutputs(ctx, t, env, topics)

	var p *Processor
	var reg *prometheus.Registry // of the latest run
	run := func(ctx context.Context) chan error {
		cfg := testConfig(env, t, topics, group, "a")
		reg = service.NewRegistry()
		var err error
		p, err = New(cfg, service.Deps{Log: testLogger(t), Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return done
	}
	pctx, stop := context.WithCancel(ctx)
	done := run(pctx)
	if err := produce(ctx, t, prod, topics.Raw, batches[:len(batches)/2], 3000); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("first run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("processor did not stop within 30s of cancel")
	}
	done = run(ctx)
	if err := produce(ctx, t, prod, topics.Raw, batches[len(batches)/2:], 3000); err != nil {
		t.Fatal(err)
	}
	out.waitFinal(t, w, 2*time.Second, 60*time.Second)
	// The endpoints: ready, and the metrics say what happened.
	srv := httptest.NewServer(service.Handler(reg, p.Checks(), 2*time.Second))
	defer srv.Close()
	base := srv.URL
	if code, _ := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	code, body := httpGet(t, base+"/metrics")
	for _, want := range []string{`iotpipe_processor_transactions_total{result="committed"}`, "iotpipe_processor_records_in_total",
		"iotpipe_processor_windows_open", `iotpipe_processor_dlq_total{reason="invalid_record"}`, "iotpipe_processor_emit_delay_seconds_bucket",
		"iotpipe_processor_duplicates_total", "iotpipe_processor_state_bytes_estimate",
		"iotpipe_processor_consumer_lag_records{", "iotpipe_processor_consumer_lag_seconds{", "iotpipe_processor_stalled 0"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
	// Every input record is processed (the final windows are out): once the
	// next transaction has committed, no partition lags.
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		_, body := httpGet(t, base+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "iotpipe_processor_consumer_lag_records{") && !strings.HasSuffix(line, " 0") {
				return fmt.Errorf("still lagging: %s", line)
			}
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("processor stopped: %v", err)
	default:
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStateCap runs with a cap below the open windows the input needs (the
// whole input is a backlog, so two windows are open at a time): the
// processor closes the oldest windows early, and every input record is
// accounted for — aggregated, removed as a duplicate, or in the DLQ (late
// or invalid): none dropped silently.
func TestStateCap(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 2*time.Minute)
	topics := testTopics(t, env, 2)
	rng := rand.New(rand.NewPCG(3, 4))
	w, batches := genWorkload(rng, 4000, 10, time.Now().Add(-time.Hour).Truncate(2*time.Second), 20*time.Millisecond)
	out := readOutputs(ctx, t, env, topics)
	if err := produce(ctx, t, env.Kafka(t), topics.Raw, batches, 1e9); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(env, t, topics, env.Group(t), "a")
	cfg.MaxKeys = 30 // 10 devices × 2 metrics need 20 per window, 40 for two
	cfg.MaxPollRecords = 50
	cfg.Window.IdleTimeout = time.Second
	p, err := New(cfg, service.Deps{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testenv.Eventually(t, 90*time.Second, 250*time.Millisecond, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		var msgs, dups int64
		for _, a := range out.fin.activity {
			msgs += a.Messages
			dups += a.Duplicates
		}
		if got := msgs + dups + int64(out.late); got != int64(len(w.readings)) || out.invalid != w.invalid {
			return fmt.Errorf("accounted %d readings (%d aggregated, %d duplicates, %d late) of %d; %d invalid of %d",
				got, msgs, dups, out.late, len(w.readings), out.invalid, w.invalid)
		}
		return nil
	})
	if n := testutil.ToFloat64(p.m.capEvents); n < 1 {
		t.Errorf("the cap was never reached (%v early closes)", n)
	}
	out.mu.Lock()
	t.Logf("%v windows closed early at the cap; %d late readings (of %d)", testutil.ToFloat64(p.m.capEvents), out.late, len(w.readings))
	out.mu.Unlock()
}

// TestProcessorFastClockNeighbour: on one shared partition, one device's
// clock is 4 minutes fast (inside the bridge's 5-minute future skew) and
// five devices are on time, 120 readings each at 1 Hz. With a watermark
// per partition the fast device made its neighbours' readings late (714 of
// the 720 went to the DLQ); with a watermark per device none is late, and
// every window equals the batch computation.
func TestProcessorFastClockNeighbour(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 2*time.Minute)
	topics := testTopics(t, env, 1)
	// The raw topic keeps its input 1 h: the processor keeps a silent
	// device's state that long (checked at the end).
	topics.Raw = env.Topic(t, 1, map[string]string{"retention.ms": "3600000"})
	base := time.Now().Add(-2 * time.Minute).Truncate(time.Second).UTC()
	w := &workload{}
	var batch []*kgo.Record
	for i := range 120 {
		for d := range 6 {
			et := base.Add(time.Duration(i)*time.Second + time.Duration(d)*10*time.Millisecond)
			id := "on-time-" + strconv.Itoa(d)
			if d == 0 {
				et, id = et.Add(4*time.Minute), "fast-clock"
			}
			r := &schemas.Reading{DeviceID: id, EventTime: et, ReceivedTime: et, Seq: int64(i + 1), HasSeq: true,
				Measurements: []schemas.Measurement{{Name: "temp", Value: 20 + float64(i%7) + float64(d)}}}
			w.readings = append(w.readings, r)
			batch = append(batch, schemas.RawRecord(schemas.AppendRaw(nil, r), r, ""))
		}
	}
	w.records = len(batch)
	out := readOutputs(ctx, t, env, topics)
	p, err := New(testConfig(env, t, topics, env.Group(t), "a"), service.Deps{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	if err := produce(ctx, t, env.Kafka(t), topics.Raw, [][]*kgo.Record{batch}, 1e9); err != nil {
		t.Fatal(err)
	}
	// Every window final and equal to the batch computation, 0 late.
	out.waitFinal(t, w, 2*time.Second, 60*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.devRetention != time.Hour {
		t.Errorf("device retention %s, want the raw topic's retention.ms (1h)", p.devRetention)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	var msgs int64
	for k, a := range out.fin.activity {
		if k.dev != "fast-clock" {
			msgs += a.Messages
		}
	}
	if msgs != 600 || out.late != 0 {
		t.Fatalf("on-time devices: %d of 600 readings counted, %d late in the DLQ", msgs, out.late)
	}
	t.Logf("on-time devices: 600 of 600 readings counted, 0 late; the fast device's 120 counted too")
}

// TestProcessorBacklogAfterOffline: on one shared partition five devices
// send live while a sixth stops after 2 minutes of event time; once its
// idle close has emitted its last window (revision 1), it uploads the 10
// minutes it buffered. None of its readings is late (not against the other
// devices, nor against its own idle close), its last window before going
// offline is updated (revision ≥ 2), and every window equals the batch
// computation.
func TestProcessorBacklogAfterOffline(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 2*time.Minute)
	topics := testTopics(t, env, 1)
	base := time.Now().Add(-12 * time.Minute).Truncate(time.Minute).UTC()
	w := &workload{}
	var live, backlog []*kgo.Record
	offlineAt := base.Add(2*time.Minute + 7*time.Second) // inside the window [base+2m, base+2m+2s)
	for i := range 144 {                                 // one reading every 5 s for 12 minutes, 145 for the offline device (below)
		for d := range 6 {
			et := base.Add(time.Duration(i)*5*time.Second + time.Duration(d)*10*time.Millisecond)
			id := "online-" + strconv.Itoa(d)
			if d == 0 {
				id = "offline"
			}
			r := &schemas.Reading{DeviceID: id, EventTime: et, ReceivedTime: et, Seq: int64(i + 1), HasSeq: true,
				Measurements: []schemas.Measurement{{Name: "temp", Value: 20 + float64(i%9) + float64(d)}}}
			w.readings = append(w.readings, r)
			rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "")
			if d == 0 && et.After(offlineAt) {
				backlog = append(backlog, rec)
			} else {
				live = append(live, rec)
			}
		}
	}
	// The offline device's last live reading (i = 25) and the window it is
	// in; it buffered one more reading (without seq) in that window.
	lastLive := base.Add(125 * time.Second)
	lastWin := lastLive.Truncate(2 * time.Second).UnixMicro()
	extra := &schemas.Reading{DeviceID: "offline", EventTime: lastLive.Add(500 * time.Millisecond), ReceivedTime: lastLive.Add(500 * time.Millisecond),
		Measurements: []schemas.Measurement{{Name: "temp", Value: 99}}}
	w.readings = append(w.readings, extra)
	backlog = append([]*kgo.Record{schemas.RawRecord(schemas.AppendRaw(nil, extra), extra, "")}, backlog...)
	out := readOutputs(ctx, t, env, topics)
	p, err := New(testConfig(env, t, topics, env.Group(t), "a"), service.Deps{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	prod := env.Kafka(t)
	if err := produce(ctx, t, prod, topics.Raw, [][]*kgo.Record{live}, 1e9); err != nil {
		t.Fatal(err)
	}
	// Offline: its idle close emits its last window, revision 1.
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		if a, ok := out.fin.activity[winKey{"offline", "", lastWin}]; !ok || a.Revision != 1 {
			return errorf("the offline device's last window (%s) is not emitted yet", time.UnixMicro(lastWin).UTC())
		}
		return nil
	})
	if err := produce(ctx, t, prod, topics.Raw, [][]*kgo.Record{backlog}, 1e9); err != nil {
		t.Fatal(err)
	}
	w.records = len(live) + len(backlog)
	out.waitFinal(t, w, 2*time.Second, 60*time.Second)
	out.mu.Lock()
	defer out.mu.Unlock()
	a := out.fin.activity[winKey{"offline", "", lastWin}]
	var msgs int64
	for k, a := range out.fin.activity {
		if k.dev == "offline" {
			msgs += a.Messages
		}
	}
	if msgs != 145 || out.late != 0 || a.Revision < 2 {
		t.Fatalf("offline device: %d of 145 readings counted, %d late in the DLQ, its last window before going offline at revision %d (want ≥ 2)", msgs, out.late, a.Revision)
	}
	t.Logf("offline device: 145 of 145 readings counted (%d in the backlog), 0 late; its last live window updated to revision %d", len(backlog), a.Revision)
}
