-- 0006_registry (both flavors): the device registry. A device's id is its
-- MQTT topic level and the CN of its client certificate; the broker's ACL
-- binds the two. Written by the registry role ({{.Registry}}: iotpipe
-- devices ..., later the API); readable by the reader role (Grafana
-- variables). Every change to devices, device_certificates or groups sends
-- NOTIFY iotpipe_registry with the schema name as payload, so a bridge with
-- --require-registered refreshes its set without polling each message.

CREATE TABLE IF NOT EXISTS {{.Schema}}.devices (
    device_id      text        PRIMARY KEY
                   CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    display_name   text        NOT NULL DEFAULT '',
    device_type    text        NOT NULL DEFAULT '',
    attributes     jsonb       NOT NULL DEFAULT '{}'::jsonb
                   CHECK (jsonb_typeof(attributes) = 'object'),
    status         text        NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'disabled', 'revoked')),
    -- The current certificate (the latest issued); history in device_certificates.
    cert_serial    text,
    cert_not_after timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Rises by one on every UPDATE (trigger below): optimistic concurrency.
    version        bigint      NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS devices_attributes_idx ON {{.Schema}}.devices USING gin (attributes jsonb_path_ops);
CREATE INDEX IF NOT EXISTS devices_status_idx ON {{.Schema}}.devices (status);

-- Every certificate ever issued, so that a revocation names each one and the
-- CRL lists them all (a device re-issued keeps its old serials here).
CREATE TABLE IF NOT EXISTS {{.Schema}}.device_certificates (
    serial     text        PRIMARY KEY CHECK (serial ~ '^[0-9a-f]+$'),
    device_id  text        NOT NULL REFERENCES {{.Schema}}.devices (device_id) ON DELETE CASCADE,
    not_before timestamptz NOT NULL,
    not_after  timestamptz NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS device_certificates_device_idx ON {{.Schema}}.device_certificates (device_id);

CREATE TABLE IF NOT EXISTS {{.Schema}}.device_groups (
    group_id     text        PRIMARY KEY CHECK (group_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    parent_id    text        REFERENCES {{.Schema}}.device_groups (group_id) ON DELETE RESTRICT
                             CHECK (parent_id <> group_id),
    display_name text        NOT NULL DEFAULT '',
    attributes   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      bigint      NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS device_groups_parent_idx ON {{.Schema}}.device_groups (parent_id);

CREATE TABLE IF NOT EXISTS {{.Schema}}.device_group_members (
    group_id  text        NOT NULL REFERENCES {{.Schema}}.device_groups (group_id) ON DELETE CASCADE,
    device_id text        NOT NULL REFERENCES {{.Schema}}.devices (device_id) ON DELETE CASCADE,
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX IF NOT EXISTS device_group_members_device_idx ON {{.Schema}}.device_group_members (device_id);

-- When each device was last seen, from the processor's activity windows.
CREATE OR REPLACE VIEW {{.Schema}}.device_last_seen AS
    SELECT device_id, max(last_seen) AS last_seen
    FROM {{.Schema}}.device_activity
    GROUP BY device_id;

COMMENT ON TABLE {{.Schema}}.devices IS 'The device registry: one row per device; device_id is the MQTT topic level and the client certificate CN';
COMMENT ON COLUMN {{.Schema}}.devices.device_id IS 'Device id: MQTT topic level, certificate CN and Kafka key (1-128 of A-Z a-z 0-9 . _ : -)';
COMMENT ON COLUMN {{.Schema}}.devices.display_name IS 'Human-readable name';
COMMENT ON COLUMN {{.Schema}}.devices.device_type IS 'Free-form device type (model, kind)';
COMMENT ON COLUMN {{.Schema}}.devices.attributes IS 'Free-form attributes, a JSON object; GIN-indexed for attributes @> ''{"k":"v"}'' searches';
COMMENT ON COLUMN {{.Schema}}.devices.status IS 'active: may connect and publish; disabled: refused by the broker ACL and by bridge --require-registered, reversible; revoked: its certificates are in the CRL, final';
COMMENT ON COLUMN {{.Schema}}.devices.cert_serial IS 'Serial (lower-case hex) of the latest client certificate issued to the device';
COMMENT ON COLUMN {{.Schema}}.devices.cert_not_after IS 'Expiry of that certificate';
COMMENT ON COLUMN {{.Schema}}.devices.created_at IS 'When the device was registered';
COMMENT ON COLUMN {{.Schema}}.devices.updated_at IS 'Last change (set by trigger)';
COMMENT ON COLUMN {{.Schema}}.devices.version IS 'Rises by one on every change (set by trigger), for optimistic concurrency';
COMMENT ON TABLE {{.Schema}}.device_certificates IS 'Every client certificate issued to a device; revoked ones are listed in the CRL';
COMMENT ON COLUMN {{.Schema}}.device_certificates.serial IS 'Certificate serial number, lower-case hex';
COMMENT ON COLUMN {{.Schema}}.device_certificates.device_id IS 'The device (certificate CN)';
COMMENT ON COLUMN {{.Schema}}.device_certificates.not_before IS 'Start of validity';
COMMENT ON COLUMN {{.Schema}}.device_certificates.not_after IS 'End of validity';
COMMENT ON COLUMN {{.Schema}}.device_certificates.issued_at IS 'When it was issued';
COMMENT ON COLUMN {{.Schema}}.device_certificates.revoked_at IS 'When it was revoked; NULL while valid';
COMMENT ON TABLE {{.Schema}}.device_groups IS 'Device groups, nested through parent_id';
COMMENT ON COLUMN {{.Schema}}.device_groups.group_id IS 'Group id';
COMMENT ON COLUMN {{.Schema}}.device_groups.parent_id IS 'Enclosing group; NULL at the top';
COMMENT ON COLUMN {{.Schema}}.device_groups.display_name IS 'Human-readable name';
COMMENT ON COLUMN {{.Schema}}.device_groups.attributes IS 'Free-form attributes, a JSON object';
COMMENT ON COLUMN {{.Schema}}.device_groups.created_at IS 'When the group was created';
COMMENT ON COLUMN {{.Schema}}.device_groups.updated_at IS 'Last change (set by trigger)';
COMMENT ON COLUMN {{.Schema}}.device_groups.version IS 'Rises by one on every change (set by trigger)';
COMMENT ON TABLE {{.Schema}}.device_group_members IS 'Which devices are directly in which groups';
COMMENT ON COLUMN {{.Schema}}.device_group_members.group_id IS 'The group';
COMMENT ON COLUMN {{.Schema}}.device_group_members.device_id IS 'The device';
COMMENT ON COLUMN {{.Schema}}.device_group_members.added_at IS 'When the device joined the group';
COMMENT ON VIEW {{.Schema}}.device_last_seen IS 'Per device, the event time of its latest reading in device_activity';

-- version and updated_at follow every update.
CREATE OR REPLACE FUNCTION {{.Schema}}.registry_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER devices_touch BEFORE UPDATE ON {{.Schema}}.devices
    FOR EACH ROW EXECUTE FUNCTION {{.Schema}}.registry_touch();
CREATE OR REPLACE TRIGGER device_groups_touch BEFORE UPDATE ON {{.Schema}}.device_groups
    FOR EACH ROW EXECUTE FUNCTION {{.Schema}}.registry_touch();

CREATE OR REPLACE FUNCTION {{.Schema}}.registry_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('iotpipe_registry', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {{.Schema}}.devices
    FOR EACH STATEMENT EXECUTE FUNCTION {{.Schema}}.registry_notify();
CREATE OR REPLACE TRIGGER device_group_members_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {{.Schema}}.device_group_members
    FOR EACH STATEMENT EXECUTE FUNCTION {{.Schema}}.registry_notify();

GRANT USAGE ON SCHEMA {{.Schema}} TO {{.Registry}};
GRANT SELECT, INSERT, UPDATE, DELETE ON
    {{.Schema}}.devices, {{.Schema}}.device_certificates,
    {{.Schema}}.device_groups, {{.Schema}}.device_group_members
    TO {{.Registry}};
GRANT SELECT ON {{.Schema}}.device_last_seen, {{.Schema}}.device_activity, {{.Schema}}.schema_migrations
    TO {{.Registry}};
-- The bridge's --require-registered reads the registry as the writer role.
GRANT SELECT ON {{.Schema}}.devices TO {{.Writer}};
GRANT SELECT ON
    {{.Schema}}.devices, {{.Schema}}.device_certificates, {{.Schema}}.device_groups,
    {{.Schema}}.device_group_members, {{.Schema}}.device_last_seen
    TO {{.Reader}};
