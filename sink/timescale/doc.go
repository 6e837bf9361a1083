// Package timescale is the TimescaleDB sink, `iotpipe sink timescale`: it
// consumes telemetry.readings — the processor's accepted readings, each
// device message once, so that the table counts the same readings as
// device_metrics (late readings are in neither: they are in the DLQ) — into
// the readings table (one row per measurement; can be switched off) and telemetry.metrics into device_metrics (window
// aggregates) and device_activity (per-device window activity), and
// telemetry.alerts (the alert stage's FIRING/RESOLVED events, can be
// switched off) into alert_events, on TimescaleDB or plain PostgreSQL ≥ 15,
// in the schema created by package migrations.
//
// # Guarantees
//
//   - Exactly once. Each batch is one database transaction that writes the
//     rows and moves the consumer group's offsets in sink_offsets. On every
//     partition assignment the Kafka consumer is positioned from
//     sink_offsets (kgo.AdjustFetchOffsetsFn, before any fetch), not from
//     Kafka's committed offsets, which are only written afterwards for lag
//     monitoring. Inside the transaction the stored offsets are read FOR
//     UPDATE, records below them are skipped (a replay never writes a
//     reading twice), and the offsets are moved with a compare-and-set, so
//     a zombie consumer that lost its partitions cannot commit overlapping
//     rows: its transaction fails with ErrConflict and is retried.
//   - One row per alert event: alert_events is keyed by the event id,
//     which the alert stage derives from the crossing, so the same
//     crossing produced twice (by a replay or by the stage) is stored once
//     (INSERT … ON CONFLICT (event_id) DO NOTHING, counted in
//     _alert_repeats_total). An alert record that does not decode or
//     validate (schemas.DecodeAlert) goes to the DLQ with reason
//     invalid_record and the decoder's error.
//   - Upserts never roll back: device_metrics and device_activity rows are
//     replaced only by a higher revision (ON CONFLICT … DO UPDATE … WHERE
//     revision < EXCLUDED.revision); an equal revision is a replay and
//     changes nothing. Within a batch only the highest revision of a key is
//     sent.
//   - Bad input never blocks a partition. A record that does not decode
//     goes to the dead-letter topic with reason invalid_record; rows the
//     database refuses (constraint violation, data exception, value out of
//     range: SQLSTATE classes 22, 23, 54) are isolated by bisecting the
//     batch in savepoints, and their records go to the DLQ with reason
//     db_rejected, with the source topic, partition and offset. DLQ records
//     are produced (acks=all) before the transaction that moves past them
//     commits; a crash in between may produce a dead letter twice, never
//     lose one.
//   - Outages lose nothing. Any other database error (connection refused
//     or lost, server restart, privilege) rolls the batch back and is
//     retried with jittered exponential backoff (RetryMin … RetryMax, so
//     two sinks do not retry in step); meanwhile the sink does not poll, so
//     fetching stops once the client's buffers are full, and it resumes by
//     itself when the database is back. /readyz fails while it retries.
//   - Clean shutdown: on cancel the sink stops polling, writes the batch it
//     holds within Config.ShutdownTimeout (else rolls it back: it is read
//     again on restart), leaves the group and Run returns nil.
//
// # Writing
//
// Readings are written with binary COPY (pgx CopyFrom). Metrics and
// activity are COPYed into per-connection temporary staging tables and
// moved with one INSERT … SELECT … ON CONFLICT each, in the same
// transaction. A batch closes at Config.BatchRows rows or
// Config.BatchDelay after its first record.
//
// # Metrics
//
// iotpipe_sink_timescale_rows_total{table}, _records_total{topic},
// _batch_rows, _commit_seconds, _retries_total{cause},
// _rejected_total{reason}, _replayed_skipped_total, _alert_repeats_total, _db_up and
// _consumer_lag_records{topic,partition} (internal/kafkax.Progress, with
// _consumer_lag_seconds and _stalled).
package timescale
