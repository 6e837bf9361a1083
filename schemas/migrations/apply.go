package migrations

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATEs Apply tolerates when another session creates the same role or
// extension at the same moment.
const (
	sqlstateDuplicateObject = "42710"
	sqlstateUniqueViolation = "23505"
)

// Latest returns the newest migration version built into the binary.
func Latest() int {
	c, err := embedded()
	if err != nil {
		return 0
	}
	return c.latest
}

// Status returns the schema's applied version and flavor: 0 and "" when the
// schema or its schema_migrations table does not exist yet. It changes
// nothing and takes no lock.
func Status(ctx context.Context, conn *pgx.Conn, schema string) (version int, flavor Flavor, err error) {
	if schema == "" {
		schema = DefaultSchema
	}
	if err := checkIdent(schema); err != nil {
		return 0, "", fmt.Errorf("migrations: schema: %w", err)
	}
	rows, err := readApplied(ctx, conn, schema)
	if err != nil {
		return 0, "", err
	}
	if len(rows) == 0 {
		return 0, "", nil
	}
	last := rows[len(rows)-1]
	return last.version, last.flavor, nil
}

// Apply brings the schema up to Latest: it creates the schema and the roles
// if missing, decides the flavor on first use, checks the applied migrations
// against the embedded ones and applies the missing ones in order, each in
// its own transaction. It is safe to call concurrently from several
// processes and does nothing when the schema is current. conn must not be in
// a transaction; Apply leaves the session as it found it.
func Apply(ctx context.Context, conn *pgx.Conn, opts Options) (Result, error) {
	c, err := embedded()
	if err != nil {
		return Result{}, err
	}
	return apply(ctx, conn, opts, c)
}

type appliedRow struct {
	version  int
	name     string
	flavor   Flavor
	checksum *string
}

func apply(ctx context.Context, conn *pgx.Conn, opts Options, c *catalog) (res Result, err error) {
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	o := opts.withDefaults()
	log := o.Logger.With("schema", o.Schema)
	if st := conn.PgConn().TxStatus(); st != 'I' {
		return Result{}, fmt.Errorf("migrations: the connection is in a transaction (status %q); Apply manages its own transactions", st)
	}

	// One applier per schema at a time, for the whole run: a session lock
	// also covers the migrations that run outside a transaction. It is
	// released on return, or by the server if the connection dies.
	lockKey := "iotpipe.migrations/" + o.Schema
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", lockKey); err != nil {
		return Result{}, fmt.Errorf("migrations: lock schema %s: %w", o.Schema, err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtextextended($1, 0))", lockKey); uerr != nil && err == nil && !conn.IsClosed() {
			err = fmt.Errorf("migrations: unlock schema %s: %w", o.Schema, uerr)
		}
	}()

	applied, err := readApplied(ctx, conn, o.Schema)
	if err != nil {
		return Result{}, err
	}
	flavor, fallback, err := chooseFlavor(ctx, conn, o.Flavor, applied)
	if err != nil {
		return Result{}, err
	}
	if len(applied) == 0 {
		if err := bootstrap(ctx, conn, o.Schema); err != nil {
			return Result{}, err
		}
	}
	res = Result{Flavor: flavor, FallbackReason: fallback}
	if fallback != "" {
		log.Warn("timescaledb not available, using plain PostgreSQL", "reason", fallback)
	}
	if len(applied) > 0 {
		res.From = applied[len(applied)-1].version
	}
	res.To = res.From

	pending, err := c.pending(flavor, applied)
	if err != nil {
		return res, err
	}
	if len(pending) == 0 {
		return res, nil
	}
	if err := ensureRoles(ctx, conn, o.WriterRole, o.ReaderRole, o.RegistryRole); err != nil {
		return res, err
	}
	searchPath, err := searchPathFor(ctx, conn, o.Schema, flavor)
	if err != nil {
		return res, err
	}
	for _, m := range pending {
		start := time.Now()
		if err := runMigration(ctx, conn, m, o, flavor, searchPath); err != nil {
			return res, err
		}
		res.To = m.version
		res.Applied = append(res.Applied, m.ID())
		log.Info("applied migration", "migration", m.ID(), "flavor", flavor, "duration", time.Since(start))
	}
	return res, nil
}

// Querier runs a query returning one row: a connection, a pool or a
// transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TableExists reports whether schema.table exists: how a store checks that
// the migration creating its tables has run before it uses them.
func TableExists(ctx context.Context, q Querier, schema, table string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{schema, table}.Sanitize()).Scan(&ok)
	return ok, err
}

// readApplied returns the rows of <schema>.schema_migrations by version, or
// none when the table does not exist.
func readApplied(ctx context.Context, conn *pgx.Conn, schema string) ([]appliedRow, error) {
	table := pgx.Identifier{schema, "schema_migrations"}.Sanitize()
	exists, err := TableExists(ctx, conn, schema, "schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: look up %s: %w", table, err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, "SELECT version, name, flavor, checksum FROM "+table+" ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("migrations: read %s: %w", table, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (appliedRow, error) {
		var a appliedRow
		var f string
		err := r.Scan(&a.version, &a.name, &f, &a.checksum)
		a.flavor = Flavor(f)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("migrations: read %s: %w", table, err)
	}
	return out, nil
}

// bootstrap creates the schema and the bookkeeping table.
func bootstrap(ctx context.Context, conn *pgx.Conn, schema string) error {
	s := quoteIdent(schema)
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
CREATE SCHEMA IF NOT EXISTS `+s+`;
CREATE TABLE IF NOT EXISTS `+s+`.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    flavor     text NOT NULL,
    checksum   text,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE `+s+`.schema_migrations IS
    'Migrations applied by iotpipe (schemas/migrations). One row per version; flavor is timescaledb or postgres; checksum is the SHA-256 of the migration source. Do not edit.';`)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrations: create schema %s: %w", schema, err)
	}
	return nil
}

// chooseFlavor returns the recorded flavor of an existing schema, or decides
// one for a new schema, creating the timescaledb extension when needed.
func chooseFlavor(ctx context.Context, conn *pgx.Conn, want Flavor, applied []appliedRow) (Flavor, string, error) {
	if len(applied) > 0 {
		got := applied[0].flavor
		for _, a := range applied {
			if a.flavor != got {
				return "", "", fmt.Errorf("migrations: schema_migrations mixes flavors %q (version %d) and %q (version %d)", got, applied[0].version, a.flavor, a.version)
			}
		}
		if got != FlavorTimescaleDB && got != FlavorPostgres {
			return "", "", fmt.Errorf("migrations: schema_migrations records unknown flavor %q", got)
		}
		if want != FlavorAuto && want != got {
			return "", "", fmt.Errorf("%w: the schema is %s, Options.Flavor asks for %s", ErrFlavorMismatch, got, want)
		}
		if got == FlavorTimescaleDB {
			var ok bool
			if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')").Scan(&ok); err != nil {
				return "", "", fmt.Errorf("migrations: look up timescaledb extension: %w", err)
			}
			if !ok {
				return "", "", fmt.Errorf("%w: the schema was created for timescaledb but the database has no timescaledb extension", ErrTimescaleDBUnavailable)
			}
		}
		return got, "", nil
	}
	if want == FlavorPostgres {
		return FlavorPostgres, "", nil
	}
	reason, err := createExtension(ctx, conn)
	if err != nil {
		return "", "", err
	}
	switch {
	case reason == "":
		return FlavorTimescaleDB, "", nil
	case want == FlavorTimescaleDB:
		return "", "", fmt.Errorf("%w: %s", ErrTimescaleDBUnavailable, reason)
	default:
		return FlavorPostgres, reason, nil
	}
}

// createExtension runs CREATE EXTENSION IF NOT EXISTS timescaledb in a
// savepoint. It returns why the extension is unavailable, or "" when it is
// there; err is only for failures unrelated to the extension.
func createExtension(ctx context.Context, conn *pgx.Conn) (reason string, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Database-wide: two schemas being set up at once must not both
		// create the extension (the loser would see a unique violation and
		// wrongly fall back to plain PostgreSQL).
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('iotpipe.migrations/extension', 0))"); err != nil {
			return err
		}
		var installed, available, preloaded bool
		err := tx.QueryRow(ctx, `SELECT
    EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb'),
    EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),
    -- Defined by the TimescaleDB loader only when it is preloaded.
    EXISTS (SELECT FROM pg_settings WHERE name = 'timescaledb.disable_load' AND vartype = 'bool')`).Scan(&installed, &available, &preloaded)
		switch {
		case err != nil:
			return err
		case installed:
			return nil
		case !available:
			reason = "the timescaledb extension is not installed on the database server"
			return nil
		case !preloaded:
			// CREATE EXTENSION would fail with FATAL and end the session.
			reason = "the timescaledb extension is installed on the database server but not loaded: add timescaledb to shared_preload_libraries and restart the server"
			return nil
		}
		sp, err := tx.Begin(ctx) // savepoint
		if err != nil {
			return err
		}
		// In public, where TimescaleDB is normally installed: by default
		// the extension would land in the first schema of search_path,
		// which may be the "$user" schema, i.e. iotpipe's own schema.
		_, xerr := sp.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
		if xerr == nil {
			return sp.Commit(ctx)
		}
		if rerr := sp.Rollback(ctx); rerr != nil {
			return rerr
		}
		reason = "CREATE EXTENSION timescaledb: " + describePgError(xerr)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("migrations: create timescaledb extension: %w", err)
	}
	return reason, nil
}

func describePgError(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	s := pe.Message + " (SQLSTATE " + pe.Code + ")"
	if pe.Detail != "" {
		s += "; " + pe.Detail
	}
	if pe.Hint != "" {
		s += "; hint: " + pe.Hint
	}
	return s
}

// pending checks the applied rows against the catalog and returns the
// migrations still to apply, in order.
func (c *catalog) pending(flavor Flavor, applied []appliedRow) ([]*migration, error) {
	ms := c.byFlavor[flavor]
	for i, a := range applied {
		if a.version > c.latest {
			return nil, fmt.Errorf("%w: the schema is at version %d (%s), this binary knows up to %d", ErrDatabaseNewer, applied[len(applied)-1].version, a.name, c.latest)
		}
		if a.version != i+1 {
			return nil, fmt.Errorf("migrations: schema_migrations has version %d but not version %d; refusing to apply out of order", a.version, i+1)
		}
		m := ms[i]
		if a.name != m.name {
			return nil, fmt.Errorf("%w: version %d was applied as %q, this binary calls it %q", ErrChecksumMismatch, a.version, a.name, m.name)
		}
		// A NULL checksum (a row written by hand) is not checked.
		if a.checksum != nil && *a.checksum != m.checksum {
			return nil, fmt.Errorf("%w: %s (%s) was applied with checksum %s, the embedded source has %s", ErrChecksumMismatch, m.ID(), flavor, *a.checksum, m.checksum)
		}
	}
	return ms[len(applied):], nil
}

// ensureRoles creates the NOLOGIN group roles that do not exist yet,
// tolerating another session creating them at the same time.
func ensureRoles(ctx context.Context, conn *pgx.Conn, roles ...string) error {
	for _, r := range roles {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", r).Scan(&exists); err != nil {
			return fmt.Errorf("migrations: look up role %s: %w", r, err)
		}
		if exists {
			continue
		}
		if _, err := conn.Exec(ctx, "CREATE ROLE "+quoteIdent(r)+" NOLOGIN"); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == sqlstateDuplicateObject || pe.Code == sqlstateUniqueViolation) {
				continue
			}
			return fmt.Errorf("migrations: create role %s (needs CREATEROLE, or create it beforehand): %w", r, err)
		}
	}
	return nil
}

// searchPathFor returns the search_path the migrations run with: the schema,
// then (TimescaleDB) the extension's schema for its API functions.
func searchPathFor(ctx context.Context, conn *pgx.Conn, schema string, flavor Flavor) (string, error) {
	path := quoteIdent(schema)
	if flavor != FlavorTimescaleDB {
		return path, nil
	}
	var ext string
	if err := conn.QueryRow(ctx, "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb'").Scan(&ext); err != nil {
		return "", fmt.Errorf("migrations: look up timescaledb extension schema: %w", err)
	}
	// regnamespace::text is already quoted where needed.
	return path + ", " + ext, nil
}

// runMigration applies m and records it.
func runMigration(ctx context.Context, conn *pgx.Conn, m *migration, o Options, flavor Flavor, searchPath string) error {
	sql, err := m.render(o)
	if err != nil {
		return err
	}
	record := "INSERT INTO " + quoteIdent(o.Schema) + ".schema_migrations (version, name, flavor, checksum) VALUES ($1, $2, $3, $4)"
	if !m.noTx {
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+searchPath); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				return sqlError(err, sql)
			}
			_, err := tx.Exec(ctx, record, m.version, m.name, string(flavor), m.checksum)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrations: apply %s (%s): %w", m.ID(), flavor, err)
		}
		return nil
	}

	// Outside a transaction: set the session's search_path for the
	// statement and put the caller's back afterwards. The statement must be
	// idempotent: a crash before the INSERT below makes the next run repeat it.
	var saved string
	if err := conn.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&saved); err != nil {
		return fmt.Errorf("migrations: apply %s (%s): %w", m.ID(), flavor, err)
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('search_path', $1, false)", searchPath); err != nil {
		return fmt.Errorf("migrations: apply %s (%s): %w", m.ID(), flavor, err)
	}
	_, err = conn.Exec(ctx, sql)
	if _, rerr := conn.Exec(context.WithoutCancel(ctx), "SELECT set_config('search_path', $1, false)", saved); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("migrations: apply %s (%s, no transaction): %w", m.ID(), flavor, sqlError(err, sql))
	}
	if _, err := conn.Exec(ctx, record, m.version, m.name, string(flavor), m.checksum); err != nil {
		return fmt.Errorf("migrations: record %s (%s): %w", m.ID(), flavor, err)
	}
	return nil
}

// sqlError adds the line of the rendered SQL a PostgreSQL error points at.
func sqlError(err error, sql string) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Position <= 0 || int(pe.Position) > len([]rune(sql)) {
		return err
	}
	before := string([]rune(sql)[:pe.Position-1])
	line := strings.Count(before, "\n") + 1
	text := strings.Split(sql, "\n")[line-1]
	return fmt.Errorf("line %d: %s: %w", line, strings.TrimSpace(text), err)
}
