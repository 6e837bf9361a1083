-- Issue 13: one identity for a device message, used by every store. The
-- timescale sink now writes readings from telemetry.readings, the processor's
-- copy of each reading it accepted (each device message once, decided in the
-- transaction that counts it), not from telemetry.raw. The table comments say
-- what the tables hold now. No data changes: rows written from telemetry.raw
-- before the upgrade stay as they are.
COMMENT ON TABLE {{.Schema}}.readings IS
    'Device readings, one row per measurement (device, metric, time) of each device message the processor accepted, written by the timescale sink from telemetry.readings. A message stored twice in telemetry.raw (a device re-send or an MQTT redelivery: same device, event time and seq) is one row, so per device, metric and window count(*) and sum(value) equal device_metrics.count and sum. A reused seq with another event time is a new reading (device_activity.seq_resets). Readings that arrived after their window closed for good for their device (reason late), too far ahead of the clock (timestamp_skew) or undecodable are not here: they are in the dead-letter topic (telemetry.dlq) with the original bytes, and late ones are counted in device_activity.late. The same rows are in the Parquet lake. Kept for the readings retention (TimescaleDB), compressed after a day.';

COMMENT ON TABLE {{.Schema}}.device_metrics IS
    'Window aggregates from the processor (telemetry.metrics): one row per device, metric and event-time window, upserted on (device_id, metric, bucket). A reading arriving within the allowed lateness updates the row in place and raises revision. Every reading the processor accepted is counted in exactly one row: the same readings as the readings table and the lake. Readings that arrived after their window closed for good for their device (late: beyond the lateness, after the duplicate-detection state of the window was dropped, or after a --max-keys early close) are counted in no row: they are in the dead-letter topic with reason late and counted in device_activity.late. For long ranges use device_metrics_1h / device_metrics_1d.';
