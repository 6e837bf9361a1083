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
// decoded with a schemas.Decoder: a valid reading becomes a telemetry.raw
// record (key = device id, timestamp = event time, headers from
// schemas.RawRecord); a rejected one becomes a telemetry.dlq record with
// the original bytes and the reason (schemas.DeadLetter, stage "bridge").
//
// # Guarantees
//
//   - No acknowledged message is lost. The PUBACK of a message is released
//     only from the Kafka produce promise, after Kafka acknowledged its
//     record (acks=all, idempotent producer, unlimited retries, no delivery
//     timeout), whether the record went to the raw topic or to the DLQ.
//     paho sends PUBACKs in receive order, every MQTTConfig.AckInterval.
//     A message the bridge dies holding is redelivered by the broker to
//     the same session when the bridge reconnects.
//   - Duplicates are possible: after a crash or a lost connection,
//     messages whose record reached Kafka but whose PUBACK did not reach
//     the broker are delivered again (iotpipe_bridge_redelivered_total
//     counts the DUP-flagged ones). A broker that honours the MQTT v5
//     Receive Maximum has at most MQTTConfig.ReceiveMaximum messages in
//     flight to the bridge, so a crash duplicates at most that many
//     (measured on Mosquitto 2.0.20: 10 SIGKILLs under load, 9,693
//     duplicates of 100k messages, bound 10,000). The bridge holds to
//     the bound on its side too: a message keeps its in-flight slot
//     until its PUBACK is handed to paho, in receive order, so at most
//     ReceiveMaximum stored messages are unacknowledged whatever the
//     broker sends. Mosquitto 2.0.11 (Debian 12) does not honour it:
//     once PUBACKs flow it sends past the Receive Maximum (measured:
//     Receive Maximum 10, 5 acknowledged, 60 sent; fixed in 2.0.13,
//     "inflight quota management", #2306). On that broker the
//     duplicates after SIGKILLs under load are not bounded (10 kills of
//     100k messages: 6k to 97k duplicates): it redelivers messages whose
//     PUBACK the bridge had sent. How 2.0.11 loses track of those
//     PUBACKs is not established (its socket's receive queue from the
//     bridge was empty in a check at 10k msg/s, so they are not simply
//     left unread); 2.0.20 keeps to the bound. Nothing is lost. Downstream
//     stages treat telemetry.raw as at-least-once and deduplicate by
//     (device, seq) where it matters.
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
//   - The broker's queue is the buffer for a backlog, and it is bounded:
//     Mosquitto keeps at most max_queued_messages (1,000,000 in
//     scripts/services.sh and deploy/mosquitto) for the bridge's session
//     and drops what comes beyond it, after the device got its PUBACK
//     (its log says "Outgoing messages are being dropped for client").
//     Size it for the longest Kafka outage or overload to ride out:
//     messages per second × seconds.
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
// # Broker restarts
//
// With persistence on, Mosquitto keeps the bridge's session across a
// restart: messages queued for it and those in flight are delivered after
// the bridge reconnects (session present), and nothing a device got a
// successful PUBACK for is lost. But Mosquitto (every 2.0.x release,
// checked on 2.0.11 and 2.0.20: its persistence file holds plain
// subscriptions only) does not restore shared subscriptions ($share/...)
// when it restarts. Until the bridge reconnects and subscribes again,
// which it does on every connection, messages matching no other
// subscription are answered with PUBACK reason 0x10 "no matching
// subscribers" and dropped by the broker (measured: 0 to 4,094 of 10,000
// messages in TestBridgeMosquittoRestart, depending on whether devices or
// the bridge reconnect first). 0x10 is a success code and most devices do
// not resend. Worse, if another client holds a plain subscription that
// matches, devices get 0x00 and the bridge's share is lost silently.
//
// The way around it, for a single bridge: MQTTConfig.PlainSubscription
// (--mqtt-plain-subscription). The bridge subscribes to the filters
// themselves, the broker restores that subscription with the session and
// queues for it while the bridge reconnects, and nothing is dropped
// (TestBridgeMosquittoRestartPlainSubscription: 0 of 10,000, on 2.0.11
// and 2.0.20). With several bridges a plain subscription gives every
// bridge every message, so it is for one bridge only; a group of bridges
// on shared subscriptions has this gap at every broker restart.
//
// # Several bridges: shared subscriptions
//
// Bridges with the same ShareGroup (and each its own client id) split the
// messages: Mosquitto hands each message of a shared subscription to one
// member of the group, round-robin. Two consequences:
//
//   - Per-device order across bridges: consecutive messages of one device
//     can go to different bridges and reach Kafka in either order, so with
//     more than one bridge the order of one device's records in
//     telemetry.raw is not guaranteed. Results stay right because the
//     processor assigns readings to windows by event time (and "seq"
//     lets it count gaps and duplicates), not by arrival order; a reading
//     that arrives after its window closed is counted as late. Run one
//     bridge per share group when arrival order itself matters.
//   - Offline members keep their share. Mosquitto (measured on 2.0.11)
//     counts a member with a persistent session as part of the group even
//     while it is disconnected: it goes on assigning it every Nth message
//     and queues those for its session. When every bridge of the group is
//     offline, all messages are queued in their sessions and arrive when
//     the bridges come back (TestBridgeGroupOfflineQueues). When one of
//     several bridges is offline, its share waits until that bridge
//     reconnects with the same client id
//     (TestBridgeGroupMemberOfflineKeepsItsShare). A bridge removed for
//     good keeps receiving its share into its session until the session
//     expires, and the broker drops what is queued for a session that
//     expires. Retiring a bridge without loss therefore needs an
//     unsubscribe before its last drain; the bridge has no such mode yet,
//     so scale the group down only with that in mind, and
//     keep the session expiry longer than any planned outage.
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
