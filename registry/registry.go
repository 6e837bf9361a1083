// Package registry is the device registry: devices (id = MQTT topic level
// = client certificate CN), the certificates issued to them, nested device
// groups, and what the broker must be told when a device is disabled or
// revoked (the CRL and the ACL's deny list, see broker.go).
//
// # Contracts
//
//   - The tables are created by migration 0006_registry; a Store connects
//     as a member of the registry role (iotpipe_registry) and never
//     creates or alters objects.
//   - Status moves active ⇄ disabled, and active|disabled → revoked;
//     revoked is final ([ErrRevoked]). Revoking marks every certificate of
//     the device revoked, so the CRL lists them all.
//   - Every write is one transaction; version and updated_at are set by
//     the database (trigger), and every change sends NOTIFY
//     iotpipe_registry (payload: the schema) for listeners such as the
//     bridge's --require-registered.
//   - Errors: [ErrNotFound], [ErrExists], [ErrRevoked], [ErrNoSchema]
//     (the migration has not run), each wrapped with the operation.
package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// NotifyChannel is the channel of the registry's change notices.
const NotifyChannel = "iotpipe_registry"

// Status of a device.
type Status string

// Statuses.
const (
	Active   Status = "active"
	Disabled Status = "disabled"
	Revoked  Status = "revoked"
)

// Errors callers test with errors.Is.
var (
	ErrNotFound = errors.New("no such device")
	ErrExists   = errors.New("device already registered")
	ErrRevoked  = errors.New("device is revoked (final)")
	ErrNoSchema = errors.New("the registry tables do not exist (run iotpipe init)")
	// ErrConflict: an update named a version that is no longer current.
	ErrConflict = errors.New("version conflict")
	// ErrGroupExists: CreateGroup of an id already taken.
	ErrGroupExists = errors.New("group already exists")
)

// Device is one registered device.
type Device struct {
	ID           string            `json:"device_id"`
	DisplayName  string            `json:"display_name"`
	Type         string            `json:"device_type"`
	Attributes   map[string]string `json:"attributes"`
	Status       Status            `json:"status"`
	CertSerial   string            `json:"cert_serial,omitempty"`
	CertNotAfter *time.Time        `json:"cert_not_after,omitempty"`
	Groups       []string          `json:"groups"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	Version      int64             `json:"version"`
	LastSeen     *time.Time        `json:"last_seen,omitempty"`
}

// Certificate is one certificate issued to a device.
type Certificate struct {
	Serial    string     `json:"serial"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	IssuedAt  time.Time  `json:"issued_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Store reads and writes the registry of one schema.
type Store struct {
	pool   *pgxpool.Pool
	schema string
}

// Open connects to the database (dsn of a member of the registry role) and
// checks that the registry tables of schema exist.
func Open(ctx context.Context, dsn, schema string) (*Store, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("registry: database URL: %w", err)
	}
	pc.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("registry: connect: %w", err)
	}
	s := &Store{pool: pool, schema: schema}
	ok, err := migrations.TableExists(ctx, pool, schema, "devices")
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("registry: connect: %w", err)
	}
	if !ok {
		pool.Close()
		return nil, fmt.Errorf("registry: schema %q: %w", schema, ErrNoSchema)
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() { s.pool.Close() }

// Pool is the store's connection pool (for LISTEN in Watch).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func (s *Store) rel(table string) string { return pgx.Identifier{s.schema, table}.Sanitize() }

// NewDevice is what Add registers.
type NewDevice struct {
	ID          string
	DisplayName string
	Type        string
	Attributes  map[string]string
	Groups      []string
	// Cert is the client certificate issued to it (CN = ID).
	Cert *x509.Certificate
}

// Add registers devices and their certificates in one transaction, creating
// missing groups (top level). Nothing is written when one fails; the error
// names the device.
func (s *Store) Add(ctx context.Context, devs ...NewDevice) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, d := range devs {
			if err := certs.CheckDeviceID(d.ID); err != nil {
				return fmt.Errorf("registry: add: %w", err)
			}
			if d.Cert == nil || d.Cert.Subject.CommonName != d.ID {
				return fmt.Errorf("registry: add %s: the certificate's CN must be the device id", d.ID)
			}
			attrs := d.Attributes
			if attrs == nil {
				attrs = map[string]string{}
			}
			aj, _ := json.Marshal(attrs)
			serial := certs.SerialHex(d.Cert.SerialNumber)
			_, err := tx.Exec(ctx, "INSERT INTO "+s.rel("devices")+
				" (device_id, display_name, device_type, attributes, cert_serial, cert_not_after) VALUES ($1, $2, $3, $4, $5, $6)",
				d.ID, d.DisplayName, d.Type, aj, serial, d.Cert.NotAfter)
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "23505" {
					return fmt.Errorf("registry: add %s: %w", d.ID, ErrExists)
				}
				return fmt.Errorf("registry: add %s: %w", d.ID, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_certificates")+
				" (serial, device_id, not_before, not_after) VALUES ($1, $2, $3, $4)",
				serial, d.ID, d.Cert.NotBefore, d.Cert.NotAfter); err != nil {
				return fmt.Errorf("registry: add %s: certificate: %w", d.ID, err)
			}
			for _, g := range d.Groups {
				if err := certs.CheckID(g); err != nil {
					return fmt.Errorf("registry: add %s: group: %w", d.ID, err)
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_groups")+" (group_id) VALUES ($1) ON CONFLICT DO NOTHING", g); err != nil {
					return fmt.Errorf("registry: add %s: group %s: %w", d.ID, g, err)
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_group_members")+" (group_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", g, d.ID); err != nil {
					return fmt.Errorf("registry: add %s: group %s: %w", d.ID, g, err)
				}
			}
		}
		return nil
	})
}

// Filter selects devices for List. Zero fields select everything.
type Filter struct {
	// Attributes must all match exactly.
	Attributes map[string]string
	// Group: members of the group or of any group nested in it.
	Group  string
	Status Status
	// ID: only this device.
	ID string
	// SilentFor: devices not seen for at least this long (never seen
	// included). 0: no condition.
	SilentFor time.Duration
	// After and Limit page through the result (ordered by id): devices
	// with an id greater than After, at most Limit of them (0: all).
	After string
	Limit int
}

// List returns the devices matching f, by id.
func (s *Store) List(ctx context.Context, f Filter) ([]Device, error) {
	q := `WITH RECURSIVE sub(group_id) AS (
    SELECT group_id FROM ` + s.rel("device_groups") + ` WHERE group_id = $2
    UNION SELECT g.group_id FROM ` + s.rel("device_groups") + ` g JOIN sub ON g.parent_id = sub.group_id)
SELECT d.device_id, d.display_name, d.device_type, d.attributes, d.status, d.cert_serial, d.cert_not_after,
       d.created_at, d.updated_at, d.version,
       coalesce((SELECT array_agg(m.group_id ORDER BY m.group_id) FROM ` + s.rel("device_group_members") + ` m WHERE m.device_id = d.device_id), '{}'),
       (SELECT l.last_seen FROM ` + s.rel("device_last_seen") + ` l WHERE l.device_id = d.device_id)
FROM ` + s.rel("devices") + ` d
WHERE d.attributes @> $1
  AND ($2 = '' OR EXISTS (SELECT 1 FROM ` + s.rel("device_group_members") + ` m JOIN sub USING (group_id) WHERE m.device_id = d.device_id))
  AND ($3 = '' OR d.status = $3)
  AND ($4 = '' OR d.device_id = $4)
  AND ($5::bigint = 0 OR coalesce((SELECT l.last_seen FROM ` + s.rel("device_last_seen") + ` l WHERE l.device_id = d.device_id), '-infinity') < now() - make_interval(secs => $5::bigint / 1e6))
  AND d.device_id > $6
ORDER BY d.device_id
LIMIT nullif($7::int, 0)`
	attrs := f.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	aj, _ := json.Marshal(attrs)
	rows, err := s.pool.Query(ctx, q, aj, f.Group, string(f.Status), f.ID, f.SilentFor.Microseconds(), f.After, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) {
		var d Device
		var serial *string
		var aj []byte
		err := r.Scan(&d.ID, &d.DisplayName, &d.Type, &aj, &d.Status, &serial, &d.CertNotAfter,
			&d.CreatedAt, &d.UpdatedAt, &d.Version, &d.Groups, &d.LastSeen)
		if err != nil {
			return d, err
		}
		if serial != nil {
			d.CertSerial = *serial
		}
		d.Attributes = map[string]string{}
		var raw map[string]any
		if err := json.Unmarshal(aj, &raw); err != nil {
			return d, err
		}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				d.Attributes[k] = s
			} else {
				b, _ := json.Marshal(v)
				d.Attributes[k] = string(b)
			}
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", err)
	}
	return out, nil
}

// Get returns one device and its certificates.
func (s *Store) Get(ctx context.Context, id string) (*Device, []Certificate, error) {
	all, err := s.List(ctx, Filter{ID: id})
	if err != nil {
		return nil, nil, err
	}
	if len(all) == 0 {
		return nil, nil, fmt.Errorf("registry: %s: %w", id, ErrNotFound)
	}
	rows, err := s.pool.Query(ctx, "SELECT serial, not_before, not_after, issued_at, revoked_at FROM "+s.rel("device_certificates")+
		" WHERE device_id = $1 ORDER BY issued_at, serial", id)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: %s: certificates: %w", id, err)
	}
	cs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Certificate])
	if err != nil {
		return nil, nil, fmt.Errorf("registry: %s: certificates: %w", id, err)
	}
	return &all[0], cs, nil
}

// SetStatus changes a device's status and returns the previous one.
// Revoking also marks all its certificates revoked.
func (s *Store) SetStatus(ctx context.Context, id string, to Status) (Status, error) {
	switch to {
	case Active, Disabled, Revoked:
	default:
		return "", fmt.Errorf("registry: status %q: want active, disabled or revoked", to)
	}
	var from Status
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT status FROM "+s.rel("devices")+" WHERE device_id = $1 FOR UPDATE", id).Scan(&from); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if from == Revoked && to != Revoked {
			return ErrRevoked
		}
		if from != to {
			if _, err := tx.Exec(ctx, "UPDATE "+s.rel("devices")+" SET status = $2 WHERE device_id = $1", id, to); err != nil {
				return err
			}
		}
		if to == Revoked {
			if _, err := tx.Exec(ctx, "UPDATE "+s.rel("device_certificates")+" SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL", id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return from, fmt.Errorf("registry: set %s %s: %w", id, to, err)
	}
	return from, nil
}

// Reissue records a new certificate for a registered device that is not
// revoked and makes it the device's current one; earlier certificates stay
// valid until RevokePrevious (so the device can switch over first).
func (s *Store) Reissue(ctx context.Context, id string, cert *x509.Certificate) error {
	if cert == nil || cert.Subject.CommonName != id {
		return fmt.Errorf("registry: reissue %s: the certificate's CN must be the device id", id)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var st Status
		if err := tx.QueryRow(ctx, "SELECT status FROM "+s.rel("devices")+" WHERE device_id = $1 FOR UPDATE", id).Scan(&st); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if st == Revoked {
			return ErrRevoked
		}
		serial := certs.SerialHex(cert.SerialNumber)
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_certificates")+" (serial, device_id, not_before, not_after) VALUES ($1, $2, $3, $4)",
			serial, id, cert.NotBefore, cert.NotAfter); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE "+s.rel("devices")+" SET cert_serial = $2, cert_not_after = $3 WHERE device_id = $1", id, serial, cert.NotAfter)
		return err
	})
	if err != nil {
		return fmt.Errorf("registry: reissue %s: %w", id, err)
	}
	return nil
}

// RevokePrevious revokes every certificate of the device except its
// current one (the latest issued) and returns how many; the device stays
// as it is.
func (s *Store) RevokePrevious(ctx context.Context, id string) (int, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE "+s.rel("device_certificates")+" c SET revoked_at = now() FROM "+s.rel("devices")+
		" d WHERE d.device_id = $1 AND c.device_id = d.device_id AND c.revoked_at IS NULL AND c.serial IS DISTINCT FROM d.cert_serial", id)
	if err != nil {
		return 0, fmt.Errorf("registry: revoke previous certificates of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		if _, _, err := s.Get(ctx, id); err != nil {
			return 0, err
		}
	}
	return int(tag.RowsAffected()), nil
}

// RevokedCertificates returns every revoked certificate that has not
// expired yet (an expired one is refused anyway), for the CRL.
func (s *Store) RevokedCertificates(ctx context.Context) ([]certs.Revoked, error) {
	rows, err := s.pool.Query(ctx, "SELECT serial, revoked_at FROM "+s.rel("device_certificates")+
		" WHERE revoked_at IS NOT NULL AND not_after > now() ORDER BY serial")
	if err != nil {
		return nil, fmt.Errorf("registry: revoked certificates: %w", err)
	}
	var out []certs.Revoked
	for rows.Next() {
		var serial string
		var at time.Time
		if err := rows.Scan(&serial, &at); err != nil {
			return nil, fmt.Errorf("registry: revoked certificates: %w", err)
		}
		n, err := certs.ParseSerial(serial)
		if err != nil {
			return nil, err
		}
		out = append(out, certs.Revoked{Serial: n, RevokedAt: at})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: revoked certificates: %w", err)
	}
	return out, nil
}

// Blocked returns the ids of devices that are disabled or revoked: the
// broker's ACL denies them everything.
func (s *Store) Blocked(ctx context.Context) ([]string, error) {
	return s.ids(ctx, "status <> 'active'")
}

// ActiveIDs returns the ids of the active devices.
func (s *Store) ActiveIDs(ctx context.Context) ([]string, error) {
	return s.ids(ctx, "status = 'active'")
}

func (s *Store) ids(ctx context.Context, where string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT device_id FROM "+s.rel("devices")+" WHERE "+where+" ORDER BY device_id")
	if err != nil {
		return nil, fmt.Errorf("registry: device ids: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("registry: device ids: %w", err)
	}
	return ids, nil
}

// Update is what UpdateDevice changes; nil fields stay as they are.
type Update struct {
	DisplayName *string
	Type        *string
	// Attributes replaces the attributes whole.
	Attributes map[string]string
}

// UpdateDevice changes a device when it is at version expected (-1: any)
// and returns it after the change; ErrConflict (wrapped) otherwise.
func (s *Store) UpdateDevice(ctx context.Context, id string, expected int64, u Update) (*Device, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var v int64
		if err := tx.QueryRow(ctx, "SELECT version FROM "+s.rel("devices")+" WHERE device_id = $1 FOR UPDATE", id).Scan(&v); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if expected >= 0 && v != expected {
			return fmt.Errorf("%w: version %d is stale, the device is at version %d", ErrConflict, expected, v)
		}
		var aj []byte
		if u.Attributes != nil {
			aj, _ = json.Marshal(u.Attributes)
		}
		_, err := tx.Exec(ctx, "UPDATE "+s.rel("devices")+" SET display_name = coalesce($2, display_name), device_type = coalesce($3, device_type), attributes = coalesce($4, attributes) WHERE device_id = $1",
			id, u.DisplayName, u.Type, aj)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registry: update %s: %w", id, err)
	}
	d, _, err := s.Get(ctx, id)
	return d, err
}

// Group is one device group.
type Group struct {
	ID          string            `json:"group_id"`
	Parent      string            `json:"parent_id,omitempty"`
	DisplayName string            `json:"display_name"`
	Attributes  map[string]string `json:"attributes"`
	Members     int               `json:"members"`
	CreatedAt   time.Time         `json:"created_at"`
	Version     int64             `json:"version"`
}

// CreateGroup creates a group (Parent: the enclosing group, which must
// exist; empty at the top level).
func (s *Store) CreateGroup(ctx context.Context, g Group) error {
	if err := certs.CheckID(g.ID); err != nil {
		return fmt.Errorf("registry: create group: %w", err)
	}
	attrs := g.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	aj, _ := json.Marshal(attrs)
	var parent *string
	if g.Parent != "" {
		parent = &g.Parent
	}
	_, err := s.pool.Exec(ctx, "INSERT INTO "+s.rel("device_groups")+" (group_id, parent_id, display_name, attributes) VALUES ($1, $2, $3, $4)",
		g.ID, parent, g.DisplayName, aj)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return fmt.Errorf("registry: create group %s: %w", g.ID, ErrGroupExists)
		}
		if errors.As(err, &pe) && pe.Code == "23503" {
			return fmt.Errorf("registry: create group %s: parent %q: %w", g.ID, g.Parent, ErrNotFound)
		}
		return fmt.Errorf("registry: create group %s: %w", g.ID, err)
	}
	return nil
}

// AddToGroup puts devices into an existing group.
func (s *Store) AddToGroup(ctx context.Context, group string, ids ...string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, id := range ids {
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.rel("device_group_members")+" (group_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", group, id); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "23503" {
					return fmt.Errorf("%s or %s: %w", group, id, ErrNotFound)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: add to group %s: %w", group, err)
	}
	return nil
}

// ListGroups returns the groups with an id greater than after, by id, at
// most limit (0: all).
func (s *Store) ListGroups(ctx context.Context, after string, limit int) ([]Group, error) {
	rows, err := s.pool.Query(ctx, `SELECT g.group_id, coalesce(g.parent_id, ''), g.display_name, g.attributes,
	(SELECT count(*) FROM `+s.rel("device_group_members")+` m WHERE m.group_id = g.group_id), g.created_at, g.version
FROM `+s.rel("device_groups")+` g WHERE g.group_id > $1 ORDER BY g.group_id LIMIT nullif($2::int, 0)`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: list groups: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Group, error) {
		var g Group
		var aj []byte
		if err := r.Scan(&g.ID, &g.Parent, &g.DisplayName, &aj, &g.Members, &g.CreatedAt, &g.Version); err != nil {
			return g, err
		}
		g.Attributes = map[string]string{}
		var raw map[string]any
		_ = json.Unmarshal(aj, &raw)
		for k, v := range raw {
			if str, ok := v.(string); ok {
				g.Attributes[k] = str
			} else {
				b, _ := json.Marshal(v)
				g.Attributes[k] = string(b)
			}
		}
		return g, nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list groups: %w", err)
	}
	return out, nil
}
