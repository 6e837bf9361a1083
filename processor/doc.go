// Package processor turns telemetry.raw into telemetry.metrics: per device
// × metric, tumbling event-time windows with count, sum, min, max, mean,
// population standard deviation, first and last (by event time) and
// p50/p95/p99, plus a per-device activity record (messages, seq gaps, late
// readings, duplicates removed, first/last seen) — exactly once.
//
// # Windows and time
//
// Windows are [k·Size, (k+1)·Size), aligned to the Unix epoch. Each input
// partition has a watermark: the largest event time seen minus the allowed
// lateness; once the partition has received nothing for IdleTimeout it
// advances with the wall clock instead, so quiet devices and empty
// partitions still close their windows. A window is emitted when the
// watermark reaches its end; a reading that arrives later, while the
// watermark has not yet reached end+lateness, updates the window, which is
// emitted again with a higher revision; a reading after that goes to the
// DLQ with reason "late", is counted, and (for LateRetention) bumps the
// "late" counter of the window's activity record. A window's state is
// dropped when the watermark reaches end+lateness.
//
// # Aggregates
//
// The sum is exactly rounded (Shewchuk's partials, as Python's math.fsum),
// so it and the mean (sum/count) do not depend on arrival order; stddev is
// the population standard deviation from Welford's running update (order
// affects only the last bits); first/last are by event time, ties broken by
// seq. Quantiles come from a DDSketch (github.com/DataDog/sketches-go) with
// 1 % relative accuracy: p_q is within 1 % of the value of rank
// floor(q·(count−1)) of the window's sorted values.
//
// A reading's identity is (device, seq), or (device, event time) when it has
// no seq; within a window each identity counts once (an MQTT redelivery
// carries the same event time, so it always meets the original in its
// window). Seq gaps are counted within a window, in event-time order: a rise
// of seq by d > 1 counts d−1 missing messages, a fall (device restart)
// none.
//
// # Exactly once
//
// Every turn of the consume loop is one Kafka transaction
// (kgo.GroupTransactSession, read_committed input) that holds the metrics
// and DLQ records it produced, the input offsets, and the changelog records
// of every piece of window state that changed: the compacted changelog
// topic has a partition per input partition, keyed by window start and
// device (plus a "meta" key with the watermark), with a tombstone when a
// window is forgotten. On assignment a partition's state is read back from
// its changelog partition (read_committed, up to the end the log had when
// the restore began) before any of its input is processed. When a
// transaction does not commit, all in-memory state is discarded and
// restored the same way, so the state always matches the committed offsets.
// ARCHITECTURE.md at the repository root explains why nothing is lost or
// counted twice across SIGKILL, rebalances and zombie instances.
//
// # Memory
//
// State grows with the open device × metric × window aggregates only (the
// OpenKeys of an Engine; about BytesPerKeyEstimate bytes each at 1 Hz), plus
// a small activity summary per device window for LateRetention. At
// Config.MaxKeys the processor closes the oldest open windows early (their
// later readings are late: DLQ, counted).
package processor
