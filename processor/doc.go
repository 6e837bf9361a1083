// Package processor turns telemetry.raw into telemetry.metrics: per device
// × metric, tumbling event-time windows with count, sum, min, max, mean,
// population standard deviation, first and last (by event time) and
// p50/p95/p99, plus a per-device activity record (messages, seq gaps, seq
// resets, late readings, duplicates removed, ignored payload fields,
// first/last seen) — exactly once. It also copies every reading it accepts, once, to
// telemetry.readings, the topic the sinks store (see "One identity, every
// store").
//
// # Windows and time: event time per device
//
// Windows are [k·Size, (k+1)·Size), aligned to the Unix epoch, per device ×
// metric. Every device has its own clock: nothing another device sends
// moves it, so one device's fast clock, backlog or silence affects only its
// own windows.
//
//   - A device's watermark is the largest event time accepted from it minus
//     Lateness. Once the device has sent nothing for IdleTimeout (on the
//     idle clock, below), its watermark advances with that clock instead:
//     its largest event time plus the silence beyond IdleTimeout. No
//     watermark is ever ahead of the wall clock plus MaxFutureSkew (default
//     5m, as the bridge's --max-future-skew); a reading further ahead of the
//     processor's wall clock than that goes to the DLQ with reason
//     "timestamp_skew" and changes nothing.
//   - The idle clock: a device is silent only while the ingest path is
//     flowing. Every bridge writes a heartbeat to every partition of the
//     raw topic each second (schemas.Heartbeat: its instance id and a time
//     H, "every message I received before H is before this record"), and
//     writes none while its path may be stalled (MQTT down or frozen, its
//     in-flight slots half full, a produce outstanding: see the bridge's
//     heartbeat.go). Each partition's clock is the smallest latest H of the
//     bridges seen on it, leaving out a bridge more than HeartbeatExpiry
//     (default 2m, --heartbeat-expiry) behind the newest (a bridge scaled
//     away); a device's silence counts from when its bridge received its
//     last reading. The clock moves only as heartbeats are read, so a
//     stall anywhere between the devices and this processor — Mosquitto, a
//     bridge, Kafka, or this processor's own fetches and commits — does
//     not count as silence: a reading held up by it is judged as if it had
//     come on time. While no bridge writes heartbeats (all stopped), no
//     device falls silent. A partition on which no heartbeat was seen (a
//     bridge with --heartbeat-interval 0 or older than heartbeats, records
//     produced straight to Kafka) uses the processor's wall clock, as
//     before heartbeats; so does a partition after a restore until its
//     first heartbeat, when every device's silence restarts at the restore
//     anyway. Heartbeats are not readings: they are skipped (not counted,
//     copied or dead-lettered; iotpipe_processor_heartbeats_total counts
//     them), and their offsets are committed like any other's.
//   - A window is emitted when its device's watermark reaches its end: for a
//     device that falls silent, its final window at most IdleTimeout (plus
//     about a heartbeat interval) after the window's end, when its clock is
//     right and the ingest path flows. A reading that updates an
//     emitted window makes it emitted again with a higher revision.
//   - A window closes for good (its state is dropped) when its end +
//     Lateness is at or before its device's watermark, but never while its
//     end is after the device's largest event time: the newest window of a
//     silent device stays open (emitted, state kept), so that the readings
//     it buffers while offline — all newer than its last one — are counted
//     when it comes back, however long it was away within the device
//     retention (the raw topic's retention.ms, read at start; 7 days when
//     unknown). After that retention of silence its windows are closed and
//     its state forgotten.
//   - Late: a reading is late when its window has closed for good for its
//     own device — its window ends at or before that device's largest event
//     time minus 2·Lateness, or at or before its largest event time when the
//     device had been silent for IdleTimeout (on the idle clock). So a reading newer than its
//     device's newest one is never late (the memory cap, below, is the one
//     exception). A late reading goes to the DLQ with reason "late", is
//     counted, and (for LateRetention) bumps the "late" counter of its
//     window's activity record.
//
// Which readings are late after a silence depends on the heartbeats (the
// wall clock without them), and whether one is too far ahead on the wall
// clock; see ARCHITECTURE.md for what that means for replays.
//
// # Aggregates
//
// The sum is exactly rounded (Shewchuk's partials, as Python's math.fsum),
// so it and the mean (sum/count) do not depend on arrival order; stddev is
// the population standard deviation from Welford's running update (order
// affects only the last bits); first/last are by event time, ties broken by
// seq. Quantiles come from DDSketch's logarithmic bins
// (github.com/DataDog/sketches-go's mapping) with 1 % relative accuracy:
// p_q is within 1 % of the value of rank floor(q·(count−1)) of the
// window's sorted values (TestQuantileAccuracy checks it against exact
// percentiles). The engine keeps only the occupied bins, ~2 bytes each,
// and gives the same estimates DDSketch's own stores gave.
//
// # Identity of a reading
//
// A reading is identified by (device, event time, seq), or (device, event
// time) when it has no seq; within a window each identity counts once and
// the repeats are counted as "duplicates" in the activity record (an MQTT
// redelivery carries the same event time, so it always meets the original
// in its window). Two readings of one device without seq at the same
// microsecond are taken for one. A reading that reuses the seq of another
// reading of its window with a different event time (a device that
// restarted its counter) is a new reading: it is counted, and raises the
// window's "seq_resets" and iotpipe_processor_seq_resets_total. Seq gaps
// are counted within a window, in (event time, seq) order: a rise of seq by
// d > 1 counts d−1 missing messages, a fall (device restart) none.
//
// # Ignored payload fields
//
// The bridge counts the payload fields it ignored in each message (the
// telemetry.raw record's ignored_fields; by reason in its
// iotpipe_bridge_ignored_fields_total). The activity record's
// "ignored_fields" sums them over the window's accepted readings only: a
// duplicate (a device re-send or an MQTT redelivery of a message already
// counted) adds nothing, so a device message's ignored fields count once
// however often it was stored in telemetry.raw; late readings and readings
// too far ahead add nothing either (their records are in the DLQ whole).
// iotpipe_processor_ignored_fields_total counts the same, as readings are
// accepted.
//
// # One identity, every store
//
// Each reading the Engine accepts (Outcome Accepted) has its input record
// copied, unchanged — key (device id), value bytes, headers, timestamp —
// to Topics.Readings (default schemas.TopicReadings), partitioned by key
// like the raw topic, in the same transaction as the metrics it changes and
// its input offset. Duplicates, late readings, readings too far ahead and
// undecodable records are not copied (the last three are in the DLQ). So
// the sinks, which store Topics.Readings, hold exactly the readings counted
// in the window metrics: a device re-send or MQTT redelivery once, a reused
// seq with another time as a new reading, a late reading in no store but
// the DLQ — across crashes of any stage. Topics.Readings "-" (SkipTopic)
// turns the copy off. It costs CPU per reading (producing one more record,
// mostly franz-go's producer: partitioning and buffering, batch encoding,
// snappy): 0.4–0.5 cpu-µs of the processor's ~1.8 per reading
// (BenchmarkKafkaExactlyOnce with and without IOTPIPE_BENCH_NO_READINGS=1,
// -cpu 1); ARCHITECTURE.md says more.
//
// # Exactly once
//
// Every turn of the consume loop is one Kafka transaction
// (kgo.GroupTransactSession, read_committed input) that holds the metrics,
// readings and DLQ records it produced, the input offsets, and the changelog records
// of every piece of state that changed: the compacted changelog topic has a
// partition per input partition, keyed by window start and device (a
// device window's state) or by device (its clock: largest event time, close
// point, last input), with a tombstone when either is forgotten; a window
// whose identities pass 512 bytes (a device at hundreds of Hz) keeps them
// in identity chunk records, so that a commit writes what the turn added,
// not the whole window (see Engine.Changes). Window records are format
// version 4 (codec.go); versions 1–3 are still restored. On
// assignment a partition's state is read back from its changelog partition
// (read_committed, up to the end the log had when the restore began) before
// any of its input is processed; changelogs written by the per-partition
// watermark version are read too. When a transaction does not commit, all
// in-memory state is discarded and restored the same way, so the state
// always matches the committed offsets. When ending a transaction fails
// (its coordinator unreachable beyond the client's retries, as when its
// broker dies), whether it committed is unknown: the processor then starts
// a new Kafka session, as a restarted process would (it fences the old
// producer, takes the offsets the broker committed and restores the state),
// and fails only after 10 such sessions in a row without a commit.
// ARCHITECTURE.md at the repository
// root explains why nothing is lost or counted twice across SIGKILL,
// rebalances and zombie instances.
//
// # Memory
//
// State grows with the open device × metric × window aggregates (the
// OpenKeys of an Engine; about BytesPerKeyEstimate bytes each at 1 Hz with
// two metrics per device: 299 B in memory and 161 B in the changelog,
// measured by BenchmarkStateBytesPerKey; 597 B and 438 B at 10 Hz; 186 B
// and 117 B with five metrics per device, whose device and window parts
// the metrics share), a small activity summary per device window for
// LateRetention, and the devices: a device's clock is ~110 B plus its id
// (struct, index slot, lists; by size), and a silent device keeps its
// newest window until it returns or the device retention passes (623 B in
// memory, 275 B in the changelog for 20 s of 1 Hz readings of two metrics:
// BenchmarkStateBytesPerIdleDevice); those windows count in OpenKeys. A
// window is 160 B plus one byte string holding its metrics' sketch bins
// (~2 B per occupied bin) and its identities (~1 B per reading at a steady
// rate, 2 B while the gaps between readings vary by up to ±2 s); a metric
// adds 88 B (TestStateLayout pins the sizes). At Config.MaxKeys the
// processor closes the oldest open windows early (their later readings
// are late: DLQ, counted);
// the newest windows of long-silent devices are usually the oldest.
package processor
