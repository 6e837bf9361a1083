package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// ErrConflict: another notify process moved this group's offsets under
// the batch; the batch is retried after re-reading them.
var ErrConflict = errors.New("notify: notify_offsets changed under the batch (another writer)")

// ErrNoSchema: the notify tables do not exist.
var ErrNoSchema = errors.New("the notify tables do not exist (run iotpipe init)")

type store struct {
	pool   *pgxpool.Pool
	group  string
	schema string
	rel    func(string) string
}

func newStore(cfg *Config) (*store, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	pc.MaxConns = int32(cfg.Concurrency + 3)
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	schema := cfg.Schema
	return &store{pool: pool, group: cfg.Group, schema: schema, rel: func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }}, nil
}

func (s *store) ready(ctx context.Context) error {
	ok, err := migrations.TableExists(ctx, s.pool, s.schema, "notifications")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if !ok {
		return ErrNoSchema
	}
	return nil
}

type tp struct {
	topic     string
	partition int32
}

// storedOffsets returns the next offsets stored for the topics.
func (s *store) storedOffsets(ctx context.Context, topics []string) (map[tp]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT topic, partition, next_offset FROM `+s.rel("notify_offsets")+
		` WHERE consumer_group = $1 AND topic = ANY($2)`, s.group, topics)
	if err != nil {
		return nil, fmt.Errorf("read notify_offsets: %w", err)
	}
	out := map[tp]int64{}
	var k tp
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &n}, func() error { out[k] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("read notify_offsets: %w", err)
	}
	return out, nil
}

// item is one consumed alert record.
type item struct {
	topic     string
	partition int32
	offset    int64
	alert     *schemas.Alert
	raw       []byte
}

// enqueueResult says what enqueue did.
type enqueueResult struct {
	notifications int // rows new
	skipped       int // records below the stored offsets (already enqueued)
	noRecipients  int // events without recipients
	badRecipients []string
}

// enqueue inserts one notification per (event, recipient) of items, each
// once, and moves the stored offsets to after the last item of each
// partition, in one transaction (compare-and-set on the offsets).
func (s *store) enqueue(ctx context.Context, items []item, last map[tp]int64) (res enqueueResult, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	topics, parts := make([]string, 0, len(last)), make([]int32, 0, len(last))
	for k := range last {
		topics, parts = append(topics, k.topic), append(parts, k.partition)
	}
	rows, err := tx.Query(ctx, `SELECT o.topic, o.partition, o.next_offset FROM `+s.rel("notify_offsets")+` o
		JOIN unnest($2::text[], $3::int[]) AS p(topic, partition) ON o.topic = p.topic AND o.partition = p.partition
		WHERE o.consumer_group = $1 FOR UPDATE OF o`, s.group, topics, parts)
	if err != nil {
		return res, fmt.Errorf("read notify_offsets: %w", err)
	}
	stored := map[tp]int64{}
	var k tp
	var n int64
	if _, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &n}, func() error { stored[k] = n; return nil }); err != nil {
		return res, fmt.Errorf("read notify_offsets: %w", err)
	}
	var b pgx.Batch
	ins := `INSERT INTO ` + s.rel("notifications") + ` (event_id, recipient, channel, alert) VALUES ($1, $2, $3, $4)
		ON CONFLICT (event_id, recipient) DO NOTHING`
	queued := 0
	for _, it := range items {
		if n, ok := stored[tp{it.topic, it.partition}]; ok && it.offset < n {
			res.skipped++
			continue
		}
		if it.alert == nil {
			continue
		}
		if len(it.alert.Recipients) == 0 {
			res.noRecipients++
		}
		for _, r := range it.alert.Recipients {
			rc, perr := rules.ParseRecipient(r)
			if perr != nil {
				res.badRecipients = append(res.badRecipients, fmt.Sprintf("event %s: recipient %q: %v", it.alert.EventID, r, perr))
				continue
			}
			b.Queue(ins, it.alert.EventID, rc.String(), string(rc.Channel), it.raw)
			queued++
		}
	}
	for k, next := range last {
		if old, ok := stored[k]; ok {
			if next <= old {
				continue
			}
			b.Queue(`UPDATE `+s.rel("notify_offsets")+` SET next_offset = $4, updated_at = now()
				WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $5`, s.group, k.topic, k.partition, next, old)
		} else {
			b.Queue(`INSERT INTO `+s.rel("notify_offsets")+` (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING`, s.group, k.topic, k.partition, next)
		}
	}
	br := tx.SendBatch(ctx, &b)
	for i := range b.Len() {
		tag, e := br.Exec()
		if e != nil {
			_ = br.Close()
			return res, fmt.Errorf("enqueue: %w", e)
		}
		if i < queued {
			res.notifications += int(tag.RowsAffected())
		} else if tag.RowsAffected() != 1 {
			_ = br.Close()
			return res, ErrConflict
		}
	}
	if err = br.Close(); err != nil {
		return res, fmt.Errorf("enqueue: %w", err)
	}
	if err = tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// dueRecipient is a recipient with due notifications.
type dueRecipient struct {
	recipient string
	oldest    time.Time
	now       time.Time
}

// due lists the recipients with notifications due now.
func (s *store) due(ctx context.Context) ([]dueRecipient, error) {
	rows, err := s.pool.Query(ctx, `SELECT recipient, min(created_at), now() FROM `+s.rel("notifications")+
		` WHERE state = 'pending' AND next_attempt_at <= now() GROUP BY recipient ORDER BY min(created_at)`)
	if err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (dueRecipient, error) {
		var d dueRecipient
		err := r.Scan(&d.recipient, &d.oldest, &d.now)
		return d, err
	})
}

// pending is one locked due notification.
type pending struct {
	eventID  string
	alert    *schemas.Alert
	attempts int
}

const maxDigest = 1000

// lockDue locks the due notifications of recipient (skipping those another
// process holds) in tx, oldest first.
func (s *store) lockDue(ctx context.Context, tx pgx.Tx, recipient string, limit int) ([]pending, error) {
	rows, err := tx.Query(ctx, `SELECT event_id, alert, attempts FROM `+s.rel("notifications")+`
		WHERE recipient = $1 AND state = 'pending' AND next_attempt_at <= now()
		ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED`, recipient, limit)
	if err != nil {
		return nil, fmt.Errorf("lock due notifications: %w", err)
	}
	var out []pending
	var p pending
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&p.eventID, &raw, &p.attempts}, func() error {
		a, err := schemas.DecodeAlert(raw)
		if err != nil {
			return fmt.Errorf("notification %s: stored alert: %w", p.eventID, err)
		}
		out = append(out, pending{eventID: p.eventID, alert: a, attempts: p.attempts})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock due notifications: %w", err)
	}
	return out, nil
}

// attempt records one delivery attempt and its outcome in tx.
func (s *store) attempt(ctx context.Context, tx pgx.Tx, recipient string, m *message, attempt int, start time.Time, dur time.Duration, sendErr error,
	next func(attempts int) (failed bool, at time.Time)) (failed int, err error) {
	errText := ""
	if sendErr != nil {
		errText = sendErr.Error()
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.rel("notification_attempts")+` (message_id, recipient, event_ids, attempt, started_at, duration_ms, ok, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, m.ID, recipient, m.EventIDs, attempt, start, dur.Milliseconds(), sendErr == nil, errText); err != nil {
		return 0, fmt.Errorf("record attempt: %w", err)
	}
	if sendErr == nil {
		_, err := tx.Exec(ctx, `UPDATE `+s.rel("notifications")+` SET state = 'delivered', delivered_at = now(), attempts = attempts + 1,
			message_id = $3, last_error = NULL WHERE recipient = $1 AND event_id = ANY($2)`, recipient, m.EventIDs, m.ID)
		if err != nil {
			return 0, fmt.Errorf("mark delivered: %w", err)
		}
		return 0, nil
	}
	gaveUp, at := next(attempt)
	state := "pending"
	if gaveUp {
		state = "failed"
	}
	tag, err := tx.Exec(ctx, `UPDATE `+s.rel("notifications")+` SET attempts = attempts + 1, last_error = $3, state = $4, next_attempt_at = $5
		WHERE recipient = $1 AND event_id = ANY($2)`, recipient, m.EventIDs, errText, state, at)
	if err != nil {
		return 0, fmt.Errorf("mark attempt: %w", err)
	}
	if gaveUp {
		return int(tag.RowsAffected()), nil
	}
	return 0, nil
}
