-- 0012_alert_events_detail (both flavors): alert_events gets the rest of
-- what a telemetry.alerts v1 record carries (schemas.Alert: kind,
-- statistic, operator, recipients) and where the TimescaleDB sink read it
-- (topic, partition, offset of its first delivery), an index for
-- fleet-wide time ranges (Grafana's alert panel and annotations), and
-- alerts_active shows the new columns.
--
-- alert_events stays an ordinary table on the TimescaleDB flavor too: its
-- exactly-once key is the event id alone (ON CONFLICT (event_id) in the
-- sink), and a hypertable can only enforce uniqueness on keys that include
-- the time column. Alert events are one row per threshold crossing, far
-- fewer than readings, so a hypertable's chunking buys nothing here.

ALTER TABLE {{.Schema}}.alert_events
    ADD COLUMN IF NOT EXISTS kind         text    NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS statistic    text    NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS operator     text    NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS recipients   text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS source_topic     text,
    ADD COLUMN IF NOT EXISTS source_partition integer,
    ADD COLUMN IF NOT EXISTS source_offset    bigint;

CREATE INDEX IF NOT EXISTS alert_events_time_idx ON {{.Schema}}.alert_events (event_time DESC);

-- Same definition as 0010 with kind, statistic and operator appended (a
-- view can only gain columns at the end).
CREATE OR REPLACE VIEW {{.Schema}}.alerts_active AS
    SELECT event_id, rule_id, rule_version, device_id, metric, severity, value, threshold,
           event_time AS fired_at, message, kind, statistic, operator
    FROM (
        SELECT DISTINCT ON (rule_id, device_id, metric) *
        FROM {{.Schema}}.alert_events
        ORDER BY rule_id, device_id, metric, event_time DESC, state DESC
    ) latest
    WHERE state = 'FIRING';

COMMENT ON COLUMN {{.Schema}}.alert_events.kind IS 'The rule''s kind: reading, window or no_data ('''' for rows stored before migration 0012)';
COMMENT ON COLUMN {{.Schema}}.alert_events.statistic IS 'Window rules: the statistic compared (mean, p95, ...)';
COMMENT ON COLUMN {{.Schema}}.alert_events.operator IS 'The rule''s operator: >, >=, <, <= ('''' for no_data)';
COMMENT ON COLUMN {{.Schema}}.alert_events.recipients IS 'The rule''s recipients when the event was made';
COMMENT ON COLUMN {{.Schema}}.alert_events.source_topic IS 'Kafka topic, partition and offset the sink stored the event from (the first delivery; repeats are dropped)';
