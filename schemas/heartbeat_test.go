package schemas

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestIsHeartbeat(t *testing.T) {
	if IsHeartbeat(RecordHeaders("devices/d1/telemetry")) {
		t.Fatal("a reading's headers were taken for a heartbeat")
	}
	if IsHeartbeat(nil) {
		t.Fatal("no headers were taken for a heartbeat")
	}
	h := append(RecordHeaders(""), kgo.RecordHeader{Key: HeaderHeartbeat, Value: []byte("bridge-1")})
	if !IsHeartbeat(h) {
		t.Fatal("a heartbeat was not recognised")
	}
}
