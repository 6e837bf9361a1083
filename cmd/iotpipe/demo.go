package main

// This file is `iotpipe demo`: the whole pipeline on the local services.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/demo"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
)

const demoSummary = `Run the whole pipeline locally: init, bridge, processor, sink timescale,
sink lake and a simulated fleet, each as a child process of this binary,
against services whose settings are in the IOTPIPE_* environment (make demo
starts them and loads 'scripts/services.sh env'). By default (--mqtt-tls)
the bridge and the fleet connect to the broker's mutual-TLS listener: the
bridge with its own certificate, every simulated device with its own (CN =
device id), which the demo issues from the CA in --ca-dir into
<state-dir>/demo/devices/ and registers in the device registry (group demo)
on first use, so the broker's ACL lets each device write only
devices/<its id>/...; the plaintext listener is not used. The processor runs with
short windows (--window 10s, --lateness 2s, --idle-timeout 5s) and the lake
sink closes files after --lake-max-age 10s, so rows appear within seconds.
Every --progress-interval it prints the rates of each stage (scraped from
their /metrics), lag, windows emitted and dead letters by reason, and it
reports when the first device_metrics row of this run appears. Child logs go
to <state-dir>/demo/. Ctrl-C (SIGINT/SIGTERM) stops the simulator, then the
bridge, the processor and the sinks, and exits 0 when they all exit 0. A
child that dies early stops the demo with its log's tail and exit code 1.`

type demoFlags struct {
	stateDir, groupPrefix            string
	devices                          int
	rate, invalid, dup, ooo, late    float64
	window, lateness, idle, lakeAge  time.Duration
	progress, readyTimeout, stopWait time.Duration
	httpBridge, httpProcessor        string
	httpTimescale, httpLake          string
	apiListen                        string
	portOffset                       int
	alertThreshold                   float64
	readerDSN, pgSchema              string
	s3                               s3Flags
	prefix                           string
	checkConfig                      bool
	tls                              demoTLS
}

func (o *demoFlags) bind(f *cmdFlags) {
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without starting anything")
	f.String(&o.stateDir, "state-dir", ".state", "directory of local state; child logs go to its demo/ subdirectory")
	f.Duration(&o.progress, "progress-interval", 2*time.Second, "how often to print progress")
	f.Duration(&o.readyTimeout, "ready-timeout", 90*time.Second, "how long the bridge may take to become ready before the demo gives up")
	f.Duration(&o.stopWait, "stop-timeout", 30*time.Second, "on Ctrl-C, how long each child may take to exit after SIGTERM before it is killed")
	f.String(&o.groupPrefix, "group-prefix", "iotpipe-demo", "prefix of the consumer groups, MQTT client id and share group, and processor instance id of the demo's stages")
	f.Group("Fleet")
	f.Int(&o.devices, "devices", 50, "simulated devices")
	f.Float(&o.rate, "rate", 1, "messages per second per device (0: as fast as the broker acknowledges)")
	f.Float(&o.invalid, "invalid-fraction", 0.01, "fraction of invalid messages (to the DLQ)")
	f.Float(&o.dup, "duplicate-fraction", 0.005, "fraction of duplicated messages")
	f.Float(&o.ooo, "out-of-order-fraction", 0.01, "fraction of messages a few seconds out of order")
	f.Float(&o.late, "late-fraction", 0.002, "fraction of messages too late for their window (to the DLQ as late)")
	f.Group("Stages")
	f.Duration(&o.window, "window", 10*time.Second, "processor window size (short, so the first rows come fast)")
	f.Duration(&o.lateness, "lateness", 2*time.Second, "processor allowed lateness")
	f.Duration(&o.idle, "idle-timeout", 5*time.Second, "processor idle timeout")
	f.Duration(&o.lakeAge, "lake-max-age", 10*time.Second, "lake sink --max-age: how soon files reach the lake")
	f.String(&o.httpBridge, "bridge-http-addr", "127.0.0.1:9101", "/metrics address of the bridge")
	f.String(&o.httpProcessor, "processor-http-addr", "127.0.0.1:9102", "/metrics address of the processor")
	f.String(&o.httpLake, "sink-lake-http-addr", "127.0.0.1:9103", "/metrics address of the lake sink")
	f.String(&o.httpTimescale, "sink-timescale-http-addr", "127.0.0.1:9104", "/metrics address of the TimescaleDB sink")
	f.String(&o.apiListen, "api-listen", "127.0.0.1:8443", "address of the demo's device API (with --mqtt-tls)")
	f.Float(&o.alertThreshold, "alert-threshold", 32, "the demo's alert rule fires above this temperature (°C; the fleet's spikes cross 32) and resolves 3 °C below it")
	f.Int(&o.portOffset, "http-port-offset", 0, "added to the port of every *-http-addr above: one setting moves the whole pipeline's ports (as IOTPIPE_HTTP_PORT_OFFSET does for each stage)")
	f.Group("Where to look")
	f.Secret(&o.readerDSN, "pg-reader-dsn", "", "read-only PostgreSQL URL, to find the first metric row (empty: skip that)")
	f.String(&o.pgSchema, "pg-schema", "iotpipe", "schema that holds the tables")
	o.s3.bind(f)
	f.String(&o.prefix, "prefix", "", "key prefix of the lake inside the bucket")
	o.tls.bind(f)
}

func (o *demoFlags) validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"progress-interval", o.progress}, {"ready-timeout", o.readyTimeout}, {"stop-timeout", o.stopWait},
		{"window", o.window}, {"idle-timeout", o.idle}, {"lake-max-age", o.lakeAge}} {
		if d.v <= 0 {
			errs = append(errs, settingErr(d.name, d.v.String(), errors.New("must be positive")))
		}
	}
	if o.lateness < 0 {
		errs = append(errs, settingErr("lateness", o.lateness.String(), errors.New("must not be negative")))
	}
	if o.devices < 1 {
		errs = append(errs, settingErr("devices", strconv.Itoa(o.devices), errors.New("must be at least 1")))
	}
	for _, s := range []struct {
		name string
		v    float64
	}{{"rate", o.rate}, {"invalid-fraction", o.invalid},
		{"duplicate-fraction", o.dup}, {"out-of-order-fraction", o.ooo}, {"late-fraction", o.late}} {
		hi := 1.0
		if s.name == "rate" {
			hi = 1e6
		}
		if !(s.v >= 0 && s.v <= hi) {
			errs = append(errs, settingErr(s.name, fmtFloat(s.v), fmt.Errorf("want a number between 0 and %g", hi)))
		}
	}
	for _, a := range []*string{&o.httpBridge, &o.httpProcessor, &o.httpTimescale, &o.httpLake} {
		so := service.Options{Addr: *a, PortOffset: o.portOffset}
		moved, err := so.ListenAddr()
		if err != nil || o.portOffset < 0 {
			errs = append(errs, settingErr("http-port-offset", strconv.Itoa(o.portOffset), fmt.Errorf("cannot move %s: want 0 to 65535 and a port of at most 65535", *a)))
			break
		}
		*a = moved
	}
	addrs := map[string]string{}
	for _, a := range []struct{ name, v string }{{"bridge-http-addr", o.httpBridge}, {"processor-http-addr", o.httpProcessor},
		{"sink-timescale-http-addr", o.httpTimescale}, {"sink-lake-http-addr", o.httpLake}} {
		host, port, err := splitHostPort(a.v)
		if err != nil || port == "0" {
			errs = append(errs, settingErr(a.name, a.v, errors.New("want host:port with a fixed port (the demo scrapes it)")))
			continue
		}
		_ = host
		if other, dup := addrs[a.v]; dup {
			errs = append(errs, settingErr(a.name, a.v, fmt.Errorf("same address as --%s", other)))
		}
		addrs[a.v] = a.name
	}
	if o.groupPrefix == "" {
		errs = append(errs, settingErr("group-prefix", "", errors.New("must not be empty")))
	}
	if o.stateDir == "" {
		errs = append(errs, settingErr("state-dir", "", errors.New("must not be empty")))
	}
	errs = append(errs, o.tls.validate(o.devices))
	return errors.Join(errs...)
}

func splitHostPort(a string) (string, string, error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	if _, err := strconv.Atoi(a[i+1:]); err != nil {
		return "", "", err
	}
	return a[:i], a[i+1:], nil
}

// scrapeURL turns a listen address into the URL to scrape.
func scrapeURL(addr, path string) string {
	host, port, _ := splitHostPort(addr)
	if host == "" || host == "0.0.0.0" || host == "[::]" {
		host = "127.0.0.1"
	}
	return "http://" + host + ":" + port + path
}

// demoChild is one child process of the demo.
type demoChild struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error
	elapsed time.Duration
}

func (c *demoChild) exitCode() int {
	if c.cmd.ProcessState == nil {
		return -1
	}
	return c.cmd.ProcessState.ExitCode()
}

func (c *demoChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to wait, then kills.
func (c *demoChild) stop(wait time.Duration) {
	if c.exited() {
		return
	}
	start := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(wait):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.elapsed = time.Since(start)
}

type demoRun struct {
	env      Env
	o        *demoFlags
	bin, dir string
	children []*demoChild
	exitc    chan *demoChild
	pids     *os.File
	mu       sync.Mutex
}

func (d *demoRun) start(name string, args ...string) (*demoChild, error) {
	logPath := filepath.Join(d.dir, strings.ReplaceAll(name, " ", "-")+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), demoKafkaEnv(name, d.env.Getenv)...)
	// Own process group: a terminal's Ctrl-C reaches only the demo, which
	// stops the children in order; Pdeathsig stops them if the demo dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &demoChild{name: name, cmd: cmd, logPath: logPath, logFile: lf, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		lf.Close()
		close(c.done)
		d.exitc <- c
	}()
	d.mu.Lock()
	d.children = append(d.children, c)
	d.mu.Unlock()
	fmt.Fprintf(d.pids, "%s %d\n", name, cmd.Process.Pid)
	fmt.Fprintf(d.env.Stdout, "demo: started %-14s pid %-7d log %s\n", name, cmd.Process.Pid, logPath)
	return c, nil
}

// demoKafkaEnv gives each stage its own Kafka principal: the
// IOTPIPE_KAFKA_<STAGE>_USERNAME/PASSWORD that scripts/services.sh env
// prints become its IOTPIPE_KAFKA_SASL_USERNAME/PASSWORD (the admin's are
// left to init, which creates those principals and their ACLs with
// --kafka-acls). Nothing changes when they are not set.
func demoKafkaEnv(name string, getenv func(string) string) []string {
	stage := map[string]string{"bridge": "BRIDGE", "processor": "PROCESSOR", "sink lake": "SINK_LAKE", "sink timescale": "SINK_TIMESCALE",
		"alert": "ALERT", "notify": "NOTIFY", "shadow-consumer": "SHADOW_CONSUMER"}
	if name == "init" {
		for _, st := range stage {
			if getenv("IOTPIPE_KAFKA_"+st+"_PASSWORD") != "" {
				return []string{"IOTPIPE_KAFKA_ACLS=true"}
			}
		}
		return nil
	}
	st, ok := stage[name]
	if !ok {
		return nil
	}
	user, pass := getenv("IOTPIPE_KAFKA_"+st+"_USERNAME"), getenv("IOTPIPE_KAFKA_"+st+"_PASSWORD")
	if user == "" || pass == "" {
		return nil
	}
	return []string{"IOTPIPE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512", "IOTPIPE_KAFKA_SASL_USERNAME=" + user, "IOTPIPE_KAFKA_SASL_PASSWORD=" + pass}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(cannot read " + path + ": " + err.Error() + ")"
	}
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lastLineWith returns the last line of the file that starts with prefix.
func lastLineWith(path, prefix string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 16<<10 {
		b = b[len(b)-16<<10:]
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.HasPrefix(lines[i], []byte(prefix)) {
			return string(lines[i])
		}
	}
	return ""
}

// stopAll stops the running children in start order (the simulator is
// started last but stopped first) and reports their exit codes. It
// returns an error if one did not exit 0.
func (d *demoRun) stopAll() error {
	d.mu.Lock()
	cs := append([]*demoChild(nil), d.children...)
	d.mu.Unlock()
	order := make([]*demoChild, 0, len(cs))
	for _, c := range cs {
		if c.name == "simulate" {
			order = append([]*demoChild{c}, order...)
		} else if c.name != "init" {
			order = append(order, c)
		}
	}
	var bad []string
	for _, c := range order {
		wasRunning := !c.exited()
		c.stop(d.o.stopWait)
		how := "already exited"
		if wasRunning {
			how = fmt.Sprintf("stopped in %.1fs", c.elapsed.Seconds())
		}
		fmt.Fprintf(d.env.Stdout, "demo: %-14s exit %d (%s)\n", c.name, c.exitCode(), how)
		if c.exitCode() != 0 {
			bad = append(bad, fmt.Sprintf("%s exited %d (log %s)", c.name, c.exitCode(), c.logPath))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

func runDemo(ctx context.Context, env Env, args []string) error {
	var o demoFlags
	f := newCmdFlags(env, "iotpipe demo", demoSummary)
	o.bind(f)
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	if err := o.validate(); err != nil {
		return err
	}
	if o.checkConfig {
		mqtt := "MQTT over mutual TLS (" + o.tls.url + ", one certificate per device in " + filepath.Join(o.stateDir, "demo", "devices") + ")"
		if !o.tls.on {
			mqtt = "MQTT without TLS (IOTPIPE_MQTT_URL, password users)"
		}
		fmt.Fprintf(env.Stdout, "settings are valid: %d devices at %g msg/s, %s, window %s, lateness %s, idle timeout %s, lake max age %s, logs in %s\n",
			o.devices, o.rate, mqtt, o.window, o.lateness, o.idle, o.lakeAge, filepath.Join(o.stateDir, "demo"))
		return nil
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	dir, err := filepath.Abs(filepath.Join(o.stateDir, "demo"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	pids, err := os.Create(filepath.Join(dir, "pids"))
	if err != nil {
		return err
	}
	defer pids.Close()
	d := &demoRun{env: env, o: &o, bin: bin, dir: dir, exitc: make(chan *demoChild, 16), pids: pids}
	fmt.Fprintf(env.Stdout, "demo: logs of every process in %s (Ctrl-C stops everything)\n", dir)
	err = d.run(ctx)
	if serr := d.stopAll(); serr != nil && err == nil {
		err = serr
	}
	if err == nil {
		fmt.Fprintln(env.Stdout, "demo: stopped cleanly; the services keep running ('make services-down' stops them)")
	}
	return err
}

// run starts everything and shows progress until ctx ends (nil) or a
// child fails (an error).
func (d *demoRun) run(ctx context.Context) error {
	o, w := d.o, d.env.Stdout
	t0 := time.Now()
	// The groups init grants the stages' principals (with --kafka-acls)
	// are the demo's.
	ini, err := d.start("init", "init", "--processor-group", o.groupPrefix+"-processor",
		"--sink-lake-group", o.groupPrefix+"-sink-lake", "--sink-timescale-group", o.groupPrefix+"-sink-timescale",
		"--alert-group", o.groupPrefix+"-alert", "--shadow-consumer-group", o.groupPrefix+"-shadow", "--notify-group", o.groupPrefix+"-notify")
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-ini.done:
		<-d.exitc
	}
	if ini.exitCode() != 0 {
		return fmt.Errorf("iotpipe init failed (exit %d); last lines of %s:\n%s", ini.exitCode(), ini.logPath, tail(ini.logPath, 20))
	}
	fmt.Fprintf(w, "demo: init done in %.1fs (topics, bucket and schema exist)\n", time.Since(t0).Seconds())
	certDir := filepath.Join(d.dir, "devices")
	if o.tls.on {
		n, err := demoIdentities(ctx, &o.tls, o.pgSchema, o.devices, certDir)
		if err != nil {
			return fmt.Errorf("the demo's device identities: %w", err)
		}
		fmt.Fprintf(w, "demo: mutual TLS on %s: %d device certificates (CN = device id, %s … %s) in %s (%d registered now, %d reissued, %d kept); CA %s; the bridge's identity %s\n",
			o.tls.url, o.devices, devicesim.DeviceID(o.tls.devicePrefix, 0), devicesim.DeviceID(o.tls.devicePrefix, o.devices-1), certDir,
			n.registered, n.reissued, n.reused, o.tls.caFile, o.tls.bridgeCert)
		fmt.Fprintf(w, "demo: the registry: iotpipe devices list --group %s --pg-schema %s\n", demoGroup, o.pgSchema)
	} else {
		fmt.Fprintln(w, "demo: --mqtt-tls=false: the bridge and the fleet use the plaintext listener and password users (IOTPIPE_MQTT_URL)")
	}
	gp := o.groupPrefix
	stages := []struct {
		name string
		args []string
	}{
		{"bridge", append([]string{"bridge", "--http-port-offset", "0", "--http-addr", o.httpBridge, "--mqtt-client-id", gp + "-bridge", "--mqtt-share-group", gp},
			append(o.tls.bridgeArgs(), o.tls.shadowArgs()...)...)},
		{"processor", append([]string{"processor", "--http-port-offset", "0", "--http-addr", o.httpProcessor, "--group", gp + "-processor", "--instance-id", gp + "-processor-1"},
			settingArgs(o.stageSettings()["processor"])...)},
		{"sink timescale", []string{"sink", "timescale", "--http-port-offset", "0", "--http-addr", o.httpTimescale, "--group", gp + "-sink-timescale"}},
		{"sink lake", append([]string{"sink", "lake", "--http-port-offset", "0", "--http-addr", o.httpLake, "--group", gp + "-sink-lake"},
			settingArgs(o.stageSettings()["sink-lake"])...)},
	}
	for _, s := range stages {
		if _, err := d.start(s.name, s.args...); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "demo: processor windows %s, lateness %s, idle timeout %s; lake files close after %s — short, so rows appear fast\n",
		o.window, o.lateness, o.idle, o.lakeAge)

	// The simulator starts once the bridge is subscribed, or the broker
	// drops its messages for want of a subscriber.
	readyBy := time.Now().Add(o.readyTimeout)
	for {
		if httpOK(ctx, scrapeURL(o.httpBridge, "/readyz")) {
			break
		}
		if time.Now().After(readyBy) {
			return fmt.Errorf("the bridge was not ready after %s; last lines of %s:\n%s", o.readyTimeout,
				d.children[1].logPath, tail(d.children[1].logPath, 20))
		}
		select {
		case <-ctx.Done():
			return nil
		case c := <-d.exitc:
			return d.died(c)
		case <-time.After(250 * time.Millisecond):
		}
	}
	simArgs := append([]string{"simulate", "--progress-interval", o.progress.String(), "--duration", "0"},
		settingArgs(o.stageSettings()["simulator"])...)
	sim, err := d.start("simulate", append(simArgs, o.tls.simulatorArgs(certDir)...)...)
	if err != nil {
		return err
	}
	simStart := time.Now()
	d.whereToLook()
	var followers sync.WaitGroup
	fctx, stopFollowers := context.WithCancel(ctx)
	defer func() { stopFollowers(); followers.Wait() }()
	if o.tls.on {
		if err := d.startShadow(fctx, &followers, certDir); err != nil {
			return err
		}
	}
	if err := d.startAlerts(fctx, &followers); err != nil {
		return err
	}

	first := newFirstRow(o.readerDSN, o.pgSchema, simStart.Add(-o.window))
	defer first.close()
	tick := time.NewTicker(o.progress)
	defer tick.Stop()
	var prev demo.Snapshot
	urls := map[string]string{
		demo.Bridge: scrapeURL(o.httpBridge, "/metrics"), demo.Processor: scrapeURL(o.httpProcessor, "/metrics"),
		demo.SinkTimescale: scrapeURL(o.httpTimescale, "/metrics"), demo.SinkLake: scrapeURL(o.httpLake, "/metrics"),
	}
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(w, "demo: stopping (simulator first, then bridge, processor and sinks)…")
			return nil
		case c := <-d.exitc:
			return d.died(c)
		case <-tick.C:
		}
		cur := scrapeAll(ctx, urls)
		for _, l := range demo.Progress(prev, cur, time.Since(t0)) {
			fmt.Fprintln(w, l)
		}
		if l := lastLineWith(sim.logPath, "simulate:"); l != "" {
			fmt.Fprintln(w, "        "+l)
		}
		prev = cur
		if found, err := first.check(ctx); err != nil {
			fmt.Fprintf(w, "demo: cannot query the first metric row: %v\n", err)
		} else if found {
			fmt.Fprintf(w, "demo: first metric row after %.0f s (%.0f s after the simulator started) — try the psql line above\n",
				time.Since(t0).Seconds(), time.Since(simStart).Seconds())
		}
	}
}

// died reports a child that exited on its own.
func (d *demoRun) died(c *demoChild) error {
	return fmt.Errorf("%s exited early (exit %d); last lines of %s:\n%s", c.name, c.exitCode(), c.logPath, tail(c.logPath, 20))
}

func (d *demoRun) whereToLook() {
	o, w := d.o, d.env.Stdout
	fmt.Fprintf(w, `demo: where to look
  window metrics:  psql "$IOTPIPE_PG_READER_DSN" -c 'SELECT bucket, device_id, metric, count, round(mean::numeric, 2) AS mean, min, max FROM %[1]s.device_metrics ORDER BY bucket DESC, device_id, metric LIMIT 12'
  readings:        psql "$IOTPIPE_PG_READER_DSN" -c 'SELECT metric, count(*), round(avg(value)::numeric, 2) AS avg FROM %[1]s.readings GROUP BY metric'
  lake:            s3://%[2]s/%[3]sreadings/date=YYYY-MM-DD/hour=HH/*.parquet (also %[3]smetrics/, %[3]sactivity/)
  DuckDB:          duckdb -c "INSTALL httpfs; LOAD httpfs; SET s3_endpoint='%[4]s'; SET s3_use_ssl=%[5]t; %[11]sSET s3_url_style='path'; SET s3_region='%[6]s'; SET s3_access_key_id='$IOTPIPE_S3_ACCESS_KEY'; SET s3_secret_access_key='$IOTPIPE_S3_SECRET_KEY'; SELECT device_id, metric, count(*) AS n, round(avg(value), 2) AS avg FROM read_parquet('s3://%[2]s/%[3]sreadings/**/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY n DESC LIMIT 10"
  metrics:         curl -s %[7]s | grep ^iotpipe_   (processor %[8]s, sinks %[9]s %[10]s)
`, o.pgSchema, o.s3.c.Bucket, o.prefix, hostOf(o.s3.c.Endpoint), strings.HasPrefix(o.s3.c.Endpoint, "https://"), o.s3.c.Region,
		scrapeURL(o.httpBridge, "/metrics"), scrapeURL(o.httpProcessor, "/metrics"), scrapeURL(o.httpTimescale, "/metrics"), scrapeURL(o.httpLake, "/metrics"),
		duckdbCA(o.s3.c.CAFile))
}

func hostOf(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return endpoint
	}
	return u.Host
}

func httpOK(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// scrapeAll scrapes every stage in parallel; a stage that does not answer
// has nil Metrics.
func scrapeAll(ctx context.Context, urls map[string]string) demo.Snapshot {
	snap := demo.Snapshot{At: time.Now(), Stages: map[string]demo.Metrics{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, u := range urls {
		wg.Go(func() {
			m := scrape(ctx, u)
			mu.Lock()
			snap.Stages[name] = m
			mu.Unlock()
		})
	}
	wg.Wait()
	return snap
}

func scrape(ctx context.Context, u string) demo.Metrics {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	m, err := demo.Parse(resp.Body)
	if err != nil {
		return nil
	}
	return m
}

// firstRow watches device_metrics for the first row of this run: it
// counts the rows of recent windows when it starts and reports once when
// the count grows.
type firstRow struct {
	dsn, schema string
	since       time.Time
	conn        *pgx.Conn
	baseline    int64
	haveBase    bool
	done        bool
}

func newFirstRow(dsn, schema string, since time.Time) *firstRow {
	return &firstRow{dsn: dsn, schema: schema, since: since, done: dsn == ""}
}

func (f *firstRow) close() {
	if f.conn != nil {
		_ = f.conn.Close(context.Background())
	}
}

// check reports true once, when the first row of this run is seen.
func (f *firstRow) check(ctx context.Context) (bool, error) {
	if f.done {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if f.conn == nil {
		c, err := pgx.Connect(ctx, f.dsn)
		if err != nil {
			return false, err
		}
		f.conn = c
	}
	var n int64
	q := fmt.Sprintf("SELECT count(*) FROM %s.device_metrics WHERE bucket >= $1", pgx.Identifier{f.schema}.Sanitize())
	if err := f.conn.QueryRow(ctx, q, f.since).Scan(&n); err != nil {
		_ = f.conn.Close(context.Background())
		f.conn = nil
		return false, err
	}
	if !f.haveBase {
		f.baseline, f.haveBase = n, true
		return false, nil
	}
	if n > f.baseline {
		f.done = true
		return true, nil
	}
	return false, nil
}

// stageSettings are the settings the demo gives its stages beyond the
// connection settings they share and the names that keep runs apart,
// by docker compose service name and flag name.
func (o *demoFlags) stageSettings() map[string]map[string]string {
	return map[string]map[string]string{
		"processor": {"window": o.window.String(), "lateness": o.lateness.String(), "idle-timeout": o.idle.String()},
		"sink-lake": {"max-age": o.lakeAge.String()},
		// Alerts within ~0.2 s, a lone notification at once, a storm
		// grouped per second (BenchmarkAlertLatency measures these).
		"alert":  {"commit-interval": demoAlertCommitInterval.String()},
		"notify": {"group-wait": demoNotifyGroupWait.String()},
		"simulator": {"devices": strconv.Itoa(o.devices), "rate": fmtFloat(o.rate), "invalid-fraction": fmtFloat(o.invalid),
			"duplicate-fraction": fmtFloat(o.dup), "out-of-order-fraction": fmtFloat(o.ooo), "late-fraction": fmtFloat(o.late),
			"device-prefix": o.tls.devicePrefix, "devices-per-conn": "1"},
	}
}

// settingArgs turns settings into flags, in a stable order.
func settingArgs(settings map[string]string) []string {
	names := make([]string, 0, len(settings))
	for n := range settings {
		names = append(names, n)
	}
	sort.Strings(names)
	var args []string
	for _, n := range names {
		args = append(args, "--"+n, settings[n])
	}
	return args
}

// DemoStageSettings returns what `iotpipe demo` (and so `make demo`) sets
// for each stage with its default settings, keyed by docker compose service
// name and flag name. docker-compose.yml sets the same, which test/compose
// checks, so the compose stack and the demo behave alike.
func DemoStageSettings() (map[string]map[string]string, error) {
	var o demoFlags
	f := newCmdFlags(Env{}, "iotpipe demo", "")
	o.bind(f)
	if err := f.Parse(nil, io.Discard); err != nil {
		return nil, err
	}
	return o.stageSettings(), nil
}

func fmtFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// duckdbCA is DuckDB's setting for the object store's CA when there is a
// CA file (its value from the variable, as the other settings of the line).
func duckdbCA(caFile string) string {
	if caFile == "" {
		return ""
	}
	return "SET ca_cert_file='$IOTPIPE_S3_CA_FILE'; "
}
