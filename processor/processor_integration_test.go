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
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

func testConfig(env *testenv.Env, t *testing.T, topics Topics, group, instance string) Config {
	c := DefaultConfig()
	c.Kafka.Brokers, c.Kafka.ClientID = env.KafkaBrokers, "test-processor"
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
		"iotpipe_processor_duplicates_total", "iotpipe_processor_state_bytes_estimate"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
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
