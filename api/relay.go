package api

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/shadow"
)

// Relay publishes the shadow outbox over MQTT at QoS 1 and deletes each
// message once the broker acknowledged it (PUBACK): at least once, in
// outbox order, which is commit order for each device (a device's
// changes are serialised by its shadow row lock). One relay per schema
// publishes at a time: it holds a PostgreSQL advisory lock on a
// connection of its own; others wait for it. A crash between the commit
// and the publish leaves the row in the outbox, published by the next
// relay; a crash between the PUBACK and the delete publishes the message
// again (devices drop what carries a version they have).
type Relay struct {
	cfg    RelayConfig
	st     *shadow.Store
	pool   *pgxpool.Pool
	schema string
	log    *slog.Logger
	m      *metrics
	up     atomic.Bool
}

// NewRelay returns a relay of the outbox of st.
func NewRelay(cfg RelayConfig, st *shadow.Store, pool *pgxpool.Pool, schema string, log *slog.Logger, m *metrics) *Relay {
	return &Relay{cfg: cfg, st: st, pool: pool, schema: schema, log: log, m: m}
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
	r.log.Info("relay publishing the outbox", "schema", r.schema)
	for {
		msgs, err := r.st.Pending(ctx, r.cfg.Batch)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			// Sleep until a change notice or the poll interval.
			wctx, cancel := context.WithTimeout(ctx, r.cfg.Poll)
			_, err := conn.Conn().WaitForNotification(wctx)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			continue
		}
		if r.cfg.DebugDelay > 0 {
			r.log.Warn("relay: holding a batch (debug delay)", "messages", len(msgs), "delay", r.cfg.DebugDelay)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(r.cfg.DebugDelay):
			}
		}
		if err := r.publish(ctx, cm, msgs); err != nil {
			return err
		}
	}
}

// publish sends msgs in order, each after the previous one's PUBACK, and
// deletes them in batches.
func (r *Relay) publish(ctx context.Context, cm *autopaho.ConnectionManager, msgs []shadow.Message) error {
	r.m.pending.Set(float64(len(msgs)))
	defer r.m.pending.Set(0)
	done := make([]int64, 0, len(msgs))
	flush := func() error {
		if len(done) == 0 {
			return nil
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err := r.st.Delivered(dctx, done)
		done = done[:0]
		return err
	}
	for _, m := range msgs {
		if err := cm.AwaitConnection(ctx); err != nil {
			_ = flush()
			return err
		}
		pr, err := cm.Publish(ctx, &paho.Publish{Topic: m.Topic, QoS: 1, Retain: m.Retain, Payload: m.Payload})
		if err != nil && pr != nil && pr.ReasonCode >= 0x80 {
			// The broker refused it (an ACL, a quota): it would refuse it
			// again, so it must not block the messages behind it.
			r.log.Error("relay: the broker refused a message; dropped from the outbox", "topic", m.Topic, "outbox_id", m.ID,
				"version", m.Version, "reason_code", pr.ReasonCode, "err", err)
			r.m.refused.WithLabelValues(kindOf(m.Topic)).Inc()
			done = append(done, m.ID)
			continue
		}
		if err != nil {
			_ = flush()
			return fmt.Errorf("publish %s (outbox %d): %w", m.Topic, m.ID, err)
		}
		r.m.published.WithLabelValues(kindOf(m.Topic)).Inc()
		done = append(done, m.ID)
	}
	return flush()
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
