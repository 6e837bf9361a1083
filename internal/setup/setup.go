// Package setup prepares the external systems iotpipe runs on: the Kafka
// topics, the object store bucket and the database schema. Run is
// idempotent: a second run against the same systems changes nothing and
// says so, also right after the first (a topic that exists is reported as
// existing even when the broker answering the metadata request has not
// learned of it yet and CreateTopics answers TOPIC_ALREADY_EXISTS).
//
// # Replication
//
// Topics are created with Config.ReplicationFactor replicas and
// min.insync.replicas Config.MinInsyncReplicas (-1: the broker's default,
// read from a live broker). Every stage produces with acks=all, so an
// acknowledged record is on at least min.insync.replicas brokers. Run
// refuses, before creating anything, a combination that cannot work or
// that stops the pipeline at the first broker failure, with an
// ErrUnsafeReplication error naming the init flags:
//
//   - min.insync.replicas greater than the replication factor: every write
//     fails (NOT_ENOUGH_REPLICAS);
//   - a replication factor greater than the live brokers: Kafka cannot
//     place the replicas;
//   - min.insync.replicas equal to a replication factor above 1: writes stop
//     whenever any one broker is down, so the bridge stops acknowledging
//     devices during every broker restart (use replication factor - 1);
//   - for an existing topic, a new min.insync.replicas that is unsafe in
//     these ways for its actual replication factor.
//
// It warns (log and report), and goes on, for a replication factor of 1 on
// a cluster of several brokers (a broker failure stops its partitions, a
// lost disk loses their records), for min.insync.replicas 1 with more
// replicas (a record acknowledged while only the leader was in sync is lost
// with that leader's disk), and for an existing topic whose own settings
// are unsafe but which Run does not change. The recommended setting for a
// cluster of three or more brokers is replication factor 3,
// min.insync.replicas 2.
package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
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

// ErrS3AdminKey marks (errors.Is) an object store failure of a request
// made with Config.S3AdminAccessKey rather than Config.S3's key, so that
// the caller names the right setting.
var ErrS3AdminKey = errors.New("with the admin key")

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
	// ReplicationFactor for new topics; -1 means the broker default
	// (default.replication.factor).
	ReplicationFactor int16
	// MinInsyncReplicas is the min.insync.replicas of every topic (set on
	// new topics, restored on existing ones); -1 leaves it to the broker
	// default.
	MinInsyncReplicas int16
	Topics            []Topic
	// Principals are the stages' Kafka users and ACLs to ensure after the
	// topics (iotpipe init --kafka-acls); none: users and ACLs are left
	// alone.
	Principals []kafkaacl.Principal

	// PostgresDSN reaches the database as its owner (migrations create
	// tables, roles and grants).
	PostgresDSN string
	Migrations  migrations.Options

	S3 objstore.Config
	// S3AdminAccessKey and S3AdminSecretKey, when set, are the key (root
	// or an admin user's) that prepares the bucket instead of S3's: it
	// creates the bucket and makes S3BucketOwner its owner.
	S3AdminAccessKey, S3AdminSecretKey string
	// S3BucketOwner, when set, is the user (access key; the lake sink's
	// scoped key) made the owner of the bucket with versitygw's admin API,
	// so that it reaches this bucket and no other.
	S3BucketOwner string
	// S3BucketOwnerSecret, when set, makes setup create the S3BucketOwner
	// user (versitygw IAM, role "user") with this secret if it is missing.
	S3BucketOwnerSecret string

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
		if err := ValidateReplication(int(c.ReplicationFactor), int(c.MinInsyncReplicas)); err != nil {
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
	// ReplicationFactor and MinInsyncReplicas are the topic's actual
	// values (0 when unknown).
	ReplicationFactor int16
	MinInsyncReplicas int16
	// Action is "created", "unchanged" (it existed and matches) or
	// "updated" (it existed and configs were restored).
	Action string
	// Changed lists the configs that were restored, key=value.
	Changed []string
	// Warning is set when the topic differs in a way Run does not fix
	// (partition count: changing it moves keys between partitions;
	// replication factor) or its replication is weak (see the package
	// comment).
	Warning string
}

// KafkaReport describes the cluster the topics were prepared on.
type KafkaReport struct {
	// Brokers is the number of live brokers.
	Brokers int
	// ReplicationFactor and MinInsyncReplicas are the effective settings
	// for new topics (the broker defaults resolved).
	ReplicationFactor int16
	MinInsyncReplicas int16
	// Warning is set when the replication is weak (see the package
	// comment).
	Warning string
}

// Report is what Run did.
type Report struct {
	Kafka         KafkaReport
	Topics        []TopicResult
	Principals    []kafkaacl.PrincipalResult
	Bucket        string
	BucketCreated bool
	// BucketOwner is the bucket's owner when Config.S3BucketOwner was set;
	// OwnerChanged tells whether this run changed it.
	BucketOwner  string
	OwnerChanged bool
	// OwnerCreated tells whether this run created the owner's user.
	OwnerCreated bool
	Migrations   migrations.Result
}

// Changed reports whether the run changed anything.
func (r *Report) Changed() bool {
	for _, t := range r.Topics {
		if t.Action != "unchanged" {
			return true
		}
	}
	for _, p := range r.Principals {
		if p.Changed() {
			return true
		}
	}
	return r.BucketCreated || r.OwnerChanged || r.OwnerCreated || len(r.Migrations.Applied) > 0
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
		_, err := withTimeout(ctx, cfg.Timeout, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, ensureTopics(ctx, cfg, log, &rep)
		})
		if err != nil {
			return rep, &Error{Kafka, cfg.Kafka.Explain(err)}
		}
		if len(cfg.Principals) > 0 {
			res, err := withTimeout(ctx, cfg.Timeout, func(ctx context.Context) ([]kafkaacl.PrincipalResult, error) {
				cl, err := kgo.NewClient(cfg.Kafka.Opts(kgo.RetryTimeout(cfg.Timeout))...)
				if err != nil {
					return nil, err
				}
				defer cl.Close()
				return kafkaacl.EnsurePrincipals(ctx, kadm.NewClient(cl), cfg.Kafka, cfg.Principals)
			})
			rep.Principals = res
			if err != nil {
				return rep, &Error{Kafka, cfg.Kafka.Explain(err)}
			}
		}
	}
	if !cfg.Skip[S3] {
		s3 := cfg.S3
		admin := cfg.S3AdminAccessKey != ""
		if admin {
			s3.AccessKey, s3.SecretKey = cfg.S3AdminAccessKey, cfg.S3AdminSecretKey
		}
		created, err := withTimeout(ctx, cfg.Timeout, func(ctx context.Context) (bool, error) {
			created, err := prepareBucket(ctx, cfg, s3, &rep)
			if err != nil || !admin {
				return created, err
			}
			// The bucket was prepared with the admin key: check that the
			// key the stages use (S3's) reaches it.
			cl, err := objstore.New(cfg.S3)
			if err != nil {
				return created, err
			}
			if _, err := cl.BucketExists(ctx, cfg.S3.Bucket); err != nil {
				return created, fmt.Errorf("check bucket %q with the stages' key %s: %w", cfg.S3.Bucket, cfg.S3.AccessKey, err)
			}
			return created, nil
		})
		if err != nil {
			return rep, &Error{S3, fmt.Errorf("%s: %w", cfg.S3.Endpoint, s3.Explain(err))}
		}
		rep.Bucket, rep.BucketCreated = cfg.S3.Bucket, created
		log.Info("bucket ready", "bucket", cfg.S3.Bucket, "created", created, "owner", rep.BucketOwner, "owner_changed", rep.OwnerChanged)
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

// prepareBucket creates the owner's user (when asked), the bucket, and
// hands the bucket to the owner (when asked), with s3's key; with an admin
// key, its errors are marked ErrS3AdminKey.
func prepareBucket(ctx context.Context, cfg Config, s3 objstore.Config, rep *Report) (created bool, err error) {
	defer func() {
		if err != nil && cfg.S3AdminAccessKey != "" {
			err = fmt.Errorf("%w: %w", ErrS3AdminKey, err)
		}
	}()
	cl, err := objstore.New(s3)
	if err != nil {
		return false, err
	}
	if cfg.S3BucketOwner != "" && cfg.S3BucketOwnerSecret != "" {
		if rep.OwnerCreated, err = objstore.EnsureUser(ctx, s3, cfg.S3BucketOwner, cfg.S3BucketOwnerSecret); err != nil {
			return false, err
		}
	}
	created, err = objstore.EnsureBucket(ctx, cl, s3.Bucket, s3.Region)
	if err != nil || cfg.S3BucketOwner == "" {
		return created, err
	}
	rep.OwnerChanged, err = objstore.ChangeBucketOwner(ctx, s3, s3.Bucket, cfg.S3BucketOwner)
	rep.BucketOwner = cfg.S3BucketOwner
	return created, err
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

// ErrUnsafeReplication is returned (wrapped, naming the init flags) when the
// replication settings cannot work or stop every write at the first broker
// failure; see the package comment.
var ErrUnsafeReplication = errors.New("unsafe replication")

// The init flags and variables behind Config.ReplicationFactor and
// Config.MinInsyncReplicas, named in replication errors.
const (
	rfSetting   = "--replication-factor (IOTPIPE_REPLICATION_FACTOR)"
	misrSetting = "--min-insync-replicas (IOTPIPE_MIN_INSYNC_REPLICAS)"
)

// ValidateReplication checks the replication settings without contacting
// the cluster: each is -1 (broker default) or at least 1, and when both are
// given, min.insync.replicas is below the replication factor (or both 1).
func ValidateReplication(rf, misr int) error {
	if rf == 0 || rf < -1 || rf > 32767 {
		return fmt.Errorf("%s %d: must be -1 (broker default) or between 1 and 32767", rfSetting, rf)
	}
	if misr == 0 || misr < -1 || misr > 32767 {
		return fmt.Errorf("%s %d: must be -1 (broker default) or between 1 and 32767", misrSetting, misr)
	}
	if rf == -1 || misr == -1 {
		return nil // checked against the cluster's defaults by Run
	}
	_, err := checkReplication(rf, misr, -1, "")
	return err
}

// checkReplication judges rf replicas with min.insync.replicas misr on a
// cluster of live brokers (-1: unknown). from says where the values come
// from, for the message. It returns a warning for a weak but working
// setting and an ErrUnsafeReplication error for an unsafe one.
func checkReplication(rf, misr, live int, from string) (warning string, err error) {
	unsafe := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: %s %d, %s %d%s: %s", ErrUnsafeReplication, rfSetting, rf, misrSetting, misr, from,
			fmt.Sprintf(format, args...))
	}
	switch {
	case misr > rf:
		return unsafe("min.insync.replicas above the replication factor fails every write (NOT_ENOUGH_REPLICAS); set %s at most %d", misrSetting, max(rf-1, 1))
	case live >= 0 && rf > live:
		return unsafe("only %d live broker(s) to place %d replicas on; lower %s or start more brokers", live, rf, rfSetting)
	case misr == rf && rf > 1:
		return unsafe("writes would stop whenever any one broker is down (the bridge stops acknowledging devices); set %s %d", misrSetting, rf-1)
	case rf == 1 && live > 1:
		return fmt.Sprintf("replication factor 1 on %d brokers: a broker failure stops its partitions and a lost disk loses their records (recommended: %s 3, %s 2)",
			live, rfSetting, misrSetting), nil
	case misr == 1 && rf > 1:
		return fmt.Sprintf("min.insync.replicas 1: a record acknowledged while only the leader was in sync is lost with that broker's disk (recommended: %s %d)",
			misrSetting, min(rf-1, 2)), nil
	}
	return "", nil
}

// brokerDefaults reads default.replication.factor and min.insync.replicas
// from a live broker.
func brokerDefaults(ctx context.Context, adm *kadm.Client, brokers kadm.BrokerDetails) (rf, misr int, err error) {
	if len(brokers) == 0 {
		return 0, 0, errors.New("the cluster lists no live broker")
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, brokers[0].NodeID)
	if err == nil && len(rcs) > 0 {
		err = rcs[0].Err
	}
	if err != nil {
		return 0, 0, fmt.Errorf("describe configs of broker %d: %w", brokers[0].NodeID, err)
	}
	rf, misr = 1, 1 // Kafka's own defaults
	for _, c := range rcs[0].Configs {
		v, perr := strconv.Atoi(c.MaybeValue())
		switch {
		case perr != nil:
		case c.Key == "default.replication.factor":
			rf = v
		case c.Key == "min.insync.replicas":
			misr = v
		}
	}
	return rf, misr, nil
}

func ensureTopics(ctx context.Context, cfg Config, log *slog.Logger, rep *Report) error {
	cl, err := kgo.NewClient(cfg.Kafka.Opts(kgo.RetryTimeout(cfg.Timeout))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	brokers, err := kafkax.Ping(ctx, adm)
	if err != nil {
		return fmt.Errorf("brokers %v unreachable: %w", cfg.Kafka.Brokers, err)
	}
	defRF, defMISR, err := brokerDefaults(ctx, adm, brokers)
	if err != nil {
		return err
	}
	rf, misr, from := int(cfg.ReplicationFactor), int(cfg.MinInsyncReplicas), ""
	switch {
	case rf == -1 && misr == -1:
		rf, misr, from = defRF, defMISR, " (both broker defaults)"
	case rf == -1:
		rf, from = defRF, " (replication factor: broker default)"
	case misr == -1:
		misr, from = defMISR, " (min.insync.replicas: broker default)"
	}
	// Refuse before anything is created.
	warning, err := checkReplication(rf, misr, len(brokers), from)
	if err != nil {
		return err
	}
	rep.Kafka = KafkaReport{Brokers: len(brokers), ReplicationFactor: int16(rf), MinInsyncReplicas: int16(misr), Warning: warning}
	if warning != "" {
		log.Warn("weak replication for new topics", "warning", warning)
	}
	topics := make([]Topic, len(cfg.Topics))
	names := make([]string, len(cfg.Topics))
	for i, t := range cfg.Topics {
		if cfg.MinInsyncReplicas != -1 {
			t.Configs = maps.Clone(t.Configs)
			if t.Configs == nil {
				t.Configs = map[string]string{}
			}
			t.Configs["min.insync.replicas"] = strconv.Itoa(int(cfg.MinInsyncReplicas))
		}
		topics[i], names[i] = t, t.Name
	}
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	for _, t := range topics {
		res := TopicResult{Name: t.Name, Partitions: t.Partitions}
		detail, ok := existing[t.Name]
		if !ok || errors.Is(detail.Err, kerr.UnknownTopicOrPartition) {
			resp, created, err := createTopic(ctx, adm, cfg.ReplicationFactor, t)
			if err != nil {
				return err
			}
			if created {
				res.Action, res.ReplicationFactor, res.Warning = "created", resp.ReplicationFactor, warning
				res.MinInsyncReplicas = int16(misr)
				if c, ok := resp.Configs["min.insync.replicas"]; ok {
					if v, err := strconv.Atoi(c.MaybeValue()); err == nil {
						res.MinInsyncReplicas = int16(v)
					}
				}
				log.Info("topic created", "topic", t.Name, "partitions", t.Partitions, "replication_factor", res.ReplicationFactor,
					"min_insync_replicas", res.MinInsyncReplicas, "purpose", t.Purpose)
				rep.Topics = append(rep.Topics, res)
				continue
			}
			// It exists: created by a run moments ago whose metadata has
			// not reached the broker that answered ListTopics yet, or
			// concurrently by another init. Report it as existing.
			if detail, err = waitTopic(ctx, adm, t.Name); err != nil {
				return err
			}
		}
		if detail.Err != nil {
			return fmt.Errorf("describe topic %s: %w", t.Name, detail.Err)
		}
		res.Action = "unchanged"
		var warnings []string
		if have := int32(len(detail.Partitions)); have != t.Partitions {
			res.Partitions = have
			warnings = append(warnings, fmt.Sprintf("has %d partitions, configured %d; left as is (changing the count moves device keys to other partitions: do it deliberately)", have, t.Partitions))
			log.Warn("topic partition count differs", "topic", t.Name, "have", have, "configured", t.Partitions)
		}
		for _, p := range detail.Partitions {
			res.ReplicationFactor = max(res.ReplicationFactor, int16(len(p.Replicas)))
		}
		if cfg.ReplicationFactor != -1 && res.ReplicationFactor != cfg.ReplicationFactor {
			warnings = append(warnings, fmt.Sprintf("has replication factor %d, configured %d; left as is (change it with a partition reassignment)", res.ReplicationFactor, cfg.ReplicationFactor))
			log.Warn("topic replication factor differs", "topic", t.Name, "have", res.ReplicationFactor, "configured", cfg.ReplicationFactor)
		}
		changed, topicMISR, warn, err := restoreConfigs(ctx, adm, t, int(res.ReplicationFactor), len(brokers))
		if err != nil {
			return err
		}
		res.MinInsyncReplicas = topicMISR
		if warn != "" {
			warnings = append(warnings, warn)
			log.Warn("weak replication", "topic", t.Name, "warning", warn)
		}
		res.Warning = strings.Join(warnings, "; ")
		if len(changed) > 0 {
			res.Action, res.Changed = "updated", changed
			log.Info("topic configs restored", "topic", t.Name, "configs", changed)
		}
		rep.Topics = append(rep.Topics, res)
	}
	return nil
}

// createTopic creates t; created is false when it exists already.
func createTopic(ctx context.Context, adm *kadm.Client, rf int16, t Topic) (resp kadm.CreateTopicResponse, created bool, err error) {
	configs := make(map[string]*string, len(t.Configs))
	for k, v := range t.Configs {
		configs[k] = &v
	}
	resp, err = adm.CreateTopic(ctx, t.Partitions, rf, configs, t.Name)
	if err == nil {
		err = resp.Err
	}
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return resp, false, nil
	}
	if err != nil {
		if resp.ErrMessage != "" {
			return resp, false, fmt.Errorf("create topic %s: %w (%s)", t.Name, err, resp.ErrMessage)
		}
		return resp, false, fmt.Errorf("create topic %s: %w", t.Name, err)
	}
	return resp, true, nil
}

// waitTopic polls the metadata until it lists the topic (a topic that
// CreateTopics says exists may not have reached every broker's metadata).
func waitTopic(ctx context.Context, adm *kadm.Client, name string) (kadm.TopicDetail, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		tds, err := adm.ListTopics(ctx, name)
		if err == nil {
			if d, ok := tds[name]; ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				return d, nil
			}
		}
		select {
		case <-ctx.Done():
			return kadm.TopicDetail{}, fmt.Errorf("topic %s exists (TOPIC_ALREADY_EXISTS) but no broker lists it in its metadata: %w", name, ctx.Err())
		case <-tick.C:
		}
	}
}

// restoreConfigs sets the topic's configs back to t.Configs where they
// drifted, after checking that the min.insync.replicas it would have is
// safe for the topic's actual replication factor rf on live brokers. It returns the
// restored key=value pairs, the resulting min.insync.replicas and a
// warning for weak replication.
func restoreConfigs(ctx context.Context, adm *kadm.Client, t Topic, rf, live int) (changed []string, misr int16, warning string, err error) {
	rc, err := describeTopicConfigs(ctx, adm, t.Name)
	if err != nil {
		return nil, 0, "", err
	}
	have := map[string]string{}
	for _, c := range rc.Configs {
		have[c.Key] = c.MaybeValue()
	}
	want := have["min.insync.replicas"]
	if v, ok := t.Configs["min.insync.replicas"]; ok {
		want = v
	}
	if n, perr := strconv.Atoi(want); perr == nil && rf > 0 {
		misr = int16(n)
		if _, setting := t.Configs["min.insync.replicas"]; setting && want != have["min.insync.replicas"] {
			// Run would change it: refuse a value that breaks this topic.
			if _, err := checkReplication(rf, n, -1, " (existing topic "+t.Name+", replication factor "+strconv.Itoa(rf)+")"); err != nil {
				return nil, 0, "", err
			}
		}
		if w, err := checkReplication(rf, n, live, " (this topic's own values)"); err != nil {
			warning = err.Error()
		} else if w != "" {
			warning = w
		}
	}
	var alter []kadm.AlterConfig
	for k, v := range t.Configs {
		if have[k] == v {
			continue
		}
		alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
		changed = append(changed, k+"="+v)
	}
	if len(alter) == 0 {
		return nil, misr, warning, nil
	}
	sort.Strings(changed)
	err = untilKnown(ctx, t.Name, func() error {
		resps, err := adm.AlterTopicConfigs(ctx, alter, t.Name)
		if err != nil {
			return err
		}
		for _, r := range resps {
			if r.Err != nil {
				return fmt.Errorf("%w (%s)", r.Err, r.ErrMessage)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, "", fmt.Errorf("alter configs of %s: %w", t.Name, err)
	}
	return changed, misr, warning, nil
}

func describeTopicConfigs(ctx context.Context, adm *kadm.Client, name string) (kadm.ResourceConfig, error) {
	var rc kadm.ResourceConfig
	err := untilKnown(ctx, name, func() error {
		rcs, err := adm.DescribeTopicConfigs(ctx, name)
		if err != nil {
			return err
		}
		if rc, err = rcs.On(name, nil); err != nil {
			return err
		}
		return rc.Err
	})
	if err != nil {
		return rc, fmt.Errorf("describe configs of %s: %w", name, err)
	}
	return rc, nil
}

// untilKnown runs fn again while it fails with UNKNOWN_TOPIC_OR_PARTITION:
// a topic created a moment ago (by this run, the run before or another
// client) is not yet in the metadata of every broker, so a request that
// lands on one that has not learned of it fails until it has.
func untilKnown(ctx context.Context, topic string, fn func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s still unknown to the broker asked: %w (%w)", topic, err, ctx.Err())
		case <-tick.C:
		}
	}
}

// Millis formats a duration as a Kafka *.ms config value.
func Millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
