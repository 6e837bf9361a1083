// Package alert is the alert stage (`iotpipe alert`): it evaluates the
// alert rules of PostgreSQL (alerting/rules) over telemetry.raw and
// telemetry.metrics with the pure state machine of alerting/eval, and
// writes a FIRING event when a series crosses its trigger threshold and a
// RESOLVED event when it falls back past its clear threshold to
// telemetry.alerts (schemas.Alert, key = device id) — exactly once per
// crossing.
//
// # What is evaluated
//
//   - Reading rules: every measurement of every telemetry.raw reading, per
//     series (rule, device, metric). Bridge heartbeats
//     (schemas.IsHeartbeat) are skipped; records that do not decode are
//     counted and skipped (the processor dead-letters them).
//
//   - Window rules: the rule's statistic (mean, min, max, p50, p95, p99) of
//     each window aggregate of telemetry.metrics, at the window's end; a
//     window's later revisions are not evaluated again. Activity records
//     are skipped.
//
//   - no_data rules: per (rule, device), fire when the device has sent
//     nothing for the rule's silence, measured on the bridges' clock:
//     from its last reading's received time (schemas.Reading.ReceivedTime,
//     the bridge's clock; never the device's own) to the partition's
//     ingest clock (internal/ingestclock): the smallest latest heartbeat
//     of the bridges writing to the raw partition (schemas.Heartbeat).
//     Bridges write heartbeats to every partition (every second by
//     default) while their ingest path flows, so a partition whose every
//     device went silent still fires "silent for N"; and they write none
//     while their
//     path may be stalled (MQTT disconnected, a produce outstanding), so
//     a stall holds the clock and fires nothing falsely. A stalled bridge
//     holds the clock until it is HeartbeatExpiry behind the newest
//     (scaled away). Silent devices are looked for each time the clock
//     passes into a new NoDataResolution step; the device's next reading
//     resolves the FIRING.
//
//     The clock is a pure function of the input: the heartbeats read, in
//     partition order. Each bridge's latest heartbeat goes to the
//     changelog in the same transaction as the events (key 'h' + bridge
//     id), so a restored partition goes on with the clock of its
//     committed offsets, and the latest clock value checked is kept too
//     (a replay fires nothing twice). The FIRING's event time is last
//     received time + silence, whenever it is detected, and its id is
//     eval.EventID of (rule, device, FIRING, that time): a replay after a
//     crash gives the same event with the same id.
//
//     Without heartbeats (a partition on which none was ever read: bridges
//     started with heartbeats off, or records written by other producers)
//     the clock is the largest received time of the partition's readings:
//     a device is found silent when others on its partition send, and a
//     partition whose every device is silent fires when input comes
//     again. The wall clock is never used: it cannot tell a stalled
//     ingest path from silent devices, and it would make a replay's
//     output depend on when it runs.
//
// The state machine, hysteresis, for-count/for-duration and the event ids
// are alerting/eval's (see its package comment). A value whose event time
// is not after its series' last one is ignored and counted
// (iotpipe_alert_values_ignored_older_total).
//
// # Exactly once
//
// The stage runs on the shared exactly-once runtime (internal/eos), as the
// processor does: each turn is one Kafka transaction holding the events it
// produced, the changelog records of every series that changed (a
// compacted topic, default iotpipe.alert.changelog, key = a topic byte and
// eval.Key, value = eval.State) and the input offsets. On assignment a
// partition's series are restored from the changelog before any of its
// input is evaluated, and after an aborted transaction all state is
// restored again, so the state always matches the committed offsets and
// a replay produces exactly the events that were not committed, with the
// same ids. Read telemetry.alerts read_committed. The series of raw
// partition p and metrics partition p share changelog partition p: the
// changelog needs as many partitions as the larger input topic.
//
// Exactly once holds for a fixed rule set. A rule change takes effect at
// a turn boundary: a replay after a crash evaluates the replayed input
// with the rules then in force.
//
// # Rules
//
// The enabled rules are read at start, before any input (a stage that
// cannot read them does not consume), again on every change notice
// (NOTIFY iotpipe_alert_rules, and iotpipe_registry for group
// membership) and every RulesRefresh. A rule that fails rules.Validate is
// left out, logged once per version and counted
// (iotpipe_alert_rules_invalid); it never stops the stage. Deleting or
// disabling a rule drops its series without a RESOLVED event; changing one
// keeps its series' states. Group-scoped rules use the registry's group
// membership (nested groups: a device is in every ancestor of its groups).
// The stage connects as a member of the reader role.
//
// # Memory
//
// State is one small eval.State per series (5-30 bytes plus the fired
// event id encoded; about 200 bytes in memory with its map entry and
// key). MaxSeries caps the series held: at the cap, values of new series
// are not evaluated and are counted (iotpipe_alert_series_refused_total,
// iotpipe_alert_state_cap_reached = 1, a warning in the log); series
// already held go on.
package alert
