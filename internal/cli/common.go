package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/logging"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/service"
)

func newFlags(env Env, name, summary string) *Flags {
	f := NewFlags(name, summary)
	f.getenv = env.Getenv
	return f
}

// kafkaFlags binds the settings that reach Kafka.
type kafkaFlags struct {
	brokers  string
	clientID string
	dial     time.Duration
}

func (k *kafkaFlags) bind(f *Flags, clientID string) {
	f.Group("Kafka")
	f.String(&k.brokers, "kafka-brokers", "localhost:9092", "comma-separated Kafka seed brokers, host:port")
	f.String(&k.clientID, "kafka-client-id", clientID, "client id this process shows to Kafka")
	f.Duration(&k.dial, "kafka-dial-timeout", 5*time.Second, "timeout of one connection attempt to a broker")
}

func (k *kafkaFlags) config() (kafkax.Config, error) {
	c := kafkax.Config{Brokers: kafkax.ParseBrokers(k.brokers), ClientID: k.clientID, DialTimeout: k.dial}
	if err := c.Validate(); err != nil {
		return c, settingErr("kafka-brokers", k.brokers, err)
	}
	return c, nil
}

// s3Flags binds the settings that reach the object store.
type s3Flags struct{ c objstore.Config }

func (s *s3Flags) bind(f *Flags) {
	f.Group("Object store (S3-compatible)")
	f.String(&s.c.Endpoint, "s3-endpoint", "http://localhost:7070", "object store URL, http:// or https://")
	f.String(&s.c.AccessKey, "s3-access-key", "", "S3 access key")
	f.Secret(&s.c.SecretKey, "s3-secret-key", "", "S3 secret key")
	f.String(&s.c.Region, "s3-region", "us-east-1", "S3 region used in request signatures")
	f.String(&s.c.Bucket, "s3-bucket", "iotpipe-lake", "bucket that holds the Parquet lake")
}

// logFlags binds the logging settings.
type logFlags struct{ c logging.Config }

func (l *logFlags) bind(f *Flags, format string) { l.bindLevel(f, format, "info") }

func (l *logFlags) bindLevel(f *Flags, format, level string) {
	f.Group("Logging")
	f.String(&l.c.Format, "log-format", format, "log format: json or text")
	f.String(&l.c.Level, "log-level", level, "log level: debug, info, warn or error")
}

func (l *logFlags) logger(env Env) (*slog.Logger, error) {
	lg, err := logging.New(env.Stderr, l.c)
	if err != nil {
		return nil, &UsageError{fmt.Errorf("--log-format/--log-level: %w", err)}
	}
	return lg, nil
}

// settingErr names the flag and environment variable at fault. Secrets
// are never echoed: pass value "" for them.
func settingErr(flagName, value string, err error) error {
	if value != "" {
		return &UsageError{fmt.Errorf("--%s (%s=%q): %w", flagName, EnvName(flagName), value, err)}
	}
	return &UsageError{fmt.Errorf("--%s (%s): %w", flagName, EnvName(flagName), err)}
}

// httpFlags binds where a stage serves /metrics, /healthz and /readyz.
type httpFlags struct{ c service.Config }

func (h *httpFlags) bind(f *Flags, defAddr string) {
	f.Group("Metrics and health")
	f.String(&h.c.Addr, "http-addr", defAddr, "address of /metrics, /healthz and /readyz (host:port; empty disables)")
}

// parseStage is the prologue of every stage command: it parses the command
// line into the flags bind defines and builds the logger they select.
func parseStage(env Env, args []string, name, help string, bind func(*Flags), lf *logFlags) (*slog.Logger, error) {
	f := newFlags(env, name, help)
	bind(f)
	if err := f.Parse(args, env.Stdout); err != nil {
		return nil, usageErr(err)
	}
	return lf.logger(env)
}

// serveWhile serves srv's /metrics, /healthz and /readyz while run runs
// the stage. It listens first, so a port in use fails before the stage
// starts; the server outlives the stage's drain, so /metrics shows it, and
// stops once run has returned.
func serveWhile(ctx context.Context, srv *service.Server, addr string, run func(context.Context) error) error {
	if err := srv.Listen(); err != nil {
		return settingErr("http-addr", addr, err)
	}
	srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvCtx) }()
	runErr := run(ctx)
	stop()
	if err := <-served; err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}
