package api

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/registry"
	"github.com/iotpipe/iotpipe/schemas/migrations"
	"github.com/iotpipe/iotpipe/shadow"
)

// OpenAPI is the API's OpenAPI 3.1 document, served at /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// API is the iotpipe api stage.
type API struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	handler http.Handler

	// Set by Run.
	pool    *pgxpool.Pool
	reg     *registry.Store
	shadows *shadow.Store
	tokens  *Tokens
	ca      *certs.CA
	relay   atomic.Pointer[Relay]
	rules   *rules.Store

	// outboxWritten's NOTIFY sender: running, and asked again meanwhile.
	notifyMu               sync.Mutex
	notifying, notifyAgain bool

	limits *tokenLimits
	ready  chan struct{}
}

// New checks cfg and builds the API; nothing is contacted before Run.
func New(cfg Config, deps service.Deps) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &API{cfg: cfg, log: deps.Logger(), m: newMetrics(deps.Registry),
		limits: newTokenLimits(cfg.RatePerToken, cfg.RateBurst), ready: make(chan struct{})}
	if cfg.CADir != "" {
		ca, err := certs.Load(cfg.CADir)
		if err != nil {
			return nil, &config.FieldError{Field: "CADir", Err: err}
		}
		a.ca = ca
	}
	a.handler = a.routes()
	return a, nil
}

// Handler is the API's HTTP handler (for tests that serve it themselves
// after Open).
func (a *API) Handler() http.Handler { return a.handler }

// Open connects to the database and checks the schema. Run calls it.
func (a *API) Open(ctx context.Context) error {
	pc, err := pgxpool.ParseConfig(a.cfg.DSN)
	if err != nil {
		return &config.FieldError{Field: "DSN", Err: err}
	}
	pc.MaxConns = int32(a.cfg.MaxConns)
	// Every connection is opened at start (in the background) and kept,
	// unless the DSN says otherwise (pool_min_conns): a connection opened
	// on demand costs a request tens of milliseconds (TLS and SCRAM), which
	// the first requests after a start or an idle spell would pay.
	if pc.MinConns == 0 {
		pc.MinConns = pc.MaxConns
	}
	// The outbox trigger leaves the NOTIFY to us (migration
	// 0013_outbox_notify): PostgreSQL serialises notifying commits
	// through their WAL flush. outboxWritten wakes the relay after each
	// commit instead. Before that migration the setting is ignored and the
	// trigger notifies as before.
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET iotpipe.outbox_notify = 'after_commit'")
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("api: connect to the database: %w", err)
	}
	reg, err := registry.Open(ctx, a.cfg.DSN, a.cfg.Schema)
	if err != nil {
		pool.Close()
		return fmt.Errorf("api: %w", err)
	}
	a.pool, a.reg = pool, reg
	a.shadows = shadow.New(pool, a.cfg.Schema, a.cfg.Limits)
	a.shadows.OnOutbox(a.outboxWritten)
	if err := a.shadows.Check(ctx); err != nil {
		a.Close()
		return fmt.Errorf("api: %w", err)
	}
	a.tokens = NewTokens(pool, a.cfg.Schema)
	ok, err := migrations.TableExists(ctx, pool, a.cfg.Schema, "alert_rules")
	if err == nil && !ok {
		err = rules.ErrNoSchema
	}
	if err != nil {
		a.Close()
		return fmt.Errorf("api: alert rules in schema %q: %w", a.cfg.Schema, err)
	}
	a.rules = rules.NewStore(pool, a.cfg.Schema)
	return nil
}

// Close closes the database connections.
func (a *API) Close() {
	if a.reg != nil {
		a.reg.Close()
	}
	if a.pool != nil {
		a.pool.Close()
	}
}

// Run serves the API and runs the relay until ctx ends, then stops
// taking requests, lets those in flight finish (within
// ShutdownTimeout), stops the relay and closes the database.
func (a *API) Run(ctx context.Context) error {
	if err := a.Open(ctx); err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return &config.FieldError{Field: "Listen", Err: err}
	}
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	if !a.cfg.Insecure {
		cert, err := tls.LoadX509KeyPair(a.cfg.TLSCertFile, a.cfg.TLSKeyFile)
		if err != nil {
			ln.Close()
			return &config.FieldError{Field: "TLSCertFile", Err: err}
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	scheme := map[bool]string{true: "http", false: "https"}[a.cfg.Insecure]
	a.log.Info("api listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/v1/")
	close(a.ready)

	if !a.cfg.Relay.Disabled {
		a.relay.Store(NewRelay(a.cfg.Relay, a.shadows, a.pool, a.cfg.Schema, a.log, a.m))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api: serve: %w", err)
		}
		return nil
	})
	if r := a.relay.Load(); r != nil {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
			return fmt.Errorf("api: shutdown: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// outboxWritten runs after every shadow change that committed outbox
// messages: it wakes this process's relay when that is the one
// publishing, or else sends a NOTIFY for the relay of another process
// (outside the change's transaction; requests that come while one is
// being sent are one more). A lost wake-up costs latency, never a
// message: the relay reads the outbox every Relay.Poll anyway.
func (a *API) outboxWritten() {
	if r := a.relay.Load(); r != nil && r.Leading() {
		r.Wake()
		return
	}
	a.notifyMu.Lock()
	if a.notifying {
		a.notifyAgain = true
		a.notifyMu.Unlock()
		return
	}
	a.notifying = true
	a.notifyMu.Unlock()
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := a.pool.Exec(ctx, "SELECT pg_notify('iotpipe_outbox', $1)", a.cfg.Schema)
			cancel()
			if err != nil {
				a.log.Warn("api: notify the relay of new outbox messages (it polls them anyway)", "err", err)
			}
			a.notifyMu.Lock()
			if !a.notifyAgain {
				a.notifying = false
				a.notifyMu.Unlock()
				return
			}
			a.notifyAgain = false
			a.notifyMu.Unlock()
		}
	}()
}

// Checks: the database answers; the relay is connected to the broker.
func (a *API) Checks() map[string]service.Check {
	return map[string]service.Check{
		"database": func(ctx context.Context) error {
			select {
			case <-a.ready:
			default:
				return errors.New("not started")
			}
			return a.pool.Ping(ctx)
		},
		"relay": func(context.Context) error {
			if a.cfg.Relay.Disabled {
				return nil
			}
			if r := a.relay.Load(); r == nil || !r.Connected() {
				return errors.New("not connected to the MQTT broker")
			}
			return nil
		},
	}
}

// route is one entry of the route table; the OpenAPI test walks it.
type route struct {
	method, pattern string
	role            Role // "" : no authentication
	h               func(http.ResponseWriter, *http.Request, Token)
}

// Routes lists "METHOD /path" of every route (for the OpenAPI test).
func (a *API) Routes() []string {
	var out []string
	for _, r := range a.table() {
		out = append(out, r.method+" "+r.pattern)
	}
	return out
}

func (a *API) table() []route {
	return []route{
		{"GET", "/v1/openapi.json", "", a.getOpenAPI},
		{"GET", "/v1/devices", RoleViewer, a.listDevices},
		{"POST", "/v1/devices", RoleAdmin, a.createDevice},
		{"GET", "/v1/devices/{id}", RoleViewer, a.getDevice},
		{"PATCH", "/v1/devices/{id}", RoleOperator, a.updateDevice},
		{"PUT", "/v1/devices/{id}/status", RoleAdmin, a.setStatus},
		{"GET", "/v1/devices/{id}/shadow", RoleViewer, a.getShadow},
		{"PATCH", "/v1/devices/{id}/shadow", RoleOperator, a.patchShadow},
		{"PUT", "/v1/devices/{id}/config", RoleOperator, a.putConfig},
		{"GET", "/v1/groups", RoleViewer, a.listGroups},
		{"POST", "/v1/groups", RoleAdmin, a.createGroup},
		{"POST", "/v1/groups/{id}/members", RoleAdmin, a.addMembers},
		{"GET", "/v1/alert-rules", RoleViewer, a.listAlertRules},
		{"POST", "/v1/alert-rules", RoleOperator, a.createAlertRule},
		{"GET", "/v1/alert-rules/{id}", RoleViewer, a.getAlertRule},
		{"PATCH", "/v1/alert-rules/{id}", RoleOperator, a.updateAlertRule},
		{"DELETE", "/v1/alert-rules/{id}", RoleOperator, a.deleteAlertRule},
	}
}

func (a *API) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.table() {
		mux.Handle(rt.method+" "+rt.pattern, a.wrap(rt))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, CodeNotFound, "no route "+r.Method+" "+r.URL.Path+"; see /v1/openapi.json")
	})
	return mux
}

// wrap authenticates, authorises, rate-limits and counts a route.
func (a *API) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		defer func() {
			a.m.requests.WithLabelValues(label, strconv.Itoa(sw.status)).Inc()
			a.m.latency.WithLabelValues(label).Observe(time.Since(start).Seconds())
		}()
		var tok Token
		if rt.role != "" {
			h := r.Header.Get("Authorization")
			bearer, ok := strings.CutPrefix(h, "Bearer ")
			if !ok {
				sw.Header().Set("WWW-Authenticate", `Bearer realm="iotpipe"`)
				writeProblem(sw, r, http.StatusUnauthorized, CodeUnauthorized, "send Authorization: Bearer <token> (iotpipe tokens create)")
				return
			}
			var err error
			tok, err = a.tokens.Authenticate(r.Context(), strings.TrimSpace(bearer))
			if errors.Is(err, ErrBadToken) {
				sw.Header().Set("WWW-Authenticate", `Bearer realm="iotpipe", error="invalid_token"`)
				writeProblem(sw, r, http.StatusUnauthorized, CodeUnauthorized, err.Error())
				return
			}
			if err != nil {
				a.writeError(sw, r, err)
				return
			}
			if tok.Role.rank() < rt.role.rank() {
				writeProblem(sw, r, http.StatusForbidden, CodeForbidden, fmt.Sprintf("%s needs the %s role; this token is %s", label, rt.role, tok.Role))
				return
			}
			if !a.allow(tok.ID) {
				sw.Header().Set("Retry-After", "1")
				writeProblem(sw, r, http.StatusTooManyRequests, CodeRateLimited, fmt.Sprintf("more than %g requests/s (burst %d) with this token", a.cfg.RatePerToken, a.cfg.RateBurst))
				return
			}
		}
		rt.h(sw, r, tok)
	})
}

func (a *API) allow(id string) bool {
	if a.cfg.RatePerToken == 0 {
		return true
	}
	return a.limits.allow(id)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

type metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	published *prometheus.CounterVec
	refused   *prometheus.CounterVec
	pending   prometheus.Gauge
	relayUp   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotpipe_api_requests_total", Help: "API requests by route and HTTP status."}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "iotpipe_api_request_seconds", Help: "API request duration by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotpipe_api_relay_published_total", Help: "Outbox messages published and acknowledged (PUBACK), by kind."}, []string{"kind"}),
		refused:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotpipe_api_relay_refused_total", Help: "Outbox messages the broker refused (PUBACK reason code >= 0x80, e.g. an ACL), dropped from the outbox and logged, by kind."}, []string{"kind"}),
		pending:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "iotpipe_api_relay_pending", Help: "Outbox messages read and not yet acknowledged by the broker."}),
		relayUp:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "iotpipe_api_relay_connected", Help: "1 while the relay is connected to the MQTT broker."}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.published, m.refused, m.pending, m.relayUp)
	}
	return m
}
