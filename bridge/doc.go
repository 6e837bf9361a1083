// Package bridge moves device telemetry from an MQTT broker into Kafka
// without losing any message the broker accepted.
//
// # What it does
//
// A Bridge subscribes at QoS 1 to $share/<ShareGroup>/<filter> for each
// configured filter (by default the filter of the topic template, e.g.
// $share/iotpipe/devices/+/telemetry), with an MQTT v5 persistent session:
// clean start off, a stable client id and a session expiry (default one
// day). It subscribes again on every (re)connection. Each message is
// matched against the bridge's route table (routes.go): today one route,
// "telemetry", the template's filter. Its messages are decoded with a
// schemas.Decoder: a valid reading becomes a telemetry.raw record (key =
// device id, timestamp = event time, headers from schemas.RawRecord); a
// rejected one becomes a telemetry.dlq record with the original bytes and
// the reason (schemas.DeadLetter, stage "bridge").
//
// # Catch-all subscription and unexpected topics
//
// With MQTTConfig.CatchAll (--mqtt-catch-all, on by default in the
// command) the bridge subscribes to the template's static prefix
// followed by '#' (devices/# for devices/{device_id}/telemetry) instead
// of the filters it covers. Whatever a device publishes under the prefix
// then reaches the bridge instead of being answered "no matching
// subscribers" (0x10) and dropped by the broker; a message whose topic
// matches no route goes to the DLQ with reason unexpected_topic, its
// original bytes and its topic (source-mqtt-topic header), and is counted
// in iotpipe_bridge_rejected_total{reason="unexpected_topic"}. Only
// topics that no route matches are unexpected_topic: a telemetry topic
// whose device id level is invalid is no_device_id, and routes added
// later (shadow, config) take their own topics out of the catch-all.
//
// The bridge subscribes to the catch-all alone and does the matching
// itself, because Mosquitto delivers a message once per matching
// subscription of a session (TestMosquittoOverlappingSubscriptionsDeliverTwice,
// shared and plain): the template's filter beside the catch-all would
// write every telemetry message to Kafka twice. For the same reason, on a
// resumed session the bridge unsubscribes the filters its other settings
// would have made (catch-all on or off, shared or plain), so that an
// upgraded bridge does not keep its old subscription in its session.
// During a rolling change of a group of bridges, members with the
// catch-all and members without it hold different shared subscriptions,
// and a telemetry message goes once to each kind: duplicates until the
// whole group runs one setting. The catch-all needs read permission on
// the whole prefix in the broker's ACL; a refused subscription is logged
// and the bridge stays not ready. A template that starts with a wildcard
// has no prefix: the catch-all must then be turned off (Validate says so).
//
// # Ignored payload fields
//
// Fields the decoder ignores (non-numeric top-level members, or every
// top-level member beside a "metrics" object; see schemas.IgnoreReason)
// are counted per accepted message in
// iotpipe_bridge_ignored_fields_total{reason} and carried in the
// telemetry.raw record as ignored_fields. --accept-bools and
// --numeric-strings make booleans (1/0) and numeric strings measurements;
// --strict-payloads sends any message with an ignored field to the DLQ
// (ignored_field) instead.
//
// # Guarantees
//
//   - No acknowledged message is lost. The PUBACK of a message is released
//     only from the Kafka produce promise, after Kafka acknowledged its
//     record (acks=all, idempotent producer, unlimited retries, no delivery
//     timeout), whether the record went to the raw topic or to the DLQ
//     (unexpected topics included).
//     The bridge writes PUBACKs in receive order (see
//     MQTTConfig.AckInterval).
//     A message the bridge dies holding is redelivered by the broker to
//     the same session when the bridge reconnects.
//   - Duplicates are possible: after a crash or a lost connection,
//     messages whose record reached Kafka but whose PUBACK did not reach
//     the broker are delivered again (iotpipe_bridge_redelivered_total
//     counts the DUP-flagged ones). On a broker that honours the MQTT v5
//     Receive Maximum, a crash duplicates at most
//     MQTTConfig.ReceiveMaximum messages: the bridge holds to that bound
//     on its side (a message keeps its in-flight slot until its PUBACK is
//     handed to paho, in receive order). Mosquitto before 2.0.13 does not
//     honour it once PUBACKs flow, and there duplicates are not bounded;
//     nothing is lost either way. Figures per broker version:
//     docs/brokers.md. Downstream stages treat telemetry.raw as
//     at-least-once and deduplicate by (device, seq) where it matters.
//   - Bounded memory. At most ReceiveMaximum records are in flight to
//     Kafka (the bridge's own limit, whatever the broker does); messages
//     beyond it wait in paho's queue (ReceiveMaximum long) and then in
//     the TCP window, so the broker queues the rest for the session. When
//     Kafka is slow or down the bridge stops acknowledging and waits; it
//     never drops. Holding back does not cost the MQTT connection: the
//     bridge's keep-alive (pinger) calls a connection dead only when
//     nothing came back for a keep-alive period after a ping while the
//     bridge was reading, because a PINGRESP waits behind the messages
//     the bridge has not read yet.
//   - The broker's queue is the buffer for a backlog, and it is bounded
//     by the broker (Mosquitto's max_queued_messages): size it for the
//     longest Kafka outage to ride out (docs/brokers.md).
//   - Bad input never stops the bridge and is never dropped silently:
//     every rejection is a DLQ record and a count in
//     iotpipe_bridge_rejected_total{reason}. A payload longer than
//     Config.DLQMaxValueBytes is cut in its dead letter (the error header
//     says so). A valid reading that Kafka refuses for good (e.g. too
//     large for the topic) goes to the DLQ with reason "kafka_rejected".
//     If Kafka refuses a dead letter for good, the message cannot be
//     stored anywhere: it stays unacknowledged at the broker and Run
//     returns ErrDLQRejected.
//   - Per-device order, with one bridge: messages of one device arrive in
//     publish order on one MQTT connection, are produced in that order by
//     one goroutine with the device id as key, so they keep their order
//     in their partition. Redelivered duplicates may repeat older
//     messages after newer ones.
//   - Clean shutdown: when Run's context ends, the bridge stops taking
//     messages (those that arrive are left unacknowledged, for
//     redelivery), waits for the records in flight and their PUBACKs, and
//     disconnects, within Config.ShutdownTimeout.
//
// # Heartbeats
//
// Every Config.HeartbeatInterval (--heartbeat-interval, default 1s; 0
// turns them off) the bridge writes to every partition of TopicRaw a
// heartbeat record (header schemas.HeaderHeartbeat, value
// schemas.Heartbeat: its MQTT client id and a time H, record timestamp H):
// every message it received before H is before the heartbeat in that
// partition, and the broker had nothing for it at H that it had not sent.
// H is the send time of the last PINGREQ the broker answered (the broker
// answers after the messages it had queued for the bridge). No heartbeat
// is written while the ingest path may be stalled: MQTT down or a ping
// unanswered for an interval, half the in-flight slots taken or reading
// held back (the broker may be queueing), a produce outstanding for an
// interval; so H freezes at the last moment the path provably flowed. The
// processor measures devices' silence on these times (see its package
// comment): a stall is not taken for silent devices. With several bridges
// each writes its own, and each holds the processor's clock for its
// partitions until its heartbeats are more than the processor's
// --heartbeat-expiry (2m) behind another's. Heartbeats cost a record per
// partition and interval (iotpipe_bridge_heartbeats_total; withheld
// intervals in iotpipe_bridge_heartbeats_withheld_total) and have nothing
// to do with PUBACKs. Every consumer of telemetry.raw skips them
// (schemas.IsHeartbeat).
//
// # Broker restarts
//
// The bridge keeps its MQTT session (stable client id, clean start off,
// session expiry), so a broker that persists sessions delivers, after a
// restart, everything queued for the bridge and everything in flight.
// Brokers that do not restore shared subscriptions ($share/...) across a
// restart, every Mosquitto 2.0.x among them, answer messages published
// before the bridge subscribes again with PUBACK 0x10 "no matching
// subscribers" and drop them. For a single bridge,
// MQTTConfig.PlainSubscription (--mqtt-plain-subscription) avoids that
// gap; a group of bridges on shared subscriptions has it at every broker
// restart. Details and figures: docs/brokers.md.
//
// # Several bridges: shared subscriptions
//
// Bridges with the same ShareGroup (and each its own client id) split the
// messages: the broker hands each message of a shared subscription to one
// member of the group. Two consequences:
//
//   - Per-device order across bridges: consecutive messages of one device
//     can go to different bridges and reach Kafka in either order, so with
//     more than one bridge the order of one device's records in
//     telemetry.raw is not guaranteed. Results stay right because the
//     processor assigns readings to windows by event time (and "seq"
//     lets it count gaps and duplicates), not by arrival order; a reading
//     that arrives after its window closed is counted as late. Run one
//     bridge per share group when arrival order itself matters.
//   - Offline members keep their share: Mosquitto goes on assigning
//     messages to a member with a persistent session while it is
//     disconnected and queues them for it, so they arrive when it comes
//     back with the same client id, and are lost when its session
//     expires. Retire a bridge only with that in mind (docs/brokers.md).
//
// # Mutual TLS and strict mode
//
//   - With an mqtts:// URL the bridge connects over TLS 1.2 or later,
//     checks the broker's certificate against MQTTConfig.CAFile and the
//     name MQTTConfig.ServerName (default: the URL's host), and presents
//     its client certificate (CertFile, KeyFile). The files are read again
//     for every connection (the client certificate during the handshake),
//     so replacing them rotates the identity at the next reconnect
//     (TestIdentityMutualTLS). A broker certificate with another name or
//     from another CA is a setting to fix, not an outage: Run returns a
//     *config.FieldError on MQTT.ServerName or MQTT.CAFile.
//   - Which device a reading belongs to is the topic's device level; the
//     broker's ACL binds that level to the certificate's CN, so with the
//     ACL of scripts/services.sh a device cannot publish as another
//     (PUBACK 0x87, nothing reaches Kafka).
//   - Registry.Require (--require-registered) sends readings of devices
//     that are not in the registry or not active to the DLQ as
//     unknown_device. The set of active ids is loaded before the bridge
//     subscribes (Run fails when it cannot be read: strict mode never
//     starts open), then kept in memory and replaced on every registry
//     change notice (LISTEN iotpipe_registry) and every Registry.Refresh;
//     a message costs one map lookup, never a query. While the database is
//     unreachable the last set stays in use.
package bridge
