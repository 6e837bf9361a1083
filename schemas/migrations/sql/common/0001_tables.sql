-- 0001_tables (both flavors): the tables the timescale sink writes and that
-- dashboards and analysts read. The TimescaleDB part (hypertables,
-- compression) and the plain-PostgreSQL part (time indexes) follow in the
-- flavor's own 0001_tables.sql. Templating: see package doc.

CREATE TABLE IF NOT EXISTS {{.Schema}}.readings (
    time        timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    value       double precision NOT NULL,
    seq         bigint,
    received_at timestamptz
);
CREATE INDEX IF NOT EXISTS readings_device_metric_time_idx
    ON {{.Schema}}.readings (device_id, metric, time DESC);

COMMENT ON TABLE {{.Schema}}.readings IS
    'Raw device readings, one row per measurement (device, metric, time). Written by the timescale sink from telemetry.raw; the same rows are in the Parquet lake. Kept for the readings retention (TimescaleDB), compressed after a day.';
COMMENT ON COLUMN {{.Schema}}.readings.time IS 'Event time: when the device took the reading (UTC).';
COMMENT ON COLUMN {{.Schema}}.readings.device_id IS 'Device id, from the MQTT topic (or the authenticated broker identity).';
COMMENT ON COLUMN {{.Schema}}.readings.metric IS 'Measurement name, e.g. temperature.';
COMMENT ON COLUMN {{.Schema}}.readings.value IS 'Measured value. Never NaN or infinite.';
COMMENT ON COLUMN {{.Schema}}.readings.seq IS 'Device message counter, when the device sends one; gaps mean lost device messages.';
COMMENT ON COLUMN {{.Schema}}.readings.received_at IS 'When the bridge received the MQTT message.';

CREATE TABLE IF NOT EXISTS {{.Schema}}.device_metrics (
    bucket      timestamptz      NOT NULL,
    bucket_end  timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    count       bigint           NOT NULL,
    sum         double precision,
    min         double precision,
    max         double precision,
    mean        double precision,
    stddev      double precision,
    first       double precision,
    last        double precision,
    p50         double precision,
    p95         double precision,
    p99         double precision,
    first_time  timestamptz,
    last_time   timestamptz,
    revision    bigint           NOT NULL,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    -- The upsert key. It includes the time column, as TimescaleDB requires
    -- of every unique index on a hypertable.
    CONSTRAINT device_metrics_device_metric_bucket_key UNIQUE (device_id, metric, bucket),
    CONSTRAINT device_metrics_bucket_end_check CHECK (bucket_end > bucket)
);

COMMENT ON TABLE {{.Schema}}.device_metrics IS
    'Window aggregates from the processor (telemetry.metrics): one row per device, metric and event-time window, upserted on (device_id, metric, bucket). A late reading updates the row in place and raises revision. Every valid reading is counted in exactly one row. For long ranges use device_metrics_1h / device_metrics_1d.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.bucket IS 'Window start (inclusive, UTC).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.bucket_end IS 'Window end (exclusive, UTC).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.device_id IS 'Device id.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.metric IS 'Measurement name.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.count IS 'Number of readings in the window.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.sum IS 'Sum of the values.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.min IS 'Smallest value.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.max IS 'Largest value.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.mean IS 'Mean value (sum / count).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.stddev IS 'Standard deviation of the values, as computed by the processor.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.first IS 'Value of the earliest reading (by event time).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.last IS 'Value of the latest reading (by event time).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.p50 IS 'Median of the values (processor estimate).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.p95 IS '95th percentile of the values (processor estimate).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.p99 IS '99th percentile of the values (processor estimate).';
COMMENT ON COLUMN {{.Schema}}.device_metrics.first_time IS 'Event time of the earliest reading.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.last_time IS 'Event time of the latest reading.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.revision IS 'Version of the window; rises each time a late reading updates it. The sink only overwrites a row with a higher revision.';
COMMENT ON COLUMN {{.Schema}}.device_metrics.updated_at IS 'When the sink last wrote the row.';

CREATE TABLE IF NOT EXISTS {{.Schema}}.device_activity (
    bucket      timestamptz NOT NULL,
    bucket_end  timestamptz NOT NULL,
    device_id   text        NOT NULL,
    messages    bigint      NOT NULL,
    seq_gaps    bigint      NOT NULL,
    late        bigint      NOT NULL,
    duplicates  bigint      NOT NULL,
    first_seen  timestamptz,
    last_seen   timestamptz,
    revision    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT device_activity_device_bucket_key UNIQUE (device_id, bucket),
    CONSTRAINT device_activity_bucket_end_check CHECK (bucket_end > bucket)
);

COMMENT ON TABLE {{.Schema}}.device_activity IS
    'Per device and window: how many messages arrived, how many were lost (seq gaps), late or duplicated, and when the device was first/last seen. The fleet''s "is it alive" view. Upserted on (device_id, bucket).';
COMMENT ON COLUMN {{.Schema}}.device_activity.bucket IS 'Window start (inclusive, UTC).';
COMMENT ON COLUMN {{.Schema}}.device_activity.bucket_end IS 'Window end (exclusive, UTC).';
COMMENT ON COLUMN {{.Schema}}.device_activity.device_id IS 'Device id.';
COMMENT ON COLUMN {{.Schema}}.device_activity.messages IS 'Messages received from the device in the window.';
COMMENT ON COLUMN {{.Schema}}.device_activity.seq_gaps IS 'Device messages missing according to the device counter (seq).';
COMMENT ON COLUMN {{.Schema}}.device_activity.late IS 'Readings that arrived after the window closed.';
COMMENT ON COLUMN {{.Schema}}.device_activity.duplicates IS 'Messages the device sent more than once (repeated seq).';
COMMENT ON COLUMN {{.Schema}}.device_activity.first_seen IS 'Event time of the first message in the window.';
COMMENT ON COLUMN {{.Schema}}.device_activity.last_seen IS 'Event time of the last message in the window.';
COMMENT ON COLUMN {{.Schema}}.device_activity.revision IS 'Version of the row; rises on every update.';
COMMENT ON COLUMN {{.Schema}}.device_activity.updated_at IS 'When the sink last wrote the row.';

CREATE TABLE IF NOT EXISTS {{.Schema}}.sink_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      int         NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

COMMENT ON TABLE {{.Schema}}.sink_offsets IS
    'Kafka offsets of the timescale sink, written in the same transaction as the rows they cover: this, not Kafka''s committed offset, is where the sink resumes (exactly once). Do not edit while the sink runs.';
COMMENT ON COLUMN {{.Schema}}.sink_offsets.consumer_group IS 'Kafka consumer group of the sink.';
COMMENT ON COLUMN {{.Schema}}.sink_offsets.topic IS 'Kafka topic.';
COMMENT ON COLUMN {{.Schema}}.sink_offsets.partition IS 'Kafka partition.';
COMMENT ON COLUMN {{.Schema}}.sink_offsets.next_offset IS 'Offset of the next record to consume (last written + 1).';
COMMENT ON COLUMN {{.Schema}}.sink_offsets.updated_at IS 'When the offset was last written.';
