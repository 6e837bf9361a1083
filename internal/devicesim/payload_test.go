package devicesim

import (
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// Every kind decodes as the bridge will see it: valid kinds to a reading
// with the right seq and time, invalid ones to their Reason.
func TestPayloadKinds(t *testing.T) {
	dec, err := schemas.NewDecoder(schemas.DefaultDecodeOptions())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 14, 0, 0, 123456789, time.UTC)
	kinds := append([]Kind{ValidRFC3339Metrics, ValidEpochMillisFlat, ValidEpochSecondsTags, ValidEpochMicros, ValidEpochNanos}, AllInvalidKinds...)
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			topic := "devices/dev-000007/telemetry"
			if k == NoDeviceID {
				topic = "devices/" + string(make([]byte, 0)) + "x/telemetry/extra"
			}
			p := AppendPayload(nil, k, 7, 42, now)
			var r schemas.Reading
			err := dec.Decode(topic, p, now, &r)
			if k.Valid() {
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				if !r.HasSeq || r.Seq != 42 || r.DeviceID != "dev-000007" || len(r.Measurements) != 2 {
					t.Fatalf("reading %+v from %s", r, p)
				}
				if d := r.EventTime.Sub(now); d < -time.Millisecond || d > 0 {
					t.Fatalf("event time %v, want about %v (%s)", r.EventTime, now, p)
				}
				return
			}
			reason, ok := schemas.ReasonOf(err)
			if !ok || reason != k.Reason() {
				t.Fatalf("payload %.80q: got %v, want reason %s", p, err, k.Reason())
			}
		})
	}
}

func TestKindOfFraction(t *testing.T) {
	s, err := New(func() Config {
		c := DefaultConfig()
		c.URL = "mqtt://127.0.0.1:1"
		c.Devices = 10
		c.InvalidFraction = 0.1
		c.Rate = 0
		c.ValidKinds = AllValidKinds()
		return c
	}(), service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	invalid := 0
	seen := map[Kind]bool{}
	for d := range 100 {
		for q := range int64(1000) {
			k := s.KindOf(d, q)
			seen[k] = true
			if !k.Valid() {
				invalid++
			}
			if k != s.KindOf(d, q) {
				t.Fatal("KindOf is not deterministic")
			}
		}
	}
	if invalid < 9000 || invalid > 11000 {
		t.Fatalf("invalid = %d of 100000, want about 10%%", invalid)
	}
	if len(seen) != int(numValid)+len(DefaultInvalidKinds) {
		t.Fatalf("kinds seen: %v", seen)
	}
}
