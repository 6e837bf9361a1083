// Package setup prepares the external systems iotpipe runs on: the Kafka
// topics, the object store bucket and the database schema. Run is
// idempotent: a second run against the same systems changes nothing and
// says so.
package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Component names one external system, for errors and reports.
type Component string

// The components Run prepares.
const (
	Kafka    Component = "kafka"
	Postgres Component = "postgres"
	S3       Component = "s3"
)

// Error is returned by Run when one component fails; callers map the
// component to the settings that reach it.
type Error struct {
	Component Component
	Err       error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Component, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Topic is one Kafka topic to create.
type Topic struct {
	Name       string
	Partitions int32
	// Configs are topic-level configs (retention.ms, cleanup.policy, ...)
	// that Run creates the topic with and restores when they drift.
	Configs map[string]string
	// Purpose is shown in reports.
	Purpose string
}

// Config says what to prepare and how to reach it.
type Config struct {
	Kafka kafkax.Config
	// ReplicationFactor for new topics; -1 means the broker default.
	ReplicationFactor int16
	Topics            []Topic

	// PostgresDSN reaches the database as its owner (migrations create
	// tables, roles and grants).
	PostgresDSN string
	Migrations  migrations.Options

	S3 objstore.Config

	// Timeout bounds each component's work, connecting included, so an
	// unreachable system fails within it.
	Timeout time.Duration

	// Skip lists components not to touch.
	Skip map[Component]bool
}

// Validate checks the settings without contacting anything.
func (c *Config) Validate() error {
	var errs []error
	if !c.Skip[Kafka] {
		if err := c.Kafka.Validate(); err != nil {
			errs = append(errs, &Error{Kafka, err})
		}
		for _, t := range c.Topics {
			if t.Name == "" {
				errs = append(errs, &Error{Kafka, fmt.Errorf("%s topic has no name", t.Purpose)})
			}
			if t.Partitions < 1 {
				errs = append(errs, &Error{Kafka, fmt.Errorf("topic %s: partitions must be at least 1, got %d", t.Name, t.Partitions)})
			}
		}
	}
	if !c.Skip[Postgres] {
		if c.PostgresDSN == "" {
			errs = append(errs, &Error{Postgres, errors.New("no DSN given")})
		} else if _, err := pgx.ParseConfig(c.PostgresDSN); err != nil {
			errs = append(errs, &Error{Postgres, fmt.Errorf("invalid DSN: %w", err)})
		}
		if err := c.Migrations.Validate(); err != nil {
			errs = append(errs, &Error{Postgres, err})
		}
	}
	if !c.Skip[S3] {
		if err := c.S3.Validate(); err != nil {
			errs = append(errs, &Error{S3, err})
		}
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("timeout must be positive"))
	}
	return errors.Join(errs...)
}

// TopicResult says what Run did to one topic.
type TopicResult struct {
	Name       string
	Partitions int32
	// Action is "created", "unchanged" or "updated".
	Action string
	// Changed lists the configs that were restored, key=value.
	Changed []string
	// Warning is set when the topic differs in a way Run does not fix
	// (partition count: changing it moves keys between partitions).
	Warning string
}

// Report is what Run did.
type Report struct {
	Topics        []TopicResult
	Bucket        string
	BucketCreated bool
	Migrations    migrations.Result
}

// Changed reports whether the run changed anything.
func (r *Report) Changed() bool {
	for _, t := range r.Topics {
		if t.Action != "unchanged" {
			return true
		}
	}
	return r.BucketCreated || len(r.Migrations.Applied) > 0
}

// Run prepares every component not skipped, in order Kafka, object store,
// database, and stops at the first component that fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Report, error) {
	var rep Report
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !cfg.Skip[Kafka] {
		res, err := withTimeout(ctx, cfg.Timeout, func(ctx context.Context) ([]TopicResult, error) {
			return ensureTopics(ctx, cfg, log)
		})
		if err != nil {
			return rep, &Error{Kafka, err}
		}
		rep.Topics = res
	}
	if !cfg.Skip[S3] {
		created, err := withTimeout(ctx, cfg.Timeout, func(ctx context.Context) (bool, error) {
			cl, err := objstore.New(cfg.S3)
			if err != nil {
				return false, err
			}
			return objstore.EnsureBucket(ctx, cl, cfg.S3.Bucket, cfg.S3.Region)
		})
		if err != nil {
			return rep, &Error{S3, fmt.Errorf("%s: %w", cfg.S3.Endpoint, err)}
		}
		rep.Bucket, rep.BucketCreated = cfg.S3.Bucket, created
		log.Info("bucket ready", "bucket", cfg.S3.Bucket, "created", created)
	}
	if !cfg.Skip[Postgres] {
		res, err := migrate(ctx, cfg, log)
		if err != nil {
			return rep, &Error{Postgres, err}
		}
		rep.Migrations = res
	}
	return rep, nil
}

func withTimeout[T any](ctx context.Context, d time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := fn(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return v, fmt.Errorf("no answer within %s: %w", d, err)
	}
	return v, err
}

func migrate(ctx context.Context, cfg Config, log *slog.Logger) (migrations.Result, error) {
	pcfg, err := pgx.ParseConfig(cfg.PostgresDSN)
	if err != nil {
		return migrations.Result{}, fmt.Errorf("invalid DSN: %w", err)
	}
	pcfg.ConnectTimeout = cfg.Timeout
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	conn, err := pgx.ConnectConfig(cctx, pcfg)
	cancel()
	if err != nil {
		return migrations.Result{}, fmt.Errorf("connect to %s:%d as %s: %w", pcfg.Host, pcfg.Port, pcfg.User, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	opts := cfg.Migrations
	if opts.Logger == nil {
		opts.Logger = log
	}
	res, err := migrations.Apply(ctx, conn, opts)
	if err != nil {
		return res, fmt.Errorf("migrate schema %s: %w", opts.Schema, err)
	}
	log.Info("schema ready", "schema", opts.Schema, "flavor", res.Flavor, "from", res.From, "to", res.To, "applied", len(res.Applied))
	return res, nil
}

func ensureTopics(ctx context.Context, cfg Config, log *slog.Logger) ([]TopicResult, error) {
	cl, err := kgo.NewClient(cfg.Kafka.Opts(kgo.RetryTimeout(cfg.Timeout))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := kafkax.Ping(ctx, adm); err != nil {
		return nil, fmt.Errorf("brokers %v unreachable: %w", cfg.Kafka.Brokers, err)
	}
	names := make([]string, len(cfg.Topics))
	for i, t := range cfg.Topics {
		names[i] = t.Name
	}
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("describe topics: %w", err)
	}
	var out []TopicResult
	for _, t := range cfg.Topics {
		res := TopicResult{Name: t.Name, Partitions: t.Partitions}
		detail, ok := existing[t.Name]
		if !ok || errors.Is(detail.Err, kerr.UnknownTopicOrPartition) {
			if err := createTopic(ctx, adm, cfg.ReplicationFactor, t); err != nil {
				return out, err
			}
			res.Action = "created"
			log.Info("topic created", "topic", t.Name, "partitions", t.Partitions, "purpose", t.Purpose)
			out = append(out, res)
			continue
		}
		if detail.Err != nil {
			return out, fmt.Errorf("describe topic %s: %w", t.Name, detail.Err)
		}
		res.Action = "unchanged"
		if have := int32(len(detail.Partitions)); have != t.Partitions {
			res.Partitions = have
			res.Warning = fmt.Sprintf("has %d partitions, configured %d; left as is (changing the count moves device keys to other partitions: do it deliberately)", have, t.Partitions)
			log.Warn("topic partition count differs", "topic", t.Name, "have", have, "configured", t.Partitions)
		}
		changed, err := restoreConfigs(ctx, adm, t)
		if err != nil {
			return out, err
		}
		if len(changed) > 0 {
			res.Action, res.Changed = "updated", changed
			log.Info("topic configs restored", "topic", t.Name, "configs", changed)
		}
		out = append(out, res)
	}
	return out, nil
}

func createTopic(ctx context.Context, adm *kadm.Client, rf int16, t Topic) error {
	configs := make(map[string]*string, len(t.Configs))
	for k, v := range t.Configs {
		configs[k] = &v
	}
	resp, err := adm.CreateTopic(ctx, t.Partitions, rf, configs, t.Name)
	if err == nil {
		err = resp.Err
	}
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return nil // created concurrently by another init
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", t.Name, err)
	}
	return nil
}

func restoreConfigs(ctx context.Context, adm *kadm.Client, t Topic) ([]string, error) {
	if len(t.Configs) == 0 {
		return nil, nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, t.Name)
	if err != nil {
		return nil, fmt.Errorf("describe configs of %s: %w", t.Name, err)
	}
	rc, err := rcs.On(t.Name, nil)
	if err != nil {
		return nil, fmt.Errorf("describe configs of %s: %w", t.Name, err)
	}
	if rc.Err != nil {
		return nil, fmt.Errorf("describe configs of %s: %w", t.Name, rc.Err)
	}
	have := map[string]string{}
	for _, c := range rc.Configs {
		have[c.Key] = c.MaybeValue()
	}
	var alter []kadm.AlterConfig
	var changed []string
	for k, v := range t.Configs {
		if have[k] == v {
			continue
		}
		alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
		changed = append(changed, k+"="+v)
	}
	if len(alter) == 0 {
		return nil, nil
	}
	sort.Strings(changed)
	resps, err := adm.AlterTopicConfigs(ctx, alter, t.Name)
	if err != nil {
		return nil, fmt.Errorf("alter configs of %s: %w", t.Name, err)
	}
	for _, r := range resps {
		if r.Err != nil {
			return nil, fmt.Errorf("alter configs of %s: %w (%s)", t.Name, r.Err, r.ErrMessage)
		}
	}
	return changed, nil
}

// Millis formats a duration as a Kafka *.ms config value.
func Millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
