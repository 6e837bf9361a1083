package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/proc"
)

// Stage settings: short windows so that rows appear within seconds (the
// same values as `iotpipe demo`).
const (
	window         = 10 * time.Second
	lateness       = 2 * time.Second
	idleTimeout    = 5 * time.Second
	lakeMaxAge     = 10 * time.Second
	pollInterval   = 100 * time.Millisecond
	progressEvery  = 5 * time.Second
	stopWait       = 45 * time.Second
	readyTimeout   = 90 * time.Second
	rawPartitions  = 6
	probeDevices   = 5
	measurements   = 4 // the simulator's realistic format
	probeMetric    = "temperature"
	maxDrainWait   = 15 * time.Minute
	stableDrainFor = 15 * time.Second
)

var rule = stepRule{MinAchieved: 0.95, Growth: 0.05, Bound: 5 * time.Second, LakeBound: lakeMaxAge + 5*time.Second}

// env is the services' settings (scripts/services.sh env).
type env struct {
	stateDir                    string
	mqttURL, mqttHost, mqttPort string
	mqttUser, mqttPass          string
	devUser, devPass            string
	brokers                     []string
	// kafka is the admin's connection (IOTPIPE_KAFKA_TLS, _CA_FILE,
	// _SASL_*); the stages run as the admin too.
	kafka              kafkax.Config
	pgDSN, pgReaderDSN string
	pgWriterDSN        string
	s3                 objstore.Config
}

// environ is the environment of every child process: PATH and the like
// (proc.BaseEnv) and the services' settings, nothing else of ours.
func (e env) environ() []string {
	return append(proc.BaseEnv(),
		"IOTPIPE_MQTT_URL="+e.mqttURL,
		"IOTPIPE_MQTT_USERNAME="+e.mqttUser, "IOTPIPE_MQTT_PASSWORD="+e.mqttPass,
		"IOTPIPE_MQTT_DEVICE_USERNAME="+e.devUser, "IOTPIPE_MQTT_DEVICE_PASSWORD="+e.devPass,
		"IOTPIPE_KAFKA_BROKERS="+strings.Join(e.brokers, ","),
		"IOTPIPE_KAFKA_TLS="+strconv.FormatBool(e.kafka.TLS.Enabled), "IOTPIPE_KAFKA_CA_FILE="+e.kafka.TLS.CAFile,
		"IOTPIPE_KAFKA_SASL_MECHANISM="+e.kafka.SASL.Mechanism,
		"IOTPIPE_KAFKA_SASL_USERNAME="+e.kafka.SASL.Username, "IOTPIPE_KAFKA_SASL_PASSWORD="+e.kafka.SASL.Password,
		"IOTPIPE_PG_DSN="+e.pgDSN, "IOTPIPE_PG_WRITER_DSN="+e.pgWriterDSN, "IOTPIPE_PG_READER_DSN="+e.pgReaderDSN,
		"IOTPIPE_S3_ENDPOINT="+e.s3.Endpoint, "IOTPIPE_S3_ACCESS_KEY="+e.s3.AccessKey,
		"IOTPIPE_S3_SECRET_KEY="+e.s3.SecretKey, "IOTPIPE_S3_REGION="+e.s3.Region,
		"IOTPIPE_S3_CA_FILE="+e.s3.CAFile,
		// init makes the bucket with the root key and hands it to the lake's key.
		"IOTPIPE_S3_ADMIN_ACCESS_KEY="+os.Getenv("IOTPIPE_S3_ADMIN_ACCESS_KEY"),
		"IOTPIPE_S3_ADMIN_SECRET_KEY="+os.Getenv("IOTPIPE_S3_ADMIN_SECRET_KEY"),
		"IOTPIPE_S3_BUCKET_OWNER="+os.Getenv("IOTPIPE_S3_BUCKET_OWNER"),
	)
}

func loadEnv() (env, error) {
	var missing []string
	get := func(k string) string {
		v := os.Getenv(k)
		if v == "" {
			missing = append(missing, k)
		}
		return v
	}
	e := env{
		stateDir: os.Getenv("IOTPIPE_STATE_DIR"),
		mqttURL:  get("IOTPIPE_MQTT_URL"), mqttUser: get("IOTPIPE_MQTT_USERNAME"), mqttPass: get("IOTPIPE_MQTT_PASSWORD"),
		devUser: get("IOTPIPE_MQTT_DEVICE_USERNAME"), devPass: get("IOTPIPE_MQTT_DEVICE_PASSWORD"),
		brokers: strings.Split(get("IOTPIPE_KAFKA_BROKERS"), ","),
		pgDSN:   get("IOTPIPE_PG_DSN"), pgReaderDSN: os.Getenv("IOTPIPE_PG_READER_DSN"),
		s3: objstore.Config{Endpoint: get("IOTPIPE_S3_ENDPOINT"), AccessKey: get("IOTPIPE_S3_ACCESS_KEY"),
			SecretKey: get("IOTPIPE_S3_SECRET_KEY"), Region: get("IOTPIPE_S3_REGION"), CAFile: os.Getenv("IOTPIPE_S3_CA_FILE")},
	}
	e.pgWriterDSN = get("IOTPIPE_PG_WRITER_DSN") // the sink reads it from the environment
	e.kafka = kafkax.DefaultConfig("iotpipe-bench-e2e")
	e.kafka.Brokers = e.brokers
	e.kafka.TLS = kafkax.TLS{Enabled: os.Getenv("IOTPIPE_KAFKA_TLS") == "true", CAFile: os.Getenv("IOTPIPE_KAFKA_CA_FILE")}
	if m := os.Getenv("IOTPIPE_KAFKA_SASL_MECHANISM"); m != "" {
		e.kafka.SASL.Mechanism = m
	}
	e.kafka.SASL.Username, e.kafka.SASL.Password = os.Getenv("IOTPIPE_KAFKA_SASL_USERNAME"), os.Getenv("IOTPIPE_KAFKA_SASL_PASSWORD")
	if len(missing) > 0 {
		return e, fmt.Errorf("missing %s: start the services and load their settings (make services-up; eval \"$(scripts/services.sh env)\")", strings.Join(missing, ", "))
	}
	if e.pgReaderDSN == "" {
		e.pgReaderDSN = e.pgDSN
	}
	u, err := url.Parse(e.mqttURL)
	if err != nil || u.Hostname() == "" {
		return e, fmt.Errorf("IOTPIPE_MQTT_URL %q: want mqtt://host:port", e.mqttURL)
	}
	e.mqttHost, e.mqttPort = u.Hostname(), u.Port()
	if e.mqttPort == "" {
		e.mqttPort = "1883"
	}
	return e, nil
}

func (o *Options) validate() error {
	var errs []error
	if o.Binary == "" {
		errs = append(errs, errors.New("Binary: empty"))
	}
	if o.Devices < 1 {
		errs = append(errs, fmt.Errorf("Devices: %d, want ≥ 1", o.Devices))
	}
	for _, d := range []struct {
		n string
		v time.Duration
	}{{"CeilingDuration", o.CeilingDuration}, {"FixedDuration", o.FixedDuration}, {"StepDuration", o.StepDuration}} {
		if d.v < 3*time.Second {
			errs = append(errs, fmt.Errorf("%s: %s, want ≥ 3s", d.n, d.v))
		}
	}
	if !(o.FixedOfSustained > 0 && o.FixedOfSustained <= 1) {
		errs = append(errs, fmt.Errorf("FixedOfSustained: %g, want in (0, 1]", o.FixedOfSustained))
	}
	if !(o.FixedRate >= 0) {
		errs = append(errs, fmt.Errorf("FixedRate: %g, want ≥ 0 (0: FixedOfSustained × the highest sustained step)", o.FixedRate))
	}
	if o.MaxBacklog < 1 {
		errs = append(errs, fmt.Errorf("MaxBacklog: %d, want ≥ 1", o.MaxBacklog))
	}
	if o.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("DrainTimeout: %s, want ≥ 0", o.DrainTimeout))
	}
	if len(o.Steps) == 0 {
		errs = append(errs, errors.New("Steps: empty, want at least one fraction"))
	}
	for i, f := range o.Steps {
		if !(f > 0) || (i > 0 && f <= o.Steps[i-1]) {
			errs = append(errs, fmt.Errorf("Steps: want positive fractions in increasing order, got %v", o.Steps))
			break
		}
	}
	return errors.Join(errs...)
}

// names are everything a run creates, all derived from its id.
type names struct {
	id                            string
	raw, metrics, dlq, changelog  string
	readings                      string // the processor's accepted readings
	schema, bucket                string
	gProcessor, gTimescale, gLake string
	shareGroup, bridgeClient      string
	template, ceilingTemplate     string
	ceilingFilter, ceilingClient  string
	devicePrefix                  string
}

func newNames() names {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := "e2e-" + hex.EncodeToString(b[:])
	return names{
		id: id, raw: id + ".raw", metrics: id + ".metrics", dlq: id + ".dlq", changelog: id + ".changelog", readings: id + ".readings",
		schema: "bench_" + strings.ReplaceAll(id, "-", "_"), bucket: id,
		gProcessor: id + "-processor", gTimescale: id + "-sink-timescale", gLake: id + "-sink-lake",
		shareGroup: id, bridgeClient: id + "-bridge",
		template:        "devices/" + id + "/{device_id}/telemetry",
		ceilingTemplate: "devices/" + id + "-ceiling/{device_id}/telemetry",
		ceilingFilter:   "devices/" + id + "-ceiling/+/telemetry",
		ceilingClient:   id + "-ceiling-sub",
		devicePrefix:    id + "-",
	}
}

type runner struct {
	o   Options
	log io.Writer
	e   env
	n   names
	cs  *children
	kcl *kgo.Client
	adm *kadm.Client
	res *Result
	dpc int // devices per connection

	stages map[string]*child // bridge, processor, sink timescale, sink lake
	addrs  map[string]string // their /metrics addresses

	ackedDone atomic.Int64 // acked by pipeline simulators that have stopped
	pubDone   atomic.Int64
	unconf    atomic.Int64
	simAddr   atomic.Pointer[string] // /metrics of the running pipeline simulator
	simAcked  atomic.Int64           // its last scraped acked counter

	lat *poller
	pg  *pgx.Conn // owner connection: sink_offsets and counts

	eventsRead bool // bridgeEvents ran
}

// Run runs the benchmark on the services described by the IOTPIPE_*
// environment (scripts/services.sh env). It returns the Result even when
// the count check fails, together with an error saying what differs; on
// any other error the Result holds what was measured so far.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("e2e options: %w", err)
	}
	e, err := loadEnv()
	if err != nil {
		return nil, err
	}
	n := newNames()
	dir, err := os.MkdirTemp("", "iotpipe-"+n.id+"-")
	if err != nil {
		return nil, err
	}
	dpc := min(100, max(1, o.Devices/10))
	r := &runner{o: o, log: o.Log, e: e, n: n, cs: newChildren(dir, e.environ()), dpc: dpc,
		stages: map[string]*child{}, addrs: map[string]string{},
		res: &Result{Devices: o.Devices, RunID: n.id, LogDir: dir, Quick: o.Quick, StartedAt: time.Now().UTC(),
			Cores: runtime.NumCPU(), DevicesPerConn: dpc, LatencyPollIntervalS: pollInterval.Seconds(),
			Steps: []Step{}, Processes: []Proc{}, Notes: []string{}, BrokerCeilingProcesses: []Proc{}, BridgeMQTTEvents: []string{}}}
	r.kcl, err = kgo.NewClient(e.kafka.Opts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer r.kcl.Close()
	r.adm = kadm.NewClient(r.kcl)
	r.logf("run %s: %d devices, ceiling %s, steps %v × %s (stop early at a bridge backlog of %d), fixed %s at %s; logs in %s",
		n.id, o.Devices, o.CeilingDuration, o.Steps, o.StepDuration, o.MaxBacklog, o.FixedDuration, o.fixedDesc(), dir)
	err = r.run(ctx)
	if err != nil {
		// The bridge's MQTT events explain many failures (a lost
		// connection, redelivery): collect them before it is stopped.
		if !r.eventsRead {
			r.bridgeEvents()
		}
		// Children still run after an error or a cancel: stop them
		// cleanly so that they leave their groups and sessions.
		r.cs.stopAll(15 * time.Second)
	}
	r.cs.killAll()
	if cerr := r.cleanup(); cerr != nil {
		r.logf("cleanup: %v", cerr)
		if err == nil {
			err = cerr
		}
	}
	return r.res, err
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "e2e: "+format+"\n", args...)
}

func (r *runner) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.res.Notes = append(r.res.Notes, s)
	r.logf("note: %s", s)
}

// run is Run after setup: every phase in order.
func (r *runner) run(ctx context.Context) error {
	if err := r.init(ctx); err != nil {
		return err
	}
	if err := r.ceiling(ctx); err != nil {
		return fmt.Errorf("broker ceiling: %w", err)
	}
	if r.res.BrokerCeilingMsgsPerS <= 0 {
		return errors.New("broker ceiling: no messages received")
	}
	if err := r.startStages(ctx); err != nil {
		return err
	}
	var err error
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	r.pg, err = pgx.Connect(cctx, r.e.pgDSN)
	cancel()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer r.pg.Close(context.WithoutCancel(ctx))
	r.lat, err = newPoller(ctx, r.e.pgReaderDSN, r.e.pgDSN, r.n.schema)
	if err != nil {
		return err
	}
	pctx, stopPoll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.lat.run(pctx) })
	defer func() { stopPoll(); wg.Wait(); r.lat.close() }()

	// Stepped search first, then the fixed load at a rate the search
	// showed to be sustainable (see the package documentation).
	first := 0
	var best *Step // highest sustained step
	for i, f := range r.o.Steps {
		st, err := r.phase(ctx, fmt.Sprintf("step %d", i+1), f*r.res.BrokerCeilingMsgsPerS, r.o.StepDuration, first, false)
		first += r.o.Devices
		if st.Phase != "" {
			r.res.Steps = append(r.res.Steps, st)
		}
		if err != nil {
			return err
		}
		if !st.Sustained {
			r.logf("%s not sustained (%s): stepping stops", st.Phase, st.Reason)
			break
		}
		best = &r.res.Steps[len(r.res.Steps)-1]
		r.res.MaxSustainableMsgsPerS = max(r.res.MaxSustainableMsgsPerS, st.AchievedMsgsPerS)
	}
	if n := len(r.res.Steps); n == len(r.o.Steps) && r.res.Steps[n-1].Sustained {
		r.note("every step was sustained, up to %.2f × ceiling: the maximum sustainable rate is at least %.0f msg/s (add higher steps to find it)",
			best.Fraction, best.AchievedMsgsPerS)
	}
	fixedRate, basis := r.fixedRate(best)
	r.res.FixedBasis = basis
	// Work off the last step's backlog, so that the fixed phase starts
	// from an empty pipeline.
	if err := r.settle(ctx, fixedRate); err != nil {
		return err
	}

	// Fixed load, with resource monitoring.
	fixed, err := r.phase(ctx, "fixed", fixedRate, r.o.FixedDuration, first, true)
	r.res.Fixed = fixed
	if err != nil {
		return err
	}
	r.res.FixedSustained = fixed.Sustained
	r.res.FixedDurationS = fixed.DurationS
	r.res.FixedOfferedMsgsPerS = fixed.OfferedMsgsPerS
	r.res.FixedMsgsPerS = fixed.AchievedMsgsPerS
	r.res.FixedRatioToCeiling = fixed.AchievedMsgsPerS / r.res.BrokerCeilingMsgsPerS
	r.res.LatencyP50S, r.res.LatencyP99S, r.res.LatencySamples = fixed.LatencyP50S, fixed.LatencyP99S, fixed.LatencySamples
	r.res.PipelineCPUCores, r.res.PipelineCPUMicrosPerMsg = pipelineCPU(r.res.Processes, fixed.AchievedMsgsPerS)
	if fixed.LatencySamples == 0 {
		r.note("fixed: no latency samples (no probe-device row became queryable while the phase ran): latency_p50_s and latency_p99_s are not measured")
	}
	if fixed.Sustained {
		r.res.MaxSustainableMsgsPerS = max(r.res.MaxSustainableMsgsPerS, fixed.AchievedMsgsPerS)
	} else {
		r.note("fixed: the fixed load (%.0f msg/s, %s) was NOT sustained: %s", fixed.OfferedMsgsPerS, basis, fixed.Reason)
	}
	r.res.MaxSustainableRatio = r.res.MaxSustainableMsgsPerS / r.res.BrokerCeilingMsgsPerS
	stopPoll()
	wg.Wait()

	countErr := r.countCheck(ctx)
	r.bridgeEvents()
	stopErr := r.stopStages()
	r.res.GoalMet = r.res.MaxSustainableRatio >= 0.5 && r.res.Count.OK
	r.logf("done: ceiling %.0f msg/s; max sustainable %.0f msg/s (%.2f of ceiling); fixed %.0f msg/s (%.2f of ceiling, sustained=%t), latency %s; count check ok=%t",
		r.res.BrokerCeilingMsgsPerS, r.res.MaxSustainableMsgsPerS, r.res.MaxSustainableRatio, r.res.FixedMsgsPerS, r.res.FixedRatioToCeiling,
		r.res.FixedSustained, latencyText(r.res.LatencyP50S, r.res.LatencyP99S, r.res.LatencySamples), r.res.Count.OK)
	return errors.Join(countErr, stopErr)
}

// init creates the run's topics, schema and bucket with `iotpipe init`.
func (r *runner) init(ctx context.Context) error {
	n := r.n
	c, err := r.cs.start("init", r.o.Binary, false, "init",
		"--topic-raw", n.raw, "--topic-metrics", n.metrics, "--topic-dlq", n.dlq, "--topic-processor-changelog", n.changelog, "--topic-readings", n.readings,
		"--raw-partitions", strconv.Itoa(rawPartitions), "--metrics-partitions", strconv.Itoa(rawPartitions),
		"--raw-retention", "24h", "--metrics-retention", "24h", "--dlq-retention", "24h",
		"--pg-schema", n.schema, "--s3-bucket", n.bucket, "--kafka-client-id", n.id+"-init")
	if err != nil {
		return err
	}
	c.stopped.Store(true) // it exits by itself
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.Done():
	case <-time.After(3 * time.Minute):
		return fmt.Errorf("iotpipe init did not finish in 3m (log %s)", c.logPath)
	}
	if c.exitCode() != 0 {
		return fmt.Errorf("iotpipe init exited %d; log %s:\n%s", c.exitCode(), c.logPath, tail(c.logPath, 20))
	}
	r.logf("init: topics %s.{raw,metrics,dlq,changelog}, schema %s, bucket %s", n.id, n.schema, n.bucket)
	return nil
}

// cleanup removes everything the run created, with its own deadline so
// that it also runs after ctx was cancelled.
func (r *runner) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n := r.n
	var errs []error
	// MQTT: the ceiling subscriber's session (the bridge's expires by
	// itself: --mqtt-session-expiry).
	out, err := exec.CommandContext(ctx, "mosquitto_sub", r.subArgs("-x", "0", "-E")...).CombinedOutput()
	if err != nil {
		errs = append(errs, fmt.Errorf("clear the mosquitto_sub session: %v: %s", err, out))
	}
	if resp, err := r.adm.DeleteTopics(ctx, n.raw, n.metrics, n.dlq, n.changelog, n.readings); err != nil {
		errs = append(errs, fmt.Errorf("delete topics: %w", err))
	} else {
		for _, t := range resp {
			if t.Err != nil && !errors.Is(t.Err, kerr.UnknownTopicOrPartition) {
				errs = append(errs, fmt.Errorf("delete topic %s: %w", t.Topic, t.Err))
			}
		}
	}
	// A member killed without leaving keeps its group non-empty until its
	// session times out (20 s processor, 45 s lake sink): retry a while.
	groups := []string{n.gProcessor, n.gTimescale, n.gLake}
	for try := 0; len(groups) > 0; try++ {
		resp, err := r.adm.DeleteGroups(ctx, groups...)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete groups: %w", err))
			break
		}
		var busy []string
		for _, g := range resp {
			switch {
			case g.Err == nil || errors.Is(g.Err, kerr.GroupIDNotFound):
			case errors.Is(g.Err, kerr.NonEmptyGroup) && try < 12:
				busy = append(busy, g.Group)
			default:
				errs = append(errs, fmt.Errorf("delete group %s: %w", g.Group, g.Err))
			}
		}
		groups = busy
		if len(groups) > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	// The schema owner's DSN: it names the database that holds the schema
	// (the admin DSN's is "postgres").
	if conn, err := pgx.Connect(ctx, r.e.pgDSN); err != nil {
		errs = append(errs, fmt.Errorf("drop schema: %w", err))
	} else {
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{n.schema}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, fmt.Errorf("drop schema %s: %w", n.schema, err))
		}
		_ = conn.Close(ctx)
	}
	s3 := r.e.s3
	s3.Bucket = n.bucket
	if cl, err := objstore.New(s3); err != nil {
		errs = append(errs, fmt.Errorf("s3 client: %w", err))
	} else if ok, err := cl.BucketExists(ctx, n.bucket); err == nil && ok {
		for obj := range cl.ListObjects(ctx, n.bucket, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err == nil {
				_ = cl.RemoveObject(ctx, n.bucket, obj.Key, minio.RemoveObjectOptions{})
			}
		}
		if err := cl.RemoveBucket(ctx, n.bucket); err != nil {
			errs = append(errs, fmt.Errorf("remove bucket %s: %w", n.bucket, err))
		}
	}
	if len(errs) == 0 {
		r.logf("cleanup: removed topics, groups, schema %s and bucket %s", n.schema, n.bucket)
	}
	return errors.Join(errs...)
}

// subArgs are mosquitto_sub's connection arguments for the ceiling's
// subscriber, followed by extra.
func (r *runner) subArgs(extra ...string) []string {
	a := []string{"-h", r.e.mqttHost, "-p", r.e.mqttPort, "-u", r.e.mqttUser, "-P", r.e.mqttPass,
		"-V", "mqttv5", "-i", r.n.ceilingClient, "-q", "1", "-t", r.n.ceilingFilter}
	return append(a, extra...)
}

// simArgs are the simulator's arguments for one phase.
func (r *runner) simArgs(template, rate string, first int, httpAddr string) []string {
	return []string{"simulate", "--mqtt-url", r.e.mqttURL,
		"--mqtt-device-username", r.e.devUser, "--mqtt-device-password", r.e.devPass,
		"--devices", strconv.Itoa(r.o.Devices), "--first-device", strconv.Itoa(first),
		"--device-prefix", r.n.devicePrefix, "--devices-per-conn", strconv.Itoa(r.dpc),
		"--topic-template", template, "--rate", rate, "--format", "realistic",
		"--invalid-fraction", "0", "--duplicate-fraction", "0", "--out-of-order-fraction", "0", "--late-fraction", "0",
		"--messages-per-device", "0", "--duration", "0",
		"--progress-interval", progressEvery.String(), "--http-addr", httpAddr}
}

func simAcked(ctx context.Context, addr string) (int64, error) {
	m, err := scrape(ctx, addr)
	if err != nil {
		return 0, err
	}
	if !m.Has("iotpipe_simulate_acked_total") {
		return 0, errors.New("no iotpipe_simulate_acked_total")
	}
	return int64(m.Sum("iotpipe_simulate_acked_total")), nil
}

// stopSim stops a simulator and reads its final summary.
func stopSim(c *child) (simSummary, error) {
	if err := c.stop(stopWait); err != nil {
		return simSummary{}, err
	}
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return simSummary{}, err
	}
	s, err := parseSimSummary(string(b))
	if err != nil {
		return s, fmt.Errorf("%s: %w (log %s)", c.name, err, c.logPath)
	}
	return s, nil
}

// ceiling measures the broker-only ceiling: the simulator at --rate 0
// into Mosquitto with one QoS 1 mosquitto_sub as the only consumer.
func (r *runner) ceiling(ctx context.Context) error {
	// Create the persistent session and its subscription first, so that
	// nothing published after this point is lost for want of a
	// subscriber.
	if out, err := exec.CommandContext(ctx, "mosquitto_sub", r.subArgs("-c", "-x", "300", "-E")...).CombinedOutput(); err != nil {
		return fmt.Errorf("mosquitto_sub -E: %v: %s", err, out)
	}
	sub, err := r.cs.start("mosquitto_sub", "mosquitto_sub", true, r.subArgs("-c", "-x", "300", "-F", ".")...)
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	sim, err := r.cs.start("simulate-ceiling", r.o.Binary, false, r.simArgs(r.n.ceilingTemplate, "0", 0, addr)...)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, sim, addr, 30*time.Second); err != nil {
		return err
	}
	svc, _ := servicePids(r.e.stateDir)
	ws := []watched{
		{name: "simulator", pids: func() []int { return []int{sim.pid()} }, hwm: true},
		{name: "mosquitto_sub", pids: func() []int { return []int{sub.pid()} }, hwm: true},
	}
	if pid, ok := svc["mosquitto"]; ok {
		ws = append(ws, watched{name: "mosquitto", pids: func() []int { return []int{pid} }, note: "peak of VmRSS sampled every second"})
	}
	mon := newMonitor(ws)
	t0 := time.Now()
	warm := min(5*time.Second, r.o.CeilingDuration/3)
	var wLines, wAcked int64
	var wAt time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastLog := t0
	for time.Since(t0) < r.o.CeilingDuration {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-r.cs.died:
			return fmt.Errorf("%s exited %d; log %s:\n%s", c.name, c.exitCode(), c.logPath, tail(c.logPath, 15))
		case <-tick.C:
		}
		mon.sample()
		if wAt.IsZero() && time.Since(t0) >= warm {
			wAt, wLines = time.Now(), sub.lines.Load()
			wAcked, _ = simAcked(ctx, addr)
		}
		if time.Since(lastLog) >= progressEvery {
			lastLog = time.Now()
			a, _ := simAcked(ctx, addr)
			r.logf("ceiling %3.0fs/%.0fs  received %d  acked %d  (%.0f msg/s so far)", time.Since(t0).Seconds(),
				r.o.CeilingDuration.Seconds(), sub.lines.Load(), a, float64(sub.lines.Load())/time.Since(t0).Seconds())
		}
	}
	eAt, eLines := time.Now(), sub.lines.Load()
	eAcked, err := simAcked(ctx, addr)
	if err != nil {
		return fmt.Errorf("simulator /metrics: %w", err)
	}
	procs := mon.result()
	busy := mon.machineBusy()
	sum, err := stopSim(sim)
	if err != nil {
		return err
	}
	// Wait until the subscriber got everything acked (it may trail).
	deadline := time.Now().Add(30 * time.Second)
	for sub.lines.Load() < sum.Acked+sum.Unconfirmed && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	received := sub.lines.Load()
	if err := sub.stop(10 * time.Second); err != nil {
		return err
	}
	// End the subscriber's session now (cleanup does it again): messages
	// it did not get yet would otherwise stay queued in Mosquitto during
	// the pipeline's phases.
	if out, err := exec.CommandContext(ctx, "mosquitto_sub", r.subArgs("-x", "0", "-E")...).CombinedOutput(); err != nil {
		r.note("ceiling: clear the mosquitto_sub session: %v: %s", err, out)
	}
	wall := eAt.Sub(wAt).Seconds()
	res := r.res
	res.BrokerCeilingMsgsPerS = float64(eLines-wLines) / wall
	res.BrokerCeilingAckedMsgsPerS = float64(eAcked-wAcked) / wall
	res.BrokerCeilingDurationS = wall
	res.BrokerCeilingAcked, res.BrokerCeilingReceived, res.BrokerCeilingUnconfirmed = sum.Acked, received, sum.Unconfirmed
	res.BrokerCeilingConnections = (r.o.Devices + r.dpc - 1) / r.dpc
	res.BrokerCeilingProcesses = procs
	res.BrokerCeilingMachineCPUBusy = busy
	res.BrokerCeilingLimitedBy = limitedBy(procs, busy)
	cpu := make([]string, 0, len(procs))
	for _, p := range procs {
		cpu = append(cpu, fmt.Sprintf("%s %.2f", p.Name, p.CPUCores))
	}
	r.note("broker ceiling %.0f msg/s over %.0fs after %.0fs warm-up (%d connections of %d devices); CPU cores: %s; machine %.0f%% busy; limited by %s",
		res.BrokerCeilingMsgsPerS, wall, warm.Seconds(), res.BrokerCeilingConnections, r.dpc, strings.Join(cpu, ", "), 100*busy, res.BrokerCeilingLimitedBy)
	if res.BrokerCeilingLimitedBy == "simulator" {
		r.note("the simulator (one process) is CPU-bound at rate 0: the ceiling is what one simulator can push, a lower bound of the broker's")
	}
	if received < sum.Acked || received > sum.Acked+sum.Unconfirmed {
		r.note("ceiling: mosquitto_sub received %d, outside [acked %d, acked + unconfirmed %d]: it trailed the publisher (or Mosquitto dropped messages queued for it, see its log); the ceiling is what the one QoS 1 subscriber received",
			received, sum.Acked, sum.Acked+sum.Unconfirmed)
	}
	if sum.Refused != 0 {
		r.note("ceiling: %d messages refused by the broker", sum.Refused)
	}
	return nil
}

// startStages starts the bridge, processor and both sinks and waits until
// each is ready.
func (r *runner) startStages(ctx context.Context) error {
	n := r.n
	// The topology of a deployment: the sinks store the processor's
	// accepted readings (n.readings, written in its transactions), so the
	// latency to a queryable row includes the processor's commit interval.
	topics := []string{"--topic-metrics", n.metrics, "--topic-dlq", n.dlq}
	sinkTopics := append([]string{"--topic-readings", n.readings}, topics...)
	topics = append([]string{"--topic-raw", n.raw}, topics...)
	stages := []struct {
		name string
		args []string
	}{
		{"bridge", []string{"bridge", "--mqtt-client-id", n.bridgeClient, "--mqtt-share-group", n.shareGroup,
			"--topic-template", n.template, "--mqtt-session-expiry", "2m", "--topic-raw", n.raw, "--topic-dlq", n.dlq,
			"--kafka-client-id", n.id + "-bridge",
			// No heartbeats: the counts compare the raw topic's end offsets
			// with the devices' messages (the processor then measures device
			// silence on its wall clock, as before heartbeats).
			"--heartbeat-interval", "0"}},
		{"processor", append([]string{"processor", "--group", n.gProcessor, "--instance-id", n.id + "-1",
			"--topic-processor-changelog", n.changelog, "--topic-readings", n.readings, "--window", window.String(), "--lateness", lateness.String(),
			"--idle-timeout", idleTimeout.String(), "--kafka-client-id", n.id + "-processor"}, topics...)},
		{"sink timescale", append([]string{"sink", "timescale", "--group", n.gTimescale, "--pg-schema", n.schema,
			"--kafka-client-id", n.id + "-sink-timescale"}, sinkTopics...)},
		{"sink lake", append([]string{"sink", "lake", "--group", n.gLake, "--s3-bucket", n.bucket,
			"--max-age", lakeMaxAge.String(), "--kafka-client-id", n.id + "-sink-lake"}, sinkTopics...)},
	}
	for _, s := range stages {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		args := append(append(s.args, "--http-addr", addr, "--log-format", "json"), r.o.StageArgs[s.name]...)
		if r.o.ProfileSeconds > 0 {
			args = append(args, "--debug-pprof")
		}
		c, err := r.cs.start(s.name, r.o.Binary, false, args...)
		if err != nil {
			return err
		}
		r.stages[s.name], r.addrs[s.name] = c, addr
	}
	for _, s := range stages {
		if err := waitReady(ctx, r.stages[s.name], r.addrs[s.name], readyTimeout); err != nil {
			return err
		}
	}
	r.logf("stages ready: bridge, processor (window %s, lateness %s, idle %s), sink timescale, sink lake (max age %s)",
		window, lateness, idleTimeout, lakeMaxAge)
	return nil
}

// stopStages stops the stages in pipeline order and checks they exit 0.
func (r *runner) stopStages() error {
	var errs []error
	for _, name := range []string{"bridge", "processor", "sink timescale", "sink lake"} {
		if c := r.stages[name]; c != nil {
			errs = append(errs, c.stop(stopWait))
		}
	}
	return errors.Join(errs...)
}

// lagNow samples the backlogs and the records in the raw and DLQ topics.
func (r *runner) lagNow(ctx context.Context) (s lagSample, raw, dlq int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := r.adm.ListEndOffsets(ctx, r.n.raw, r.n.dlq)
	if err != nil {
		return s, 0, 0, err
	}
	if err := ends.Error(); err != nil {
		return s, 0, 0, err
	}
	rawEnd := map[int32]int64{}
	ends.Each(func(lo kadm.ListedOffset) {
		switch lo.Topic {
		case r.n.raw:
			rawEnd[lo.Partition] = lo.Offset
			raw += lo.Offset
		case r.n.dlq:
			dlq += lo.Offset
		}
	})
	// The sinks read the processor's readings topic: their lag is the
	// processor's (raw records it has not committed) plus the readings it
	// committed that they have not (one record per accepted message, up to
	// the last stable offset). A transaction's commit marker takes one
	// offset after its records, so a sink that has everything can stand
	// one offset before the LSO on each partition: that one is forgiven
	// (the count check counts the rows themselves).
	lso, err := r.adm.ListCommittedOffsets(ctx, r.n.readings)
	if err != nil {
		return s, 0, 0, err
	}
	if err := lso.Error(); err != nil {
		return s, 0, 0, err
	}
	readEnd := map[int32]int64{}
	lso.Each(func(lo kadm.ListedOffset) { readEnd[lo.Partition] = lo.Offset })
	sinkLag := func(next func(p int32) int64) int64 {
		var n int64
		for p, end := range readEnd {
			n += max(0, end-next(p)-1)
		}
		return n
	}
	procOffs, err := r.adm.FetchOffsets(ctx, r.n.gProcessor)
	if err != nil {
		return s, 0, 0, fmt.Errorf("offsets of %s: %w", r.n.gProcessor, err)
	}
	for p, end := range rawEnd {
		s.Processor += max(0, end-committedAt(procOffs, r.n.raw, p))
	}
	// The TimescaleDB sink's own offsets are in sink_offsets, written with
	// the rows; it commits to Kafka only now and then, for monitoring.
	if r.pg != nil {
		next := map[int32]int64{}
		rows, err := r.pg.Query(ctx, "SELECT partition, next_offset FROM "+pgx.Identifier{r.n.schema, "sink_offsets"}.Sanitize()+
			" WHERE consumer_group = $1 AND topic = $2", r.n.gTimescale, r.n.readings)
		if err != nil {
			return s, 0, 0, fmt.Errorf("sink_offsets: %w", err)
		}
		for rows.Next() {
			var p int32
			var o int64
			if err := rows.Scan(&p, &o); err == nil {
				next[p] = o
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return s, 0, 0, fmt.Errorf("sink_offsets: %w", err)
		}
		s.Timescale = s.Processor + sinkLag(func(p int32) int64 { return next[p] })
	}
	lakeOffs, err := r.adm.FetchOffsets(ctx, r.n.gLake)
	if err != nil {
		return s, 0, 0, fmt.Errorf("offsets of %s: %w", r.n.gLake, err)
	}
	s.Lake = s.Processor + sinkLag(func(p int32) int64 { return committedAt(lakeOffs, r.n.readings, p) })
	acked := r.ackedDone.Load()
	if a := r.simAddr.Load(); a != nil {
		if n, err := simAcked(ctx, *a); err == nil {
			r.simAcked.Store(n)
		}
		acked += r.simAcked.Load()
	}
	s.Bridge = max(0, acked-raw-dlq)
	return s, raw, dlq, nil
}

// phase runs one load level: a fresh simulator (devices first…first+N-1,
// so that no (device, seq) repeats across phases) offering offered
// messages/s in total. It ends early when the bridge backlog exceeds
// Options.MaxBacklog.
func (r *runner) phase(ctx context.Context, name string, offered float64, dur time.Duration, first int, monitorProcs bool) (Step, error) {
	fraction := offered / r.res.BrokerCeilingMsgsPerS
	perDevice := offered / float64(r.o.Devices)
	st := Step{Phase: name, Fraction: fraction, OfferedMsgsPerS: offered}
	addr, err := freeAddr()
	if err != nil {
		return st, err
	}
	// The simulator sends exactly the phase's messages and waits for their
	// PUBACKs before it exits, so that none is left unconfirmed (a
	// SIGTERM would drop the connection with messages in flight).
	msgs := max(1, int(perDevice*dur.Seconds()+0.5))
	args := r.simArgs(r.n.template, strconv.FormatFloat(perDevice, 'f', 4, 64), first, addr)
	for i := range args {
		if args[i] == "--messages-per-device" {
			args[i+1] = strconv.Itoa(msgs)
		}
	}
	sim, err := r.cs.start("simulate-"+strings.ReplaceAll(name, " ", ""), r.o.Binary, false, args...)
	if err != nil {
		return st, err
	}
	sim.stopped.Store(true) // it exits by itself
	if err := waitReady(ctx, sim, addr, 30*time.Second); err != nil {
		return st, err
	}
	r.simAcked.Store(0)
	r.simAddr.Store(&addr)
	probes := make([]string, 0, probeDevices)
	for i := range min(probeDevices, r.o.Devices) {
		probes = append(probes, fmt.Sprintf("%s%06d", r.n.devicePrefix, first+i))
	}
	r.lat.reset(probes)

	var ws []watched
	if monitorProcs {
		ws = r.watchList(sim)
	}
	mon := newMonitor(ws)
	var monDone sync.WaitGroup
	mctx, stopMon := context.WithCancel(ctx)
	defer func() { stopMon(); monDone.Wait() }()
	monDone.Go(func() { mon.run(mctx) })
	if monitorProcs && r.o.ProfileSeconds > 0 {
		monDone.Go(func() { r.profile(mctx, dur/4) })
	}

	t0 := time.Now()
	a0, err := simAcked(ctx, addr)
	if err != nil {
		return st, err
	}
	r.logf("%s: offered %.0f msg/s (%.2f × ceiling) = %d devices × %.4f msg/s", name, offered, fraction, r.o.Devices, perDevice)
	var samples []lagSample
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastLog, lastAcked, lastAt := t0, a0, t0
	for time.Since(t0) < dur && !sim.exited() {
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case c := <-r.cs.died:
			return st, fmt.Errorf("%s exited %d during %s; log %s:\n%s", c.name, c.exitCode(), name, c.logPath, tail(c.logPath, 15))
		case <-tick.C:
		}
		s, _, _, err := r.lagNow(ctx)
		if err != nil {
			r.logf("%s: lag sample failed: %v", name, err)
			continue
		}
		s.At = time.Since(t0)
		samples = append(samples, s)
		if time.Since(lastLog) >= progressEvery {
			a := r.simAcked.Load()
			now := time.Now()
			r.logf("%-7s %4.0fs/%.0fs  offered %.0f/s achieved %.0f/s  lag bridge %d processor %d timescale %d lake %d  latency %s",
				name, now.Sub(t0).Seconds(), dur.Seconds(), offered, float64(a-lastAcked)/now.Sub(lastAt).Seconds(),
				s.Bridge, s.Processor, s.Timescale, s.Lake, latencyText(r.lat.stats()))
			lastLog, lastAcked, lastAt = now, a, now
		}
		if s.Bridge > r.o.MaxBacklog {
			st.StoppedEarly = true
			r.note("%s: bridge backlog %d > %d after %.0fs: step stopped early (overload bounded)", name, s.Bridge, r.o.MaxBacklog, s.At.Seconds())
			break
		}
	}
	a1, aerr := simAcked(ctx, addr)
	elapsed := time.Since(t0)
	if monitorProcs {
		r.res.Processes = mon.result()
	}
	st.MachineCPUBusy = mon.machineBusy()
	// Let the simulator finish the messages it is behind on, then stop it.
	grace := 3*time.Second + dur/20
	if st.StoppedEarly {
		grace = 0
	}
	select {
	case <-ctx.Done():
		return st, ctx.Err()
	case <-sim.Done():
	case <-time.After(grace):
		if !st.StoppedEarly {
			r.note("%s: the simulator had not sent its %d messages per device %s after the phase; stopped", name, msgs, grace)
		}
	}
	sum, err := stopSim(sim)
	if aerr != nil { // it had already finished
		a1 = sum.Acked
	}
	st.DurationS = elapsed.Seconds()
	st.AchievedMsgsPerS = float64(a1-a0) / elapsed.Seconds()
	r.simAddr.Store(nil)
	r.ackedDone.Add(sum.Acked)
	r.pubDone.Add(sum.Published)
	r.unconf.Add(sum.Unconfirmed)
	if err != nil {
		return st, err
	}
	lat := r.lat.take()
	st.LatencyP50S, st.LatencyP99S, st.LatencySamples = percentile(lat, 50), percentile(lat, 99), len(lat)
	if name == "fixed" && len(lat) > 0 {
		r.res.LatencyMaxS = percentile(lat, 100)
	}
	v := decide(rule, offered, st.AchievedMsgsPerS, elapsed, samples)
	if st.StoppedEarly {
		v.Sustained, v.Reason = false, fmt.Sprintf("bridge backlog > %d after %.0fs (stopped early)", r.o.MaxBacklog, elapsed.Seconds())
	}
	st.Sustained, st.Reason, st.MaxLagRecords, st.EndLagRecords, st.LagGrowthRecords = v.Sustained, v.Reason, v.MaxLag, v.EndLag, v.Growth
	r.logf("%s: achieved %.0f msg/s of %.0f offered; lag max %d end %d growth %d; latency %s; sustained=%t %s",
		name, st.AchievedMsgsPerS, offered, v.MaxLag, v.EndLag, v.Growth, latencyText(st.LatencyP50S, st.LatencyP99S, len(lat)), v.Sustained, v.Reason)
	if st.AchievedMsgsPerS < rule.MinAchieved*offered {
		r.note("%s: the simulator achieved only %.0f of %.0f msg/s offered", name, st.AchievedMsgsPerS, offered)
	}
	return st, nil
}

// watchList is what the fixed phase measures: our children and the
// services.
func (r *runner) watchList(sim *child) []watched {
	one := func(c *child) func() []int { return func() []int { return []int{c.pid()} } }
	ws := []watched{
		{name: "bridge", pids: one(r.stages["bridge"]), hwm: true},
		{name: "processor", pids: one(r.stages["processor"]), hwm: true},
		{name: "sink timescale", pids: one(r.stages["sink timescale"]), hwm: true},
		{name: "sink lake", pids: one(r.stages["sink lake"]), hwm: true},
		{name: "simulator", pids: one(sim), hwm: true},
	}
	svc, err := servicePids(r.e.stateDir)
	if err != nil {
		r.note("services' pids: %v (not measured)", err)
	}
	sampled := "peak of VmRSS sampled every second during the phase (VmHWM would include other runs)"
	for _, name := range []string{"mosquitto", "kafka", "postgresql", "versitygw"} {
		pid, ok := svc[name]
		if !ok {
			continue
		}
		w := watched{name: name, pids: func() []int { return []int{pid} }, note: sampled}
		if name == "postgresql" {
			w.pids = func() []int { return withChildren(pid) }
			w.pss = true
			w.note = "postmaster and all backends (every client's, not only the benchmark's): CPU summed; memory = peak of the summed PSS sampled every second (shared buffers counted once)"
		}
		ws = append(ws, w)
	}
	return ws
}

// committedAt is a group's committed offset on topic/p (0 when none).
func committedAt(offs kadm.OffsetResponses, topic string, p int32) int64 {
	if o, ok := offs.Lookup(topic, p); ok && o.Err == nil && o.At > 0 {
		return o.At
	}
	return 0
}

// pipelineStages are the processes whose CPU makes
// Result.PipelineCPUMicrosPerMsg: the pipeline's own, not the load's
// (simulator) nor the broker's (Mosquitto, in the ceiling as well).
var pipelineStages = map[string]bool{"bridge": true, "processor": true, "sink timescale": true, "sink lake": true,
	"kafka": true, "postgresql": true, "versitygw": true}

// pipelineCPU fills each process's CPU µs per message at rate msg/s and
// returns the pipeline's CPU cores and µs per message.
func pipelineCPU(ps []Proc, rate float64) (cores, perMsg float64) {
	if !(rate > 0) {
		return 0, 0
	}
	for i := range ps {
		ps[i].CPUMicrosPerMsg = ps[i].CPUCores * 1e6 / rate
		if pipelineStages[ps[i].Name] {
			cores += ps[i].CPUCores
		}
	}
	return cores, cores * 1e6 / rate
}

// profile waits delay, then takes a CPU profile of Options.ProfileSeconds
// of every stage at once (their /debug/pprof/profile) into LogDir.
func (r *runner) profile(ctx context.Context, delay time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for name, addr := range r.addrs {
		wg.Go(func() {
			path := filepath.Join(r.res.LogDir, "cpu-"+strings.ReplaceAll(name, " ", "-")+".pprof")
			err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, r.o.ProfileSeconds), path,
				time.Duration(r.o.ProfileSeconds+30)*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.note("profile of %s: %v", name, err)
				return
			}
			if r.res.Profiles == nil {
				r.res.Profiles = map[string]string{}
			}
			r.res.Profiles[name] = path
			r.logf("profile of %s: %s (go tool pprof -top %s)", name, path, path)
		})
	}
	wg.Wait()
}

// fetchProfile stores the body of url in path.
func fetchProfile(ctx context.Context, u, path string, timeout time.Duration) error {
	b, err := httpGetWithin(ctx, u, timeout)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return os.WriteFile(path, b, 0o644)
}
