package shadow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/schemas/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AnyVersion as an expected version accepts whatever the current one is.
const AnyVersion int64 = -1

// Topics of the messages to and from a device.
func DeltaTopic(id string) string       { return "devices/" + id + "/shadow/update/delta" }
func ConfigTopic(id string) string      { return "devices/" + id + "/config" }
func AcceptedTopic(id string) string    { return "devices/" + id + "/shadow/update/accepted" }
func RejectedTopic(id string) string    { return "devices/" + id + "/shadow/update/rejected" }
func GetAcceptedTopic(id string) string { return "devices/" + id + "/shadow/get/accepted" }

// State is the documents of a shadow and its delta.
type State struct {
	Desired  Object `json:"desired"`
	Reported Object `json:"reported"`
	Delta    Object `json:"delta"`
}

// Metadata holds the change time (unix seconds) of every key.
type Metadata struct {
	Desired  Object `json:"desired"`
	Reported Object `json:"reported"`
}

// Shadow is one device's shadow. A registered device without any change
// yet has version 0 and empty documents.
type Shadow struct {
	DeviceID   string     `json:"device_id"`
	Version    int64      `json:"version"`
	State      State      `json:"state"`
	Metadata   Metadata   `json:"metadata"`
	DesiredAt  *time.Time `json:"desired_updated_at,omitempty"`
	ReportedAt *time.Time `json:"reported_updated_at,omitempty"`
}

// Store reads and writes the shadows of one schema.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	limits Limits
	now    func() time.Time
	// written, when set, is called after a desired change committed
	// outbox messages (OnOutbox).
	written func()
}

// OnOutbox sets f to be called after every desired change that committed
// outbox messages, once the commit is done: a writer whose connections
// set iotpipe.outbox_notify = 'after_commit' (so the outbox trigger does
// not NOTIFY inside its transactions) wakes the relay there. Set it
// before the Store is used.
func (s *Store) OnOutbox(f func()) { s.written = f }

// New returns a Store on pool (a member of the registry role) for schema.
func New(pool *pgxpool.Pool, schema string, l Limits) *Store {
	return &Store{pool: pool, schema: schema, limits: l, now: time.Now}
}

// Check reports ErrNoSchema when the shadow tables do not exist.
func (s *Store) Check(ctx context.Context) error {
	ok, err := migrations.TableExists(ctx, s.pool, s.schema, "device_shadows")
	if err != nil {
		return fmt.Errorf("shadow: check tables: %w", err)
	}
	if !ok {
		return fmt.Errorf("shadow: schema %q: %w", s.schema, ErrNoSchema)
	}
	return nil
}

// Limits returns the store's limits.
func (s *Store) Limits() Limits { return s.limits }

func (s *Store) rel(t string) string { return pgx.Identifier{s.schema, t}.Sanitize() }

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// load reads the shadow of id; a registered device without a row gets an
// empty one (version 0). lock takes the row lock (creating the row).
func (s *Store) load(ctx context.Context, q querier, id string, lock bool) (*Shadow, error) {
	if lock {
		tx := q.(pgx.Tx)
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_shadows")+" (device_id) SELECT device_id FROM "+s.rel("devices")+
			" WHERE device_id = $1 ON CONFLICT DO NOTHING", id); err != nil {
			return nil, err
		}
	}
	sql := `SELECT d.device_id, coalesce(s.version, 0), coalesce(s.desired, '{}'), coalesce(s.reported, '{}'),
	coalesce(s.metadata, '{"desired":{},"reported":{}}'), s.desired_at, s.reported_at
FROM ` + s.rel("devices") + ` d LEFT JOIN ` + s.rel("device_shadows") + ` s USING (device_id) WHERE d.device_id = $1`
	if lock {
		sql = strings.Replace(sql, "LEFT JOIN", "JOIN", 1) + " FOR UPDATE OF s"
	}
	var sh Shadow
	var des, rep, meta []byte
	err := q.QueryRow(ctx, sql, id).Scan(&sh.DeviceID, &sh.Version, &des, &rep, &meta, &sh.DesiredAt, &sh.ReportedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("device %s: %w", id, ErrNoDevice)
	}
	if err != nil {
		return nil, err
	}
	if err := decodeStored(des, &sh.State.Desired); err != nil {
		return nil, err
	}
	if err := decodeStored(rep, &sh.State.Reported); err != nil {
		return nil, err
	}
	var m struct{ Desired, Reported json.RawMessage }
	if err := json.Unmarshal(meta, &m); err != nil {
		return nil, fmt.Errorf("stored metadata: %w", err)
	}
	if err := decodeStored(m.Desired, &sh.Metadata.Desired); err != nil {
		return nil, err
	}
	if err := decodeStored(m.Reported, &sh.Metadata.Reported); err != nil {
		return nil, err
	}
	sh.State.Delta = Delta(sh.State.Desired, sh.State.Reported)
	return &sh, nil
}

func decodeStored(b []byte, o *Object) error {
	*o = Object{}
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	v, err := decode(b)
	if err != nil {
		return fmt.Errorf("stored document: %w", err)
	}
	if vo, ok := v.(Object); ok {
		*o = vo
	}
	return nil
}

// Get returns the shadow of a registered device.
func (s *Store) Get(ctx context.Context, id string) (*Shadow, error) {
	sh, err := s.load(ctx, s.pool, id, false)
	if err != nil {
		return nil, fmt.Errorf("shadow: get %s: %w", id, err)
	}
	return sh, nil
}

// PatchDesired applies the merge patch (JSON bytes) to desired when the
// shadow is at version expected (AnyVersion: whatever it is) and returns
// the shadow after it. A patch that changes nothing returns the shadow
// unchanged (same version, nothing sent).
func (s *Store) PatchDesired(ctx context.Context, id string, expected int64, patch []byte) (*Shadow, error) {
	p, err := DecodeObject(patch, s.limits, "patch")
	if err != nil {
		return nil, fmt.Errorf("shadow: patch desired of %s: %w", id, err)
	}
	return s.changeDesired(ctx, "patch desired", id, expected, func(sh *Shadow, ts int64) bool {
		return Merge(sh.State.Desired, sh.Metadata.Desired, p, ts)
	})
}

// SetConfig replaces desired.config with the JSON value config (null
// deletes it) under the same rules as PatchDesired.
func (s *Store) SetConfig(ctx context.Context, id string, expected int64, config []byte) (*Shadow, error) {
	if s.limits.MaxBytes > 0 && len(config) > s.limits.MaxBytes {
		return nil, fmt.Errorf("shadow: set config of %s: %w", id, &LimitError{Limit: "size", Max: s.limits.MaxBytes, Got: len(config), What: "config"})
	}
	v, err := decode(config)
	if err != nil {
		return nil, fmt.Errorf("shadow: set config of %s: config: %w: %v", id, ErrMalformed, err)
	}
	if err := checkShape(Object{"config": v}, s.limits, "config"); err != nil {
		return nil, fmt.Errorf("shadow: set config of %s: %w", id, err)
	}
	return s.changeDesired(ctx, "set config", id, expected, func(sh *Shadow, ts int64) bool {
		old, had := sh.State.Desired["config"]
		if v == nil {
			delete(sh.State.Desired, "config")
			delete(sh.Metadata.Desired, "config")
			return had
		}
		if had && Equal(old, v) {
			return false
		}
		v = clean(v)
		sh.State.Desired["config"] = v
		if vo, ok := v.(Object); ok {
			sh.Metadata.Desired["config"] = metaFor(vo, ts)
		} else {
			sh.Metadata.Desired["config"] = leafMeta(ts)
		}
		return true
	})
}

// changeDesired runs change on the shadow and, when it changed desired,
// checks the limits and writes the shadow and its messages.
//
// It is optimistic, two round trips: the shadow is read without a lock,
// changed here, and written by one statement (one transaction) that
// updates the row only if its version is still the one read and inserts
// the outbox messages in the same statement, under the row lock it took
// (so a device's outbox ids follow its commit order). The outbox
// trigger's NOTIFY wakes the relay at the commit, or, for a writer that
// turned it off (OnOutbox), the OnOutbox function right after it. When
// another write came first the statement changes nothing: with an
// expected version that is a conflict
// (as a locked read would have found), with AnyVersion the change is
// tried again on the new version.
func (s *Store) changeDesired(ctx context.Context, op, id string, expected int64, change func(*Shadow, int64) bool) (*Shadow, error) {
	const attempts = 20
	for attempt := 1; ; attempt++ {
		sh, err := s.load(ctx, s.pool, id, false)
		if err != nil {
			return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, err)
		}
		if expected != AnyVersion && expected != sh.Version {
			return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, &ConflictError{Expected: expected, Current: sh.Version})
		}
		base := sh.Version
		before := copyObject(sh.State.Desired)
		now := s.now()
		if !change(sh, now.Unix()) {
			return sh, nil
		}
		if err := checkDoc(sh.State.Desired, s.limits, "desired"); err != nil {
			return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, err)
		}
		sh.Version++
		sh.DesiredAt = &now
		oldDelta := sh.State.Delta
		sh.State.Delta = Delta(sh.State.Desired, sh.State.Reported)
		msgs := changeMessages(sh, before, oldDelta, now)
		ok, err := s.saveDesiredIf(ctx, sh, base, msgs, now)
		if err != nil {
			return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, err)
		}
		if ok {
			if len(msgs) > 0 && s.written != nil {
				s.written()
			}
			return sh, nil
		}
		// Another write came first.
		if expected != AnyVersion || attempt == attempts {
			cur, err := s.load(ctx, s.pool, id, false)
			if err != nil {
				return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, err)
			}
			return nil, fmt.Errorf("shadow: %s of %s: %w", op, id, &ConflictError{Expected: base, Current: cur.Version})
		}
	}
}

// sqlstateForeignKeyViolation: the device row is gone.
const sqlstateForeignKeyViolation = "23503"

// saveDesiredIf writes desired, the metadata and the version of sh and
// inserts msgs into the outbox, in one statement, if the stored version
// is still base; false when it is not (nothing is written).
func (s *Store) saveDesiredIf(ctx context.Context, sh *Shadow, base int64, msgs []Message, now time.Time) (bool, error) {
	des, _ := json.Marshal(sh.State.Desired)
	meta, _ := json.Marshal(sh.Metadata)
	args := []any{sh.DeviceID, des, meta, sh.Version, sh.DesiredAt, now, base}
	var write string
	if base == 0 {
		// A device without a row yet (version 0): insert it, or update
		// one another writer inserted meanwhile if it is still at 0.
		write = "INSERT INTO " + s.rel("device_shadows") + " AS t (device_id, desired, metadata, version, desired_at, updated_at)" +
			" VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO UPDATE SET desired = EXCLUDED.desired," +
			" metadata = EXCLUDED.metadata, version = EXCLUDED.version, desired_at = EXCLUDED.desired_at, updated_at = EXCLUDED.updated_at" +
			" WHERE t.version = $7 RETURNING t.device_id"
	} else {
		write = "UPDATE " + s.rel("device_shadows") + " SET desired = $2, metadata = $3, version = $4, desired_at = $5, updated_at = $6" +
			" WHERE device_id = $1 AND version = $7 RETURNING device_id"
	}
	sql := "WITH w AS (" + write + ")"
	if len(msgs) > 0 {
		topics, payloads, retains := make([]string, len(msgs)), make([][]byte, len(msgs)), make([]bool, len(msgs))
		for i, m := range msgs {
			topics[i], payloads[i], retains[i] = m.Topic, m.Payload, m.Retain
			if payloads[i] == nil {
				payloads[i] = []byte{}
			}
		}
		// Outbox ids are drawn in message order, under w's row lock.
		sql += ", o AS (INSERT INTO " + s.rel("shadow_outbox") + " (device_id, topic, payload, retain, version)" +
			" SELECT w.device_id, m.topic, m.payload, m.retain, $4 FROM w," +
			" unnest($8::text[], $9::bytea[], $10::boolean[]) WITH ORDINALITY AS m(topic, payload, retain, n) ORDER BY m.n)"
		args = append(args, topics, payloads, retains)
	}
	sql += " SELECT count(*) FROM w"
	var n int
	err := s.pool.QueryRow(ctx, sql, args...).Scan(&n)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == sqlstateForeignKeyViolation {
		return false, fmt.Errorf("device %s: %w", sh.DeviceID, ErrNoDevice) // removed meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("write shadow and outbox: %w", err)
	}
	return n == 1, nil
}

// checkDoc checks a whole document against the limits.
func checkDoc(o Object, l Limits, what string) error {
	if l.MaxBytes > 0 {
		b, _ := json.Marshal(o)
		if len(b) > l.MaxBytes {
			return &LimitError{Limit: "size", Max: l.MaxBytes, Got: len(b), What: what}
		}
	}
	return checkShape(o, l, what)
}

func (s *Store) save(ctx context.Context, tx pgx.Tx, sh *Shadow, now time.Time) error {
	des, _ := json.Marshal(sh.State.Desired)
	rep, _ := json.Marshal(sh.State.Reported)
	meta, _ := json.Marshal(sh.Metadata)
	_, err := tx.Exec(ctx, "UPDATE "+s.rel("device_shadows")+
		" SET desired = $2, reported = $3, metadata = $4, version = $5, desired_at = $6, reported_at = $7, updated_at = $8 WHERE device_id = $1",
		sh.DeviceID, des, rep, meta, sh.Version, sh.DesiredAt, sh.ReportedAt, now)
	if err != nil {
		return fmt.Errorf("write shadow: %w", err)
	}
	return nil
}

// Message is one MQTT message to a device.
type Message struct {
	ID       int64 // outbox id (publication order); 0 before it is stored
	DeviceID string
	Topic    string
	Payload  []byte
	Retain   bool
	Version  int64
}

// enqueueChanges writes the delta and config messages that the change
// from (desired before, oldDelta) to sh calls for.
func (s *Store) enqueueChanges(ctx context.Context, tx pgx.Tx, sh *Shadow, desiredBefore, oldDelta Object, now time.Time) error {
	return s.enqueue(ctx, tx, changeMessages(sh, desiredBefore, oldDelta, now)...)
}

// changeMessages returns the delta and config messages that the change
// from (desired before, oldDelta) to sh calls for, delta first.
func changeMessages(sh *Shadow, desiredBefore, oldDelta Object, now time.Time) []Message {
	var msgs []Message
	if !Equal(oldDelta, sh.State.Delta) {
		var payload []byte // empty: clears the retained delta
		if len(sh.State.Delta) > 0 {
			payload, _ = json.Marshal(map[string]any{
				"version": sh.Version, "timestamp": now.Unix(),
				"state": sh.State.Delta, "metadata": DeltaMeta(sh.State.Delta, sh.Metadata.Desired),
			})
		}
		msgs = append(msgs, Message{DeviceID: sh.DeviceID, Topic: DeltaTopic(sh.DeviceID), Payload: payload, Retain: true, Version: sh.Version})
	}
	oldCfg, hadOld := desiredBefore["config"]
	newCfg, hasNew := sh.State.Desired["config"]
	if hadOld != hasNew || !Equal(oldCfg, newCfg) {
		payload, _ := json.Marshal(map[string]any{"version": sh.Version, "timestamp": now.Unix(), "config": newCfg})
		msgs = append(msgs, Message{DeviceID: sh.DeviceID, Topic: ConfigTopic(sh.DeviceID), Payload: payload, Retain: true, Version: sh.Version})
	}
	return msgs
}

// enqueue writes messages to the outbox in tx.
func (s *Store) enqueue(ctx context.Context, tx pgx.Tx, msgs ...Message) error {
	for _, m := range msgs {
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("shadow_outbox")+" (device_id, topic, payload, retain, version) VALUES ($1, $2, $3, $4, $5)",
			m.DeviceID, m.Topic, payload, m.Retain, m.Version); err != nil {
			return fmt.Errorf("write outbox: %w", err)
		}
	}
	return nil
}

// Pending returns up to limit outbox messages in publication order.
func (s *Store) Pending(ctx context.Context, limit int) ([]Message, error) {
	return s.PendingExcept(ctx, limit, nil)
}

// PendingExcept returns up to limit outbox messages in publication order,
// leaving out the ids in except (those a relay already handed out).
func (s *Store) PendingExcept(ctx context.Context, limit int, except []int64) ([]Message, error) {
	if except == nil {
		except = []int64{}
	}
	rows, err := s.pool.Query(ctx, "SELECT id, device_id, topic, payload, retain, version FROM "+s.rel("shadow_outbox")+
		" WHERE id <> ALL($2::bigint[]) ORDER BY id LIMIT $1", limit, except)
	if err != nil {
		return nil, fmt.Errorf("shadow: read outbox: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Message, error) {
		var m Message
		err := r.Scan(&m.ID, &m.DeviceID, &m.Topic, &m.Payload, &m.Retain, &m.Version)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("shadow: read outbox: %w", err)
	}
	return msgs, nil
}

// Delivered deletes published messages from the outbox.
func (s *Store) Delivered(ctx context.Context, ids []int64) error {
	if _, err := s.pool.Exec(ctx, "DELETE FROM "+s.rel("shadow_outbox")+" WHERE id = ANY($1)", ids); err != nil {
		return fmt.Errorf("shadow: delete delivered outbox messages: %w", err)
	}
	return nil
}
