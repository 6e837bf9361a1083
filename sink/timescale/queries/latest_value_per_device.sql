-- Latest value of one metric for every device, with when it was taken.
-- $1: metric name, e.g. 'temperature'.
-- Uses readings_device_metric_time_idx (device_id, metric, time DESC):
-- one index probe per device.
SELECT DISTINCT ON (device_id)
       device_id,
       time  AS taken_at,
       value
FROM iotpipe.readings
WHERE metric = $1
  AND time > now() - INTERVAL '7 days'
ORDER BY device_id, time DESC;
