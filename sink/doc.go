// Package sink groups iotpipe's sinks: the stages that consume
// telemetry.readings (the processor's accepted readings) and
// telemetry.metrics and write them to a store. It holds
// no code of its own (yet): each sink is a stage package of its own,
// sink/lake (Parquet files in S3-compatible storage) and sink/timescale
// (TimescaleDB or PostgreSQL). Shared consumer plumbing that both need
// belongs here; sinks never import each other.
//
// # The contract every sink keeps
//
//   - Exactly once: every valid record of the topics it reads is in its
//     store exactly once, across SIGKILL at any moment, consumer-group
//     rebalances and restarts. The offsets a sink trusts on restart are
//     moved atomically with, or strictly after, the durable write of the
//     records before them, and a replay of a range already written
//     produces no second copy. sink/lake: a write-ahead intent per batch
//     and Kafka offsets committed only after the batch's objects are
//     stored, the range cut again exactly on replay so the same keys are
//     overwritten. sink/timescale: the offsets live in the database
//     (sink_offsets) and move in the same transaction as the rows.
//   - Window results: for each (device, metric, window start) the record
//     with the highest revision is the current one; revisions of a window
//     only rise, and the processor never commits one revision twice. A
//     sink never replaces a row by a lower or equal revision (TimescaleDB
//     upserts on revision; the lake keeps every revision, and readers take
//     the highest).
//   - read_committed: telemetry.metrics is written by a transactional
//     processor; aborted records are never read.
//   - Bad input never stops a sink and is never dropped silently: a record
//     that does not decode, or that the store refuses for good, goes to
//     telemetry.dlq with its reason and its source topic/partition/offset,
//     acknowledged by Kafka before the batch that moves past it is
//     committed (a crash may repeat a dead letter, never lose one), and is
//     counted in a metric.
//   - Outages of the store lose nothing: the sink retries with jittered
//     backoff (internal/retry) and, meanwhile, stops fetching once its
//     bounded buffers are full.
//   - Clean shutdown: on SIGTERM the sink stops fetching, writes and
//     commits what it holds within its shutdown timeout (else leaves it
//     uncommitted, to be read again), leaves the group and exits 0.
//
// See sink/lake/doc.go and sink/timescale/doc.go for each mechanism, and
// ARCHITECTURE.md for how the sinks fit the pipeline.
package sink
