package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/alert"
	"github.com/iotpipe/iotpipe/internal/kafkaacl"
	"github.com/iotpipe/iotpipe/notify"
	"github.com/iotpipe/iotpipe/shadowconsumer"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/flags"
	"github.com/iotpipe/iotpipe/internal/objstore"
	"github.com/iotpipe/iotpipe/internal/setup"
	"github.com/iotpipe/iotpipe/processor"
	"github.com/iotpipe/iotpipe/schemas/migrations"
	"github.com/iotpipe/iotpipe/sink/lake"
	"github.com/iotpipe/iotpipe/sink/timescale"
)

const initSummary = `Prepare the systems iotpipe runs on, idempotently:
  - Kafka: the topics telemetry.raw, telemetry.readings (the processor's
    accepted readings, which the sinks store; partitions and retention as
    the raw topic), telemetry.metrics, telemetry.dlq, telemetry.alerts (alert
    events, read by iotpipe notify), devices.shadow (the devices' shadow
    requests) and the processor's and the alert stage's compacted
    changelogs, with their partitions and retention;
  - with --kafka-acls: each stage's Kafka principal (a SCRAM-SHA-512 user,
    created, or its password set when it cannot log in with the given one)
    and the ACLs it needs, nothing more (docs/SECURITY.md); init itself runs
    as a super user (--kafka-sasl-username);
  - object store: the lake bucket;
  - PostgreSQL/TimescaleDB: the schema, migrated to the latest version
    (TimescaleDB hypertables, compression, retention and continuous aggregates
    when the timescaledb extension can be created, plain tables otherwise).
A second run changes nothing and says so. Exits 0 on success, 1 when a system
fails (the message names the setting that reaches it), 2 on bad settings.`

type initFlags struct {
	kafka kafkaFlags
	s3    s3Flags
	log   logFlags

	topicRaw, topicMetrics, topicDLQ, topicChangelog string
	topicReadings, topicAlerts, topicShadow          string
	topicAlertChangelog                              string
	alertsRet                                        time.Duration
	rawParts, metricsParts, dlqParts                 int
	rawRet, metricsRet, dlqRet                       time.Duration
	replication, minISR                              int

	s3AdminAccess, s3AdminSecret, s3Owner         string
	s3OwnerSecret                                 string
	pgDSN, pgSchema, pgFlavor, pgWriter, pgReader string
	pgRegistry                                    string
	pgReadingsRet, pgMetricsRet, pgCompressAfter  time.Duration

	timeout     time.Duration
	skip        string
	checkConfig bool

	kafkaACLs                                 bool
	stageUsers                                map[string]*kafkaacl.Credentials
	processorGroup, lakeGroup, timescaleGroup string
	notifyGroup, shadowGroup                  string
	alertGroup                                string
}

func (o *initFlags) bind(f *cmdFlags) {
	f.Group("General")
	f.Duration(&o.timeout, "timeout", 15*time.Second, "time each system has to answer and finish its part; an unreachable one fails after it")
	f.String(&o.skip, "skip", "", "comma-separated systems to leave alone: kafka, s3, postgres")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without contacting anything")
	o.kafka.bind(f, "iotpipe-init")
	o.bindACLs(f)
	f.Group("Topics")
	f.String(&o.topicRaw, "topic-raw", "telemetry.raw", "topic of canonical readings (key = device id)")
	f.String(&o.topicReadings, "topic-readings", "telemetry.readings", "topic of the processor's accepted readings, each device message once, which the sinks store (partitions and retention of the raw topic; - creates none)")
	f.String(&o.topicMetrics, "topic-metrics", "telemetry.metrics", "topic of window aggregates and activity records")
	f.String(&o.topicDLQ, "topic-dlq", "telemetry.dlq", "dead-letter topic: rejected input with the reason in headers")
	f.String(&o.topicAlerts, "topic-alerts", "telemetry.alerts", "topic of alert events (FIRING/RESOLVED, key = device id; partitions of the raw topic), read by iotpipe notify")
	f.String(&o.topicShadow, "topic-shadow", "devices.shadow", "topic of the devices' shadow requests (bridge --topic-shadow → iotpipe shadow-consumer; partitions of the raw topic, retention of the DLQ; - creates none)")
	f.String(&o.topicChangelog, "topic-processor-changelog", "iotpipe.processor.changelog", "compacted topic holding the processor's open windows (same partition count as the raw topic)")
	f.String(&o.topicAlertChangelog, "topic-alert-changelog", alert.DefaultChangelogTopic, "compacted topic holding the alert stage's series states (partitions: the larger of the raw and metrics topics')")
	f.Int(&o.rawParts, "raw-partitions", 6, "partitions of the raw topic (and of the readings topic and the changelog); the unit of parallelism of every stage")
	f.Int(&o.metricsParts, "metrics-partitions", 6, "partitions of the metrics topic")
	f.Int(&o.dlqParts, "dlq-partitions", 3, "partitions of the dead-letter topic")
	f.Duration(&o.rawRet, "raw-retention", 7*24*time.Hour, "retention of the raw topic (and of the readings topic)")
	f.Duration(&o.metricsRet, "metrics-retention", 7*24*time.Hour, "retention of the metrics topic")
	f.Duration(&o.dlqRet, "dlq-retention", 30*24*time.Hour, "retention of the dead-letter topic")
	f.Duration(&o.alertsRet, "alerts-retention", 30*24*time.Hour, "retention of the alerts topic (how long a notify stage may stay down and still deliver)")
	f.Int(&o.replication, "replication-factor", -1, "replication factor of new topics; -1 uses the broker's default. Refused when above the live brokers; 3 on a cluster of three or more")
	f.Int(&o.minISR, "min-insync-replicas", -1, "min.insync.replicas of every topic (set on new ones, restored on existing ones); -1 uses the broker's default. Refused when above or equal to the replication factor (writes would stop when one broker is down), unless both are 1")
	o.s3.bind(f)
	f.String(&o.s3AdminAccess, "s3-admin-access-key", "", "key that creates the bucket and hands it to --s3-bucket-owner (the store's root or an admin user; used by init only); empty: --s3-access-key does")
	f.Secret(&o.s3AdminSecret, "s3-admin-secret-key", "", "secret of --s3-admin-access-key")
	f.String(&o.s3Owner, "s3-bucket-owner", "", "versitygw user (access key) made the owner of the bucket with the admin API: the lake sink's own key, which then reaches this bucket and no other; empty: leave the owner")
	f.Secret(&o.s3OwnerSecret, "s3-bucket-owner-secret-key", "", "with --s3-bucket-owner: create that user (role user: no admin API, no other bucket) with this secret when it does not exist (an existing user keeps its secret); empty: the user must exist")
	f.Group("PostgreSQL / TimescaleDB")
	f.Secret(&o.pgDSN, "pg-dsn", "postgres://iotpipe@localhost:5432/iotpipe?sslmode=verify-full", "database URL of the schema owner, who runs the migrations")
	f.String(&o.pgSchema, "pg-schema", "iotpipe", "schema that holds the tables")
	f.String(&o.pgFlavor, "pg-flavor", "auto", "auto: TimescaleDB when the extension can be created, plain PostgreSQL otherwise; timescaledb: require it; postgres: plain tables")
	f.String(&o.pgWriter, "pg-writer-role", "iotpipe_writer", "group role granted write access (the sink's login role is a member)")
	f.String(&o.pgReader, "pg-reader-role", "iotpipe_reader", "group role granted read access (Grafana and analysts)")
	f.String(&o.pgRegistry, "pg-registry-role", "iotpipe_registry", "group role granted write access to the device registry (iotpipe devices; its login role is a member)")
	f.Duration(&o.pgReadingsRet, "pg-readings-retention", 30*24*time.Hour, "TimescaleDB retention of raw readings; 0 keeps them forever")
	f.Duration(&o.pgMetricsRet, "pg-metrics-retention", 365*24*time.Hour, "TimescaleDB retention of window metrics and activity; 0 keeps them forever")
	f.Duration(&o.pgCompressAfter, "pg-compress-after", 24*time.Hour, "TimescaleDB compresses readings chunks older than this")
	// The summary on stdout says what was done; logs add warnings only,
	// unless asked for more.
	o.log.bindLevel(f, "text", "warn")
}

// bindACLs binds --kafka-acls and each stage's principal; the passwords
// are secrets (bindKafkaStagePassword).
func (o *initFlags) bindACLs(f *cmdFlags) {
	f.Group("Kafka principals and ACLs")
	f.Bool(&o.kafkaACLs, "kafka-acls", false, "create each stage's Kafka principal (SCRAM-SHA-512 user) and the ACLs it needs; init's own principal must be a super user")
	o.stageUsers = map[string]*kafkaacl.Credentials{}
	for _, st := range kafkaacl.Stages {
		c := &kafkaacl.Credentials{}
		o.stageUsers[st] = c
		f.String(&c.User, "kafka-"+st+"-username", "iotpipe-"+st, "Kafka principal of the "+st+" stage (its --kafka-sasl-username)")
		bindKafkaStagePassword(f, &c.Password, st)
	}
	f.String(&o.processorGroup, "processor-group", processor.DefaultGroup, "consumer group of the processors (its transactional ids start with iotpipe-processor.<group>.)")
	f.String(&o.lakeGroup, "sink-lake-group", lake.DefaultGroup, "consumer group of the lake sinks")
	f.String(&o.timescaleGroup, "sink-timescale-group", timescale.DefaultGroup, "consumer group of the TimescaleDB sinks")
	f.String(&o.alertGroup, "alert-group", alert.DefaultGroup, "consumer group of the alert stages (their transactional ids start with iotpipe-alert.<group>.)")
	f.String(&o.notifyGroup, "notify-group", notify.DefaultGroup, "consumer group of the notify stages")
	f.String(&o.shadowGroup, "shadow-consumer-group", shadowconsumer.DefaultConfig().Group, "consumer group of the shadow consumers")
}

// bindKafkaStagePassword is the one place a stage principal's password
// is bound for init: a secret, never printed or logged.
func bindKafkaStagePassword(f *cmdFlags, p *string, stage string) {
	f.Secret(p, "kafka-"+stage+"-password", "", "password of --kafka-"+stage+"-username, set when that user cannot log in with it; empty leaves the user's credentials alone")
}

// principals are the stage principals --kafka-acls ensures.
func (o *initFlags) principals() []kafkaacl.Principal {
	if !o.kafkaACLs {
		return nil
	}
	users := map[string]kafkaacl.Credentials{}
	for st, c := range o.stageUsers {
		users[st] = *c
	}
	return kafkaacl.StagePrincipals(kafkaacl.PipelineNames{
		Raw: o.topicRaw, Readings: o.topicReadings, Metrics: o.topicMetrics, DLQ: o.topicDLQ, Changelog: o.topicChangelog,
		ProcessorGroup: o.processorGroup, LakeGroup: o.lakeGroup, TimescaleGroup: o.timescaleGroup,
		Alerts: o.topicAlerts, Shadow: o.topicShadow, NotifyGroup: o.notifyGroup, ShadowGroup: o.shadowGroup,
		TransactionalIDPrefix: (&processor.Config{Group: o.processorGroup}).TransactionalID(),
		AlertChangelog:        o.topicAlertChangelog, AlertGroup: o.alertGroup,
		AlertTransactionalIDPrefix: alert.TransactionalIDPrefix(o.alertGroup),
	}, users)
}

func (o *initFlags) config(f *cmdFlags) (setup.Config, error) {
	var errs []error
	kc, err := o.kafka.config(f)
	if err != nil {
		errs = append(errs, err)
	}
	skip := map[setup.Component]bool{}
	for _, s := range strings.Split(o.skip, ",") {
		switch c := setup.Component(strings.TrimSpace(s)); c {
		case "":
		case setup.Kafka, setup.Postgres, setup.S3:
			skip[c] = true
		default:
			errs = append(errs, settingErr("skip", o.skip, fmt.Errorf("unknown system %q: want kafka, s3 or postgres", c)))
		}
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"raw-partitions", o.rawParts}, {"metrics-partitions", o.metricsParts}, {"dlq-partitions", o.dlqParts}} {
		if p.v < 1 || p.v > 10000 {
			errs = append(errs, settingErr(p.name, fmt.Sprint(p.v), errors.New("must be between 1 and 10000")))
		}
	}
	if err := setup.ValidateReplication(o.replication, o.minISR); err != nil && !skip[setup.Kafka] {
		errs = append(errs, &UsageError{err})
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"raw-retention", o.rawRet}, {"metrics-retention", o.metricsRet}, {"dlq-retention", o.dlqRet}} {
		if d.v < time.Minute {
			errs = append(errs, settingErr(d.name, d.v.String(), errors.New("must be at least 1m")))
		}
	}
	if o.timeout <= 0 {
		errs = append(errs, settingErr("timeout", o.timeout.String(), errors.New("must be positive")))
	}
	if _, err := pgx.ParseConfig(o.pgDSN); err != nil && !skip[setup.Postgres] {
		errs = append(errs, settingErr("pg-dsn", "", fmt.Errorf("invalid database URL: %w", err)))
	}
	flavor := migrations.Flavor(o.pgFlavor)
	switch flavor {
	case migrations.FlavorAuto, migrations.FlavorTimescaleDB, migrations.FlavorPostgres:
	default:
		errs = append(errs, settingErr("pg-flavor", o.pgFlavor, errors.New("want auto, timescaledb or postgres")))
	}
	mopts := migrations.Options{
		Schema:            o.pgSchema,
		Flavor:            flavor,
		WriterRole:        o.pgWriter,
		ReaderRole:        o.pgReader,
		RegistryRole:      o.pgRegistry,
		ReadingsRetention: o.pgReadingsRet,
		MetricsRetention:  o.pgMetricsRet,
		CompressAfter:     o.pgCompressAfter,
	}
	if err := mopts.Validate(); err != nil && !skip[setup.Postgres] {
		errs = append(errs, &UsageError{fmt.Errorf("--pg-* settings: %w", err)})
	}
	if err := o.s3.c.Validate(); err != nil && !skip[setup.S3] {
		errs = append(errs, f.Explain(err, &o.s3.c))
	}
	if (o.s3AdminAccess == "") != (o.s3AdminSecret == "") && !skip[setup.S3] {
		errs = append(errs, settingErr("s3-admin-secret-key", "", fmt.Errorf("set both --s3-admin-access-key (%s) and --s3-admin-secret-key, or neither", EnvName("s3-admin-access-key"))))
	}
	if len(errs) > 0 {
		return setup.Config{}, &UsageError{errors.Join(errs...)}
	}
	return setup.Config{
		Kafka:             kc,
		ReplicationFactor: int16(o.replication),
		MinInsyncReplicas: int16(o.minISR),
		Topics: []setup.Topic{
			{Name: o.topicRaw, Partitions: int32(o.rawParts), Purpose: "raw readings",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.rawRet)}},
			{Name: o.topicReadings, Partitions: int32(o.rawParts), Purpose: "accepted readings",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.rawRet)}},
			{Name: o.topicMetrics, Partitions: int32(o.metricsParts), Purpose: "window metrics",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.metricsRet)}},
			{Name: o.topicDLQ, Partitions: int32(o.dlqParts), Purpose: "dead letters",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.dlqRet)}},
			{Name: o.topicAlerts, Partitions: int32(o.rawParts), Purpose: "alert events",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.alertsRet)}},
			{Name: o.topicShadow, Partitions: int32(o.rawParts), Purpose: "device shadow requests",
				Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": setup.Millis(o.dlqRet)}},
			{Name: o.topicChangelog, Partitions: int32(o.rawParts), Purpose: "processor changelog",
				// Compaction never touches the active segment, so roll it
				// often: the processor's restore time stays bounded.
				Configs: map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
					"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}},
			{Name: o.topicAlertChangelog, Partitions: int32(max(o.rawParts, o.metricsParts)), Purpose: "alert changelog",
				Configs: map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
					"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}},
		},
		Principals:          o.principals(),
		PostgresDSN:         o.pgDSN,
		Migrations:          mopts,
		S3:                  o.s3.c,
		S3AdminAccessKey:    o.s3AdminAccess,
		S3AdminSecretKey:    o.s3AdminSecret,
		S3BucketOwner:       o.s3Owner,
		S3BucketOwnerSecret: o.s3OwnerSecret,
		Timeout:             o.timeout,
		Skip:                skip,
	}, nil
}

func runInit(ctx context.Context, env Env, args []string) error {
	var o initFlags
	f := newCmdFlags(env, "iotpipe init", initSummary)
	o.bind(f)
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	log, err := o.log.logger(env, f)
	if err != nil {
		return err
	}
	cfg, err := o.config(f)
	if err != nil {
		return err
	}
	// --topic-readings -: the pipeline stores no readings, so no topic.
	// --topic-shadow -: no device shadows.
	cfg.Topics = slices.DeleteFunc(cfg.Topics, func(t setup.Topic) bool { return t.Name == "-" })
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: %s, stage principals %d, s3 %s bucket %s, postgres schema %s (%s)\n",
			cfg.Kafka.Describe(), len(cfg.Principals), cfg.S3.Endpoint, cfg.S3.Bucket, cfg.Migrations.Schema, cfg.Migrations.Flavor)
		return nil
	}
	start := time.Now()
	rep, err := setup.Run(ctx, cfg, log)
	printReport(env, &rep)
	if err != nil {
		return nameSetting(err, &o, f)
	}
	if rep.Changed() {
		fmt.Fprintf(env.Stdout, "init: done in %s\n", time.Since(start).Round(time.Millisecond))
	} else {
		fmt.Fprintf(env.Stdout, "init: done in %s, nothing to change\n", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func printReport(env Env, rep *setup.Report) {
	if k := rep.Kafka; k.Brokers > 0 {
		line := fmt.Sprintf("kafka: %d live brokers; new topics: replication factor %d, min.insync.replicas %d", k.Brokers, k.ReplicationFactor, k.MinInsyncReplicas)
		if k.Warning != "" {
			line += "; warning: " + k.Warning
		}
		fmt.Fprintln(env.Stdout, line)
	}
	for _, t := range rep.Topics {
		line := fmt.Sprintf("kafka: topic %s (%d partitions): %s", t.Name, t.Partitions, t.Action)
		if len(t.Changed) > 0 {
			line += " " + strings.Join(t.Changed, " ")
		}
		if t.Warning != "" {
			line += "; warning: " + t.Warning
		}
		fmt.Fprintln(env.Stdout, line)
	}
	for _, p := range rep.Principals {
		line := fmt.Sprintf("kafka: principal User:%s (%s): credentials %s", p.User, p.Stage, p.Credentials)
		if len(p.Created) == 0 {
			line += ", ACLs unchanged"
		} else {
			line += ", created ACLs: " + strings.Join(p.Created, "; ")
		}
		fmt.Fprintln(env.Stdout, line)
	}
	if rep.Bucket != "" {
		state := "exists"
		if rep.BucketCreated {
			state = "created"
		}
		if rep.OwnerCreated {
			state += ", user " + rep.BucketOwner + " created"
		}
		if rep.BucketOwner != "" {
			if rep.OwnerChanged {
				state += ", owner set to " + rep.BucketOwner
			} else {
				state += ", owned by " + rep.BucketOwner
			}
		}
		fmt.Fprintf(env.Stdout, "s3: bucket %s: %s\n", rep.Bucket, state)
	}
	if m := rep.Migrations; m.To > 0 {
		line := fmt.Sprintf("postgres: schema at version %d (%s)", m.To, m.Flavor)
		if len(m.Applied) == 0 {
			line += ": up to date"
		} else {
			line += fmt.Sprintf(": applied %s (was version %d)", strings.Join(m.Applied, ", "), m.From)
		}
		if m.FallbackReason != "" {
			line += "; plain PostgreSQL because " + m.FallbackReason
		}
		fmt.Fprintln(env.Stdout, line)
	}
}

// nameSetting rewrites a component failure so that it names the settings
// that reach the component.
func nameSetting(err error, o *initFlags, f *cmdFlags) error {
	var se *setup.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Component {
	case setup.Kafka:
		if len(config.Fields(se.Err)) > 0 { // a security setting (kafkax.Config.Explain)
			return &UsageError{fmt.Errorf("cannot prepare Kafka at --kafka-brokers (%s=%q): %w", EnvName("kafka-brokers"), strings.Join(o.kafka.c.Brokers, ","), f.Explain(se.Err, &o.kafka.c))}
		}
		return fmt.Errorf("cannot prepare Kafka at --kafka-brokers (%s=%q): %w", EnvName("kafka-brokers"), strings.Join(o.kafka.c.Brokers, ","), se.Err)
	case setup.S3:
		var fe *config.FieldError
		if errors.As(se.Err, &fe) {
			name := map[string]string{"CAFile": "s3-ca-file", "Endpoint": "s3-endpoint"}[fe.Field]
			if name != "" {
				return fmt.Errorf("cannot prepare the object store: %s: %w", flags.Setting(name), fe.Err)
			}
		}
		if errors.Is(se.Err, objstore.ErrAdmin) {
			return fmt.Errorf("object store at --s3-endpoint (%s=%q): the admin API refused --s3-admin-access-key (%s) handing the bucket to --s3-bucket-owner (%s): %w",
				EnvName("s3-endpoint"), o.s3.c.Endpoint, EnvName("s3-admin-access-key"), EnvName("s3-bucket-owner"), se.Err)
		}
		var resp minio.ErrorResponse
		if errors.As(se.Err, &resp) && (resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.Code == "AccessDenied") && errors.Is(se.Err, setup.ErrS3AdminKey) {
			return fmt.Errorf("object store at --s3-endpoint (%s=%q) refused the credentials --s3-admin-access-key/--s3-admin-secret-key (%s, %s): %w",
				EnvName("s3-endpoint"), o.s3.c.Endpoint, EnvName("s3-admin-access-key"), EnvName("s3-admin-secret-key"), se.Err)
		}
		if errors.As(se.Err, &resp) && (resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.Code == "AccessDenied") {
			return fmt.Errorf("object store at --s3-endpoint (%s=%q) refused the credentials --s3-access-key/--s3-secret-key (%s, %s): %w",
				EnvName("s3-endpoint"), o.s3.c.Endpoint, EnvName("s3-access-key"), EnvName("s3-secret-key"), se.Err)
		}
		return fmt.Errorf("cannot prepare the object store at --s3-endpoint (%s=%q): %w", EnvName("s3-endpoint"), o.s3.c.Endpoint, se.Err)
	case setup.Postgres:
		return fmt.Errorf("cannot prepare the database at --pg-dsn (%s): %w", EnvName("pg-dsn"), se.Err)
	}
	return err
}
