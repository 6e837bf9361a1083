// Package registrytest gives integration tests a schema with the device
// registry migrated and a login role of the registry role. It is apart
// from testenv because it applies the migrations, whose own tests use
// testenv.
package registrytest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// Schema creates a unique schema migrated to the latest version
// (plain PostgreSQL flavor) and a login role of its own, a member of the
// registry role iotpipe_registry, and returns the schema and that role's
// database URL. Both are dropped when the test ends. (The shared services
// may predate the registry's login role, so the test makes its own.)
func Schema(t testing.TB, e *testenv.Env) (schema, dsn string) {
	t.Helper()
	schema = e.Schema(t)
	ctx := testenv.Context(t, time.Minute)
	conn, err := pgx.Connect(ctx, e.PGDSN)
	if err != nil {
		t.Fatalf("postgres: %v (are the services up? see internal/testenv)", err)
	}
	defer conn.Close(ctx)
	o := migrations.DefaultOptions()
	o.Schema, o.Flavor = schema, migrations.FlavorPostgres
	if _, err := migrations.Apply(ctx, conn, o); err != nil {
		t.Fatalf("migrate %s: %v", schema, err)
	}
	role, pass := schema+"_reg", "reg-"+schema
	admin := e.PGAdmin(t)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN PASSWORD '"+pass+"' IN ROLE "+migrations.DefaultRegistryRole); err != nil {
		t.Fatalf("create role %s: %v", role, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	u, err := url.Parse(e.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pass)
	return schema, u.String()
}
