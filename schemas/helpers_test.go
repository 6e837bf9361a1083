package schemas

import (
	"fmt"
	"maps"
	"math"
)

// readingsIdentical compares readings field by field; floats by bits, so
// that -0 and 0 differ; times with ==, so that location and monotonic
// readings count. IgnoredBy is not compared: telemetry.raw does not carry
// it (compare it directly where both readings come from Decoder.Decode).
func readingsIdentical(a, b *Reading) bool {
	if a.DeviceID != b.DeviceID || a.EventTime != b.EventTime || a.ReceivedTime != b.ReceivedTime ||
		a.Seq != b.Seq || a.HasSeq != b.HasSeq || a.IgnoredFields != b.IgnoredFields || len(a.Measurements) != len(b.Measurements) ||
		(a.Tags == nil) != (b.Tags == nil) || !maps.Equal(a.Tags, b.Tags) {
		return false
	}
	for i := range a.Measurements {
		x, y := a.Measurements[i], b.Measurements[i]
		if x.Name != y.Name || math.Float64bits(x.Value) != math.Float64bits(y.Value) {
			return false
		}
	}
	return true
}

func fmtWrap(err error) error { return fmt.Errorf("decode message: %w", err) }
