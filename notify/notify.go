// Package notify is the `iotpipe notify` stage: it consumes alert events
// from telemetry.alerts and tells people, over webhooks (Standard
// Webhooks), ntfy, email (SMTP) and MQTT.
//
// # Contracts
//
//   - Enqueued exactly once: each (event, recipient) becomes one row of
//     notifications, inserted in the transaction that also moves the
//     stage's Kafka offsets in notify_offsets; on partition assignment the
//     stage resumes from there (the TimescaleDB sink's scheme). A record
//     that does not decode goes to the DLQ topic with reason
//     invalid_record; a recipient that does not parse is logged and counted
//     (iotpipe_notify_rejected_total{reason="bad_recipient"}).
//   - Delivered at least once, under a stable id: a delivery locks its
//     rows (FOR UPDATE SKIP LOCKED), sends, records the attempt and marks
//     the rows in one transaction; a crash before the commit sends again.
//     A message about one event carries the event id (webhook-id, ntfy
//     X-Message-Id, email Message-ID, MQTT user property message-id); a
//     digest carries "d-" + a hash of its event ids and lists every event
//     with its event_id, so a receiver drops repeats by event id.
//   - Retries: a failed attempt is retried after an exponential backoff
//     (RetryMin doubling to RetryMax, jittered); after MaxAttempts the
//     notification is marked failed and counted in
//     iotpipe_notify_undeliverable_total. Every attempt is a row of
//     notification_attempts.
//   - Storm control: only transitions arrive (FIRING, RESOLVED). A
//     recipient that got no message in the last GroupWait gets its
//     notification at once (with every other one due for it, as one
//     digest); after a message, the next due notification waits until it
//     is GroupWait old, for others, and all due ones go out as one digest
//     ("12 devices over threshold"). So an isolated alert is not delayed,
//     and a storm reaches a recipient as at most one message per
//     GroupWait. At most RateLimit messages per RatePeriod per recipient
//     (per process): beyond it they wait and go out as one digest.
//   - Latency: the deliverer looks for due notifications as soon as the
//     consumer has enqueued some, and every PollInterval (retries, waits).
//   - Recipients are independent: each is delivered to in its own
//     goroutine with its own timeout, so a failing or slow channel never
//     blocks the others.
//   - SIGTERM: stop consuming, finish the deliveries in flight within
//     ShutdownTimeout, exit 0.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// StageName is the stage header of its dead letters.
const StageName = "notify"

// Notifier is the notify stage.
type Notifier struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	st    *store
	admin *kgo.Client
	send  sender
	now   func() time.Time

	mu      sync.Mutex
	lastErr error
	sent    map[string][]time.Time // per recipient: send times within RatePeriod
	last    map[string]time.Time   // per recipient: the last message's send time (grouping)
	// wake tells the deliverer that notifications were enqueued, so that
	// it looks for due ones at once rather than at its next poll.
	wake chan struct{}
}

// New validates cfg (errors are *config.FieldError) and prepares the
// stage; it connects to nothing (Run does).
func New(cfg Config, deps service.Deps) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notify config: %w", err)
	}
	var key []byte
	if cfg.WebhookSecret != "" {
		key, _ = decodeSecret(cfg.WebhookSecret)
	}
	st, err := newStore(&cfg)
	if err != nil {
		return nil, err
	}
	admin, err := kgo.NewClient(cfg.Kafka.Opts()...)
	if err != nil {
		st.pool.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	n := &Notifier{cfg: cfg, log: deps.Logger(), m: newMetrics(deps.Registry), st: st, admin: admin, now: time.Now,
		sent: map[string][]time.Time{}, last: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	n.send = &senders{cfg: &n.cfg, key: key, client: &http.Client{Timeout: cfg.SendTimeout}, now: time.Now}
	return n, nil
}

// Checks are the readiness checks: postgres and kafka.
func (n *Notifier) Checks() map[string]service.Check {
	return map[string]service.Check{
		"postgres": func(ctx context.Context) error {
			if err := n.st.pool.Ping(ctx); err != nil {
				return fmt.Errorf("postgres: %w", err)
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.lastErr != nil {
				return fmt.Errorf("last database operation failed: %w", n.lastErr)
			}
			return nil
		},
		"kafka": func(ctx context.Context) error {
			_, err := kafkax.Ping(ctx, kadm.NewClient(n.admin))
			return err
		},
	}
}

func (n *Notifier) setErr(err error) {
	n.mu.Lock()
	n.lastErr = err
	n.mu.Unlock()
	if err == nil {
		n.m.dbUp.Set(1)
	} else {
		n.m.dbUp.Set(0)
	}
}

func (n *Notifier) retry(ctx context.Context, what string, f func() error) error {
	return retry.Do(ctx, retry.New(200*time.Millisecond, 10*time.Second), f, func(attempt int, err error, wait time.Duration) {
		n.setErr(err)
		n.log.Warn(what+" failed, retrying", "attempt", attempt, "wait", wait, "err", err)
	})
}

// Run consumes and delivers until ctx ends, then drains and returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	defer n.st.pool.Close()
	defer n.admin.Close()
	if err := n.retry(ctx, "database", func() error { return n.st.ready(ctx) }); err != nil {
		return nil // cancelled while waiting
	}
	n.setErr(nil)
	n.log.Info("notify started", "group", n.cfg.Group, "topic", n.cfg.TopicAlerts, "schema", n.cfg.Schema,
		"group_wait", n.cfg.GroupWait, "rate_limit", n.cfg.RateLimit, "rate_period", n.cfg.RatePeriod)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.consume(gctx) })
	g.Go(func() error { return n.deliverLoop(gctx) })
	err := g.Wait()
	n.log.Info("notify stopped")
	return err
}

// consume moves telemetry.alerts into notifications (see the package
// contract).
func (n *Notifier) consume(ctx context.Context) error {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(n.cfg.Group),
		kgo.ConsumeTopics(n.cfg.TopicAlerts),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AdjustFetchOffsetsFn(n.seekStored),
		kgo.SessionTimeout(n.cfg.SessionTimeout),
	}
	if n.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(n.cfg.InstanceID))
	}
	cl, err := kgo.NewClient(n.cfg.Kafka.Opts(opts...)...)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollRecords(ctx, 1000)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fs.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		var denied error
		fs.EachError(func(t string, p int32, err error) {
			if kafkax.IsSecurity(err) && denied == nil {
				denied = kafkax.FetchError(n.cfg.Group, t, err)
			} else if !errors.Is(err, context.Canceled) {
				n.log.Warn("kafka fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		if denied != nil { // an ACL or the credentials: retrying does not cure it; stop, naming the setting
			cl.AllowRebalance()
			return denied
		}
		var items []item
		var bad []*kgo.Record
		last := map[tp]int64{}
		fs.EachRecord(func(r *kgo.Record) {
			n.m.records.Inc()
			it := item{topic: r.Topic, partition: r.Partition, offset: r.Offset, raw: r.Value}
			a, err := schemas.DecodeAlert(r.Value)
			if err != nil {
				bad = append(bad, n.deadLetter(r, err))
			} else {
				it.alert = a
			}
			items = append(items, it)
			last[tp{r.Topic, r.Partition}] = r.Offset + 1
		})
		if len(items) == 0 {
			cl.AllowRebalance()
			continue
		}
		err := n.retry(ctx, "enqueue", func() error {
			if len(bad) > 0 {
				if err := cl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
					return fmt.Errorf("dead letters: %w", err)
				}
			}
			res, err := n.st.enqueue(ctx, items, last)
			if err != nil {
				return err
			}
			n.m.enqueued.Add(float64(res.notifications))
			if res.notifications > 0 {
				select {
				case n.wake <- struct{}{}:
				default: // a wake-up is pending already
				}
			}
			for _, b := range res.badRecipients {
				n.m.rejected.WithLabelValues("bad_recipient").Inc()
				n.log.Warn("recipient not enqueued", "err", b)
			}
			if res.noRecipients > 0 {
				n.m.rejected.WithLabelValues("no_recipients").Add(float64(res.noRecipients))
			}
			return nil
		})
		if err != nil {
			cl.AllowRebalance()
			return nil // cancelled
		}
		n.setErr(nil)
		n.m.rejected.WithLabelValues(string(schemas.ReasonInvalidRecord)).Add(float64(len(bad)))
		// Informational only (lag monitoring): the stage resumes from
		// notify_offsets.
		cl.CommitOffsets(ctx, cl.UncommittedOffsets(), nil)
		cl.AllowRebalance()
	}
}

func (n *Notifier) deadLetter(r *kgo.Record, err error) *kgo.Record {
	d := schemas.DeadLetter{Value: r.Value, Key: r.Key, Reason: schemas.ReasonInvalidRecord, Error: err.Error(), Stage: StageName,
		SourceTopic: r.Topic, SourcePartition: r.Partition, SourceOffset: r.Offset, Time: n.now().UTC().Truncate(time.Microsecond)}
	rec := d.Record()
	rec.Topic = n.cfg.TopicDLQ
	n.log.Warn("alert record sent to the DLQ", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	return rec
}

// seekStored resumes every assigned partition from notify_offsets.
func (n *Notifier) seekStored(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	topics := make([]string, 0, len(offs))
	for t := range offs {
		topics = append(topics, t)
	}
	var stored map[tp]int64
	if err := n.retry(ctx, "read notify_offsets", func() (err error) {
		stored, err = n.st.storedOffsets(ctx, topics)
		return err
	}); err != nil {
		return nil, err
	}
	for t, ps := range offs {
		for p := range ps {
			if o, ok := stored[tp{t, p}]; ok {
				ps[p] = kgo.NewOffset().At(o).WithEpoch(-1)
			} else {
				ps[p] = kgo.NewOffset().AtStart()
			}
		}
	}
	n.log.Info("partitions assigned", "assigned", offs)
	return offs, nil
}

// deliverLoop delivers due notifications every PollInterval; on cancel it
// finishes the deliveries in flight within ShutdownTimeout.
func (n *Notifier) deliverLoop(ctx context.Context) error {
	t := time.NewTicker(n.cfg.PollInterval)
	defer t.Stop()
	busy := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, n.cfg.Concurrency)
	defer func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(n.cfg.ShutdownTimeout):
			n.log.Warn("deliveries still in flight at shutdown; they are rolled back and sent again on restart")
		}
	}()
	// Deliveries run on their own context so that a SIGTERM lets the
	// ones in flight finish (bounded by SendTimeout and ShutdownTimeout).
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-ctx.Done()
		time.AfterFunc(n.cfg.ShutdownTimeout, cancel)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.wake:
		}
		due, err := n.st.due(ctx)
		if err != nil {
			if ctx.Err() == nil {
				n.setErr(err)
				n.log.Warn("look for due notifications", "err", err)
			}
			continue
		}
		for _, d := range due {
			mu.Lock()
			if busy[d.recipient] {
				mu.Unlock()
				continue
			}
			n.mu.Lock() // after mu: the order everywhere
			group := n.cfg.GroupWait > 0 && d.oldest.Add(n.cfg.GroupWait).After(d.now) && n.recentlySent(d.recipient)
			allowed := group || n.allow(d.recipient)
			n.mu.Unlock()
			if group {
				mu.Unlock()
				continue // a message went out lately: wait for more to group
			}
			if !allowed {
				mu.Unlock()
				n.m.rateLimited.Inc()
				continue
			}
			busy[d.recipient] = true
			mu.Unlock()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				delete(busy, d.recipient)
				mu.Unlock()
				return nil
			}
			wg.Add(1)
			go func(recipient string) {
				defer wg.Done()
				defer func() { <-sem; mu.Lock(); delete(busy, recipient); mu.Unlock() }()
				if err := n.deliver(dctx, recipient); err != nil && dctx.Err() == nil {
					n.setErr(err)
					n.log.Warn("delivery round failed", "recipient", recipient, "err", err)
				}
			}(d.recipient)
		}
	}
}

// allow reports whether recipient may get a message now under the rate
// limit. Callers hold n.mu.
func (n *Notifier) allow(recipient string) bool {
	if n.cfg.RateLimit == 0 {
		return true
	}
	now := n.now()
	ts := n.sent[recipient]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= n.cfg.RatePeriod {
		i++
	}
	ts = ts[i:]
	n.sent[recipient] = ts
	return len(ts) < n.cfg.RateLimit
}

// recentlySent reports whether recipient got a message within the last
// GroupWait (and forgets the recipients that did not). Callers hold mu.
func (n *Notifier) recentlySent(recipient string) bool {
	now := n.now()
	for r, at := range n.last {
		if now.Sub(at) >= n.cfg.GroupWait {
			delete(n.last, r)
		}
	}
	_, ok := n.last[recipient]
	return ok
}

// spend records a message sent to recipient, for grouping and the rate
// limit.
func (n *Notifier) spend(recipient string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	n.last[recipient] = now
	if n.cfg.RateLimit != 0 {
		n.sent[recipient] = append(n.sent[recipient], now)
	}
}

// deliver sends recipient's due notifications: with Digest, all of them
// as one message; otherwise one message each, while the rate limit allows.
// Each message is one transaction that locks its rows, sends, records the
// attempt and marks the rows, so a crash repeats at most the message in
// flight.
func (n *Notifier) deliver(ctx context.Context, recipient string) error {
	rc, err := rules.ParseRecipient(recipient)
	if err != nil {
		return fmt.Errorf("recipient %q: %w", recipient, err)
	}
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			n.mu.Lock()
			ok := n.allow(recipient)
			n.mu.Unlock()
			if !ok {
				n.m.rateLimited.Inc()
				return nil
			}
		}
		limit := 1
		if n.cfg.Digest {
			limit = maxDigest
		}
		sent, err := n.deliverOne(ctx, rc, recipient, limit)
		if err != nil || !sent || n.cfg.Digest {
			return err
		}
	}
	return nil
}

// deliverOne sends one message (up to limit notifications) to recipient
// in one transaction; it reports whether there was anything to send and
// the send succeeded.
func (n *Notifier) deliverOne(ctx context.Context, rc rules.Recipient, recipient string, limit int) (sent bool, err error) {
	tx, err := n.st.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	ps, err := n.st.lockDue(ctx, tx, recipient, limit)
	if err != nil || len(ps) == 0 {
		if err == nil {
			err = tx.Commit(ctx)
		}
		return false, err
	}
	var m *message
	hi := 0
	if len(ps) > 1 {
		evs := make([]*schemas.Alert, len(ps))
		for i, p := range ps {
			evs[i] = p.alert
			hi = max(hi, p.attempts)
		}
		m = digest(evs)
	} else {
		m, hi = single(ps[0].alert), ps[0].attempts
	}
	attempt := hi + 1
	ch := string(rc.Channel)
	sctx, cancel := context.WithTimeout(ctx, n.cfg.SendTimeout)
	start := n.now()
	sendErr := n.send.send(sctx, rc, m)
	cancel()
	dur := n.now().Sub(start)
	n.spend(recipient)
	result, kind := "ok", "single"
	if sendErr != nil {
		result = "error"
	}
	if len(m.EventIDs) > 1 {
		kind = "digest"
	}
	n.m.attempts.WithLabelValues(ch, result).Inc()
	failed, err := n.st.attempt(ctx, tx, recipient, m, attempt, start, dur, sendErr, n.nextAttempt)
	if err != nil {
		return false, err
	}
	if err = tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit delivery: %w", err)
	}
	n.setErr(nil)
	if sendErr == nil {
		n.m.messages.WithLabelValues(ch, kind).Inc()
		n.m.delivered.WithLabelValues(ch).Add(float64(len(m.EventIDs)))
		n.log.Info("notification delivered", "recipient", recipient, "message_id", m.ID, "events", len(m.EventIDs), "attempt", attempt)
		return true, nil
	}
	n.log.Warn("notification attempt failed", "recipient", recipient, "message_id", m.ID, "events", len(m.EventIDs),
		"attempt", attempt, "err", sendErr)
	if failed > 0 {
		n.m.undeliverable.WithLabelValues(ch).Add(float64(failed))
		n.log.Error("notification undeliverable after the retry budget", "recipient", recipient, "message_id", m.ID,
			"events", failed, "attempts", attempt)
	}
	return false, nil
}

// nextAttempt says, after attempt number attempts failed, whether the
// budget is spent and otherwise when to try again.
func (n *Notifier) nextAttempt(attempts int) (bool, time.Time) {
	if attempts >= n.cfg.MaxAttempts {
		return true, n.now()
	}
	b := retry.New(n.cfg.RetryMin, n.cfg.RetryMax)
	var wait time.Duration
	for range attempts {
		wait = b.NextBackOff()
	}
	return false, n.now().Add(wait)
}
