-- 0011_notify (both flavors): the notify stage's durable queue. A row of
-- notifications is one (alert event, recipient), inserted exactly once: in
-- the transaction that also moves the stage's Kafka offsets in
-- notify_offsets (as the TimescaleDB sink does with sink_offsets). Every
-- delivery attempt is recorded in notification_attempts. Written by the
-- writer role ({{.Writer}}: iotpipe notify), readable by the reader role.

CREATE TABLE IF NOT EXISTS {{.Schema}}.notifications (
    event_id        text        NOT NULL,
    recipient       text        NOT NULL,
    -- Enqueue order (the Kafka order of each partition): a recipient's
    -- notifications are sent in this order, so a device's FIRING precedes
    -- its RESOLVED.
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    channel         text        NOT NULL CHECK (channel IN ('webhook', 'ntfy', 'email', 'mqtt')),
    alert           jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    message_id      text,
    last_error      text,
    PRIMARY KEY (event_id, recipient)
);
CREATE INDEX IF NOT EXISTS notifications_due_idx ON {{.Schema}}.notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_recipient_idx ON {{.Schema}}.notifications (recipient, seq) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS {{.Schema}}.notification_attempts (
    attempt_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text        NOT NULL,
    recipient   text        NOT NULL,
    event_ids   text[]      NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms integer     NOT NULL,
    ok          boolean     NOT NULL,
    error       text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notification_attempts_recipient_idx ON {{.Schema}}.notification_attempts (recipient, started_at);

CREATE TABLE IF NOT EXISTS {{.Schema}}.notify_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      int         NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

COMMENT ON TABLE {{.Schema}}.notifications IS 'One row per (alert event, recipient), enqueued exactly once by iotpipe notify; delivered at least once';
COMMENT ON COLUMN {{.Schema}}.notifications.event_id IS 'The alert event (telemetry.alerts event_id)';
COMMENT ON COLUMN {{.Schema}}.notifications.recipient IS 'channel:target, as in alert_rules.recipients';
COMMENT ON COLUMN {{.Schema}}.notifications.alert IS 'The alert record as received';
COMMENT ON COLUMN {{.Schema}}.notifications.state IS 'pending: to deliver; delivered; failed: undeliverable after the retry budget';
COMMENT ON COLUMN {{.Schema}}.notifications.attempts IS 'Delivery attempts so far';
COMMENT ON COLUMN {{.Schema}}.notifications.next_attempt_at IS 'Earliest time of the next attempt (exponential backoff)';
COMMENT ON COLUMN {{.Schema}}.notifications.message_id IS 'Id of the message that delivered it: the event id, or a digest id when grouped';
COMMENT ON TABLE {{.Schema}}.notification_attempts IS 'Every delivery attempt of iotpipe notify, successful or not';
COMMENT ON TABLE {{.Schema}}.notify_offsets IS 'Kafka offsets of iotpipe notify, written in the same transaction as the notifications they enqueue';

GRANT SELECT, INSERT, UPDATE ON {{.Schema}}.notifications, {{.Schema}}.notify_offsets TO {{.Writer}};
GRANT SELECT, INSERT ON {{.Schema}}.notification_attempts TO {{.Writer}};
GRANT SELECT ON {{.Schema}}.notifications, {{.Schema}}.notification_attempts, {{.Schema}}.notify_offsets TO {{.Reader}};
