-- 0001_tables (TimescaleDB): turn the tables into hypertables and set up
-- compression of readings. create_hypertable also creates the default time
-- indexes (readings_time_idx, device_metrics_bucket_idx,
-- device_activity_bucket_idx); the postgres flavor creates the same ones.

SELECT create_hypertable({{.Rel "readings"}}, 'time',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => true);

-- Compressed chunks are grouped by series and sorted newest first, which is
-- how Grafana reads them (one device and metric, a time range).
ALTER TABLE {{.Schema}}.readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'time DESC'
);

SELECT create_hypertable({{.Rel "device_metrics"}}, 'bucket',
    chunk_time_interval => INTERVAL '7 days', if_not_exists => true);

SELECT create_hypertable({{.Rel "device_activity"}}, 'bucket',
    chunk_time_interval => INTERVAL '7 days', if_not_exists => true);
