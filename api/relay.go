package api

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/shadow"
)

// Relay publishes the shadow outbox over MQTT at QoS 1 and deletes each
// message once the broker acknowledged it (PUBACK): at least once, in
// outbox order for each device, which is the device's commit order (a
// device's changes are serialised by its shadow row lock, under which
// the outbox ids are drawn).
//
// Messages are pipelined: RelayConfig.InFlight publishers each own a
// share of the devices (by a hash of the device id) and publish their
// devices' messages one after the other, each after the previous one's
// PUBACK, so up to InFlight messages of different devices are in flight
// at once (paho additionally keeps to the broker's Receive Maximum) while
// the messages of one device keep their order. Acknowledged rows are
// deleted in batches. The outbox is read again whenever a change notice
// (LISTEN iotpipe_outbox) or the poll interval comes, skipping the rows
// already handed to a publisher, so a row committed late with a lower id
// is never skipped.
//
// One relay per schema publishes at a time: it holds a PostgreSQL
// advisory lock on a connection of its own; others wait for it. A crash
// between the commit and the publish leaves the row in the outbox,
// published by the next relay; a crash between the PUBACK and the delete
// publishes the message again (devices drop what carries a version they
// have). A publish that fails (not a refusal) stops every publisher; the
// relay reconnects and reads the outbox from its start again.
type Relay struct {
	cfg    RelayConfig
	st     *shadow.Store
	pool   *pgxpool.Pool
	schema string
	log    *slog.Logger
	m      *metrics
	up     atomic.Bool
	// leading while this relay holds the schema's lock and publishes.
	leading atomic.Bool
	// wake holds at most one wake-up: change notices and Wake calls that
	// come while the relay is busy are one.
	wake chan struct{}
}

// NewRelay returns a relay of the outbox of st.
func NewRelay(cfg RelayConfig, st *shadow.Store, pool *pgxpool.Pool, schema string, log *slog.Logger, m *metrics) *Relay {
	return &Relay{cfg: cfg, st: st, pool: pool, schema: schema, log: log, m: m, wake: make(chan struct{}, 1)}
}

// Leading reports whether this relay is the one publishing the schema's
// outbox (a Wake reaches it; otherwise a NOTIFY must).
func (r *Relay) Leading() bool { return r.leading.Load() }

// Wake makes the relay read the outbox now (after a commit of this
// process that did not NOTIFY); it never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Connected reports whether the relay is connected to the broker.
func (r *Relay) Connected() bool { return r.up.Load() }

// lockKey is the advisory lock of the schema's relay.
func (r *Relay) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("iotpipe relay " + r.schema))
	return int64(h.Sum64())
}

// Run relays until ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	urls := make([]*url.URL, 0, len(r.cfg.URLs))
	for _, s := range r.cfg.URLs {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("relay: broker URL %q: %w", s, err)
		}
		urls = append(urls, u)
	}
	host := urls[0].Hostname()
	tc, err := r.cfg.files().Config(host)
	if err != nil {
		return fmt.Errorf("relay: TLS: %w", err)
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	cm, err := autopaho.NewConnection(mctx, autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        tc,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ConnectTimeout:                r.cfg.ConnectTimeout,
		ConnectUsername:               r.cfg.Username,
		ConnectPassword:               []byte(r.cfg.Password),
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			r.up.Store(true)
			r.m.relayUp.Set(1)
			r.log.Info("relay connected to the MQTT broker")
		},
		OnConnectionDown: func() bool {
			r.up.Store(false)
			r.m.relayUp.Set(0)
			r.log.Warn("relay lost the MQTT connection; reconnecting")
			return true
		},
		OnConnectError: func(err error) { r.log.Warn("relay: MQTT connect failed", "err", err) },
		ClientConfig:   paho.ClientConfig{ClientID: r.cfg.ClientID},
	})
	if err != nil {
		return fmt.Errorf("relay: mqtt: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	}()

	for ctx.Err() == nil {
		err := r.leader(ctx, cm)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("relay: retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// leader takes the advisory lock, then publishes until ctx ends or an
// error (the lock goes with the connection).
func (r *Relay) leader(ctx context.Context, cm *autopaho.ConnectionManager) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.lockKey()).Scan(&got); err != nil {
			return err
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", r.lockKey())
	}()
	if _, err := conn.Exec(ctx, "LISTEN iotpipe_outbox"); err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, "UNLISTEN iotpipe_outbox")
	}()

	// The notice waiter owns conn until waitDone is closed (werr is then
	// why it stopped).
	wctx, wcancel := context.WithCancel(ctx)
	waitDone := make(chan struct{})
	var werr error
	go func() {
		defer close(waitDone)
		for {
			if _, err := conn.Conn().WaitForNotification(wctx); err != nil {
				werr = err
				return
			}
			r.Wake()
		}
	}()
	r.leading.Store(true)
	err = r.pump(ctx, cm, r.wake, waitDone, &werr)
	r.leading.Store(false)
	wcancel()
	<-waitDone
	return err
}

// result is a publisher's answer for one message.
type result struct {
	id  int64
	err error
}

// pump reads the outbox and hands its messages to the publishers until
// ctx ends or a publish or a database read fails; it deletes what was
// acknowledged (also on the way out).
func (r *Relay) pump(ctx context.Context, cm *autopaho.ConnectionManager, wake <-chan struct{}, waitDone <-chan struct{}, werr *error) error {
	r.log.Info("relay publishing the outbox", "schema", r.schema, "in_flight", r.cfg.InFlight)
	pctx, stop := context.WithCancel(ctx)
	n := r.cfg.InFlight
	queues := make([]chan shadow.Message, n)
	// Every message handed out answers once on results, which can hold
	// all of them (at most Batch are out), so no publisher ever blocks.
	results := make(chan result, r.cfg.Batch)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan shadow.Message, r.cfg.Batch)
		q := queues[i]
		wg.Go(func() { r.publisher(pctx, cm, q, results) })
	}
	owned := map[int64]struct{}{} // handed out and not yet deleted
	var acked []int64
	inFlight := 0
	flush := func() error {
		if len(acked) == 0 {
			return nil
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.st.Delivered(dctx, acked); err != nil {
			return err
		}
		for _, id := range acked {
			delete(owned, id)
		}
		acked = acked[:0]
		r.m.pending.Set(float64(len(owned)))
		return nil
	}
	var failed error
	handle := func(res result) {
		inFlight--
		if res.err != nil {
			if failed == nil {
				failed = res.err
			}
			return
		}
		acked = append(acked, res.id)
	}
	// shutdown stops the publishers, collects the answers of what was
	// out and deletes what was acknowledged.
	shutdown := func(err error) error {
		stop()
		for _, q := range queues {
			close(q) // nothing is handed out any more
		}
		for inFlight > 0 {
			handle(<-results)
		}
		wg.Wait()
		if ferr := flush(); err == nil && ferr != nil {
			err = ferr
		}
		if err == nil {
			err = failed
		}
		return err
	}
	flushTick := time.NewTicker(20 * time.Millisecond)
	defer flushTick.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	more := true // the outbox may hold rows not handed out yet
	for {
		if failed != nil {
			return shutdown(nil)
		}
		// Acknowledged rows are deleted every flush tick, or at once when
		// they take half of what the relay may hold (not after every
		// answer: at 1,000 messages/s that was a DELETE per message).
		if len(acked) >= max(r.cfg.Batch/2, 1) {
			if err := flush(); err != nil {
				return shutdown(err)
			}
		}
		if more && len(owned) < r.cfg.Batch {
			exclude := make([]int64, 0, len(owned))
			for id := range owned {
				exclude = append(exclude, id)
			}
			limit := r.cfg.Batch - len(owned)
			msgs, err := r.st.PendingExcept(ctx, limit, exclude)
			if err != nil {
				return shutdown(err)
			}
			more = len(msgs) == limit
			if len(msgs) > 0 && r.cfg.DebugDelay > 0 {
				r.log.Warn("relay: holding a batch (debug delay)", "messages", len(msgs), "delay", r.cfg.DebugDelay)
				select {
				case <-ctx.Done():
					return shutdown(nil)
				case <-time.After(r.cfg.DebugDelay):
				}
			}
			for _, m := range msgs {
				owned[m.ID] = struct{}{}
				inFlight++
				queues[shard(m.DeviceID, n)] <- m
			}
			r.m.pending.Set(float64(len(owned)))
			if more {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return shutdown(nil)
		case <-waitDone:
			return shutdown(fmt.Errorf("relay: wait for outbox notices: %w", *werr))
		case res := <-results:
			handle(res)
			// Take every answer already there before deciding anything.
			for drained := false; !drained; {
				select {
				case res := <-results:
					handle(res)
				default:
					drained = true
				}
			}
			if len(owned) >= r.cfg.Batch {
				more = true // room was made; rows may be waiting
			}
		case <-wake:
			more = true
		case <-poll.C:
			more = true
			poll.Reset(r.cfg.Poll)
		case <-flushTick.C:
			if err := flush(); err != nil {
				return shutdown(err)
			}
		}
	}
}

// shard is the publisher of a device.
func shard(device string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(device))
	return int(h.Sum32() % uint32(n))
}

// publisher publishes the messages of its queue in order, each after the
// previous one's PUBACK, and answers each on results, until the queue is
// closed. After a failure, or once ctx ends, it answers the rest with an
// error without publishing them, so a device's later message never
// overtakes an earlier one that was not acknowledged, and every message
// handed out is answered (the pump counts on it to stop).
func (r *Relay) publisher(ctx context.Context, cm *autopaho.ConnectionManager, q <-chan shadow.Message, results chan<- result) {
	var failed error
	for m := range q {
		if failed == nil {
			if err := ctx.Err(); err != nil {
				failed = err
			} else {
				failed = r.publishOne(ctx, cm, m)
			}
		}
		if failed != nil {
			results <- result{id: m.ID, err: failed}
			continue
		}
		results <- result{id: m.ID}
	}
}

// publishOne publishes m and waits for its PUBACK. A refusal by the
// broker (an ACL, a quota) is logged, counted and acknowledged: it would
// be refused again, so it must not block the messages behind it.
func (r *Relay) publishOne(ctx context.Context, cm *autopaho.ConnectionManager, m shadow.Message) error {
	if err := cm.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("publish %s (outbox %d): wait for the broker: %w", m.Topic, m.ID, err)
	}
	pr, err := cm.Publish(ctx, &paho.Publish{Topic: m.Topic, QoS: 1, Retain: m.Retain, Payload: m.Payload})
	if err != nil && pr != nil && pr.ReasonCode >= 0x80 {
		r.log.Error("relay: the broker refused a message; dropped from the outbox", "topic", m.Topic, "outbox_id", m.ID,
			"version", m.Version, "reason_code", pr.ReasonCode, "err", err)
		r.m.refused.WithLabelValues(kindOf(m.Topic)).Inc()
		return nil
	}
	if err != nil {
		return fmt.Errorf("publish %s (outbox %d): %w", m.Topic, m.ID, err)
	}
	r.m.published.WithLabelValues(kindOf(m.Topic)).Inc()
	return nil
}

func kindOf(topic string) string {
	switch {
	case strings.HasSuffix(topic, "/shadow/update/delta"):
		return "delta"
	case strings.HasSuffix(topic, "/config"):
		return "config"
	case strings.HasSuffix(topic, "/shadow/update/accepted"):
		return "accepted"
	case strings.HasSuffix(topic, "/shadow/update/rejected"):
		return "rejected"
	case strings.HasSuffix(topic, "/shadow/get/accepted"):
		return "get"
	}
	return "other"
}
