package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderHeartbeat marks a heartbeat record on telemetry.raw: not a device
// reading but a progress mark written by a bridge to every partition (its
// value is a Heartbeat). Every consumer of telemetry.raw must recognise
// heartbeats with IsHeartbeat and skip them as readings: they are neither
// counted, copied, stored nor dead-lettered. The header's value is the
// bridge's instance id.
const HeaderHeartbeat = "iotpipe-heartbeat"

// IsHeartbeat reports whether a record with these headers is a heartbeat
// (it carries HeaderHeartbeat).
func IsHeartbeat(headers []kgo.RecordHeader) bool {
	for i := range headers {
		if headers[i].Key == HeaderHeartbeat {
			return true
		}
	}
	return false
}

// Heartbeat is the value of a heartbeat record: bridge Bridge says that
// every MQTT message it received before Time was produced to this
// partition before this record. A bridge writes no heartbeat while its
// ingest path may be stalled (disconnected from MQTT, the broker possibly
// queueing for it, a produce outstanding), so Time does not advance then.
// The record's timestamp is Time too.
type Heartbeat struct {
	// Bridge is the bridge's instance id (its MQTT client id: stable across
	// its restarts, unique among bridges).
	Bridge string `json:"bridge"`
	// Time is the bridge's clock when it wrote the heartbeat (UTC,
	// microseconds).
	Time time.Time `json:"time"`
}

// ErrBadHeartbeat reports a heartbeat value that does not decode.
var ErrBadHeartbeat = errors.New("invalid heartbeat record")

// AppendHeartbeat appends h's encoding (JSON: {"bridge":…,"time":RFC 3339
// with microseconds}) to b.
func AppendHeartbeat(b []byte, h Heartbeat) []byte {
	v, _ := json.Marshal(struct {
		Bridge string `json:"bridge"`
		Time   string `json:"time"`
	}{h.Bridge, h.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00")})
	return append(b, v...)
}

// DecodeHeartbeat decodes a heartbeat value (AppendHeartbeat); it fails
// with ErrBadHeartbeat when the value is not one, or has no bridge or time.
func DecodeHeartbeat(v []byte) (Heartbeat, error) {
	var h Heartbeat
	if err := json.Unmarshal(v, &h); err != nil {
		return Heartbeat{}, fmt.Errorf("%w: %w", ErrBadHeartbeat, err)
	}
	if h.Bridge == "" || h.Time.IsZero() {
		return Heartbeat{}, fmt.Errorf("%w: bridge and time are required (%q)", ErrBadHeartbeat, v)
	}
	h.Time = h.Time.UTC()
	return h, nil
}

// HeartbeatRecord returns the heartbeat record h for partition part of
// topic: header HeaderHeartbeat (value h.Bridge) and the record headers
// every record carries, timestamp h.Time, no key.
func HeartbeatRecord(topic string, part int32, h Heartbeat) *kgo.Record {
	return &kgo.Record{
		Topic: topic, Partition: part, Timestamp: h.Time,
		Value:   AppendHeartbeat(nil, h),
		Headers: append(RecordHeaders(""), kgo.RecordHeader{Key: HeaderHeartbeat, Value: []byte(h.Bridge)}),
	}
}
