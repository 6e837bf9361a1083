//go:build integration

package migrations

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// serverFlavor is the flavor scripts/services.sh reports for the server
// (IOTPIPE_PG_SERVER_FLAVOR, from `scripts/services.sh env`): timescaledb or
// postgres; "" when it does not say.
func serverFlavor() Flavor { return Flavor(os.Getenv("IOTPIPE_PG_SERVER_FLAVOR")) }

// timescaleDBOnServer reports whether the server preloads TimescaleDB and
// offers the extension, and which version it offers.
func timescaleDBOnServer(t *testing.T, ctx context.Context, conn *pgx.Conn) (ok bool, version string) {
	t.Helper()
	var v *string
	var preloaded bool
	err := conn.QueryRow(ctx, `SELECT
    (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
    -- Defined by the TimescaleDB loader only when it is preloaded.
    EXISTS (SELECT FROM pg_settings WHERE name = 'timescaledb.disable_load')`).Scan(&v, &preloaded)
	if err != nil {
		t.Fatalf("look up timescaledb on the server: %v", err)
	}
	if v == nil || !preloaded {
		return false, ""
	}
	return true, *v
}

// requireTimescaleDB skips the test, saying why, on a server that runs plain
// PostgreSQL (scripts/services.sh without the TimescaleDB archive says so
// loudly), and fails it when the server should run TimescaleDB and does not.
func requireTimescaleDB(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	ok, _ := timescaleDBOnServer(t, ctx, conn)
	switch {
	case ok:
	case serverFlavor() == FlavorTimescaleDB:
		t.Fatal("IOTPIPE_PG_SERVER_FLAVOR=timescaledb but the server does not preload and offer the timescaledb extension")
	default:
		t.Skipf("the server runs plain PostgreSQL (IOTPIPE_PG_SERVER_FLAVOR=%q): no TimescaleDB background jobs to check", serverFlavor())
	}
}

// TestServerFlavor says in the test log which PostgreSQL and TimescaleDB the
// suite runs on, and checks that the server is what scripts/services.sh
// says it is.
func TestServerFlavor(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t)
	var server string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&server); err != nil {
		t.Fatal(err)
	}
	ok, version := timescaleDBOnServer(t, ctx, conn)
	switch serverFlavor() {
	case FlavorTimescaleDB:
		want := os.Getenv("IOTPIPE_PG_TIMESCALEDB_VERSION")
		if !ok || version != want {
			t.Fatalf("IOTPIPE_PG_SERVER_FLAVOR=timescaledb, IOTPIPE_PG_TIMESCALEDB_VERSION=%s, but the server offers timescaledb %q (preloaded and available: %v)", want, version, ok)
		}
		t.Logf("server flavor: TimescaleDB %s on %s", version, server)
	case FlavorPostgres:
		if ok {
			t.Errorf("IOTPIPE_PG_SERVER_FLAVOR=postgres but the server preloads timescaledb %s", version)
		}
		t.Logf("server flavor: plain PostgreSQL, WITHOUT TimescaleDB: hypertables, compression, retention and continuous aggregates are not tested (%s)", server)
	case "":
		t.Logf("IOTPIPE_PG_SERVER_FLAVOR is not set (not from scripts/services.sh env); server: %s; TimescaleDB preloaded and available: %v %s", server, ok, version)
	default:
		t.Errorf("IOTPIPE_PG_SERVER_FLAVOR=%q: want timescaledb or postgres", serverFlavor())
	}
}

// connectNewDatabase creates a database of the test's own, owned by the
// user of IOTPIPE_PG_DSN, connects to it as that user, and drops it when the
// test ends. Creating it takes the superuser of IOTPIPE_PG_ADMIN_DSN.
func connectNewDatabase(t *testing.T) *pgx.Conn {
	t.Helper()
	admin := os.Getenv("IOTPIPE_PG_ADMIN_DSN")
	if admin == "" {
		t.Fatal(`IOTPIPE_PG_ADMIN_DSN is not set: run scripts/services.sh up and eval "$(scripts/services.sh env)"`)
	}
	cfg, err := pgx.ParseConfig(os.Getenv("IOTPIPE_PG_DSN"))
	if err != nil {
		t.Fatalf("IOTPIPE_PG_DSN: %v", err)
	}
	name := randomName(t)
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE DATABASE " + quoteIdent(name) + " OWNER " + quoteIdent(cfg.User)); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + quoteIdent(name) + " WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: drop database %s: %v", name, err)
		}
	})
	cfg.Database = name
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to database %s: %v", name, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
