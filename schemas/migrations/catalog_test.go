package migrations

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgconn"
)

var update = flag.Bool("update", false, "rewrite testdata/checksums.golden (only when adding a migration)")

func mustEmbedded(t *testing.T) *catalog {
	t.Helper()
	c, err := embedded()
	if err != nil {
		t.Fatalf("embedded catalog: %v", err)
	}
	return c
}

func TestEmbeddedCatalog(t *testing.T) {
	c := mustEmbedded(t)
	if Latest() != c.latest || c.latest < 4 {
		t.Fatalf("Latest() = %d, catalog latest = %d", Latest(), c.latest)
	}
	for _, f := range []Flavor{FlavorTimescaleDB, FlavorPostgres} {
		ms := c.byFlavor[f]
		if len(ms) != c.latest {
			t.Fatalf("%s: %d migrations, want %d", f, len(ms), c.latest)
		}
		for i, m := range ms {
			if m.version != i+1 {
				t.Errorf("%s: migration %d has version %d", f, i, m.version)
			}
			if other := c.byFlavor[otherFlavor(f)][i]; other.name != m.name {
				t.Errorf("version %d named %q for %s and %q for %s", m.version, m.name, f, other.name, otherFlavor(f))
			}
		}
	}
}

func otherFlavor(f Flavor) Flavor {
	if f == FlavorTimescaleDB {
		return FlavorPostgres
	}
	return FlavorTimescaleDB
}

// TestChecksumsGolden fails when a released migration is edited. Released
// migrations must never change (databases that applied them would refuse
// the new binary); add a new migration instead, then run
// go test ./schemas/migrations -run Golden -update.
func TestChecksumsGolden(t *testing.T) {
	c := mustEmbedded(t)
	var b strings.Builder
	for _, f := range []Flavor{FlavorPostgres, FlavorTimescaleDB} {
		for _, m := range c.byFlavor[f] {
			fmt.Fprintf(&b, "%s %s %s\n", f, m.ID(), m.checksum)
		}
	}
	path := filepath.Join("testdata", "checksums.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("migration checksums changed (a released migration was edited?)\ngot:\n%swant:\n%s", got, want)
	}
}

func TestRenderEmbedded(t *testing.T) {
	c := mustEmbedded(t)
	o := DefaultOptions()
	o.Schema, o.WriterRole, o.ReaderRole = "t_render", "t_w", "t_r"
	o = o.withDefaults()
	for _, f := range []Flavor{FlavorTimescaleDB, FlavorPostgres} {
		var all strings.Builder
		for _, m := range c.byFlavor[f] {
			sql, err := m.render(o)
			if err != nil {
				t.Fatalf("%s %s: %v", f, m.ID(), err)
			}
			if strings.Contains(sql, "{{") || strings.Contains(sql, "<no value>") {
				t.Errorf("%s %s: unrendered template:\n%s", f, m.ID(), sql)
			}
			if m.noTx {
				t.Errorf("%s %s: unexpected no-transaction migration", f, m.ID())
			}
			all.WriteString(sql)
		}
		sql := all.String()
		for _, want := range []string{
			`CREATE TABLE IF NOT EXISTS "t_render".readings`,
			`CONSTRAINT device_metrics_device_metric_bucket_key UNIQUE (device_id, metric, bucket)`,
			`"t_render".device_metrics_1h`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA "t_render" TO "t_r"`,
			`ON "t_render".sink_offsets TO "t_w"`,
		} {
			if !strings.Contains(sql, want) {
				t.Errorf("%s: rendered SQL lacks %q", f, want)
			}
		}
		if f == FlavorTimescaleDB {
			for _, want := range []string{
				`create_hypertable('"t_render"."readings"', 'time'`,
				`add_compression_policy('"t_render"."readings"', compress_after => INTERVAL '1 days'`,
				`add_retention_policy('"t_render"."readings"', drop_after => INTERVAL '30 days'`,
				`add_retention_policy('"t_render"."device_metrics"', drop_after => INTERVAL '365 days'`,
				`add_retention_policy('"t_render"."device_activity"', drop_after => INTERVAL '365 days'`,
			} {
				if !strings.Contains(sql, want) {
					t.Errorf("%s: rendered SQL lacks %q", f, want)
				}
			}
		}
	}
}

func TestRenderNoPolicies(t *testing.T) {
	c := mustEmbedded(t)
	o := Options{Schema: "t_x"}.withDefaults() // zero durations: no policies
	sql, err := c.byFlavor[FlavorTimescaleDB][1].render(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"add_retention_policy", "add_compression_policy"} {
		if strings.Contains(sql, no) {
			t.Errorf("rendered 0002 with zero durations contains %s:\n%s", no, sql)
		}
	}
}

func TestLoadCatalog(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	t.Run("parts and empty flavor", func(t *testing.T) {
		c, err := loadCatalog(fstest.MapFS{
			"common/0001_a.sql":      file("C1;"),
			"timescaledb/0001_a.sql": file("T1;"),
			"postgres/0002_b.sql":    file("-- iotpipe:no-transaction\nP2;"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if c.latest != 2 {
			t.Fatalf("latest = %d", c.latest)
		}
		ts, pg := c.byFlavor[FlavorTimescaleDB], c.byFlavor[FlavorPostgres]
		if ts[0].source != "C1;\nT1;" || pg[0].source != "C1;" {
			t.Errorf("0001 sources: %q, %q", ts[0].source, pg[0].source)
		}
		if ts[1].source != "" || ts[1].name != "b" || ts[1].noTx {
			t.Errorf("timescaledb 0002 = %+v", ts[1])
		}
		if !pg[1].noTx {
			t.Errorf("postgres 0002 not marked no-transaction")
		}
		if ts[0].checksum == pg[0].checksum {
			t.Errorf("flavors share a checksum for different sources")
		}
	})
	for name, fsys := range map[string]fstest.MapFS{
		"gap":             {"common/0001_a.sql": file(""), "common/0003_c.sql": file("")},
		"name conflict":   {"common/0001_a.sql": file(""), "postgres/0001_b.sql": file("")},
		"bad name":        {"common/1_a.sql": file("")},
		"version zero":    {"common/0000_a.sql": file("")},
		"bad template":    {"common/0001_a.sql": file("{{.Schema")},
		"folder in a dir": {"common/0001_a.sql": file(""), "common/sub/x.sql": file("")},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadCatalog(fsys); err == nil {
				t.Fatal("loadCatalog succeeded, want error")
			}
		})
	}
	t.Run("unknown template field fails at render", func(t *testing.T) {
		c, err := loadCatalog(fstest.MapFS{"common/0001_a.sql": file("{{.Nope}}")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.byFlavor[FlavorPostgres][0].render(Options{Schema: "s"}); err == nil {
			t.Fatal("render succeeded, want error")
		}
	})
}

func TestPending(t *testing.T) {
	c := mustEmbedded(t)
	ms := c.byFlavor[FlavorPostgres]
	row := func(i int) appliedRow {
		sum := ms[i].checksum
		return appliedRow{version: ms[i].version, name: ms[i].name, flavor: FlavorPostgres, checksum: &sum}
	}
	tampered := "0000"
	tests := []struct {
		name        string
		applied     []appliedRow
		wantPending int
		wantErr     error
		wantText    string
	}{
		{name: "fresh", wantPending: c.latest},
		{name: "partly", applied: []appliedRow{row(0), row(1)}, wantPending: c.latest - 2},
		{name: "current", applied: func() []appliedRow {
			var rs []appliedRow
			for i := range ms {
				rs = append(rs, row(i))
			}
			return rs
		}()},
		{name: "null checksum is not checked", applied: []appliedRow{{version: 1, name: ms[0].name, flavor: FlavorPostgres}}, wantPending: c.latest - 1},
		{name: "tampered", applied: []appliedRow{row(0), {version: 2, name: ms[1].name, checksum: &tampered}}, wantErr: ErrChecksumMismatch, wantText: "0002_"},
		{name: "renamed", applied: []appliedRow{{version: 1, name: "other", checksum: &tampered}}, wantErr: ErrChecksumMismatch, wantText: `"other"`},
		{name: "newer", applied: []appliedRow{row(0), row(1), row(2), row(3), {version: c.latest + 1, name: "future"}}, wantErr: ErrDatabaseNewer, wantText: fmt.Sprintf("version %d", c.latest+1)},
		{name: "newer with gap", applied: []appliedRow{row(0), {version: c.latest + 3, name: "future"}}, wantErr: ErrDatabaseNewer},
		{name: "out of order", applied: []appliedRow{row(0), row(2)}, wantText: "out of order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.pending(FlavorPostgres, tt.applied)
			if tt.wantErr == nil && tt.wantText == "" {
				if err != nil {
					t.Fatalf("pending() error = %v", err)
				}
				if len(p) != tt.wantPending {
					t.Fatalf("pending() = %d migrations, want %d", len(p), tt.wantPending)
				}
				if len(p) > 0 && p[0].version != len(tt.applied)+1 {
					t.Fatalf("first pending version = %d", p[0].version)
				}
				return
			}
			if err == nil {
				t.Fatalf("pending() = %d migrations, want error", len(p))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("pending() error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("pending() error = %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

func TestSQLError(t *testing.T) {
	sql := "SELECT 1;\n-- ß comment\nSELEC 2;\n"
	// Position is 1-based and counts characters: "ß" is one character but
	// two bytes.
	at := strings.Index(sql, "SELEC 2")
	if at < 0 {
		t.Fatal("test SQL lacks its error line")
	}
	pos := len([]rune(sql[:at])) + 1
	pe := &pgconn.PgError{Code: "42601", Message: "syntax error", Position: int32(pos)}
	err := sqlError(pe, sql)
	if !strings.Contains(err.Error(), "line 3: SELEC 2;") || !errors.Is(err, error(pe)) {
		t.Errorf("sqlError = %v", err)
	}
	if got := sqlError(errors.New("x"), sql); got.Error() != "x" {
		t.Errorf("sqlError(non-pg) = %v", got)
	}
}

func TestDescribePgError(t *testing.T) {
	got := describePgError(&pgconn.PgError{Code: "42501", Message: "permission denied to create extension", Hint: "Must be superuser."})
	if want := "permission denied to create extension (SQLSTATE 42501); hint: Must be superuser."; got != want {
		t.Errorf("describePgError = %q, want %q", got, want)
	}
}
