package schemas

import "github.com/twmb/franz-go/pkg/kgo"

// HeaderHeartbeat marks a heartbeat record on telemetry.raw: not a device
// reading but a progress mark written by a bridge to every partition (its
// value and meaning are documented where the bridge writes it). Every
// consumer of telemetry.raw must recognise heartbeats with IsHeartbeat and
// skip them as readings: they are neither counted, copied, stored nor
// dead-lettered.
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
