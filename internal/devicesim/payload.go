package devicesim

import (
	"strconv"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// Kind is the shape of one simulated payload: a valid format or a kind of
// bad input.
type Kind uint8

// Valid payload kinds: every format the schemas decoder accepts.
const (
	// ValidRFC3339Metrics: RFC 3339 "ts", measurements under "metrics".
	ValidRFC3339Metrics Kind = iota
	// ValidEpochMillisFlat: epoch milliseconds, top-level measurements.
	ValidEpochMillisFlat
	// ValidEpochSecondsTags: fractional epoch seconds, "metrics" and "tags".
	ValidEpochSecondsTags
	// ValidEpochMicros: epoch microseconds, top-level measurements.
	ValidEpochMicros
	// ValidEpochNanos: epoch nanoseconds under "metrics".
	ValidEpochNanos
	numValid
)

// Invalid payload kinds, each with the schemas.Reason the bridge gives it
// (see Kind.Reason).
const (
	MalformedJSON Kind = iota + 32
	BinaryGarbage
	MissingTimestamp
	FutureTimestamp
	PastTimestamp
	NaNValue
	InfValue
	EmptyPayload
	DeeplyNested
	Oversized
	NoDeviceID
)

// DefaultInvalidKinds are the bad inputs chosen by default: every invalid
// kind but Oversized, which costs 70 KB a message.
var DefaultInvalidKinds = []Kind{MalformedJSON, BinaryGarbage, MissingTimestamp, FutureTimestamp,
	PastTimestamp, NaNValue, InfValue, EmptyPayload, DeeplyNested, NoDeviceID}

// AllInvalidKinds lists every invalid kind.
var AllInvalidKinds = append(append([]Kind(nil), DefaultInvalidKinds...), Oversized)

// OversizedBytes is the size of an Oversized payload, above the default
// schemas.DefaultMaxPayloadBytes.
const OversizedBytes = schemas.DefaultMaxPayloadBytes + 6<<10

// Valid reports whether payloads of kind k are accepted by the bridge.
func (k Kind) Valid() bool { return k < numValid || k == Realistic }

// Reason is the rejection reason of an invalid kind, "" for valid ones
// (with the bridge's default decode limits).
func (k Kind) Reason() schemas.Reason {
	switch k {
	case MalformedJSON, BinaryGarbage, DeeplyNested:
		return schemas.ReasonMalformedJSON
	case MissingTimestamp:
		return schemas.ReasonMissingTimestamp
	case FutureTimestamp, PastTimestamp:
		return schemas.ReasonTimestampSkew
	case NaNValue, InfValue:
		return schemas.ReasonNonFinite
	case EmptyPayload:
		return schemas.ReasonEmptyPayload
	case Oversized:
		return schemas.ReasonPayloadTooLarge
	case NoDeviceID:
		return schemas.ReasonNoDeviceID
	}
	return ""
}

func (k Kind) String() string {
	switch k {
	case ValidRFC3339Metrics:
		return "valid_rfc3339_metrics"
	case ValidEpochMillisFlat:
		return "valid_epoch_ms_flat"
	case ValidEpochSecondsTags:
		return "valid_epoch_s_tags"
	case ValidEpochMicros:
		return "valid_epoch_us"
	case ValidEpochNanos:
		return "valid_epoch_ns"
	case Realistic:
		return "realistic"
	case MalformedJSON:
		return "malformed_json"
	case BinaryGarbage:
		return "binary_garbage"
	case MissingTimestamp:
		return "missing_timestamp"
	case FutureTimestamp:
		return "future_timestamp"
	case PastTimestamp:
		return "past_timestamp"
	case NaNValue:
		return "nan_value"
	case InfValue:
		return "inf_value"
	case EmptyPayload:
		return "empty_payload"
	case DeeplyNested:
		return "deeply_nested"
	case Oversized:
		return "oversized"
	case NoDeviceID:
		return "no_device_id"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

func appendMeasurements(b []byte, dev int, seq int64) []byte {
	b = append(b, `"temp":`...)
	b = strconv.AppendFloat(b, 15+float64((int64(dev)*7+seq)%200)/10, 'f', -1, 64)
	b = append(b, `,"humidity":`...)
	b = strconv.AppendFloat(b, 30+float64((int64(dev)*3+seq)%500)/10, 'f', -1, 64)
	return b
}

// AppendPayload appends the payload of kind k for device dev's message seq
// taken at ts.
func AppendPayload(b []byte, k Kind, dev int, seq int64, ts time.Time) []byte {
	head := func(b []byte) []byte {
		b = append(b, `{"seq":`...)
		return strconv.AppendInt(b, seq, 10)
	}
	switch k {
	case ValidRFC3339Metrics:
		b = head(b)
		b = append(b, `,"ts":"`...)
		b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","metrics":{`...)
		b = appendMeasurements(b, dev, seq)
		return append(b, "}}"...)
	case ValidEpochMillisFlat:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		b = append(b, ',')
		b = appendMeasurements(b, dev, seq)
		return append(b, `,"fw":"1.2.3"}`...)
	case ValidEpochSecondsTags:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendFloat(b, float64(ts.UnixMicro())/1e6, 'f', 6, 64)
		b = append(b, `,"metrics":{`...)
		b = appendMeasurements(b, dev, seq)
		b = append(b, `},"tags":{"site":"s`...)
		b = append(b, byte('a'+dev%4))
		return append(b, `"}}`...)
	case ValidEpochMicros:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMicro(), 10)
		b = append(b, ',')
		b = appendMeasurements(b, dev, seq)
		return append(b, '}')
	case ValidEpochNanos:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixNano(), 10)
		b = append(b, `,"metrics":{`...)
		b = appendMeasurements(b, dev, seq)
		return append(b, "}}"...)
	case Realistic:
		return appendRealistic(b, dev, seq, ts)
	case MalformedJSON:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		return append(b, `,"temp":`...)
	case BinaryGarbage:
		b = append(b, 0x00, 0xff, 0xfe, 0x80)
		b = strconv.AppendInt(b, seq, 16)
		return append(b, 0x01, 0x9c, '{', 0xc3)
	case MissingTimestamp:
		b = head(b)
		b = append(b, ',')
		b = appendMeasurements(b, dev, seq)
		return append(b, '}')
	case FutureTimestamp:
		ts = ts.Add(48 * time.Hour)
		return AppendPayload(b, ValidEpochMillisFlat, dev, seq, ts)
	case PastTimestamp:
		ts = ts.Add(-30 * 24 * time.Hour)
		return AppendPayload(b, ValidRFC3339Metrics, dev, seq, ts)
	case NaNValue:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		return append(b, `,"metrics":{"temp":"NaN","humidity":1}}`...)
	case InfValue:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		return append(b, `,"temp":1e999}`...)
	case EmptyPayload:
		return b
	case DeeplyNested:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		b = append(b, `,"temp":1,"deep":`...)
		for range 40 {
			b = append(b, `{"a":[`...)
		}
		b = append(b, '1')
		for range 40 {
			b = append(b, "]}"...)
		}
		return append(b, '}')
	case Oversized:
		b = head(b)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		b = append(b, `,"temp":1,"pad":"`...)
		for len(b) < OversizedBytes {
			b = append(b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"...)
		}
		return append(b, `"}`...)
	case NoDeviceID:
		return AppendPayload(b, ValidEpochMillisFlat, dev, seq, ts)
	}
	return b
}
