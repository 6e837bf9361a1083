// Package migrations creates and upgrades iotpipe's database schema: the
// readings, device_metrics, device_activity and sink_offsets tables, the
// 1 h / 1 d rollups of device_metrics, and the writer and reader roles'
// privileges.
//
// # Guarantees
//
//   - Versioned: migrations are numbered SQL files embedded in the binary.
//     Every applied version is recorded in <schema>.schema_migrations with the
//     flavor and the SHA-256 of its source; [Apply] refuses to run when an
//     applied migration's source changed ([ErrChecksumMismatch]) or when the
//     database is newer than the binary ([ErrDatabaseNewer]).
//   - Idempotent: [Apply] applies only what is missing; a second call applies
//     nothing and needs no privilege beyond reading the schema. Every
//     statement is also written to be re-runnable (IF NOT EXISTS,
//     if_not_exists => true) so a file can be replayed by hand.
//   - Atomic per migration: each migration runs in its own transaction
//     together with the INSERT into schema_migrations, so a crash leaves the
//     schema at the previous version. (TimescaleDB continuous aggregates are
//     created WITH NO DATA, which TimescaleDB allows inside a transaction; the
//     refresh policy fills them.) A migration whose file carries the line
//     "-- iotpipe:no-transaction" runs outside a transaction instead, for
//     statements such as CREATE INDEX CONCURRENTLY; such a migration must be a
//     single idempotent statement.
//   - Serialized: concurrent appliers on the same schema queue on a session
//     advisory lock, so two processes starting at once are safe.
//
// # Flavors
//
// There are two flavors, chosen at the first [Apply] on a schema and then
// recorded, so later runs keep it:
//
//   - [FlavorTimescaleDB]: readings, device_metrics and device_activity are
//     hypertables; readings are compressed and both get retention policies;
//     device_metrics_1h and device_metrics_1d are continuous aggregates with
//     refresh policies and real-time aggregation.
//   - [FlavorPostgres] (plain PostgreSQL ≥ 15): the same tables as ordinary
//     tables with the indexes TimescaleDB would have created;
//     device_metrics_1h and device_metrics_1d are ordinary views with the same
//     columns, so dashboard and analyst SQL runs unchanged on both. Retention
//     and compression are not enforced by the database on this flavor.
//
// With [FlavorAuto] (the default) Apply tries CREATE EXTENSION IF NOT EXISTS
// timescaledb in a savepoint and falls back to plain PostgreSQL when that
// fails, reporting why in [Result.FallbackReason]. It does not try when the
// extension is not installed on the server or installed but not in
// shared_preload_libraries: TimescaleDB answers the latter with FATAL, which
// would end the caller's session.
//
// # Layout of the SQL files
//
// sql/common/NNNN_name.sql runs on both flavors; sql/timescaledb/NNNN_name.sql
// and sql/postgres/NNNN_name.sql hold the flavor-specific part. Migration NNNN
// for a flavor is the common file followed by that flavor's file; either may
// be absent (a version absent for a flavor is recorded as applied and does
// nothing), and the name must be the same in every folder. Versions start at 1
// and have no gaps. Files are Go text/template templates (see templateData in catalog.go):
// identifiers and literals come pre-quoted ({{.Schema}}, {{.Reader}},
// {{.Rel "readings"}}), intervals are formatted from time.Duration by this
// package, so no user input is ever spliced into SQL unquoted. Never edit a
// released migration: add a new one.
//
// # Rollups
//
// device_metrics_1h and device_metrics_1d have the columns bucket, device_id,
// metric, windows, count, sum, min, max, mean, first, last, first_time,
// last_time, max_p95 and max_p99. count, sum, min, max, mean, first and last
// are exact merges of the window rows. Percentiles cannot be merged exactly:
// max_p95 and max_p99 are the largest per-window p95/p99 in the bucket, an
// upper bound on the bucket's true percentile, not the percentile itself.
// stddev is left out because merging it depends on the estimator (sample or
// population); compute it from device_metrics when needed.
//
// TimescaleDB refresh policies: device_metrics_1h every 30 min over
// [now-3 days, now-1 hour); device_metrics_1d every hour over
// [now-30 days, now-1 day). Real-time aggregation (materialized_only = false)
// adds the not yet materialized recent buckets at query time, so the rollups
// always show the latest data. A late update older than the refresh window's
// start (3 days / 30 days) is not re-materialized; call
// refresh_continuous_aggregate for that range if it ever happens.
//
// # Changing policies later
//
// Retention and compression intervals are set when the migration that
// creates the policy runs; changing [Options] afterwards does not alter an
// existing database. Change them with SQL, e.g.
//
//	SELECT remove_retention_policy('iotpipe.readings');
//	SELECT add_retention_policy('iotpipe.readings', INTERVAL '90 days');
package migrations
