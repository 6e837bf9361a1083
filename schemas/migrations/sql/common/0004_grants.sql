-- 0004_grants (both flavors): privileges of the two group roles (created
-- NOLOGIN by Apply if missing). Grant them to login roles:
--   GRANT iotpipe_writer TO iotpipe_sink;  GRANT iotpipe_reader TO grafana;
-- Later migrations grant the writer what it needs on the tables they add;
-- the reader gets SELECT on future tables and views through the default
-- privileges below (which apply to objects created by the role running the
-- migrations).

GRANT USAGE ON SCHEMA {{.Schema}} TO {{.Writer}}, {{.Reader}};

-- The timescale sink: append readings, upsert windows, and keep its Kafka
-- offsets. SELECT on schema_migrations lets it check the schema version.
GRANT SELECT, INSERT, UPDATE ON
    {{.Schema}}.readings, {{.Schema}}.device_metrics, {{.Schema}}.device_activity
    TO {{.Writer}};
GRANT SELECT, INSERT, UPDATE, DELETE ON {{.Schema}}.sink_offsets TO {{.Writer}};
GRANT SELECT ON {{.Schema}}.schema_migrations TO {{.Writer}};

-- Grafana and analysts: read everything, now and later.
GRANT SELECT ON ALL TABLES IN SCHEMA {{.Schema}} TO {{.Reader}};
ALTER DEFAULT PRIVILEGES IN SCHEMA {{.Schema}} GRANT SELECT ON TABLES TO {{.Reader}};
