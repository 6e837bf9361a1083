package service

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotpipe/iotpipe/internal/config"
)

// fakeStage is a stage whose Run waits for ctx, then drains until
// release is closed (or returns at once when release is nil).
type fakeStage struct {
	started  chan struct{}
	draining chan struct{}
	release  chan struct{}
	ready    atomic.Bool
	err      error
}

func newFake() *fakeStage {
	return &fakeStage{started: make(chan struct{}), draining: make(chan struct{}), release: make(chan struct{})}
}

func (f *fakeStage) Run(ctx context.Context) error {
	close(f.started)
	<-ctx.Done()
	close(f.draining)
	<-f.release
	return f.err
}

func (f *fakeStage) Checks() map[string]Check {
	return map[string]Check{"fake": func(context.Context) error {
		if !f.ready.Load() {
			return errors.New("not ready yet")
		}
		return nil
	}}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func options(addr string) Options {
	o := DefaultOptions()
	o.Addr = addr
	o.ShutdownTimeout = 5 * time.Second
	o.Registry = NewRegistry()
	return o
}

func waitClosed(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not happen within 5s", what)
	}
}

// The endpoints answer while the stage runs and through its whole drain;
// Run returns the stage's nil once the drain ends, then nothing listens.
func TestServesThroughTheDrain(t *testing.T) {
	addr := freeAddr(t)
	st := newFake()
	opts := options(addr)
	drained := prometheus.NewCounter(prometheus.CounterOpts{Name: "fake_drain_steps_total", Help: "test"})
	opts.Registry.MustRegister(drained)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, st, opts) }()
	waitClosed(t, st.started, "stage start")
	base := "http://" + addr

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "not ready yet") {
		t.Fatalf("readyz before ready %d %q", code, body)
	}
	st.ready.Store(true)
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("readyz %d %q", code, body)
	}

	stop() // SIGTERM
	waitClosed(t, st.draining, "soft stop")
	drained.Inc()
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "fake_drain_steps_total 1") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics during the drain: %d\n%s", code, body)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned during the drain: %v", err)
	default:
	}
	close(st.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a clean drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after Run returned")
	}
}

// A port in use fails before the stage runs, once, as a FieldError of
// Addr (the command names --http-addr).
func TestListenFailureNamesAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st := newFake()
	err = Run(context.Background(), st, options(ln.Addr().String()))
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "Addr" {
		t.Fatalf("Run on a taken port: %v", err)
	}
	if n := strings.Count(err.Error(), "address already in use"); n != 1 {
		t.Errorf("the bind error is said %d times: %q", n, err)
	}
	select {
	case <-st.started:
		t.Fatal("the stage ran although the port was taken")
	default:
	}
}

// A stage that does not drain within ShutdownTimeout is given up: Run
// returns ErrStopTimeout.
func TestHardStop(t *testing.T) {
	st := newFake() // release never closed: the drain hangs
	opts := options("")
	opts.ShutdownTimeout = 100 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, st, opts) }()
	waitClosed(t, st.started, "stage start")
	stop()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopTimeout) || !strings.Contains(err.Error(), "still draining 100ms after the stop signal") {
			t.Fatalf("hard stop: %v", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
			t.Fatalf("hard stop after %s, want about 100ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not give up on the stage")
	}
	close(st.release)
}

// A stage that fails by itself ends Run with its error.
func TestStageError(t *testing.T) {
	boom := errors.New("kafka refused")
	failing := stageFunc(func(context.Context) error { return boom })
	if err := Run(context.Background(), failing, options("")); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

type stageFunc func(context.Context) error

func (f stageFunc) Run(ctx context.Context) error { return f(ctx) }
func (stageFunc) Checks() map[string]Check        { return nil }

func TestOptionsValidate(t *testing.T) {
	o := DefaultOptions()
	o.Addr, o.ShutdownTimeout = "nope", 0
	fields := map[string]bool{}
	for _, fe := range config.Fields(o.Validate()) {
		fields[fe.Field] = true
	}
	if !fields["Addr"] || !fields["ShutdownTimeout"] {
		t.Fatalf("fields %v", fields)
	}
}

func TestPortOffset(t *testing.T) {
	o := DefaultOptions()
	o.Addr, o.PortOffset = "127.0.0.1:9101", 100
	if a, err := o.ListenAddr(); err != nil || a != "127.0.0.1:9201" {
		t.Fatalf("ListenAddr = %q, %v", a, err)
	}
	o.Addr = ":0"
	if a, _ := o.ListenAddr(); a != ":0" {
		t.Fatalf("port 0 moved: %q", a)
	}
	o.Addr, o.PortOffset = ":65000", 1000
	var fe *config.FieldError
	if err := o.Validate(); !errors.As(err, &fe) || fe.Field != "PortOffset" {
		t.Fatalf("offset past 65535: %v", err)
	}
	// The offset applies to where Run listens.
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	below, _ := strconv.Atoi(port)
	opts := options(net.JoinHostPort(host, strconv.Itoa(below-1)))
	opts.PortOffset = 1
	st := newFake()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, st, opts) }()
	waitClosed(t, st.started, "stage start")
	if code, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("healthz on the moved port: %d", code)
	}
	stop()
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Profiles are served only when Options.Pprof asks for them; the usual
// endpoints answer either way.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		addr := freeAddr(t)
		st := newFake()
		close(st.release)
		opts := options(addr)
		opts.Pprof = on
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, st, opts) }()
		waitClosed(t, st.started, "stage start")
		base := "http://" + addr
		code, body := get(t, base+"/debug/pprof/cmdline")
		if on && (code != 200 || !strings.Contains(body, "service.test")) {
			t.Errorf("pprof on: /debug/pprof/cmdline %d %q", code, body)
		}
		if !on && code != http.StatusNotFound {
			t.Errorf("pprof off: /debug/pprof/cmdline %d, want 404", code)
		}
		if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("pprof %t: healthz %d %q", on, code, body)
		}
		if code, _ := get(t, base+"/metrics"); code != 200 {
			t.Errorf("pprof %t: metrics %d", on, code)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
}
