package schemas

import (
	"testing"
	"time"
)

var benchPayloads = []struct {
	name    string
	payload string
}{
	{"metrics_object/rfc3339", `{"ts":"2026-11-27T13:59:58.123Z","seq":42,"metrics":{"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67}}`},
	{"metrics_object/epoch_ms", `{"ts":1795787998123,"seq":42,"metrics":{"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67}}`},
	{"top_level/rfc3339", `{"ts":"2026-11-27T13:59:58.123Z","seq":42,"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67}`},
	{"top_level/epoch_ms", `{"ts":1795787998123,"seq":42,"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67}`},
	{"with_tags/epoch_ms", `{"ts":1795787998123,"seq":42,"metrics":{"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67},"tags":{"site":"plant-a","fw":"1.4.2"}}`},
	// Not typical: counted ignored fields (a string, a numeric string, a boolean).
	{"top_level_ignored/epoch_ms", `{"ts":1795787998123,"seq":42,"temp":21.5,"humidity":40.5,"pressure":1013.25,"battery":3.7,"rssi":-67,"fw":"1.4.2","co2":"412","online":true}`},
}

// BenchmarkDecode measures the bridge's per-message work for a typical
// 5-measurement payload.
func BenchmarkDecode(b *testing.B) {
	received := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	const topic = "devices/sensor-0001/telemetry"
	for _, bc := range benchPayloads {
		b.Run(bc.name, func(b *testing.B) {
			d, err := NewDecoder(DefaultDecodeOptions())
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(bc.payload)
			var r Reading
			if err := d.Decode(topic, payload, received, &r); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if err := d.Decode(topic, payload, received, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchReading() *Reading {
	return &Reading{
		DeviceID:     "sensor-0001",
		EventTime:    time.Date(2026, 11, 27, 13, 59, 58, 123000000, time.UTC),
		ReceivedTime: time.Date(2026, 11, 27, 14, 0, 0, 1000, time.UTC),
		Seq:          42,
		HasSeq:       true,
		Measurements: []Measurement{
			{"battery", 3.7}, {"humidity", 40.5}, {"pressure", 1013.25}, {"rssi", -67}, {"temp", 21.5},
		},
	}
}

// BenchmarkAppendRaw measures encoding a telemetry.raw record.
func BenchmarkAppendRaw(b *testing.B) {
	r := benchReading()
	buf := AppendRaw(nil, r)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRaw(buf[:0], r)
	}
}

// BenchmarkDecodeRaw measures the processor's and sinks' per-record decode.
func BenchmarkDecodeRaw(b *testing.B) {
	rec := AppendRaw(nil, benchReading())
	b.Run("RawDecoder", func(b *testing.B) {
		var d RawDecoder
		var r Reading
		b.SetBytes(int64(len(rec)))
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Decode(rec, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pooled", func(b *testing.B) {
		var r Reading
		b.SetBytes(int64(len(rec)))
		b.ReportAllocs()
		for b.Loop() {
			if err := DecodeRaw(rec, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchMetric() *WindowMetric {
	start := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	return &WindowMetric{
		DeviceID: "sensor-0001", Metric: "temp",
		WindowStart: start, WindowEnd: start.Add(time.Minute),
		Count: 60, Sum: 1290.5, Min: 20.25, Max: 22.75, Mean: 21.508333333333333, Stddev: 0.6123724356957945,
		First: 20.5, Last: 22.25, P50: 21.5, P95: 22.5, P99: 22.75,
		FirstTime: start.Add(500 * time.Millisecond), LastTime: start.Add(59500 * time.Millisecond),
		Revision: 1, EmittedAt: start.Add(90 * time.Second),
	}
}

// BenchmarkMetrics measures encoding and decoding a telemetry.metrics record.
func BenchmarkMetrics(b *testing.B) {
	m := benchMetric()
	rec := AppendMetric(nil, m)
	b.Run("AppendMetric", func(b *testing.B) {
		buf := rec[:0:0]
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendMetric(buf[:0], m)
		}
	})
	b.Run("Decode", func(b *testing.B) {
		var d MetricsDecoder
		var out MetricsRecord
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Decode(rec, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
