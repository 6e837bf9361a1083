-- 0001_tables (plain PostgreSQL): the time indexes TimescaleDB's
-- create_hypertable would have created, under the same names, for
-- fleet-wide time-range queries.

CREATE INDEX IF NOT EXISTS readings_time_idx ON {{.Schema}}.readings (time DESC);
CREATE INDEX IF NOT EXISTS device_metrics_bucket_idx ON {{.Schema}}.device_metrics (bucket DESC);
CREATE INDEX IF NOT EXISTS device_activity_bucket_idx ON {{.Schema}}.device_activity (bucket DESC);
