-- 0010_alerts (both flavors): threshold alert rules, the alert events the
-- alert stage emits (written by the TimescaleDB sink, unique on event_id)
-- and the alerts_active view. Rules are written by the registry role
-- ({{.Registry}}: iotpipe alerts rules ..., later the API) and read by the
-- writer role (the alert and notify stages). The constraints repeat the
-- checks of package alerting/rules, so a rule written by hand cannot be one the
-- stage cannot evaluate. Every change to alert_rules sends NOTIFY
-- iotpipe_alert_rules with the schema name as payload.

CREATE TABLE IF NOT EXISTS {{.Schema}}.alert_rules (
    rule_id           text             PRIMARY KEY
                      CHECK (rule_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    description       text             NOT NULL DEFAULT '',
    kind              text             NOT NULL DEFAULT 'reading'
                      CHECK (kind IN ('reading', 'window', 'no_data')),
    scope             text             NOT NULL DEFAULT 'all'
                      CHECK (scope IN ('device', 'group', 'all')),
    scope_id          text             NOT NULL DEFAULT ''
                      CHECK ((scope = 'all') = (scope_id = '')),
    metric            text             NOT NULL DEFAULT ''
                      CHECK ((kind = 'no_data') = (metric = '') AND length(metric) <= 128),
    statistic         text             NOT NULL DEFAULT ''
                      CHECK ((kind = 'window') = (statistic IN ('mean', 'min', 'max', 'p50', 'p95', 'p99'))
                             AND (kind = 'window' OR statistic = '')),
    operator          text             NOT NULL DEFAULT ''
                      CHECK ((kind = 'no_data' AND operator = '') OR (kind <> 'no_data' AND operator IN ('>', '>=', '<', '<='))),
    trigger_threshold double precision NOT NULL DEFAULT 0
                      CHECK (trigger_threshold NOT IN ('NaN', 'Infinity', '-Infinity')),
    clear_threshold   double precision NOT NULL DEFAULT 0
                      CHECK (clear_threshold NOT IN ('NaN', 'Infinity', '-Infinity')),
    for_count         integer          NOT NULL DEFAULT 1 CHECK (for_count >= 1),
    for_duration_ms   bigint           NOT NULL DEFAULT 0 CHECK (for_duration_ms >= 0),
    silence_ms        bigint           NOT NULL DEFAULT 0
                      CHECK ((kind = 'no_data') = (silence_ms > 0)),
    severity          text             NOT NULL DEFAULT 'warning'
                      CHECK (severity IN ('info', 'warning', 'critical')),
    recipients        text[]           NOT NULL DEFAULT '{}',
    enabled           boolean          NOT NULL DEFAULT true,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    -- Rises by one on every UPDATE (trigger below): optimistic concurrency.
    version           bigint           NOT NULL DEFAULT 1,
    -- Hysteresis: the clear threshold is on the safe side of the trigger.
    CONSTRAINT alert_rules_hysteresis CHECK (
        kind = 'no_data'
        OR (operator IN ('>', '>=') AND clear_threshold <= trigger_threshold)
        OR (operator IN ('<', '<=') AND clear_threshold >= trigger_threshold))
);
CREATE INDEX IF NOT EXISTS alert_rules_metric_idx ON {{.Schema}}.alert_rules (metric) WHERE enabled;

CREATE TABLE IF NOT EXISTS {{.Schema}}.alert_events (
    event_id        text             PRIMARY KEY,
    rule_id         text             NOT NULL,
    rule_version    bigint           NOT NULL,
    device_id       text             NOT NULL,
    metric          text             NOT NULL DEFAULT '',
    state           text             NOT NULL CHECK (state IN ('FIRING', 'RESOLVED')),
    severity        text             NOT NULL,
    value           double precision,
    threshold       double precision,
    event_time      timestamptz      NOT NULL,
    fired_event_id  text,
    message         text             NOT NULL DEFAULT '',
    stored_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_events_series_idx ON {{.Schema}}.alert_events (rule_id, device_id, metric, event_time DESC);
CREATE INDEX IF NOT EXISTS alert_events_device_time_idx ON {{.Schema}}.alert_events (device_id, event_time DESC);

-- The newest event of each (rule, device, metric) series, when it is FIRING.
CREATE OR REPLACE VIEW {{.Schema}}.alerts_active AS
    SELECT event_id, rule_id, rule_version, device_id, metric, severity, value, threshold,
           event_time AS fired_at, message
    FROM (
        SELECT DISTINCT ON (rule_id, device_id, metric) *
        FROM {{.Schema}}.alert_events
        ORDER BY rule_id, device_id, metric, event_time DESC, state DESC
    ) latest
    WHERE state = 'FIRING';

COMMENT ON TABLE {{.Schema}}.alert_rules IS 'Threshold alert rules evaluated by the alert stage; written by iotpipe alerts rules and the API';
COMMENT ON COLUMN {{.Schema}}.alert_rules.rule_id IS 'Rule id (1-128 of A-Z a-z 0-9 . _ : -)';
COMMENT ON COLUMN {{.Schema}}.alert_rules.kind IS 'reading: each reading of the metric; window: a statistic of telemetry.metrics windows; no_data: the device silent for silence_ms of event time';
COMMENT ON COLUMN {{.Schema}}.alert_rules.scope IS 'device: the device scope_id; group: the devices of group scope_id; all: every device';
COMMENT ON COLUMN {{.Schema}}.alert_rules.scope_id IS 'The device or group id; empty for scope all';
COMMENT ON COLUMN {{.Schema}}.alert_rules.metric IS 'Measurement name; empty for no_data rules';
COMMENT ON COLUMN {{.Schema}}.alert_rules.statistic IS 'Window rules: mean, min, max, p50, p95 or p99 of the window; empty otherwise';
COMMENT ON COLUMN {{.Schema}}.alert_rules.operator IS 'The condition value <op> trigger_threshold: >, >=, <, <=';
COMMENT ON COLUMN {{.Schema}}.alert_rules.trigger_threshold IS 'The alert fires when the condition holds (for for_count readings and for_duration_ms of event time)';
COMMENT ON COLUMN {{.Schema}}.alert_rules.clear_threshold IS 'The alert resolves when the value is back past this (hysteresis): at or below it for > and >=, at or above it for < and <=';
COMMENT ON COLUMN {{.Schema}}.alert_rules.for_count IS 'Consecutive readings over the threshold before firing';
COMMENT ON COLUMN {{.Schema}}.alert_rules.for_duration_ms IS 'Event time the condition must hold before firing, in milliseconds';
COMMENT ON COLUMN {{.Schema}}.alert_rules.silence_ms IS 'no_data rules: event-time silence that fires, in milliseconds';
COMMENT ON COLUMN {{.Schema}}.alert_rules.severity IS 'info, warning or critical';
COMMENT ON COLUMN {{.Schema}}.alert_rules.recipients IS 'Where notifications go: webhook:<url>, ntfy:<topic>, email:<address>, mqtt:<topic>';
COMMENT ON COLUMN {{.Schema}}.alert_rules.enabled IS 'Disabled rules are not evaluated';
COMMENT ON COLUMN {{.Schema}}.alert_rules.version IS 'Rises by one on every change (set by trigger), for optimistic concurrency';
COMMENT ON TABLE {{.Schema}}.alert_events IS 'FIRING and RESOLVED events from telemetry.alerts, once each (unique event_id)';
COMMENT ON COLUMN {{.Schema}}.alert_events.event_id IS 'Deterministic event id: the same crossing always has the same id';
COMMENT ON COLUMN {{.Schema}}.alert_events.fired_event_id IS 'RESOLVED events: the event id of the FIRING they close';
COMMENT ON COLUMN {{.Schema}}.alert_events.event_time IS 'Event time of the reading (or window end) that caused the transition';
COMMENT ON VIEW {{.Schema}}.alerts_active IS 'Alerts firing now: per (rule, device, metric), the newest event when it is FIRING';

CREATE OR REPLACE TRIGGER alert_rules_touch BEFORE UPDATE ON {{.Schema}}.alert_rules
    FOR EACH ROW EXECUTE FUNCTION {{.Schema}}.registry_touch();

CREATE OR REPLACE FUNCTION {{.Schema}}.alert_rules_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotpipe_alert_rules', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER alert_rules_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {{.Schema}}.alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION {{.Schema}}.alert_rules_notify();

GRANT SELECT, INSERT, UPDATE, DELETE ON {{.Schema}}.alert_rules TO {{.Registry}};
GRANT SELECT ON {{.Schema}}.alert_events, {{.Schema}}.alerts_active TO {{.Registry}};
GRANT SELECT ON {{.Schema}}.alert_rules TO {{.Writer}};
GRANT SELECT, INSERT ON {{.Schema}}.alert_events TO {{.Writer}};
GRANT SELECT ON {{.Schema}}.alerts_active TO {{.Writer}};
GRANT SELECT ON {{.Schema}}.alert_rules, {{.Schema}}.alert_events, {{.Schema}}.alerts_active TO {{.Reader}};
