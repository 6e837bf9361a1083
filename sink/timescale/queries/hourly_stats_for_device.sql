-- Hourly statistics of every metric of one device over the last week,
-- from the hourly rollup of the window aggregates (a continuous aggregate
-- on TimescaleDB, a view on plain PostgreSQL).
-- $1: device id.
-- max_p95 is the largest window p95 in the hour (an upper bound), not
-- the hourly percentile.
SELECT bucket AS hour,
       metric,
       count,
       min,
       max,
       mean,
       max_p95
FROM iotpipe.device_metrics_1h
WHERE device_id = $1
  AND bucket >= date_trunc('hour', now()) - INTERVAL '7 days'
ORDER BY metric, hour;
