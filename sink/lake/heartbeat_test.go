package lake

import (
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// A bridge heartbeat in the stored raw topic is no reading: decode adds
// nothing to the batch (no file, no row) and reports no error (no dead
// letter); the caller consumes its offset like any other's.
func TestDecodeSkipsHeartbeats(t *testing.T) {
	s := &Sink{cfg: Config{RawTopic: "raw"}}
	hb := schemas.HeartbeatRecord("raw", 0, schemas.Heartbeat{Bridge: "b1", Time: time.Now()})
	if err := s.decode(nil, hb); err != nil { // a nil batch: touching it would panic
		t.Fatalf("decode of a heartbeat: %v", err)
	}
}
