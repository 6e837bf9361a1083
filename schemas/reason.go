package schemas

import "errors"

// Reason is a machine-readable cause for rejecting a message. It is the value
// of the DLQ "reason" header and the label of the per-reason drop counters, so
// its values are stable: new reasons may be added, existing ones never change.
type Reason string

// Reasons set by the bridge while decoding a device payload.
const (
	// ReasonEmptyPayload: the MQTT payload has no bytes, or only JSON whitespace.
	ReasonEmptyPayload Reason = "empty_payload"
	// ReasonPayloadTooLarge: the payload is longer than DecodeOptions.MaxPayloadBytes.
	// It is rejected before any parsing.
	ReasonPayloadTooLarge Reason = "payload_too_large"
	// ReasonMalformedJSON: the payload is not one well-formed JSON object. This
	// covers syntax errors, binary garbage, invalid UTF-8, a top-level value that
	// is not an object, nesting deeper than DecodeOptions.MaxDepth, and a
	// reserved key (ts, seq, metrics, tags) given more than once. The detail
	// says which, with the byte offset where it applies.
	ReasonMalformedJSON Reason = "malformed_json"
	// ReasonMissingTimestamp: the payload has no "ts" field, or it is null.
	ReasonMissingTimestamp Reason = "missing_timestamp"
	// ReasonInvalidTimestamp: "ts" is neither an RFC 3339 date-time string nor
	// a non-negative epoch number below 1e19, or it names an impossible date.
	ReasonInvalidTimestamp Reason = "invalid_timestamp"
	// ReasonTimestampSkew: the event time is further in the future than
	// DecodeOptions.MaxFutureSkew, or further in the past than
	// DecodeOptions.MaxPastSkew, measured against the received time. The
	// detail says which direction and by how much.
	ReasonTimestampSkew Reason = "timestamp_skew"
	// ReasonNoMeasurements: the payload holds no measurement: an empty
	// "metrics" object, or no numeric top-level field.
	ReasonNoMeasurements Reason = "no_measurements"
	// ReasonInvalidMeasurement: a measurement is unusable: "metrics" is not an
	// object, a value under "metrics" is not a number, a name is empty, longer
	// than 128 bytes or holds a control character, or a name occurs twice.
	ReasonInvalidMeasurement Reason = "invalid_measurement"
	// ReasonNonFinite: a measurement value is NaN or ±Inf: a number too large
	// for float64 (such as 1e999), or the strings "NaN", "Inf", "+Inf",
	// "-Inf", "Infinity" (any case) under "metrics".
	ReasonNonFinite Reason = "non_finite_value"
	// ReasonTooManyMeasurements: more measurements than
	// DecodeOptions.MaxMeasurements.
	ReasonTooManyMeasurements Reason = "too_many_measurements"
	// ReasonNoDeviceID: the MQTT topic does not match the topic template, or
	// the device id level is not a valid device id (see ValidDeviceID).
	ReasonNoDeviceID Reason = "no_device_id"
	// ReasonInvalidSeq: "seq" is present and not null, but is not an integer
	// in [0, 2^63-1].
	ReasonInvalidSeq Reason = "invalid_seq"
	// ReasonInvalidTags: "tags" is present and not null, but is not an object
	// of at most MaxTags string values with valid keys (as measurement names)
	// and values (at most MaxTagValueLen bytes, no control characters).
	ReasonInvalidTags Reason = "invalid_tags"
	// ReasonIgnoredField: DecodeOptions.Strict is set and the payload has a
	// field the decoder would otherwise ignore (see IgnoreReason). The
	// detail names the first such field and its IgnoreReason.
	ReasonIgnoredField Reason = "ignored_field"
	// ReasonUnexpectedTopic: the bridge received a message on a topic that
	// none of its routes matches: with the catch-all subscription (for
	// example devices/# for the template devices/{device_id}/telemetry),
	// anything a device publishes under the prefix that is neither the
	// telemetry topic nor another route's. The dead letter keeps the
	// original bytes and the topic (source-mqtt-topic header). Topics that
	// match a route but carry an invalid device id are ReasonNoDeviceID.
	ReasonUnexpectedTopic Reason = "unexpected_topic"
)

// Reasons set by stages after the bridge.
const (
	// ReasonLate: a reading arrived after its window closed and the allowed
	// lateness passed; it is counted but aggregated nowhere.
	ReasonLate Reason = "late"
	// ReasonInvalidRecord: a Kafka record does not decode as the record kind
	// its topic carries, or decodes to values that break the record's
	// invariants.
	ReasonInvalidRecord Reason = "invalid_record"
	// ReasonRejectedByDatabase: the database refused the row for a reason that
	// retrying cannot fix (a constraint or data error, not a connection error).
	ReasonRejectedByDatabase Reason = "db_rejected"
)

var allReasons = [...]Reason{
	ReasonEmptyPayload,
	ReasonPayloadTooLarge,
	ReasonMalformedJSON,
	ReasonMissingTimestamp,
	ReasonInvalidTimestamp,
	ReasonTimestampSkew,
	ReasonNoMeasurements,
	ReasonInvalidMeasurement,
	ReasonNonFinite,
	ReasonTooManyMeasurements,
	ReasonNoDeviceID,
	ReasonInvalidSeq,
	ReasonInvalidTags,
	ReasonIgnoredField,
	ReasonUnexpectedTopic,
	ReasonLate,
	ReasonInvalidRecord,
	ReasonRejectedByDatabase,
}

// AllReasons returns every Reason this version of the package defines, in a
// fixed order, for example to initialise per-reason counters. The caller owns
// the returned slice.
func AllReasons() []Reason {
	out := make([]Reason, len(allReasons))
	copy(out, allReasons[:])
	return out
}

// Known reports whether r is one of the reasons AllReasons returns.
func (r Reason) Known() bool {
	for _, k := range allReasons {
		if r == k {
			return true
		}
	}
	return false
}

// IgnoreReason says why the payload decoder ignored a field of an accepted
// message instead of making it a measurement. Its String value labels the
// bridge's iotpipe_bridge_ignored_fields_total counter, so the names are
// stable: new reasons may be added, existing ones never change. Every field
// is counted once, under one reason; the reserved members ts, seq, metrics,
// tags and device_id are never counted.
type IgnoreReason uint8

// Why a field is ignored. Without a "metrics" object the measurements are
// the numeric top-level members, and the others are counted by the kind of
// their value; with a "metrics" object every other top-level member is
// counted as IgnoredBesideMetrics, whatever its value.
const (
	// IgnoredStringValue ("string_value"): a top-level string that holds
	// neither a JSON number nor a spelled-out NaN or infinity, such as
	// "fw":"1.2.3" or " 21.5" (surrounding spaces are not a number).
	IgnoredStringValue IgnoreReason = iota
	// IgnoredNumericString ("numeric_string"): a top-level string holding
	// exactly a JSON number ("21.5", "-3", "1e3") while
	// DecodeOptions.NumericStrings is off.
	IgnoredNumericString
	// IgnoredNonFiniteString ("non_finite_string"): a top-level "NaN",
	// "Inf", "+Inf", "-Inf" or "Infinity" string (any case) while
	// DecodeOptions.NumericStrings is off. With it on, such a string is a
	// measurement that can never be aggregated, and the message is rejected
	// with ReasonNonFinite.
	IgnoredNonFiniteString
	// IgnoredBoolValue ("bool_value"): a top-level true or false while
	// DecodeOptions.AcceptBools is off.
	IgnoredBoolValue
	// IgnoredNullValue ("null_value"): a top-level null.
	IgnoredNullValue
	// IgnoredObjectValue ("object_value"): a top-level object other than
	// "metrics" and "tags" (nested objects are not flattened).
	IgnoredObjectValue
	// IgnoredArrayValue ("array_value"): a top-level array.
	IgnoredArrayValue
	// IgnoredBesideMetrics ("top_level_beside_metrics"): any top-level
	// member, numbers included, of a payload that has a "metrics" object,
	// which then holds all the measurements.
	IgnoredBesideMetrics

	numIgnoreReasons
)

var ignoreReasonNames = [numIgnoreReasons]string{
	IgnoredStringValue:     "string_value",
	IgnoredNumericString:   "numeric_string",
	IgnoredNonFiniteString: "non_finite_string",
	IgnoredBoolValue:       "bool_value",
	IgnoredNullValue:       "null_value",
	IgnoredObjectValue:     "object_value",
	IgnoredArrayValue:      "array_value",
	IgnoredBesideMetrics:   "top_level_beside_metrics",
}

// String returns the stable name of r, for example "string_value".
func (r IgnoreReason) String() string {
	if r < numIgnoreReasons {
		return ignoreReasonNames[r]
	}
	return "unknown"
}

// AllIgnoreReasons returns every IgnoreReason in a fixed order, for example
// to initialise per-reason counters. The caller owns the returned slice.
func AllIgnoreReasons() []IgnoreReason {
	out := make([]IgnoreReason, numIgnoreReasons)
	for i := range out {
		out[i] = IgnoreReason(i)
	}
	return out
}

// IgnoredCounts counts the ignored fields of one message by IgnoreReason
// (index). It is a plain array, so keeping it in a Reading allocates
// nothing.
type IgnoredCounts [numIgnoreReasons]uint32

// Total returns the sum of the counts.
func (c *IgnoredCounts) Total() int {
	n := 0
	for _, v := range c {
		n += int(v)
	}
	return n
}

// RejectError is the error returned for input that can never be accepted, so
// that retrying is pointless and the input belongs in the DLQ. Reason is for
// programs (the DLQ "reason" header, metric labels), Detail for people.
type RejectError struct {
	Reason Reason
	Detail string
}

// Error returns "<reason>: <detail>", or just the reason when Detail is empty.
func (e *RejectError) Error() string {
	if e.Detail == "" {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Detail
}

// ReasonOf returns the Reason of the first *RejectError in err's chain, and
// false when there is none.
func ReasonOf(err error) (Reason, bool) {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason, true
	}
	return "", false
}

func reject(reason Reason, detail string) *RejectError {
	return &RejectError{Reason: reason, Detail: detail}
}
