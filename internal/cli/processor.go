package cli

// This file is owned by the processor stage: it defines the
// `iotpipe processor` command (flags → processor.Config → New → Run).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/iotpipe/iotpipe/processor"
	"github.com/iotpipe/iotpipe/schemas"
)

const processorSummary = "compute per-device windowed metrics from telemetry.raw, exactly once"

const processorHelp = `Consume telemetry.raw in a consumer group and write, per device × metric and
event-time tumbling window, count/sum/min/max/mean/stddev(population)/first/
last/p50/p95/p99 and a per-device activity record to telemetry.metrics;
undecodable and too-late readings go to telemetry.dlq.

Exactly once: every transaction holds the outputs, the input offsets and the
changelog records of the open windows' state; on assignment a partition's
state is restored from the changelog topic before it is processed. Run several
processors with the same --group and distinct --instance-id to split the
partitions. SIGTERM/SIGINT commits the transaction in progress, leaves the
group and exits 0.`

type processorFlags struct {
	kafka kafkaFlags
	http  httpFlags
	log   logFlags

	group, instance                                  string
	topicRaw, topicMetrics, topicDLQ, topicChangelog string
	window, lateness, idle, lateRetention            time.Duration
	maxFutureSkew                                    time.Duration
	commitInterval, txnTimeout, sessionTimeout       time.Duration
	restoreTimeout, shutdownTimeout, debugCommit     time.Duration
	maxPoll, maxKeys                                 int
	checkConfig                                      bool
}

func (o *processorFlags) bind(f *Flags) {
	host, _ := os.Hostname()
	if host == "" {
		host = "processor"
	}
	f.Group("General")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without contacting anything")
	o.kafka.bind(f, "iotpipe-processor")
	f.String(&o.group, "group", processor.DefaultGroup, "consumer group; processors in one group split the raw topic's partitions")
	f.String(&o.instance, "instance-id", host, "name of this processor in the group, unique among running ones and stable across its restarts (static membership; also names its transactional id)")
	f.Duration(&o.sessionTimeout, "session-timeout", processor.DefaultSessionTimeout, "how long a vanished processor keeps its partitions before the group moves them")
	f.Duration(&o.txnTimeout, "transaction-timeout", processor.DefaultTransactionTimeout, "broker-side timeout of a transaction left open by a vanished processor")
	f.Group("Topics")
	f.String(&o.topicRaw, "topic-raw", schemas.TopicRaw, "input topic of canonical readings")
	f.String(&o.topicMetrics, "topic-metrics", schemas.TopicMetrics, "output topic of window metrics and activity records")
	f.String(&o.topicDLQ, "topic-dlq", schemas.TopicDLQ, "dead-letter topic for undecodable and too-late readings")
	f.String(&o.topicChangelog, "topic-processor-changelog", processor.DefaultChangelogTopic, "compacted topic holding the state of open windows (same partition count as the raw topic)")
	f.Group("Windows")
	f.Duration(&o.window, "window", processor.DefaultWindowSize, "size of the tumbling event-time windows, aligned to the Unix epoch")
	f.Duration(&o.lateness, "lateness", processor.DefaultLateness, "allowed lateness: each device's watermark trails its newest event time by it; a window is emitted when its device's watermark passes its end and re-emitted (higher revision) for readings until end+lateness; later readings go to the DLQ as late")
	f.Duration(&o.idle, "idle-timeout", processor.DefaultIdleTimeout, "after a device sent nothing for this long its watermark advances with the wall clock, so its windows close (its final window by window end + idle timeout)")
	f.Duration(&o.maxFutureSkew, "max-future-skew", processor.DefaultMaxFutureSkew, "readings further ahead of the processor's clock go to the DLQ (timestamp_skew); no device's watermark is ever ahead of the wall clock plus this; keep it >= the bridge's --max-future-skew")
	f.Duration(&o.lateRetention, "late-retention", processor.DefaultLateRetention, "how long a closed window's activity summary is kept to count late readings in it")
	f.Group("Processing")
	f.Duration(&o.commitInterval, "commit-interval", processor.DefaultCommitInterval, "longest a transaction stays open (latency of outputs vs. transaction overhead)")
	f.Int(&o.maxPoll, "max-poll-records", processor.DefaultMaxPollRecords, "records taken from Kafka per poll")
	f.Int(&o.maxKeys, "max-keys", processor.DefaultMaxKeys, "cap on open metric windows (device × metric × window); memory guard: at the cap the oldest open windows are closed early (emitted; readings still to come for them go to the DLQ as late, counted)")
	f.Duration(&o.restoreTimeout, "restore-timeout", processor.DefaultRestoreTimeout, "longest time to restore a partition's state from the changelog")
	f.Duration(&o.shutdownTimeout, "shutdown-timeout", processor.DefaultShutdownTimeout, "on SIGTERM, time allowed to commit the transaction in progress and leave the group")
	f.Duration(&o.debugCommit, "debug-commit-delay", 0, "testing only: sleep this long inside every transaction commit (after \"transaction commit started\" is logged)")
	o.http.bind(f, ":9102")
	o.log.bind(f, "json")
}

func (o *processorFlags) config() (processor.Config, error) {
	var errs []error
	kc, err := o.kafka.config()
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range []struct{ name, v string }{{"group", o.group}, {"instance-id", o.instance}, {"topic-raw", o.topicRaw},
		{"topic-metrics", o.topicMetrics}, {"topic-dlq", o.topicDLQ}, {"topic-processor-changelog", o.topicChangelog}} {
		if s.v == "" {
			errs = append(errs, settingErr(s.name, s.v, errors.New("must not be empty")))
		}
	}
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, settingErr(name, d.String(), errors.New("must be positive")))
		}
	}
	pos("window", o.window)
	pos("idle-timeout", o.idle)
	pos("commit-interval", o.commitInterval)
	pos("transaction-timeout", o.txnTimeout)
	pos("session-timeout", o.sessionTimeout)
	pos("restore-timeout", o.restoreTimeout)
	pos("shutdown-timeout", o.shutdownTimeout)
	if o.lateness < 0 {
		errs = append(errs, settingErr("lateness", o.lateness.String(), errors.New("must not be negative")))
	}
	if o.lateRetention < 0 {
		errs = append(errs, settingErr("late-retention", o.lateRetention.String(), errors.New("must not be negative")))
	}
	wc := processor.WindowConfig{Size: o.window, Lateness: o.lateness, IdleTimeout: o.idle, LateRetention: o.lateRetention, MaxFutureSkew: o.maxFutureSkew}
	if o.window > 0 {
		if err := wc.Validate(); err != nil {
			errs = append(errs, settingErr("window", o.window.String(), err))
		}
	}
	if o.maxPoll < 1 {
		errs = append(errs, settingErr("max-poll-records", fmt.Sprint(o.maxPoll), errors.New("must be at least 1")))
	}
	if o.maxKeys < 1 {
		errs = append(errs, settingErr("max-keys", fmt.Sprint(o.maxKeys), errors.New("must be at least 1")))
	}
	if o.commitInterval > time.Minute {
		errs = append(errs, settingErr("commit-interval", o.commitInterval.String(), errors.New("must be at most 1m")))
	}
	if o.txnTimeout > 0 && o.txnTimeout < time.Second {
		errs = append(errs, settingErr("transaction-timeout", o.txnTimeout.String(), errors.New("must be at least 1s")))
	}
	if o.sessionTimeout > 0 && o.sessionTimeout < time.Second {
		errs = append(errs, settingErr("session-timeout", o.sessionTimeout.String(), errors.New("must be at least 1s")))
	}
	if o.debugCommit < 0 {
		errs = append(errs, settingErr("debug-commit-delay", o.debugCommit.String(), errors.New("must not be negative")))
	}
	if len(errs) > 0 {
		return processor.Config{}, &UsageError{errors.Join(errs...)}
	}
	cfg := processor.Config{
		Kafka: kc, Group: o.group, InstanceID: o.instance,
		Topics:             processor.Topics{Raw: o.topicRaw, Metrics: o.topicMetrics, DLQ: o.topicDLQ, Changelog: o.topicChangelog},
		Window:             wc,
		CommitInterval:     o.commitInterval,
		MaxPollRecords:     o.maxPoll,
		MaxKeys:            o.maxKeys,
		TransactionTimeout: o.txnTimeout,
		SessionTimeout:     o.sessionTimeout,
		RestoreTimeout:     o.restoreTimeout,
		ShutdownTimeout:    o.shutdownTimeout,
		HTTP:               o.http.c,
		DebugCommitDelay:   o.debugCommit,
	}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, &UsageError{err}
	}
	return cfg, nil
}

func runProcessor(ctx context.Context, env Env, args []string) error {
	var o processorFlags
	log, err := parseStage(env, args, "iotpipe processor", processorHelp, o.bind, &o.log)
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: kafka %v, group %s, instance %s (transactional id %s), %s → %s (dlq %s, changelog %s), window %s, lateness %s, idle timeout %s, commit interval %s, max keys %d, http %q\n",
			cfg.Kafka.Brokers, cfg.Group, cfg.InstanceID, cfg.TransactionalID(), cfg.Topics.Raw, cfg.Topics.Metrics, cfg.Topics.DLQ,
			cfg.Topics.Changelog, cfg.Window.Size, cfg.Window.Lateness, cfg.Window.IdleTimeout, cfg.CommitInterval, cfg.MaxKeys, cfg.HTTP.Addr)
		return nil
	}
	p, err := processor.New(cfg, log.With("stage", schemas.StageProcessor))
	if err != nil {
		return &UsageError{err}
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}
