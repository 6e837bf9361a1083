-- 0003_rollups (TimescaleDB): hourly and daily rollups of device_metrics as
-- continuous aggregates. The postgres flavor has views with the same names
-- and columns. Column meanings and the percentile caveat: package doc.
--
-- WITH NO DATA keeps creation inside this migration's transaction
-- (TimescaleDB refuses WITH DATA in a transaction block); the refresh
-- policies below materialize them, and real-time aggregation
-- (materialized_only = false) serves what is not materialized yet.

CREATE MATERIALIZED VIEW IF NOT EXISTS {{.Schema}}.device_metrics_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 hour', bucket)                AS bucket,
    device_id,
    metric,
    count(*)                                              AS windows,
    sum(count)::bigint                                    AS count,
    sum(sum)                                              AS sum,
    min(min)                                              AS min,
    max(max)                                              AS max,
    sum(sum) / NULLIF(sum(count), 0)::double precision    AS mean,
    first(first, first_time)                              AS first,
    last(last, last_time)                                 AS last,
    min(first_time)                                       AS first_time,
    max(last_time)                                        AS last_time,
    max(p95)                                              AS max_p95,
    max(p99)                                              AS max_p99
FROM {{.Schema}}.device_metrics
GROUP BY time_bucket(INTERVAL '1 hour', bucket), device_id, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{.Schema}}.device_metrics_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 day', bucket)                 AS bucket,
    device_id,
    metric,
    count(*)                                              AS windows,
    sum(count)::bigint                                    AS count,
    sum(sum)                                              AS sum,
    min(min)                                              AS min,
    max(max)                                              AS max,
    sum(sum) / NULLIF(sum(count), 0)::double precision    AS mean,
    first(first, first_time)                              AS first,
    last(last, last_time)                                 AS last,
    min(first_time)                                       AS first_time,
    max(last_time)                                        AS last_time,
    max(p95)                                              AS max_p95,
    max(p99)                                              AS max_p99
FROM {{.Schema}}.device_metrics
GROUP BY time_bucket(INTERVAL '1 day', bucket), device_id, metric
WITH NO DATA;

-- 1 h: every 30 min, re-materialize [now-3 days, now-1 hour): late updates
-- within three days are picked up; the current hour is served in real time.
SELECT add_continuous_aggregate_policy({{.Rel "device_metrics_1h"}},
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);

-- 1 d: every hour, re-materialize [now-30 days, now-1 day); the current day
-- is served in real time.
SELECT add_continuous_aggregate_policy({{.Rel "device_metrics_1d"}},
    start_offset => INTERVAL '30 days', end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour', if_not_exists => true);

COMMENT ON VIEW {{.Schema}}.device_metrics_1h IS
    'Hourly rollup of device_metrics per device and metric (TimescaleDB continuous aggregate, real-time). count/sum/min/max/mean/first/last are exact; max_p95/max_p99 are the largest window percentiles in the hour, not the hourly percentile.';
COMMENT ON VIEW {{.Schema}}.device_metrics_1d IS
    'Daily (UTC) rollup of device_metrics per device and metric (TimescaleDB continuous aggregate, real-time). count/sum/min/max/mean/first/last are exact; max_p95/max_p99 are the largest window percentiles in the day, not the daily percentile.';
