package devicesim

import (
	"math"
	"strconv"
	"time"
)

// Realistic is a valid kind whose payload carries several measurements
// with plausible signals: temperature (daily cycle, slow drift, noise and
// an occasional spike), humidity (moving against the temperature),
// pressure (slow weather swings) and battery (draining slowly with seq).
// Values are a pure function of device, seq and event time, so a
// duplicate carries exactly the same payload. It is not in the default
// ValidKinds (those rotate through the timestamp formats); choose it with
// ValidKinds: []Kind{Realistic}.
const Realistic Kind = 16

// realisticMeasurements is the number of measurements in a Realistic
// payload (every one becomes a reading).
const realisticMeasurements = 4

// RealisticMeasurements lists the measurement names of a Realistic
// payload.
var RealisticMeasurements = []string{"temperature", "humidity", "pressure", "battery"}

// noise returns a deterministic value in [-1, 1) for (dev, seq, salt).
func noise(dev int, seq int64, salt uint64) float64 {
	h := uint64(dev)*0x9E3779B97F4A7C15 ^ uint64(seq)*0xC2B2AE3D27D4EB4F ^ salt*0x94D049BB133111EB
	h ^= h >> 31
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 29
	return float64(h>>11)/float64(1<<52) - 1
}

// RealisticValues returns the measurements of device dev's message seq
// taken at ts, in the order of RealisticMeasurements.
func RealisticValues(dev int, seq int64, ts time.Time) [realisticMeasurements]float64 {
	const day = 86400.0
	t := float64(ts.UnixMilli()) / 1000
	phase := float64(dev%24) / 24 * 2 * math.Pi
	// Daily cycle, peak in the afternoon, per-device offset.
	daily := math.Sin(2*math.Pi*(math.Mod(t, day)/day-0.375) + phase*0.1)
	// Slow drift: a multi-day swing per device.
	drift := 1.5 * math.Sin(2*math.Pi*t/(5.3*day)+phase)
	temp := 17 + float64(dev%9) + 4*daily + drift + 0.25*noise(dev, seq, 1)
	if noise(dev, seq, 2) > 0.998 { // about one reading in 1000
		temp += 12 + 6*noise(dev, seq, 3)
	}
	hum := 55 - 2.5*(4*daily+drift) + float64(dev%5) + 1.2*noise(dev, seq, 4)
	hum = min(100, max(0, hum))
	pres := 1013 + 6*math.Sin(2*math.Pi*t/(3.1*day)+phase) + 0.3*noise(dev, seq, 5)
	// Battery drains 1 % per 5000 messages and starts between 60 and 100 %.
	bat := 100 - float64(dev%40) - float64(seq)/5000
	bat = math.Mod(bat+100, 100)
	return [realisticMeasurements]float64{temp, hum, pres, bat}
}

func appendRealistic(b []byte, dev int, seq int64, ts time.Time) []byte {
	v := RealisticValues(dev, seq, ts)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	b = append(b, `,"metrics":{`...)
	for i, name := range RealisticMeasurements {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, math.Round(v[i]*100)/100, 'f', -1, 64)
	}
	return append(b, "}}"...)
}

// Defaults of the time shifts of Config.OutOfOrderBy and Config.LateBy.
const (
	DefaultOutOfOrderBy = 3 * time.Second
	DefaultLateBy       = 2 * time.Minute
)

// Salts of the per-message choices, so that they are independent.
const (
	saltDuplicate  = 11
	saltLate       = 12
	saltOutOfOrder = 13
)

// chance reports, deterministically for (dev, seq, salt), whether an
// event of probability p happens.
func chance(dev int, seq int64, salt uint64, p float64) bool {
	return p > 0 && (noise(dev, seq, salt)+1)/2 < p
}
