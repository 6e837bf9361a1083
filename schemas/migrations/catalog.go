package migrations

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"
)

//go:embed sql
var sqlFiles embed.FS

// flavorDirs are the folders under sql/ and the flavors they apply to.
var flavorDirs = map[string][]Flavor{
	"common":      {FlavorTimescaleDB, FlavorPostgres},
	"timescaledb": {FlavorTimescaleDB},
	"postgres":    {FlavorPostgres},
}

// migration is one version for one flavor.
type migration struct {
	version  int
	name     string // "tables", from 0001_tables.sql
	source   string // template text: the common part, then the flavor part
	checksum string // hex SHA-256 of source
	noTx     bool   // run outside a transaction
	tmpl     *template.Template
}

// ID is the migration's file stem, "0001_tables".
func (m *migration) ID() string { return fmt.Sprintf("%04d_%s", m.version, m.name) }

// catalog holds every migration of every flavor; each flavor has versions
// 1..latest without gaps.
type catalog struct {
	latest   int
	byFlavor map[Flavor][]*migration // index i holds version i+1
}

var (
	fileRE = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)
	noTxRE = regexp.MustCompile(`(?m)^--[ \t]*iotpipe:no-transaction[ \t]*$`)
)

// embedded returns the catalog of the SQL files built into the binary.
var embedded = sync.OnceValues(func() (*catalog, error) {
	sub, err := fs.Sub(sqlFiles, "sql")
	if err != nil {
		return nil, err
	}
	return loadCatalog(sub)
})

// loadCatalog reads <dir>/NNNN_name.sql for every dir in flavorDirs from fsys.
func loadCatalog(fsys fs.FS) (*catalog, error) {
	type part struct{ common, flavor string }
	names := map[int]string{}
	parts := map[Flavor]map[int]*part{FlavorTimescaleDB: {}, FlavorPostgres: {}}
	latest := 0
	dirs := make([]string, 0, len(flavorDirs))
	for d := range flavorDirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, dir := range dirs {
		entries, err := fs.ReadDir(fsys, dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("migrations: read %s: %w", dir, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				return nil, fmt.Errorf("migrations: unexpected folder %s/%s", dir, e.Name())
			}
			m := fileRE.FindStringSubmatch(e.Name())
			if m == nil {
				return nil, fmt.Errorf("migrations: %s/%s: file name must look like 0001_name.sql", dir, e.Name())
			}
			v, _ := strconv.Atoi(m[1])
			if v == 0 {
				return nil, fmt.Errorf("migrations: %s/%s: versions start at 0001", dir, e.Name())
			}
			if n, ok := names[v]; ok && n != m[2] {
				return nil, fmt.Errorf("migrations: version %04d is named both %q and %q", v, n, m[2])
			}
			names[v] = m[2]
			latest = max(latest, v)
			b, err := fs.ReadFile(fsys, dir+"/"+e.Name())
			if err != nil {
				return nil, fmt.Errorf("migrations: read %s/%s: %w", dir, e.Name(), err)
			}
			for _, f := range flavorDirs[dir] {
				p := parts[f][v]
				if p == nil {
					p = &part{}
					parts[f][v] = p
				}
				if dir == "common" {
					p.common = string(b)
				} else {
					p.flavor = string(b)
				}
			}
		}
	}
	c := &catalog{latest: latest, byFlavor: map[Flavor][]*migration{}}
	for v := 1; v <= latest; v++ {
		if _, ok := names[v]; !ok {
			return nil, fmt.Errorf("migrations: version %04d is missing (versions must have no gaps)", v)
		}
	}
	for f, byVersion := range parts {
		for v := 1; v <= latest; v++ {
			src := ""
			if p := byVersion[v]; p != nil {
				src = joinParts(p.common, p.flavor)
			}
			m := &migration{version: v, name: names[v], source: src, noTx: noTxRE.MatchString(src)}
			sum := sha256.Sum256([]byte(src))
			m.checksum = hex.EncodeToString(sum[:])
			t, err := template.New(m.ID()).Option("missingkey=error").Parse(src)
			if err != nil {
				return nil, fmt.Errorf("migrations: %s (%s): %w", m.ID(), f, err)
			}
			m.tmpl = t
			c.byFlavor[f] = append(c.byFlavor[f], m)
		}
	}
	return c, nil
}

func joinParts(common, flavor string) string {
	switch {
	case common == "":
		return flavor
	case flavor == "":
		return common
	case strings.HasSuffix(common, "\n"):
		return common + flavor
	default:
		return common + "\n" + flavor
	}
}

// templateData is what the SQL templates see. Every field is ready to splice
// into SQL: identifiers are quoted, intervals are INTERVAL literals or "" for
// "no policy" (test with {{with .ReadingsRetention}}…{{end}}), and
// {{.Rel "table"}} yields a table of the schema as a string literal for the
// regclass arguments of TimescaleDB's API: '"iotpipe"."table"'.
type templateData struct {
	Schema            string // "iotpipe"
	Writer, Reader    string // "iotpipe_writer", "iotpipe_reader"
	Registry          string // "iotpipe_registry"
	ReadingsRetention string // INTERVAL '30 days' or ""
	MetricsRetention  string
	CompressAfter     string

	schema string // unquoted
}

// Rel returns the schema's table as a quoted regclass string literal.
func (d templateData) Rel(table string) string {
	return quoteLiteral(pgx.Identifier{d.schema, table}.Sanitize())
}

func newTemplateData(o Options) templateData {
	return templateData{
		schema:            o.Schema,
		Schema:            quoteIdent(o.Schema),
		Writer:            quoteIdent(o.WriterRole),
		Reader:            quoteIdent(o.ReaderRole),
		Registry:          quoteIdent(o.RegistryRole),
		ReadingsRetention: intervalLiteral(o.ReadingsRetention),
		MetricsRetention:  intervalLiteral(o.MetricsRetention),
		CompressAfter:     intervalLiteral(o.CompressAfter),
	}
}

// render returns m's SQL for the options.
func (m *migration) render(o Options) (string, error) {
	var b strings.Builder
	if err := m.tmpl.Execute(&b, newTemplateData(o)); err != nil {
		return "", fmt.Errorf("migrations: render %s: %w", m.ID(), err)
	}
	return b.String(), nil
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// quoteLiteral returns s as a standard-conforming SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), "'", "''") + "'"
}

// intervalLiteral formats d as an SQL interval literal, whole days as days
// (so TimescaleDB shows "30 days", not "720:00:00"), the rest in seconds or
// microseconds (truncated). Zero (no policy) and negative durations give "".
func intervalLiteral(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	const day = 24 * time.Hour
	var parts []string
	if days := d / day; days > 0 {
		parts = append(parts, fmt.Sprintf("%d days", days))
	}
	switch rem := d % day; {
	case rem == 0:
	case rem%time.Second == 0:
		parts = append(parts, fmt.Sprintf("%d seconds", rem/time.Second))
	default:
		parts = append(parts, fmt.Sprintf("%d microseconds", rem/time.Microsecond))
	}
	return "INTERVAL '" + strings.Join(parts, " ") + "'"
}
