-- device_activity gains ignored_fields (issue 13): payload fields the bridge
-- ignored (non-numeric top-level members, members beside a "metrics"
-- object), summed over the window's accepted messages. A duplicate (a device
-- re-send or an MQTT redelivery) adds nothing, so each device message counts
-- once. Rows written before this migration, and by processors before it,
-- read 0.
ALTER TABLE {{.Schema}}.device_activity ADD COLUMN IF NOT EXISTS ignored_fields bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN {{.Schema}}.device_activity.ignored_fields IS 'Payload fields the bridge ignored (non-numeric top-level members such as strings, booleans, nulls, objects, arrays; members beside a "metrics" object), summed over the messages counted in messages: a duplicate (device re-send or MQTT redelivery) or a late message adds nothing, so each device message counts once. By reason: the bridge''s iotpipe_bridge_ignored_fields_total. 0 for windows processed before the processor counted them.';
