package schemas

import (
	"errors"
	"testing"
	"time"

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

func TestHeartbeatRoundTrip(t *testing.T) {
	h := Heartbeat{Bridge: "iotpipe-bridge-a", Time: time.Date(2026, 12, 7, 16, 30, 1, 123456789, time.UTC)}
	r := HeartbeatRecord("telemetry.raw", 3, h)
	if !IsHeartbeat(r.Headers) || r.Partition != 3 || !r.Timestamp.Equal(h.Time) || r.Key != nil {
		t.Fatalf("record %+v", r)
	}
	got, err := DecodeHeartbeat(r.Value)
	if err != nil {
		t.Fatal(err)
	}
	if want := h.Time.Truncate(time.Microsecond); got.Bridge != h.Bridge || !got.Time.Equal(want) {
		t.Fatalf("decoded %+v, want %s at %s (%s)", got, h.Bridge, want, r.Value)
	}
	for _, bad := range []string{``, `{}`, `{"bridge":"b"}`, `{"time":"2026-12-07T16:30:01Z"}`, `[1]`, `{"bridge":"b","time":"yesterday"}`} {
		if _, err := DecodeHeartbeat([]byte(bad)); !errors.Is(err, ErrBadHeartbeat) {
			t.Errorf("%q: err %v, want ErrBadHeartbeat", bad, err)
		}
	}
}
