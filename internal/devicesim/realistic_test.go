package devicesim

import (
	"math"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// A Realistic payload decodes to a reading with its four measurements,
// seq and event time, and the values stay in plausible ranges.
func TestRealisticPayloadDecodes(t *testing.T) {
	dec, err := schemas.NewDecoder(schemas.DefaultDecodeOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !Realistic.Valid() || Realistic.Reason() != "" || Realistic.String() != "realistic" {
		t.Fatalf("Realistic: valid %v reason %q name %q", Realistic.Valid(), Realistic.Reason(), Realistic)
	}
	now := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	for dev := range 30 {
		for seq := int64(0); seq < 200; seq += 7 {
			ts := now.Add(time.Duration(seq) * time.Minute)
			p := AppendPayload(nil, Realistic, dev, seq, ts)
			var r schemas.Reading
			if err := dec.Decode("devices/"+DeviceID("dev-", dev)+"/telemetry", p, ts, &r); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if !r.HasSeq || r.Seq != seq || !r.EventTime.Equal(ts) || len(r.Measurements) != len(RealisticMeasurements) {
				t.Fatalf("reading %+v from %s", r, p)
			}
			for _, want := range []struct {
				name   string
				lo, hi float64
			}{{"temperature", -10, 60}, {"humidity", 0, 100}, {"pressure", 990, 1030}, {"battery", 0, 100}} {
				v, ok := r.Value(want.name)
				if !ok || v < want.lo || v > want.hi {
					t.Fatalf("%s = %v (present %v) outside [%v, %v] in %s", want.name, v, ok, want.lo, want.hi, p)
				}
			}
		}
	}
}

// The temperature follows a daily cycle (warmer in the afternoon than at
// night), has occasional spikes, and battery drains with seq.
func TestRealisticSignals(t *testing.T) {
	day := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var night, afternoon float64
	for dev := range 50 {
		night += RealisticValues(dev, 1, day.Add(3*time.Hour))[0]
		afternoon += RealisticValues(dev, 1, day.Add(15*time.Hour))[0]
	}
	if afternoon-night < 50*4 {
		t.Errorf("mean temperature afternoon %.1f, night %.1f: no daily cycle", afternoon/50, night/50)
	}
	spikes := 0
	for seq := range int64(100_000) {
		v := RealisticValues(3, seq, day)
		if v[0]-RealisticValues(3, seq+1_000_000, day)[0] > 8 {
			spikes++
		}
	}
	if spikes < 20 || spikes > 500 {
		t.Errorf("%d spikes in 100000 readings, want about 100", spikes)
	}
	if b0, b1 := RealisticValues(1, 0, day)[3], RealisticValues(1, 10_000, day)[3]; !(b1 < b0) || math.Abs(b0-b1-2) > 0.01 {
		t.Errorf("battery %v → %v after 10000 messages, want 2 %% less", b0, b1)
	}
}

// The duplicate, late and out-of-order choices happen at about their
// fraction and independently of each other.
func TestChanceFractions(t *testing.T) {
	const n = 200_000
	for _, p := range []float64{0, 0.001, 0.01, 0.3, 1} {
		var dup, late, both int
		for i := range int64(n) {
			d := chance(int(i%97), i, saltDuplicate, p)
			l := chance(int(i%97), i, saltLate, p)
			if d {
				dup++
			}
			if l {
				late++
			}
			if d && l {
				both++
			}
		}
		for _, got := range []int{dup, late} {
			if f := float64(got) / n; math.Abs(f-p) > 0.1*p+0.0005 {
				t.Errorf("p=%v: fraction %v", p, f)
			}
		}
		if f := float64(both) / n; math.Abs(f-p*p) > 0.1*p*p+0.0005 {
			t.Errorf("p=%v: both %v, want about %v (not independent)", p, f, p*p)
		}
	}
}

func TestNewRejectsBadFractions(t *testing.T) {
	for _, edit := range []func(*Config){
		func(c *Config) { c.DuplicateFraction = 1.5 },
		func(c *Config) { c.LateFraction = -0.1 },
		func(c *Config) { c.OutOfOrderFraction = math.NaN() },
		func(c *Config) { c.LateBy = -time.Second },
		func(c *Config) { c.LateBy = 0 },
		func(c *Config) { c.DevicesPerConn = 0 },
	} {
		c := DefaultConfig()
		edit(&c)
		if _, err := New(c, service.Deps{}); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, err := New(func() Config {
		c := DefaultConfig()
		c.URL = "mqtt://x:1"
		c.ValidKinds = []Kind{Realistic}
		c.DuplicateFraction = 0.1
		c.LateFraction = 0.1
		c.OutOfOrderFraction = 0.1
		c.Rate = 0
		return c
	}(), service.Deps{}); err != nil {
		t.Fatal(err)
	}
}
