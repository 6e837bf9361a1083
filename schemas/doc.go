// Package schemas defines iotpipe's wire formats: the JSON payload devices
// publish over MQTT, and the records of the Kafka topics telemetry.raw,
// telemetry.metrics and telemetry.dlq. For each it provides the Go type,
// its encoder and decoder, a JSON Schema (draft 2020-12, see JSONSchemas),
// and golden examples under testdata/.
//
// # Device payloads
//
// A Decoder turns one MQTT message (topic, payload, received time) into a
// Reading, or into a *RejectError whose Reason says why the message can
// never be accepted; the bridge sends such messages to telemetry.dlq. The
// device id comes from the MQTT topic through a TopicTemplate (default
// "devices/{device_id}/telemetry"); a device_id in the payload is ignored.
// The payload format, its limits and every rejection are documented on
// Decoder.Decode and the Reason constants. Decoding reuses buffers and does
// not allocate in steady state.
//
// # Records
//
// telemetry.raw holds one Reading per accepted message (AppendRaw,
// RawDecoder, RawRecord); telemetry.metrics holds WindowMetric and Activity
// records (AppendMetric, AppendActivity, MetricsDecoder); telemetry.dlq
// holds a DeadLetter per rejected input (DeadLetter.Record,
// ParseDeadLetter). Raw and metrics records use the device id as Kafka key,
// which keeps each device's records in order on one partition.
//
// # Guarantees
//
//   - Everything a decoder accepts satisfies the type's Validate method:
//     valid device ids and names, finite values, sorted unique measurement
//     names, UTC times with microsecond precision.
//   - Encoding then decoding gives back an identical value: floats are
//     written as the shortest decimal that parses back to the same float64,
//     and times as integer Unix microseconds.
//   - Every record carries schema_version 1 in its value and a
//     schema-version header. Decoders reject any other version with
//     ReasonInvalidRecord and ignore unknown fields, so version 1 may gain
//     optional fields; any change that breaks a reader gets a new version.
//   - Decoders never panic on any input, and bound their work by the input
//     size and configured limits.
//   - Reason values are stable: they label metrics and DLQ headers.
package schemas
