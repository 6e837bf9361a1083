package lake

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// fleet generates realistic telemetry: devices reporting every 10 s a
// temperature (random walk, 0.01 resolution), a humidity (0.1) and a
// battery voltage (0.001, slowly falling), with a seq counter; one reading
// in 20 carries tags. It is what the compression figures are measured on.
type fleet struct {
	noisy   bool // full-precision values instead of sensor resolution
	rng     *rand.Rand
	devices []string
	temp    []float64
	hum     []float64
	vbat    []float64
	seq     []int64
	t       time.Time
	i       int
}

func newFleet(devices int, seed uint64) *fleet {
	f := &fleet{rng: rand.New(rand.NewPCG(seed, 1)), t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	for d := range devices {
		f.devices = append(f.devices, fmt.Sprintf("sensor-%05d", d))
		f.temp = append(f.temp, 15+10*f.rng.Float64())
		f.hum = append(f.hum, 30+40*f.rng.Float64())
		f.vbat = append(f.vbat, 3.6+0.5*f.rng.Float64())
		f.seq = append(f.seq, 0)
	}
	return f
}

func (f *fleet) round(v, res float64) float64 {
	if f.noisy {
		return v
	}
	return math.Round(v/res) * res
}

// next fills r with the next reading (reusing its slices).
func (f *fleet) next(r *schemas.Reading) {
	d := f.i % len(f.devices)
	if d == 0 && f.i > 0 {
		f.t = f.t.Add(10 * time.Second)
	}
	f.i++
	f.temp[d] += f.rng.NormFloat64() * 0.05
	f.hum[d] += f.rng.NormFloat64() * 0.2
	f.vbat[d] -= f.rng.Float64() * 0.0002
	f.seq[d]++
	jitter := time.Duration(f.rng.IntN(2_000_000)) * time.Microsecond
	r.DeviceID = f.devices[d]
	r.EventTime = f.t.Add(jitter)
	r.ReceivedTime = r.EventTime.Add(time.Duration(20_000+f.rng.IntN(80_000)) * time.Microsecond)
	r.Seq, r.HasSeq = f.seq[d], true
	r.Measurements = append(r.Measurements[:0],
		schemas.Measurement{Name: "humidity", Value: f.round(f.hum[d], 0.1)},
		schemas.Measurement{Name: "temperature", Value: f.round(f.temp[d], 0.01)},
		schemas.Measurement{Name: "vbat", Value: f.round(f.vbat[d], 0.001)},
	)
	r.Tags = nil
	if f.i%20 == 0 {
		r.Tags = map[string]string{"site": "plant-" + strconv.Itoa(d%7)}
	}
}

// devicePayload is the MQTT JSON a device would publish for r.
func devicePayload(b []byte, r *schemas.Reading) []byte {
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, r.EventTime.UnixMilli(), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"metrics":{`...)
	for i, m := range r.Measurements {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, m.Name)
		b = append(b, ':')
		b = strconv.AppendFloat(b, m.Value, 'f', -1, 64)
	}
	return append(b, "}}"...)
}

// encodeAll decodes every raw record and writes it into one readings file,
// as the sink does for a batch, and returns the file.
func encodeAll(b testing.TB, recs [][]byte) []byte {
	f, err := NewFile(Readings, FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var dec schemas.RawDecoder
	var r schemas.Reading
	for i, v := range recs {
		if err := dec.Decode(v, &r); err != nil {
			b.Fatal(err)
		}
		f.b.appendReading(&r, tagsJSON(r.Tags), 0, int64(i))
		if err := f.flushIfFull(); err != nil {
			b.Fatal(err)
		}
	}
	data, err := f.Close()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func fleetRecords(n int, noisy bool) (recs [][]byte, jsonBytes, payloadBytes, rows int) {
	fl := newFleet(1000, 42)
	fl.noisy = noisy
	var r schemas.Reading
	for range n {
		fl.next(&r)
		v := schemas.AppendRaw(nil, &r)
		recs = append(recs, v)
		jsonBytes += len(v)
		payloadBytes += len(devicePayload(nil, &r))
		rows += len(r.Measurements)
	}
	return
}

// BenchmarkEncode is the CPU ceiling of the sink's hot path on one core:
// decode telemetry.raw JSON, append rows, encode and compress Parquet (no
// Kafka, no S3). It also reports bytes per reading in Parquet against the
// telemetry.raw JSON value and the device's MQTT payload.
func BenchmarkEncode(b *testing.B) {
	b.Run("sensor-resolution", func(b *testing.B) { benchEncode(b, false) })
	// Worst case: every value a full-precision double (no repeats).
	b.Run("full-precision", func(b *testing.B) { benchEncode(b, true) })
}

func benchEncode(b *testing.B, noisy bool) {
	const n = 200_000
	recs, jsonBytes, payloadBytes, rows := fleetRecords(n, noisy)
	var size int
	b.ResetTimer()
	for range b.N {
		size = len(encodeAll(b, recs))
	}
	b.StopTimer()
	el := b.Elapsed().Seconds()
	b.ReportMetric(float64(rows*b.N)/el, "rows/s")
	b.ReportMetric(float64(n*b.N)/el, "readings/s")
	b.ReportMetric(float64(size)/n, "parquet_B/reading")
	b.ReportMetric(float64(jsonBytes)/n, "rawjson_B/reading")
	b.ReportMetric(float64(payloadBytes)/n, "payload_B/reading")
	b.ReportMetric(float64(jsonBytes)/float64(size), "x_smaller_than_raw")
	b.ReportMetric(float64(payloadBytes)/float64(size), "x_smaller_than_payload")
}
