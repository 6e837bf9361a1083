// Package shadowconsumer is the shadow consumer stage: it reads the
// devices' shadow requests that the bridge wrote to Kafka (shadow/update
// reports and shadow/get requests, key = device id), applies them to the
// shadows in PostgreSQL and answers each through the outbox
// (…/shadow/update/accepted or …/rejected with a reason code,
// …/shadow/get/accepted), which iotpipe api's relay publishes.
//
// # Contracts
//
//   - Exactly once: the records of a batch are applied in one
//     transaction that also moves the partitions' next offsets in
//     shadow_offsets (locked FOR UPDATE first). On assignment the
//     consumer starts from shadow_offsets, not from Kafka's committed
//     offsets, and a record below the stored offset is skipped, so a
//     crash, a rebalance or a zombie copy never applies a report twice
//     or loses one.
//   - Per-device order: a device's requests are in one partition (key =
//     device id) and applied in offset order.
//   - A request that cannot be applied (malformed, too large, a stale
//     version, an unknown device) is answered rejected where there is a
//     device to answer, counted in iotpipe_shadow_requests_total by
//     outcome, logged, and its offset moves on: it never stops the
//     stage.
//   - SIGTERM: finish the batch in hand (commit), leave the group, exit.
package shadowconsumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/shadow"
)

// DefaultTopic is the Kafka topic of shadow requests.
const DefaultTopic = "devices.shadow"

// Config configures the consumer. Start from DefaultConfig.
type Config struct {
	Kafka kafkax.Config
	// Topic holds the shadow requests (the bridge's --topic-shadow).
	Topic string
	// Group is the consumer group; InstanceID its static member id.
	Group, InstanceID string
	// SessionTimeout is the group session timeout.
	SessionTimeout time.Duration
	// DSN is a member of the registry role; Schema holds the shadows.
	DSN, Schema string
	// Limits bound the reported documents.
	Limits shadow.Limits
	// BatchMax is the most records applied in one transaction.
	BatchMax int
	// RetryMin and RetryMax bound the backoff while the database fails.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the soft stop.
	ShutdownTimeout time.Duration
}

// DefaultConfig: topic devices.shadow, group iotpipe-shadow, batches of
// 500, the shadow package's default limits.
func DefaultConfig() Config {
	return Config{
		Kafka:           kafkax.DefaultConfig("iotpipe-shadow"),
		Topic:           DefaultTopic,
		Group:           "iotpipe-shadow",
		InstanceID:      kafkax.HostInstanceID(),
		SessionTimeout:  45 * time.Second,
		Schema:          "iotpipe",
		Limits:          shadow.DefaultLimits(),
		BatchMax:        500,
		RetryMin:        100 * time.Millisecond,
		RetryMax:        5 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate reports every invalid field as a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	p.Nested("Kafka", c.Kafka.Validate())
	p.Check(c.Topic == "", "Topic", "must not be empty")
	p.Check(c.Group == "", "Group", "must not be empty")
	p.Check(c.SessionTimeout <= 0, "SessionTimeout", "must be positive")
	p.Check(c.DSN == "", "DSN", "no database URL: give a member of the registry role (iotpipe_registry)")
	p.Check(c.Schema == "", "Schema", "must not be empty")
	p.Check(c.Limits.MaxBytes < 64, "Limits.MaxBytes", "must be at least 64")
	p.Check(c.Limits.MaxDepth < 1, "Limits.MaxDepth", "must be at least 1")
	p.Check(c.Limits.MaxKeys < 1, "Limits.MaxKeys", "must be at least 1")
	p.Check(c.BatchMax < 1, "BatchMax", "must be at least 1")
	p.Check(c.RetryMin <= 0, "RetryMin", "must be positive")
	if c.RetryMax < c.RetryMin {
		p.Add("RetryMax", "must be at least {RetryMin}")
	}
	p.Check(c.ShutdownTimeout <= 0, "ShutdownTimeout", "must be positive")
	return p.Err()
}

// Consumer is the shadow consumer stage.
type Consumer struct {
	cfg   Config
	log   *slog.Logger
	reqs  *prometheus.CounterVec
	batch prometheus.Histogram
	ready atomic.Bool
	pool  atomic.Pointer[pgxpool.Pool]
}

// New checks cfg; nothing is contacted before Run.
func New(cfg Config, deps service.Deps) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, log: deps.Logger(),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iotpipe_shadow_requests_total",
			Help: "Device shadow requests applied, by kind (update, get) and outcome (accepted, or the rejection code)."}, []string{"kind", "outcome"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "iotpipe_shadow_batch_seconds",
			Help: "Time to apply one batch (one transaction).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 12)}),
	}
	if deps.Registry != nil {
		deps.Registry.MustRegister(c.reqs, c.batch)
	}
	return c, nil
}

// Checks: the database answers and the consumer has joined.
func (c *Consumer) Checks() map[string]service.Check {
	return map[string]service.Check{"consumer": func(ctx context.Context) error {
		p := c.pool.Load()
		if p == nil || !c.ready.Load() {
			return errors.New("not started")
		}
		return p.Ping(ctx)
	}}
}

type tp struct {
	topic     string
	partition int32
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	pc, err := pgxpool.ParseConfig(c.cfg.DSN)
	if err != nil {
		return &config.FieldError{Field: "DSN", Err: err}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("shadow consumer: database: %w", err)
	}
	defer pool.Close()
	c.pool.Store(pool)
	st := shadow.New(pool, c.cfg.Schema, c.cfg.Limits)
	if err := c.retry(ctx, "database", func() error { return st.Check(ctx) }); err != nil {
		return nil
	}
	offsets := pgx.Identifier{c.cfg.Schema, "shadow_offsets"}.Sanitize()
	seek := func(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
		stored := map[tp]int64{}
		err := c.retry(ctx, "read shadow_offsets", func() error {
			rows, err := pool.Query(ctx, "SELECT topic, partition, next_offset FROM "+offsets+" WHERE consumer_group = $1", c.cfg.Group)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var k tp
				var n int64
				if err := rows.Scan(&k.topic, &k.partition, &n); err != nil {
					return err
				}
				stored[k] = n
			}
			return rows.Err()
		})
		if err != nil {
			return nil, err
		}
		for t, ps := range offs {
			for p := range ps {
				if n, ok := stored[tp{t, p}]; ok {
					ps[p] = kgo.NewOffset().At(n).WithEpoch(-1)
				} else {
					ps[p] = kgo.NewOffset().AtStart()
				}
			}
		}
		c.log.Info("partitions assigned", "assigned", offs)
		return offs, nil
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AdjustFetchOffsetsFn(seek),
		kgo.SessionTimeout(c.cfg.SessionTimeout),
	}
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	cl, err := kgo.NewClient(c.cfg.Kafka.Opts(opts...)...)
	if err != nil {
		return fmt.Errorf("shadow consumer: kafka: %w", err)
	}
	defer cl.Close()
	c.ready.Store(true)
	c.log.Info("shadow consumer started", "topic", c.cfg.Topic, "group", c.cfg.Group, "schema", c.cfg.Schema)
	for {
		fs := cl.PollRecords(ctx, c.cfg.BatchMax)
		if ctx.Err() != nil {
			break
		}
		if fs.IsClientClosed() {
			return errors.New("shadow consumer: kafka client closed")
		}
		var denied error
		fs.EachError(func(t string, p int32, err error) {
			if kafkax.IsSecurity(err) && denied == nil {
				denied = kafkax.FetchError(c.cfg.Group, t, err)
			} else {
				c.log.Warn("kafka fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		if denied != nil { // an ACL or the credentials: retrying does not cure it; stop, naming the setting
			cl.AllowRebalance()
			return denied
		}
		recs := fs.Records()
		if len(recs) > 0 {
			// The batch in hand is finished even when ctx ends meanwhile.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout+time.Minute)
			err := c.retry(ctx, "apply shadow requests", func() error { return c.apply(actx, pool, st, offsets, recs) })
			cancel()
			if err != nil {
				break // cancelled while the database was failing: read again on restart
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			cl.CommitOffsets(cctx, cl.UncommittedOffsets(), nil) // informational (lag); resumption uses shadow_offsets
			cancel()
		}
		cl.AllowRebalance()
	}
	cl.AllowRebalance()
	c.log.Info("shadow consumer stopped")
	return nil
}

// apply applies recs in one transaction with their partitions' offsets.
func (c *Consumer) apply(ctx context.Context, pool *pgxpool.Pool, st *shadow.Store, offsets string, recs []*kgo.Record) error {
	start := time.Now()
	type outcome struct{ kind, result string }
	var counts []outcome
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		counts = counts[:0]
		next := map[tp]int64{}
		for _, r := range recs {
			k := tp{r.Topic, r.Partition}
			if _, ok := next[k]; !ok {
				var n int64 = -1
				if _, err := tx.Exec(ctx, "INSERT INTO "+offsets+" (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
					c.cfg.Group, r.Topic, r.Partition); err != nil {
					return fmt.Errorf("lock shadow_offsets: %w", err)
				}
				if err := tx.QueryRow(ctx, "SELECT next_offset FROM "+offsets+" WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
					c.cfg.Group, r.Topic, r.Partition).Scan(&n); err != nil {
					return fmt.Errorf("lock shadow_offsets: %w", err)
				}
				next[k] = n
			}
			if r.Offset < next[k] {
				continue // applied already (a redelivery after a crash or rebalance)
			}
			kind, res, err := c.one(ctx, tx, st, r)
			if err != nil {
				return err
			}
			counts = append(counts, outcome{kind, res})
			next[k] = r.Offset + 1
		}
		for k, n := range next {
			if _, err := tx.Exec(ctx, "UPDATE "+offsets+" SET next_offset = $4, updated_at = now() WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
				c.cfg.Group, k.topic, k.partition, n); err != nil {
				return fmt.Errorf("write shadow_offsets: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.batch.Observe(time.Since(start).Seconds())
	for _, o := range counts {
		c.reqs.WithLabelValues(o.kind, o.result).Inc()
	}
	return nil
}

// one applies one request.
func (c *Consumer) one(ctx context.Context, tx pgx.Tx, st *shadow.Store, r *kgo.Record) (kind, result string, err error) {
	var mqttTopic string
	for _, h := range r.Headers {
		switch h.Key {
		case "shadow-kind":
			kind = string(h.Value)
		case "mqtt-topic":
			mqttTopic = string(h.Value)
		}
	}
	if kind == "" {
		kind = mqttTopic[strings.LastIndexByte(mqttTopic, '/')+1:]
	}
	id := string(r.Key)
	var o shadow.Outcome
	switch kind {
	case "update":
		o, err = st.ApplyReport(ctx, tx, id, r.Value)
	case "get":
		o, err = st.AnswerGet(ctx, tx, id, r.Value)
	default:
		c.log.Warn("shadow request of an unknown kind skipped", "kind", kind, "mqtt_topic", mqttTopic,
			"partition", r.Partition, "offset", r.Offset)
		return "unknown", "invalid_record", nil
	}
	if err != nil {
		return kind, "", fmt.Errorf("apply %s of %s (partition %d offset %d): %w", kind, id, r.Partition, r.Offset, err)
	}
	if o.Accepted {
		return kind, "accepted", nil
	}
	c.log.Info("shadow request rejected", "device_id", id, "kind", kind, "code", o.Code, "err", o.Err,
		"partition", r.Partition, "offset", r.Offset)
	return kind, string(o.Code), nil
}

func (c *Consumer) retry(ctx context.Context, what string, f func() error) error {
	return retry.Do(ctx, retry.New(c.cfg.RetryMin, c.cfg.RetryMax), f, func(attempt int, err error, wait time.Duration) {
		c.log.Warn(what+" failed, retrying", "attempt", attempt, "wait", wait, "err", err)
	})
}
