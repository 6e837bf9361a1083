// Package e2e is the end-to-end benchmark: the whole pipeline (bridge,
// processor, both sinks) on the local real services under a simulated
// fleet, next to the broker-only ceiling measured in the same run.
//
// # Isolation
//
// A run has a fresh id (e2e-<8 hex>) that names everything it creates:
// the Kafka topics <id>.raw, .readings, .metrics, .dlq and .changelog (6 partitions,
// made by `iotpipe init`), the PostgreSQL schema bench_<id>, the bucket
// <id>, the consumer groups <id>-processor, -sink-timescale and
// -sink-lake, the MQTT topics devices/<id>/{device_id}/telemetry (ceiling:
// devices/<id>-ceiling/…), the bridge's share group and client id, the
// mosquitto_sub client id and the device ids <id>-NNNNNN. Tests and the
// demo running at the same time are not mixed in. Run removes the topics,
// groups, schema, bucket and the mosquitto_sub session at the end, also
// after an error or a cancelled context; the bridge's MQTT session expires
// 2 minutes after it stops. Child logs stay in Result.LogDir.
//
// Every stage and the simulator run as child processes of Options.Binary
// in their own process group, with Pdeathsig SIGKILL so that none survives
// the benchmark's process. They are stopped with SIGTERM (killed after
// 45 s) and must exit 0. Stage settings are `iotpipe demo`'s: window 10s,
// lateness 2s, idle timeout 5s, lake max age 10s; everything else is the
// stages' defaults.
//
// # Phases
//
//  1. Broker-only ceiling (CeilingDuration): `iotpipe simulate --rate 0`
//     (every device publishes as fast as PUBACKs come back, QoS 1, the
//     realistic 4-measurement format) into Mosquitto, with one QoS 1
//     `mosquitto_sub -c` (persistent session, created and subscribed
//     before the simulator starts) as the only consumer; its stdout lines
//     are counted in Go. The ceiling is the messages/s mosquitto_sub
//     received between the end of a warm-up (min(5s, CeilingDuration/3))
//     and the end of the phase. After the simulator stops, Run waits until
//     mosquitto_sub has everything (at most 30 s; a note says when it
//     still trailed) and reports received and acked (they may differ by
//     at most the messages in flight when the rate-0 simulator was
//     stopped: BrokerCeilingUnconfirmed), then ends mosquitto_sub's
//     session so that nothing stays queued for it. CPU of the
//     simulator, mosquitto_sub and Mosquitto and the machine's busy share
//     are recorded, and BrokerCeilingLimitedBy names the bound: a process
//     at ≥ 0.85 core (one simulator process or single-threaded Mosquitto),
//     the machine at ≥ 90 % busy, or else round trips (QoS 1 in-flight
//     windows: the simulator uses Devices/10 devices per connection, at
//     most 100, so 10 connections of up to 100 messages in flight).
//  2. Stepped search: StepDuration at each fraction of Steps (full run:
//     20 s at 0.05, 0.1, 0.15, … 0.5, then 0.6 … 1.0 of the ceiling),
//     stopping at the first step that is not sustained. The highest
//     sustained step gives MaxSustainableMsgsPerS.
//  3. Settle: wait until the bridge backlog and the processor's and
//     TimescaleDB sink's lags are back to about zero (each at most 0.1 s
//     of the fixed load's input) and the lake sink's within its
//     saw-tooth (lake max age of input) — at most DrainTimeout, else a
//     note — so that the fixed phase starts from an empty pipeline
//     (Result.StepsDrainS).
//  4. Fixed load (FixedDuration, ≥ 5 minutes in the full run) at
//     FixedOfSustained (0.75) × the offered load of the highest sustained
//     step (20 s steps overstate what holds for 5 minutes on a saturated
//     2-core machine: at 0.9 the fixed phase fell short once) (or Options.FixedRate in msg/s when set; a note says when it
//     exceeds the highest sustained step), spread evenly over Devices
//     (--rate = total/Devices per device). Result.FixedBasis says which.
//     The fixed phase is judged by the same rule as a step
//     (Result.FixedSustained, a note when it was not); when sustained
//     it counts for MaxSustainableMsgsPerS too. CPU, memory and latency
//     (Result.Processes, LatencyP50S/P99S) are the fixed phase's.
//
// The issue lists the fixed load first and the stepped search second;
// here the order is swapped so that the fixed load is known to be
// sustainable: the pipeline sustains a small fraction of the broker-only
// ceiling on this machine (~6–8k of ~40–50k msg/s), so a fixed load
// chosen as a fraction of the ceiling before anything is known (it was
// 0.5) overloads the pipeline for the whole fixed phase, Mosquitto's
// queue for the bridge overflows (max_queued_messages) and it drops
// messages, and the count check cannot pass.
//
// Overload is short and bounded: only the first unsustained step offers
// more than the pipeline takes, for at most StepDuration (plus the
// simulator's grace, below), and the steps rise by at most 0.05–0.1 ×
// ceiling, so its backlog, (offered − sustainable) × StepDuration, is
// tens of thousands of messages. A step also ends at once when the bridge
// backlog exceeds Options.MaxBacklog (200,000, far below Mosquitto's
// max_queued_messages of 1,000,000 in scripts/services.sh); it is then
// not sustained (Step.StoppedEarly) and its simulator is stopped with
// messages in flight (counted as unconfirmed, see the count check).
// Steps after a sustained step start without a settle: a sustained step
// ends with at most 5 s of input of lag per part (the rule below).
//
// Each load phase starts a fresh simulator on a fresh range of device
// numbers (--first-device), so that no (device, seq) repeats across phases
// and the processor's duplicate detection stays out of the count, and gives
// it --messages-per-device = rate × duration: it sends exactly that and
// waits for the last PUBACKs before it exits, so no message is left
// unconfirmed. A simulator that is behind gets 3 s + 5 % of the phase to
// finish, then it is stopped (its in-flight messages are counted as
// unconfirmed, see the count check).
//
// # Figures
//
// Achieved rate: the simulator's acked counter (iotpipe_simulate_acked_total
// on its /metrics) over the phase, i.e. messages the broker took
// responsibility for, per second.
//
// Latency from event time to queryable row: every 100 ms a separate
// PostgreSQL connection (the read-only role) asks for the readings rows
// (metric temperature) of 5 probe devices newer than the last one it saw;
// a row's latency is the start of the first query that returned it minus
// its event time (the simulator stamps the event time when it publishes,
// on the same clock). The poll interval bounds the resolution (latencies
// are over-estimated by up to 100 ms plus the query time). p50/p99 are
// nearest-rank percentiles over all samples of the phase. A phase without
// samples (no probe row became queryable while it ran) has
// LatencySamples 0 and p50/p99 0, which means not measured, not 0 s: a
// note says so and the suite's table prints "n/a".
//
// Lag, sampled every second, in records (= device messages): the bridge
// backlog (simulator acked − records in raw+dlq); for the processor the
// raw-topic records after its committed offsets (end offsets − committed,
// from kadm); for the TimescaleDB and lake sinks, which read the
// processor's readings topic as in a deployment, the processor's lag plus
// the readings after their own offsets up to the topic's last stable
// offset, less one per partition for a transaction's commit marker (the
// TimescaleDB sink's offsets from its sink_offsets table, which it writes
// with the rows: its Kafka commits are only occasional). The bridge backlog is
// floored at 0, so duplicates in raw (broker redelivery) can hide it. The lake sink
// commits only after a file is uploaded, so its lag has a saw-tooth of up
// to lake max age (10 s) of input. Step.MaxLagRecords is the largest sum of
// the four; Step.EndLagRecords is the sum at the end (see below).
//
// CPU and memory per process over the fixed phase: CPU cores = (utime +
// stime from /proc/<pid>/stat) / wall time. Memory of our children (bridge,
// processor, sinks, simulator) is the kernel's VmHWM (peak RSS since the
// child started, just before the phase). The services' pids come from the
// pid files in $IOTPIPE_STATE_DIR; their memory is the peak of VmRSS
// sampled every second during the phase (their VmHWM would include other
// runs). PostgreSQL is the postmaster plus all its backends — every
// client's, not only the benchmark's: CPU summed, memory as the summed PSS
// (shared buffers counted once). Step.MachineCPUBusy is the busy share of
// all cores from /proc/stat, whoever used them: the services are shared
// with other tests, so their CPU includes other load.
//
// # Sustained step
//
// A step (the fixed phase counts as one) of duration d at offered rate R
// is sustained when all of these hold:
//   - achieved ≥ 95 % of R;
//   - the lag does not grow: let start and end be, per part, the minimum
//     of the lag samples over the first and the last third of the step
//     (the minimum removes the saw-tooth of batching sinks); the end minus
//     the start of bridge + processor + TimescaleDB sink (Step.
//     LagGrowthRecords) is at most 5 % of the step's input (0.05·R·d),
//     i.e. the slowest of them processed at least 95 % of the input;
//   - the lag is bounded: at the end, the bridge backlog, the processor's
//     and the TimescaleDB sink's lag are each at most 5 s of input (5·R)
//     and the lake sink's at most lake max age + 5 s of input (15·R).
//
// Step.EndLagRecords is the sum of the four end values. MaxSustainableMsgsPerS
// is the highest achieved rate of a sustained step, the fixed phase
// included. It is bounded by the step resolution: the true maximum lies
// between the highest sustained and the first unsustained step, and when
// every step was sustained a note says the maximum is at least that.
// GoalMet is MaxSustainableRatio ≥ 0.5 with the count check
// passing (the goal).
//
// # Count check
//
// After the last phase Run waits for the pipeline to drain (all four lags
// 0 and the readings and lake rows reaching 4 × raw records; it gives up
// when nothing (lags, counts) moved for 25 s, or after 15 minutes) and
// then checks:
// simulator acked == raw + dlq records (sums of the end offsets of the
// run's topics; when a simulator had to be stopped with messages in
// flight, raw+dlq must lie between acked and acked + unconfirmed, and a
// note says so); dlq == 0 (the load has no invalid messages; dlq end
// offsets would also count the processor's transaction markers, so a
// non-zero dlq is an upper bound of the dead letters); readings
// rows == 4 × raw records, with 4 measurements per message verified as
// (device, metric) pairs per device; no duplicate rows, i.e. per (device,
// metric) no more rows than its seq range max − min + 1 (one grouped pass:
// a count(DISTINCT) over tens of millions of rows takes minutes); lake rows (the lake sink's iotpipe_lake_rows_total{dataset=
// "readings"}: rows in uploaded, committed Parquet files) == readings rows;
// processor readings (iotpipe_processor_readings_accepted_total, one per
// message) == raw records and no processor duplicates. Duplicates in raw
// (more records than acked + unconfirmed; e.g. Mosquitto 2.0.11
// redelivering after the bridge's MQTT connection was lost) fail the
// check. The bridge's MQTT connection events after its first connect
// (connection lost, broker disconnect, connect failure, client error,
// reconnect) are copied from its log into Result.BridgeMQTTEvents, with a
// note. Count.OK only when
// all hold; Run then returns the Result and an error naming each
// difference.
//
// Numbers depend on the machine and on what else runs on it: on a shared
// 2-core machine they are noisy, which is why the ceiling is measured in
// the same run and figures are given as ratios to it.
package e2e
