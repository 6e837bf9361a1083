//go:build integration

package migrations

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// adminConn connects as the superuser to the pipeline's database, so the
// test can act as each group role (SET ROLE).
func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	admin, own := os.Getenv("IOTPIPE_PG_ADMIN_DSN"), os.Getenv("IOTPIPE_PG_DSN")
	if admin == "" || own == "" {
		t.Fatal(`IOTPIPE_PG_ADMIN_DSN / IOTPIPE_PG_DSN are not set: eval "$(scripts/services.sh env)"`)
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := pgx.ParseConfig(own)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = oc.Database
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect as the administrator: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// 0006_registry: constraints, version trigger, change notices, and who may
// do what.
func TestRegistryMigration(t *testing.T) {
	ctx := testContext(t)
	o := newOptions(t)
	mustApply(t, ctx, connect(t), o)
	s := quoteIdent(o.Schema)
	as := adminConn(t)
	listen := adminConn(t)
	if _, err := listen.Exec(ctx, "LISTEN iotpipe_registry"); err != nil {
		t.Fatal(err)
	}
	role := func(r string) {
		t.Helper()
		if _, err := as.Exec(ctx, "SET ROLE "+quoteIdent(r)); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(sql string, args ...any) error {
		_, err := as.Exec(ctx, sql, args...)
		return err
	}

	role(DefaultRegistryRole)
	if err := exec("INSERT INTO " + s + ".devices (device_id, attributes) VALUES ('d1', '{\"site\":\"lyon\"}')"); err != nil {
		t.Fatalf("registry role insert: %v", err)
	}
	n, err := listen.WaitForNotification(ctx)
	if err != nil || n.Payload != o.Schema {
		t.Fatalf("change notice: %v %+v, want payload %q", err, n, o.Schema)
	}
	if err := exec("UPDATE " + s + ".devices SET display_name = 'Pump' WHERE device_id = 'd1'"); err != nil {
		t.Fatal(err)
	}
	var version int64
	var created, updated time.Time
	if err := as.QueryRow(ctx, "SELECT version, created_at, updated_at FROM "+s+".devices WHERE device_id = 'd1'").Scan(&version, &created, &updated); err != nil {
		t.Fatal(err)
	}
	if version != 2 || updated.Before(created) {
		t.Fatalf("after one update: version %d, created %v updated %v", version, created, updated)
	}
	for _, bad := range []string{
		"INSERT INTO " + s + ".devices (device_id) VALUES ('a/b')",
		"INSERT INTO " + s + ".devices (device_id) VALUES ('')",
		"INSERT INTO " + s + ".devices (device_id, status) VALUES ('d2', 'bogus')",
		"INSERT INTO " + s + ".devices (device_id, attributes) VALUES ('d3', '[1]')",
		"INSERT INTO " + s + ".device_groups (group_id, parent_id) VALUES ('g', 'g')",
		"INSERT INTO " + s + ".device_certificates (serial, device_id, not_before, not_after) VALUES ('XYZ', 'd1', now(), now())",
	} {
		if err := exec(bad); sqlState(err) != "23514" && sqlState(err) != "23503" {
			t.Errorf("%s: %v, want a check violation", bad, err)
		}
	}
	if err := exec("INSERT INTO " + s + ".device_groups (group_id) VALUES ('campus'); INSERT INTO " + s + ".device_groups (group_id, parent_id) VALUES ('b1', 'campus'); INSERT INTO " + s + ".device_group_members VALUES ('b1', 'd1')"); err != nil {
		t.Fatal(err)
	}
	var hits int
	if err := as.QueryRow(ctx, "SELECT count(*) FROM "+s+".devices WHERE attributes @> '{\"site\":\"lyon\"}'").Scan(&hits); err != nil || hits != 1 {
		t.Fatalf("attribute search: %d %v", hits, err)
	}
	// Readers (Grafana) read the registry and last_seen; they write nothing.
	role(o.ReaderRole)
	for _, q := range []string{"SELECT count(*) FROM " + s + ".devices", "SELECT count(*) FROM " + s + ".device_last_seen",
		"SELECT count(*) FROM " + s + ".device_group_members", "SELECT count(*) FROM " + s + ".device_certificates"} {
		if err := as.QueryRow(ctx, q).Scan(&hits); err != nil {
			t.Errorf("reader: %s: %v", q, err)
		}
	}
	if err := exec("UPDATE " + s + ".devices SET status = 'active'"); sqlState(err) != "42501" {
		t.Errorf("reader UPDATE: %v, want permission denied", err)
	}
	// The writer (sink, bridge strict mode) reads devices only.
	role(o.WriterRole)
	if err := as.QueryRow(ctx, "SELECT count(*) FROM "+s+".devices").Scan(&hits); err != nil {
		t.Errorf("writer SELECT devices: %v", err)
	}
	if err := exec("DELETE FROM " + s + ".devices"); sqlState(err) != "42501" {
		t.Errorf("writer DELETE devices: %v, want permission denied", err)
	}
	// The registry role does not write the pipeline's tables.
	role(DefaultRegistryRole)
	if err := exec("DELETE FROM " + s + ".readings"); sqlState(err) != "42501" {
		t.Errorf("registry DELETE readings: %v, want permission denied", err)
	}
	_ = exec("RESET ROLE")
}
