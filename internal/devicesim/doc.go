// Package devicesim is a cheap simulated device fleet: N devices publish
// telemetry over MQTT v5 at QoS 1, each at a set rate, with a per-device
// sequence number ("seq") and a configurable fraction of invalid payloads.
// It counts the messages whose PUBACK it received: with QoS 1 those are
// the ones the broker took responsibility for, so they must arrive.
//
// Several devices share one MQTT connection (DevicesPerConn). The
// publisher is written against the wire format directly (PUBLISH packets
// are encoded into a buffered writer and pipelined up to the broker's
// Receive Maximum) so that it costs little CPU per message, leaving the
// machine to the system under test. A device's messages go out in seq
// order on one connection, so the broker delivers them in that order.
//
// When a connection drops, the messages still waiting for their PUBACK
// are counted as Unconfirmed (they may or may not have reached the
// broker, and are not sent again), and the connection is re-established
// with jittered backoff (internal/retry); the devices continue with
// their next seq. A connection the broker refuses (CONNACK error) ends the
// run with that error.
//
// It is also the `iotpipe simulate` stage, of the one shape of every
// stage: Config starts from DefaultConfig (a zero is refused by Validate
// or means zero, never a default), New(cfg, deps) validates, Run(ctx)
// stops when ctx ends and returns nil, Checks are its readiness.
package devicesim
