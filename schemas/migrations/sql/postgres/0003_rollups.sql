-- 0003_rollups (plain PostgreSQL): device_metrics_1h and device_metrics_1d as
-- ordinary views with the same names, columns, types and values as the
-- TimescaleDB continuous aggregates, so dashboard and analyst SQL runs on
-- both. Buckets are UTC hours and days, like time_bucket. Computed at query
-- time: on large ranges they cost what the aggregation over device_metrics
-- costs.

CREATE OR REPLACE VIEW {{.Schema}}.device_metrics_1h AS
SELECT
    date_trunc('hour', bucket, 'UTC')                     AS bucket,
    device_id,
    metric,
    count(*)                                              AS windows,
    sum(count)::bigint                                    AS count,
    sum(sum)                                              AS sum,
    min(min)                                              AS min,
    max(max)                                              AS max,
    sum(sum) / NULLIF(sum(count), 0)::double precision    AS mean,
    (array_agg(first ORDER BY first_time) FILTER (WHERE first_time IS NOT NULL))[1]     AS first,
    (array_agg(last ORDER BY last_time DESC) FILTER (WHERE last_time IS NOT NULL))[1]   AS last,
    min(first_time)                                       AS first_time,
    max(last_time)                                        AS last_time,
    max(p95)                                              AS max_p95,
    max(p99)                                              AS max_p99
FROM {{.Schema}}.device_metrics
GROUP BY date_trunc('hour', bucket, 'UTC'), device_id, metric;

CREATE OR REPLACE VIEW {{.Schema}}.device_metrics_1d AS
SELECT
    date_trunc('day', bucket, 'UTC')                      AS bucket,
    device_id,
    metric,
    count(*)                                              AS windows,
    sum(count)::bigint                                    AS count,
    sum(sum)                                              AS sum,
    min(min)                                              AS min,
    max(max)                                              AS max,
    sum(sum) / NULLIF(sum(count), 0)::double precision    AS mean,
    (array_agg(first ORDER BY first_time) FILTER (WHERE first_time IS NOT NULL))[1]     AS first,
    (array_agg(last ORDER BY last_time DESC) FILTER (WHERE last_time IS NOT NULL))[1]   AS last,
    min(first_time)                                       AS first_time,
    max(last_time)                                        AS last_time,
    max(p95)                                              AS max_p95,
    max(p99)                                              AS max_p99
FROM {{.Schema}}.device_metrics
GROUP BY date_trunc('day', bucket, 'UTC'), device_id, metric;

COMMENT ON VIEW {{.Schema}}.device_metrics_1h IS
    'Hourly rollup of device_metrics per device and metric (plain view; a continuous aggregate on TimescaleDB). count/sum/min/max/mean/first/last are exact; max_p95/max_p99 are the largest window percentiles in the hour, not the hourly percentile.';
COMMENT ON VIEW {{.Schema}}.device_metrics_1d IS
    'Daily (UTC) rollup of device_metrics per device and metric (plain view; a continuous aggregate on TimescaleDB). count/sum/min/max/mean/first/last are exact; max_p95/max_p99 are the largest window percentiles in the day, not the daily percentile.';
