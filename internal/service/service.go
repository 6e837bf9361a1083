// Package service owns the lifecycle of every iotpipe stage: one Run for
// all of them.
//
// Contract of Run(ctx, stage, opts):
//   - It listens on Options.Addr before the stage starts, so a port in use
//     fails at once, with a *config.FieldError for field "Addr" (the command
//     names --http-addr), and the stage never runs.
//   - With Options.Pprof it also serves /debug/pprof/ (net/http/pprof).
//   - It serves /metrics (Options.Registry), /healthz (200 while the process
//     runs) and /readyz (200 when every check of Stage.Checks passes, 503
//     with the failing ones otherwise) from before the stage starts until
//     after it has returned: through the whole drain.
//   - When ctx ends (SIGTERM) the stage's own context ends: soft stop. The
//     stage drains and returns; Run returns what the stage returned (nil on
//     a clean stop).
//   - Hard stop: if the stage has not returned ShutdownTimeout after ctx
//     ended, Run returns an error wrapping ErrStopTimeout without waiting
//     for it; the process must then exit (non-zero), which ends the stage's
//     goroutines.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iotpipe/iotpipe/internal/config"
)

// Check reports whether one dependency is usable; nil means ready.
type Check func(ctx context.Context) error

// Stage is what Run runs: a stage package's value built by its New.
type Stage interface {
	// Run works until ctx ends, then stops softly (stop taking input,
	// flush, commit) and returns nil after a clean stop.
	Run(ctx context.Context) error
	// Checks are the readiness checks of /readyz, by name.
	Checks() map[string]Check
}

// Deps is what every stage's New receives besides its Config.
type Deps struct {
	// Log is the stage's logger (nil: discard).
	Log *slog.Logger
	// Registry receives the stage's metrics (nil: not registered).
	Registry prometheus.Registerer
}

// Logger returns d.Log, or a logger that discards when it is nil.
func (d Deps) Logger() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// Options configure Run.
type Options struct {
	// Addr is where /metrics, /healthz and /readyz listen (host:port);
	// empty serves nothing.
	Addr string
	// PortOffset is added to Addr's port (unless it is 0, "any free
	// port"): one setting moves the ports of every stage of a pipeline,
	// so that two pipelines share a host.
	PortOffset int
	// ShutdownTimeout bounds the soft stop: the stage has this long after
	// ctx ends to return. Must be positive.
	ShutdownTimeout time.Duration
	// CheckTimeout bounds each readiness check. Must be positive.
	CheckTimeout time.Duration
	// Registry is served on /metrics; give the same one to the stage's New.
	Registry *prometheus.Registry
	// Log receives the lifecycle messages (nil: discard).
	Log *slog.Logger
	// Pprof also serves net/http/pprof's profiles under /debug/pprof/ on
	// Addr (off by default: a profile exposes the process's internals, so
	// keep Addr on a private interface when it is on).
	Pprof bool
	// DebugStopDelay, for drain tests only, passes the stop signal on to
	// the stage this long after it came (the stage keeps working, and the
	// endpoints keep answering, meanwhile). 0: at once.
	DebugStopDelay time.Duration
}

// DefaultOptions are the defaults of Options (Addr is per stage).
func DefaultOptions() Options {
	return Options{ShutdownTimeout: 30 * time.Second, CheckTimeout: 2 * time.Second}
}

// Validate reports every invalid field as a *config.FieldError.
func (o *Options) Validate() error {
	var p config.Problems
	if o.Addr != "" {
		if _, _, err := net.SplitHostPort(o.Addr); err != nil {
			p.Add("Addr", "%q is not host:port: %v", o.Addr, err)
		} else if _, err := o.ListenAddr(); err != nil {
			p.Add("PortOffset", "%v", err)
		}
	}
	p.Check(o.PortOffset < 0 || o.PortOffset > 65535, "PortOffset", "must be between 0 and 65535")
	p.Check(o.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	p.Check(o.CheckTimeout <= 0, "CheckTimeout", "must be positive")
	p.Check(o.DebugStopDelay < 0, "DebugStopDelay", "must not be negative")
	return p.Err()
}

// ListenAddr is Addr with PortOffset added to its port ("" when Addr is).
func (o *Options) ListenAddr() (string, error) {
	if o.Addr == "" || o.PortOffset == 0 {
		return o.Addr, nil
	}
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("port %q of %q is not a number", port, o.Addr)
	}
	if n == 0 {
		return o.Addr, nil
	}
	if n+o.PortOffset > 65535 {
		return "", fmt.Errorf("port %d of {Addr} plus %d is above 65535", n, o.PortOffset)
	}
	return net.JoinHostPort(host, strconv.Itoa(n+o.PortOffset)), nil
}

// ErrStopTimeout is wrapped by Run's error when the stage did not return
// within ShutdownTimeout of its context ending.
var ErrStopTimeout = errors.New("the stage did not stop in time")

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for Options.Registry and the stage's Deps.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Run runs stage under the contract of the package comment.
func Run(ctx context.Context, stage Stage, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = NewRegistry()
	}
	var ln net.Listener
	if addr, _ := opts.ListenAddr(); addr != "" {
		var err error
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			return &config.FieldError{Field: "Addr", Err: err}
		}
	}
	h := Handler(opts.Registry, stage.Checks(), opts.CheckTimeout)
	if opts.Pprof {
		h = withPprof(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	var served chan error // nil (never ready) without a listener
	if ln != nil {
		served = make(chan error, 1)
		log.Info("serving metrics and health", "addr", ln.Addr().String())
		go func() { served <- srv.Serve(ln) }()
	}
	stageCtx, stopStage := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStage()
	stopOnSignal := context.AfterFunc(ctx, func() {
		if opts.DebugStopDelay > 0 {
			time.AfterFunc(opts.DebugStopDelay, stopStage)
			return
		}
		stopStage()
	})
	defer stopOnSignal()
	done := make(chan error, 1)
	go func() { done <- stage.Run(stageCtx) }()

	var runErr, srvErr error
	select {
	case runErr = <-done:
	case err := <-served:
		// The server failed while the stage runs: stop the stage softly
		// and report the server's error.
		srvErr = fmt.Errorf("http server on %s: %w", ln.Addr(), err)
		log.Error("stopping", "error", srvErr)
		stopStage()
		runErr = waitStop(done, opts.ShutdownTimeout, log)
	case <-ctx.Done():
		log.Info("stopping", "within", opts.ShutdownTimeout)
		runErr = waitStop(done, opts.ShutdownTimeout+opts.DebugStopDelay, log)
	}
	if ln != nil && srvErr == nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	return errors.Join(srvErr, runErr)
}

// waitStop waits for the stage's result for at most timeout.
func waitStop(done <-chan error, timeout time.Duration, log *slog.Logger) error {
	hard := time.NewTimer(timeout)
	defer hard.Stop()
	select {
	case err := <-done:
		return err
	case <-hard.C:
		err := fmt.Errorf("%w: still draining %s after the stop signal", ErrStopTimeout, timeout)
		log.Error("hard stop", "error", err)
		return err
	}
}

// withPprof serves net/http/pprof's handlers under /debug/pprof/ and
// everything else with h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Handler returns the HTTP handler with /metrics (reg), /healthz and
// /readyz (checks, each bounded by checkTimeout).
func Handler(reg *prometheus.Registry, checks map[string]Check, checkTimeout time.Duration) http.Handler {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		failed := map[string]string{}
		for _, n := range names {
			cctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
			err := checks[n](cctx)
			cancel()
			if err != nil {
				failed[n] = err.Error()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"ready": false, "failed": failed})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": true})
	})
	return mux
}
