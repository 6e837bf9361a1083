-- device_activity gains seq_resets (issue 13): messages that reused the seq
-- of another message of the window with a different event time, i.e. the
-- device restarted its counter. They are new readings, counted in messages,
-- not duplicates. Rows written before this migration read 0.
ALTER TABLE {{.Schema}}.device_activity ADD COLUMN IF NOT EXISTS seq_resets bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN {{.Schema}}.device_activity.seq_resets IS 'Messages that reused the seq of another message of the window with a different event time (the device restarted its counter): counted in messages, not duplicates.';
COMMENT ON COLUMN {{.Schema}}.device_activity.duplicates IS 'Messages dropped as duplicates: same event time and seq (or same event time without seq) as a message already counted.';
COMMENT ON COLUMN {{.Schema}}.device_activity.late IS 'Readings for the window that arrived after it closed for good for this device (older than the device''s own watermark allows); sent to the DLQ as late.';
