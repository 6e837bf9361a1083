package migrations

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
)

// Flavor is the kind of database the schema is built for.
type Flavor string

const (
	// FlavorAuto picks FlavorTimescaleDB when the timescaledb extension can
	// be created and FlavorPostgres otherwise. It is only an Options value;
	// a schema's recorded flavor is always one of the other two.
	FlavorAuto Flavor = "auto"
	// FlavorTimescaleDB uses hypertables, compression, retention policies
	// and continuous aggregates.
	FlavorTimescaleDB Flavor = "timescaledb"
	// FlavorPostgres uses ordinary tables and views on PostgreSQL ≥ 15.
	FlavorPostgres Flavor = "postgres"
)

// Defaults used by DefaultOptions and, for the string fields, by Apply when
// a field is empty.
const (
	DefaultSchema            = "iotpipe"
	DefaultWriterRole        = "iotpipe_writer"
	DefaultReaderRole        = "iotpipe_reader"
	DefaultRegistryRole      = "iotpipe_registry"
	DefaultReadingsRetention = 30 * 24 * time.Hour
	DefaultMetricsRetention  = 365 * 24 * time.Hour
	DefaultCompressAfter     = 24 * time.Hour
)

// minPolicyInterval is the shortest non-zero retention or compression
// interval Validate accepts. It catches a bare number read as nanoseconds
// (a "30" meant as days would otherwise drop every chunk).
const minPolicyInterval = time.Hour

// rollupRefreshWindow is how far back the device_metrics_1d refresh policy
// re-materializes (sql/timescaledb/0003_rollups.sql). MetricsRetention must
// exceed it: refreshing a range whose raw rows were dropped would empty the
// rollup's buckets there.
const rollupRefreshWindow = 30 * 24 * time.Hour

// Options configures Apply. Start from DefaultOptions: for the durations the
// zero value means "no policy", not "default".
type Options struct {
	// Schema holds every object. Default "iotpipe"; created if missing.
	// Lower-case letters, digits and underscores, starting with a letter or
	// underscore, at most 63 bytes, not starting with "pg_".
	Schema string
	// Flavor: FlavorAuto (default, also for ""), FlavorTimescaleDB (fail if
	// the extension cannot be created) or FlavorPostgres. Once a schema has
	// a recorded flavor, an explicit different flavor is an error.
	Flavor Flavor
	// WriterRole (default "iotpipe_writer") and ReaderRole (default
	// "iotpipe_reader") are NOLOGIN group roles, created if missing, that
	// receive the sink's and the dashboards' privileges. Grant them to login
	// roles. Same naming rules as Schema.
	WriterRole, ReaderRole string
	// RegistryRole (default "iotpipe_registry") is the NOLOGIN group role,
	// created if missing, that may write the device registry (devices,
	// their certificates and groups); the registry commands connect as a
	// member of it. Same naming rules as Schema.
	RegistryRole string
	// ReadingsRetention drops readings older than this (TimescaleDB only).
	// 0 means no retention policy; DefaultOptions sets 30 days.
	ReadingsRetention time.Duration
	// MetricsRetention drops device_metrics and device_activity older than
	// this (TimescaleDB only; the rollups keep their rows). 0 means no
	// retention policy; otherwise it must exceed 30 days, the daily
	// rollup's refresh window. DefaultOptions sets 365 days.
	MetricsRetention time.Duration
	// CompressAfter compresses readings chunks older than this (TimescaleDB
	// only). 0 means no compression policy (chunks can still be compressed
	// by hand); DefaultOptions sets 24 h.
	CompressAfter time.Duration
	// Logger receives one line per applied migration and the fallback
	// reason. Optional.
	Logger *slog.Logger
}

// DefaultOptions returns the documented defaults: schema "iotpipe", flavor
// auto, roles iotpipe_writer/iotpipe_reader, readings kept 30 days and
// compressed after 24 h, metrics kept 365 days.
func DefaultOptions() Options {
	return Options{
		Schema:            DefaultSchema,
		Flavor:            FlavorAuto,
		WriterRole:        DefaultWriterRole,
		ReaderRole:        DefaultReaderRole,
		RegistryRole:      DefaultRegistryRole,
		ReadingsRetention: DefaultReadingsRetention,
		MetricsRetention:  DefaultMetricsRetention,
		CompressAfter:     DefaultCompressAfter,
	}
}

// withDefaults fills the empty string fields.
func (o Options) withDefaults() Options {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.Flavor == "" {
		o.Flavor = FlavorAuto
	}
	if o.WriterRole == "" {
		o.WriterRole = DefaultWriterRole
	}
	if o.ReaderRole == "" {
		o.ReaderRole = DefaultReaderRole
	}
	if o.RegistryRole == "" {
		o.RegistryRole = DefaultRegistryRole
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// checkIdent reports why name cannot be used as a schema or role name.
func checkIdent(name string) error {
	switch {
	case len(name) > 63:
		return fmt.Errorf("%q is longer than 63 bytes", name)
	case !identRE.MatchString(name):
		return fmt.Errorf("%q must be lower-case letters, digits and underscores, starting with a letter or underscore", name)
	case strings.HasPrefix(name, "pg_"):
		return fmt.Errorf("%q: names starting with pg_ are reserved by PostgreSQL", name)
	}
	return nil
}

// Validate reports every invalid field, each error naming its field. Empty
// strings are valid (they take the defaults).
func (o *Options) Validate() error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"Schema", o.Schema}, {"WriterRole", o.WriterRole}, {"ReaderRole", o.ReaderRole}, {"RegistryRole", o.RegistryRole},
	} {
		if f.value == "" {
			continue
		}
		if err := checkIdent(f.value); err != nil {
			errs = append(errs, fmt.Errorf("migrations: Options.%s: %w", f.name, err))
		}
	}
	d := o.withDefaults()
	if d.WriterRole == d.ReaderRole {
		errs = append(errs, fmt.Errorf("migrations: Options.ReaderRole: %q is also the WriterRole; the reader must not get write privileges", d.ReaderRole))
	}
	if d.RegistryRole == d.ReaderRole {
		errs = append(errs, fmt.Errorf("migrations: Options.ReaderRole: %q is also the RegistryRole; the reader must not get write privileges", d.ReaderRole))
	}
	switch o.Flavor {
	case "", FlavorAuto, FlavorTimescaleDB, FlavorPostgres:
	default:
		errs = append(errs, fmt.Errorf("migrations: Options.Flavor: %q is not one of %q, %q, %q", o.Flavor, FlavorAuto, FlavorTimescaleDB, FlavorPostgres))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"ReadingsRetention", o.ReadingsRetention},
		{"MetricsRetention", o.MetricsRetention},
		{"CompressAfter", o.CompressAfter},
	} {
		switch {
		case f.d < 0:
			errs = append(errs, fmt.Errorf("migrations: Options.%s: %s is negative (use 0 for no policy)", f.name, f.d))
		case f.d > 0 && f.d < minPolicyInterval:
			errs = append(errs, fmt.Errorf("migrations: Options.%s: %s is shorter than %s (use 0 for no policy)", f.name, f.d, minPolicyInterval))
		}
	}
	if o.MetricsRetention > 0 && o.MetricsRetention <= rollupRefreshWindow {
		errs = append(errs, fmt.Errorf("migrations: Options.MetricsRetention: %s must be longer than the rollups' refresh window (%s), or refreshes would erase rolled-up history", o.MetricsRetention, rollupRefreshWindow))
	}
	return errors.Join(errs...)
}

// Result describes what Apply did.
type Result struct {
	// Flavor is the schema's flavor (never FlavorAuto).
	Flavor Flavor
	// From is the schema version before the run (0 for a new schema), To
	// the version after it.
	From, To int
	// Applied lists the migrations applied by this run, as "0001_tables".
	Applied []string
	// FallbackReason is set when FlavorAuto chose FlavorPostgres for a new
	// schema because the timescaledb extension could not be created.
	FallbackReason string
}

// Errors callers can branch on with errors.Is.
var (
	// ErrChecksumMismatch: an applied migration's source differs from the
	// one embedded in this binary (a released migration was edited).
	ErrChecksumMismatch = errors.New("migrations: applied migration differs from the embedded one")
	// ErrDatabaseNewer: the schema has a version this binary does not know;
	// run a newer binary.
	ErrDatabaseNewer = errors.New("migrations: database schema is newer than this binary")
	// ErrFlavorMismatch: the schema was created with another flavor than
	// the one asked for.
	ErrFlavorMismatch = errors.New("migrations: schema flavor differs from the requested flavor")
	// ErrTimescaleDBUnavailable: the timescaledb flavor was requested (or
	// recorded) but the extension cannot be created or is missing.
	ErrTimescaleDBUnavailable = errors.New("migrations: timescaledb extension is not available")
)
