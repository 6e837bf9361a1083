package main

// The generic stage command: every long-running stage (bridge, processor,
// sink lake, sink timescale, simulate) is one stageCmd. Its bind function
// binds flags straight onto the stage's Config fields, defaults taken from
// the stage's DefaultConfig; the stage's Validate is the only check, and
// its *config.FieldError problems come back as one line per flag and
// variable; service.Run owns the lifecycle. Adding a setting to a stage
// touches three places: the Config field, its DefaultConfig value, and one
// bind line here.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/flags"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/logging"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/service"
)

// hardStopGrace is how long after a stage's --shutdown-timeout (its own
// soft-stop budget) service.Run waits before it gives up on the stage and
// the process exits 1.
const hardStopGrace = 5 * time.Second

// validating is a pointer to a stage Config.
type validating[C any] interface {
	*C
	Validate() error
}

// stageCmd describes one stage command.
type stageCmd[C any, S service.Stage] struct {
	name    string // as typed after iotpipe: "sink lake"
	help    string
	addr    string           // default --http-addr
	config  func() C         // the stage's DefaultConfig
	bind    func(*Flags, *C) // one line per setting
	newFunc func(C, service.Deps) (S, error)
	// shutdown is the stage's soft-stop budget field, bound to
	// --shutdown-timeout; nil: the flag sets service.Run's bound itself.
	shutdown func(*C) *time.Duration
	// describe is the --check-config summary.
	describe func(*C, *service.Options) string
	// kafka is the stage's Kafka connection (field Kafka of its Config):
	// a failure of its security settings names their flag.
	kafka func(*C) *kafkax.Config
}

// stageSettings are the settings of one stage command after parsing.
type stageSettings[C any] struct {
	f     *Flags
	cfg   C
	opts  service.Options
	log   logging.Config
	check bool
}

// parseStage reads the command line and environment into a stageSettings and
// validates them; the error is a *UsageError naming every flag at fault.
func parseStage[C any, PC validating[C], S service.Stage](sc *stageCmd[C, S], env Env, args []string) (*stageSettings[C], error) {
	st := &stageSettings[C]{cfg: sc.config(), opts: service.DefaultOptions(), log: logging.DefaultConfig()}
	st.opts.Addr = sc.addr
	f := newFlags(env, "iotpipe "+sc.name, sc.help)
	st.f = f
	f.Group("General")
	f.Bool(&st.check, "check-config", "validate the settings, print them and exit without contacting anything")
	if sc.shutdown != nil {
		f.Duration(sc.shutdown(&st.cfg), "shutdown-timeout", "on SIGTERM, time to drain (stop taking input, flush, commit) before exiting; the process is stopped 5s later if the stage has not")
	} else {
		f.Duration(&st.opts.ShutdownTimeout, "shutdown-timeout", "on SIGTERM, time to stop before the process exits 1")
	}
	sc.bind(f, &st.cfg)
	f.Group("Metrics and health")
	f.String(&st.opts.Addr, "http-addr", "address of /metrics, /healthz and /readyz (host:port; empty disables)")
	f.Int(&st.opts.PortOffset, "http-port-offset", "added to the port of --http-addr: set it once (IOTPIPE_HTTP_PORT_OFFSET) to move every stage of a pipeline, e.g. 100 gives 9201-9205")
	f.Bool(&st.opts.Pprof, "debug-pprof", "also serve Go's profiles (net/http/pprof) under /debug/pprof/ on --http-addr, e.g. go tool pprof http://ADDR/debug/pprof/profile?seconds=30; keep --http-addr private when on")
	f.Duration(&st.opts.DebugStopDelay, "debug-stop-delay", "testing only: pass SIGTERM on to the stage this long after it came (drain tests scrape /metrics meanwhile)")
	bindLog(f, &st.log)
	err := f.Parse(args, env.Stdout)
	if onParsed != nil {
		onParsed(f)
	}
	if err != nil {
		return nil, usageErr(err)
	}
	if sc.shutdown != nil {
		st.opts.ShutdownTimeout = *sc.shutdown(&st.cfg) + hardStopGrace
	}
	err = errors.Join(
		f.Explain(PC(&st.cfg).Validate(), &st.cfg),
		f.Explain(st.opts.Validate(), &st.opts),
		f.Explain(st.log.Validate(), &st.log))
	if err != nil {
		return st, &UsageError{err}
	}
	return st, nil
}

// runStage is the whole life of a stage command.
func runStage[C any, PC validating[C], S service.Stage](ctx context.Context, sc *stageCmd[C, S], env Env, args []string) error {
	st, err := parseStage[C, PC](sc, env, args)
	if err != nil {
		return err
	}
	log, err := logging.New(env.Stderr, st.log)
	if err != nil {
		return &UsageError{err}
	}
	for _, d := range st.f.Deprecated() {
		log.Warn(d + "; the old name goes in the next release")
	}
	for _, w := range st.f.Warnings() {
		log.Warn(w)
	}
	if st.check {
		fmt.Fprintf(env.Stdout, "settings are valid: %s\n", sc.describe(&st.cfg, &st.opts))
		return nil
	}
	reg := service.NewRegistry()
	st.opts.Registry, st.opts.Log = reg, log
	stage, err := sc.newFunc(st.cfg, service.Deps{Log: log, Registry: reg})
	if err != nil {
		return &UsageError{st.f.Explain(sc.explainKafka(&st.cfg, err), &st.cfg)}
	}
	if err := service.Run(ctx, stage, st.opts); err != nil {
		err = sc.explainKafka(&st.cfg, err)
		if errors.Is(err, service.ErrStopTimeout) {
			if sc.shutdown != nil {
				return fmt.Errorf("%w (%s is %s; the stage gets %s more)", err, flags.Setting("shutdown-timeout"), *sc.shutdown(&st.cfg), hardStopGrace)
			}
			return fmt.Errorf("%w (%s is %s)", err, flags.Setting("shutdown-timeout"), st.opts.ShutdownTimeout)
		}
		// A stage's run error may name one of its Config fields (e.g. the
		// bridge's MQTT.ServerName) or one of the service options.
		var root any = &st.opts
		for _, fe := range config.Fields(err) {
			if _, ok := st.f.FlagOf(&st.cfg, fe.Field); ok {
				root = &st.cfg
			}
		}
		if explained := st.f.Explain(err, root); explained != err {
			return &UsageError{explained}
		}
		return err
	}
	return nil
}

// explainKafka names the Kafka setting at fault in a stage's error: a
// wrong SASL password, an unknown CA, a certificate name mismatch, or an
// ACL that denied an operation (kafkax.Config.Explain), under the field
// path Kafka.<field> of the stage's Config.
func (sc *stageCmd[C, S]) explainKafka(cfg *C, err error) error {
	if sc.kafka == nil || err == nil {
		return err
	}
	kc := sc.kafka(cfg)
	e := kc.Explain(err)
	var fe *config.FieldError
	if e == err || !errors.As(e, &fe) {
		return err
	}
	reason := fe.Reason(func(field string) string { return "{Kafka." + field + "}" })
	return &config.FieldError{Field: "Kafka." + fe.Field, Err: errors.New(reason)}
}

// Flags is the command's flag set: internal/flags with the commands'
// environment.
type Flags = flags.Flags

func newFlags(env Env, name, summary string) *Flags {
	return flags.New(name, summary, env.Getenv)
}

// bindKafka binds the settings that reach Kafka onto c.
func bindKafka(f *Flags, c *kafkax.Config) {
	f.Group("Kafka")
	f.List(&c.Brokers, "kafka-brokers", "comma-separated Kafka seed brokers, host:port")
	f.String(&c.ClientID, "kafka-client-id", "client id this process shows to Kafka")
	f.Duration(&c.DialTimeout, "kafka-dial-timeout", "timeout of one connection attempt to a broker")
	f.String(&c.SASL.Mechanism, "kafka-sasl-mechanism", "SASL mechanism: SCRAM-SHA-512, or PLAIN for brokers that only offer it (TLS required)")
	f.String(&c.SASL.Username, "kafka-sasl-username", "Kafka principal of this process (User:<name> in ACLs); empty turns SASL off")
	bindKafkaPassword(f, &c.SASL.Password)
	f.Bool(&c.TLS.Enabled, "kafka-tls", "connect to the brokers with TLS")
	f.String(&c.TLS.CAFile, "kafka-ca-file", "CA certificates (PEM) the brokers' certificates must chain to; empty uses the system's roots")
	f.String(&c.TLS.CertFile, "kafka-cert-file", "client certificate (PEM) for brokers that ask for one, with --kafka-key-file")
	f.String(&c.TLS.KeyFile, "kafka-key-file", "key (PEM) of --kafka-cert-file")
	f.String(&c.TLS.ServerName, "kafka-server-name", "name the brokers' certificates must hold; empty checks each broker's host")
}

// bindKafkaFetch binds a consumer's fetch tuning onto c (consumer stages
// only).
func bindKafkaFetch(f *Flags, c *kafkax.Fetch) {
	f.Int(&c.MinBytes, "kafka-fetch-min-bytes", "a fetch waits until the broker has this many bytes for it (or --kafka-fetch-max-wait passed); larger means fewer, bigger fetches (0: answer at once)")
	f.Duration(&c.MaxWait, "kafka-fetch-max-wait", "longest a fetch waits for --kafka-fetch-min-bytes (0: 5s); bounds the latency it adds")
}

// bindKafkaPassword is the one place the Kafka SASL password is bound: a
// secret, never printed by --check-config or logged.
func bindKafkaPassword(f *Flags, p *string) {
	f.Secret(p, "kafka-sasl-password", "password of --kafka-sasl-username")
}

// bindS3 binds the settings that reach the object store onto c.
func bindS3(f *Flags, c *objstore.Config) {
	f.Group("Object store (S3-compatible)")
	f.String(&c.Endpoint, "s3-endpoint", "object store URL, http:// or https://")
	f.String(&c.AccessKey, "s3-access-key", "S3 access key")
	f.Secret(&c.SecretKey, "s3-secret-key", "S3 secret key")
	f.String(&c.Region, "s3-region", "S3 region used in request signatures")
	f.String(&c.Bucket, "s3-bucket", "bucket that holds the Parquet lake")
	f.String(&c.CAFile, "s3-ca-file", "https:// endpoint: PEM file of the CA that signs the object store's certificate (empty: the system roots)")
}

// bindLog binds the logging settings onto c.
func bindLog(f *Flags, c *logging.Config) {
	f.Group("Logging")
	f.String(&c.Format, "log-format", "log format: json or text")
	f.String(&c.Level, "log-level", "log level: debug, info, warn or error")
}

// newLogger builds the logger of a command that is not a stage.
func newLogger(env Env, f *Flags, c *logging.Config) (*slog.Logger, error) {
	if err := c.Validate(); err != nil {
		return nil, &UsageError{f.Explain(err, c)}
	}
	return logging.New(env.Stderr, *c)
}

// settingErr names the flag and environment variable at fault, for
// commands that are not stages, in the form of flags.SettingError:
// "--timeout (IOTPIPE_TIMEOUT): 0s: must be positive". Secrets are never
// echoed: pass value "" for them.
func settingErr(flagName, value string, err error) error {
	if value != "" {
		return &UsageError{fmt.Errorf("%s: %s: %w", flags.Setting(flagName), value, err)}
	}
	return &UsageError{fmt.Errorf("%s: %w", flags.Setting(flagName), err)}
}

// listenAddr is where the stage will listen (--http-addr moved by
// --http-port-offset).
func listenAddr(o *service.Options) string {
	a, _ := o.ListenAddr()
	return a
}
