// Package lake is the lake sink: it consumes telemetry.readings (the
// processor's accepted readings, each device message once) and
// telemetry.metrics and writes them as Parquet files to S3-compatible
// storage, exactly once.
//
// # Datasets and files
//
// telemetry.readings becomes the readings dataset (one narrow row per
// measurement: time, device_id, metric, value, seq, received_at, tags, and
// the Kafka partition and offset of the record, for lineage). Its records
// are telemetry.raw records the processor accepted, copied unchanged, so the
// dataset counts the same readings as the metrics (a device re-send or MQTT
// redelivery once, late readings not at all: they are in the DLQ). Config
// RawTopic may name telemetry.raw instead, to store every raw record,
// duplicates included.
// telemetry.metrics becomes two datasets, because its two record kinds have
// different columns and different readers: metrics (one row per window
// aggregate, see MetricsSchema) and activity (one row per device window,
// see ActivitySchema). Keys are Hive-style by event date and hour (window
// start for metrics and activity), which DuckDB, Spark and Athena prune on:
//
//	<prefix><dataset>/date=2026-11-27/hour=14/<topic>+<partition>+<startoffset>.parquet
//
// Files are Parquet written with arrow-go's pqarrow: zstd, timestamps as
// TIMESTAMP(MICROS, isAdjustedToUTC=true), dictionary-encoded device_id,
// metric and tags, delta-encoded timestamps and integers, byte-stream-split
// floats, row groups of Config.RowGroupRows rows (256Ki by default: a few
// MB compressed, the unit readers parallelise and prune statistics on).
//
// # Batches
//
// Each partition's records are cut into batches: contiguous offset ranges
// [start, end). A batch becomes one file per (dataset, event hour) of its
// rows, all named after start. A batch closes when it holds MaxRows rows or
// MaxBytes bytes (busy partitions get big files), or MaxAge after its first
// record (a quiet partition's rows reach the lake within MaxAge plus the
// upload). A closed batch is uploaded, and only then is end committed as the
// partition's offset: offsets are only ever committed at batch ends.
//
// # Exactly once
//
// The union of the lake's objects holds every valid input record exactly
// once, whatever moment the sink dies. The problem is the batch that was
// being uploaded when the sink died: some or all of its objects may exist
// while its offsets are not committed, so a new run reads the same records
// again; if it cut them differently (age-based closing depends on the wall
// clock) it would write them again under other keys. The sink solves this
// with a write-ahead intent per batch:
//
//  1. Before any object of a batch is stored, an intent object
//     <prefix>_intents/<topic>/<partition>/<start>.json records the batch's
//     range [start, end) and its object keys.
//  2. The objects are stored (PutObject; multipart above PartSize).
//  3. end is committed to the consumer group (CommitOffsetsSync).
//  4. The intent is deleted (best effort).
//
// When a partition is assigned, before it is consumed, the sink reads the
// group's committed offset C and the partition's intents. An intent with
// end <= C belongs to a committed batch and is deleted (a crash between 3
// and 4). The intent with end > C is the batch that was in flight (a crash
// between 1 and 3, including during an upload or between upload and
// commit); since a partition uploads one batch at a time there is at most
// one. The sink then cuts exactly that range again: the new batch starts at
// the intent's start and ends after the record at end-1, whatever the
// limits and the clock say. The same records in the same order produce the
// same rows in the same files under the same keys, so the objects of the
// interrupted upload are overwritten, not duplicated; a key of the earlier
// cut that the new cut does not produce is deleted. A crash before step 1
// leaves no object at all. S3 PUTs are atomic (an object is either absent
// or whole), so a crash during a PUT leaves nothing partial; even a PUT of a
// killed process that lands late writes the same bytes as the replay.
//
// The consumer uses read_committed isolation (telemetry.metrics is written
// by a transactional processor) and BlockRebalanceOnPoll; on revocation the
// open batch is flushed and committed within half the rebalance timeout,
// then the partition's uploader is cancelled and waited for, so that no
// commit for a partition happens after it is handed over. A member that is
// cut off from Kafka but not from S3 (a zombie past its session timeout)
// could still store objects; its commit then fails, and its intent makes
// the new owner replay the same range to the same keys.
//
// With Config.InstanceID the member is static (KIP-345): a sink restarted
// after a crash takes its partitions back at once instead of after the
// session timeout; the recovery above runs all the same.
//
// Records that do not decode go to the DLQ topic with reason invalid_record
// and the source topic/partition/offset, produced and acknowledged before
// the batch containing them is committed (at least once: a crash may
// repeat a dead letter, never lose one).
//
// # Backpressure and shutdown
//
// Failed S3 operations and commits are retried with jittered exponential
// backoff (RetryMin … RetryMax) until they succeed. Sealed batches waiting
// for upload may hold at most MaxBuffered bytes; beyond that consumption waits,
// so an S3 outage stops the sink with bounded memory and loses nothing.
// Memory is bounded by about (assigned partitions × MaxBytes) for open
// batches plus MaxBuffered for sealed ones.
// Run returns on cancellation after a clean shutdown: open batches are
// sealed, uploaded and committed within ShutdownTimeout, then the group is
// left; what does not make it stays uncommitted and is read again.
package lake
