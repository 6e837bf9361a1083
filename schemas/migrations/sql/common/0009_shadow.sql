-- 0009_shadow (both flavors): device shadows, the outbox towards devices,
-- the API's bearer tokens and the shadow consumer's Kafka offsets (issue
-- 16). Written by the registry role ({{.Registry}}): iotpipe api and the
-- shadow consumer connect as members of it. PostgreSQL is the source of
-- truth of a shadow; MQTT messages to devices are derived from the outbox,
-- which is written in the same transaction as the change it announces.

CREATE TABLE IF NOT EXISTS {{.Schema}}.device_shadows (
    device_id  text        PRIMARY KEY REFERENCES {{.Schema}}.devices (device_id) ON DELETE CASCADE,
    desired    jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(desired) = 'object'),
    reported   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(reported) = 'object'),
    -- {"desired": {...}, "reported": {...}}: the same tree as the documents
    -- with, at every leaf, {"timestamp": <unix seconds>} of its last change.
    metadata   jsonb       NOT NULL DEFAULT '{"desired":{},"reported":{}}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    -- Rises by one on every change of desired or reported (set by the
    -- writer, checked against If-Match and a report's expected version).
    version    bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    desired_at  timestamptz,
    reported_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages to publish over MQTT, in id order per device. The relay deletes
-- a row once the broker acknowledged it (PUBACK): at least once.
CREATE TABLE IF NOT EXISTS {{.Schema}}.shadow_outbox (
    id         bigserial   PRIMARY KEY,
    device_id  text        NOT NULL,
    topic      text        NOT NULL,
    payload    bytea       NOT NULL,
    retain     boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shadow_outbox_device_idx ON {{.Schema}}.shadow_outbox (device_id, id);

-- Bearer tokens of the API: only the SHA-256 of the secret is stored.
CREATE TABLE IF NOT EXISTS {{.Schema}}.api_tokens (
    token_id     text        PRIMARY KEY CHECK (token_id ~ '^[a-z0-9]{8,32}$'),
    name         text        NOT NULL DEFAULT '',
    role         text        NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Kafka offsets of the shadow consumer, written in the same transaction as
-- the reports they cover (exactly once), as sink_offsets is for the sink.
CREATE TABLE IF NOT EXISTS {{.Schema}}.shadow_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- The relay sleeps on this channel (payload: the schema) between polls.
CREATE OR REPLACE FUNCTION {{.Schema}}.shadow_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotpipe_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER shadow_outbox_notify AFTER INSERT ON {{.Schema}}.shadow_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {{.Schema}}.shadow_outbox_notify();

COMMENT ON TABLE {{.Schema}}.device_shadows IS 'Device shadows: desired and reported state, per-key change times and a version that only rises';
COMMENT ON COLUMN {{.Schema}}.device_shadows.device_id IS 'The device';
COMMENT ON COLUMN {{.Schema}}.device_shadows.desired IS 'Desired state (JSON object), written through the API with JSON merge patches';
COMMENT ON COLUMN {{.Schema}}.device_shadows.reported IS 'Reported state (JSON object), written by the device through devices/<id>/shadow/update';
COMMENT ON COLUMN {{.Schema}}.device_shadows.metadata IS 'Per-key change times: {"desired": tree, "reported": tree}, each leaf {"timestamp": unix seconds}';
COMMENT ON COLUMN {{.Schema}}.device_shadows.version IS 'Rises by one on every change; the API ETag and a report''s expected version';
COMMENT ON COLUMN {{.Schema}}.device_shadows.desired_at IS 'Last change of desired';
COMMENT ON COLUMN {{.Schema}}.device_shadows.reported_at IS 'Last change of reported (last sync from the device)';
COMMENT ON COLUMN {{.Schema}}.device_shadows.updated_at IS 'Last change of the row';
COMMENT ON TABLE {{.Schema}}.shadow_outbox IS 'MQTT messages to devices, written with the shadow change they announce; deleted by the relay after PUBACK';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.id IS 'Publication order';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.device_id IS 'The device the message is for';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.topic IS 'MQTT topic';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.payload IS 'Message payload (JSON; empty clears a retained message)';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.retain IS 'Publish with the retain flag';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.version IS 'Shadow version the message carries';
COMMENT ON COLUMN {{.Schema}}.shadow_outbox.created_at IS 'When the change was committed';
COMMENT ON TABLE {{.Schema}}.api_tokens IS 'Bearer tokens of iotpipe api; the secret itself is never stored';
COMMENT ON COLUMN {{.Schema}}.api_tokens.token_id IS 'Public part of the token (iotp_<token_id>_<secret>)';
COMMENT ON COLUMN {{.Schema}}.api_tokens.name IS 'What the token is for';
COMMENT ON COLUMN {{.Schema}}.api_tokens.role IS 'admin, operator or viewer';
COMMENT ON COLUMN {{.Schema}}.api_tokens.secret_hash IS 'SHA-256 of the secret part';
COMMENT ON COLUMN {{.Schema}}.api_tokens.created_at IS 'When it was created';
COMMENT ON COLUMN {{.Schema}}.api_tokens.expires_at IS 'Refused after this time; NULL: no expiry';
COMMENT ON COLUMN {{.Schema}}.api_tokens.revoked_at IS 'Refused since this time; NULL while valid';
COMMENT ON COLUMN {{.Schema}}.api_tokens.last_used_at IS 'Last successful authentication (updated at most once a minute)';
COMMENT ON TABLE {{.Schema}}.shadow_offsets IS 'Kafka offsets of the shadow consumer, written in the same transaction as the reports they cover';
COMMENT ON COLUMN {{.Schema}}.shadow_offsets.consumer_group IS 'Kafka consumer group';
COMMENT ON COLUMN {{.Schema}}.shadow_offsets.topic IS 'Kafka topic';
COMMENT ON COLUMN {{.Schema}}.shadow_offsets.partition IS 'Kafka partition';
COMMENT ON COLUMN {{.Schema}}.shadow_offsets.next_offset IS 'Offset of the next record to consume';
COMMENT ON COLUMN {{.Schema}}.shadow_offsets.updated_at IS 'When it was last written';

GRANT SELECT, INSERT, UPDATE, DELETE ON
    {{.Schema}}.device_shadows, {{.Schema}}.shadow_outbox,
    {{.Schema}}.api_tokens, {{.Schema}}.shadow_offsets
    TO {{.Registry}};
GRANT USAGE ON SEQUENCE {{.Schema}}.shadow_outbox_id_seq TO {{.Registry}};
-- Grafana's device detail shows the shadow.
GRANT SELECT ON {{.Schema}}.device_shadows TO {{.Reader}};
