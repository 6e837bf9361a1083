-- 0002_policies (TimescaleDB): background jobs that compress and drop old
-- chunks. The intervals come from Options (ReadingsRetention,
-- MetricsRetention, CompressAfter); a zero option means no policy. They are
-- fixed when this migration runs: change them later with
-- remove_*_policy / add_*_policy (see package doc).
{{with .CompressAfter}}
SELECT add_compression_policy({{$.Rel "readings"}}, compress_after => {{.}}, if_not_exists => true);
{{- end}}
{{with .ReadingsRetention}}
SELECT add_retention_policy({{$.Rel "readings"}}, drop_after => {{.}}, if_not_exists => true);
{{- end}}
{{with .MetricsRetention}}
-- Dropping device_metrics chunks does not remove the rollups' materialized
-- buckets: the 1 h / 1 d rollups outlive the windows they summarize.
SELECT add_retention_policy({{$.Rel "device_metrics"}}, drop_after => {{.}}, if_not_exists => true);
SELECT add_retention_policy({{$.Rel "device_activity"}}, drop_after => {{.}}, if_not_exists => true);
{{- end}}
