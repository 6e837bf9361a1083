package lake

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"

	"github.com/iotpipe/iotpipe/schemas"
)

func readBack(t *testing.T, data []byte) (arrow.Table, *file.Reader) {
	t.Helper()
	rdr, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Release)
	return tbl, rdr
}

func testReading(i int) *schemas.Reading {
	base := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	r := &schemas.Reading{
		DeviceID:     []string{"dev-a", "dev-b", "dev-c"}[i%3],
		EventTime:    base.Add(time.Duration(i) * 1234567 * time.Microsecond),
		ReceivedTime: base.Add(time.Duration(i)*1234567*time.Microsecond + 50*time.Millisecond),
		Seq:          int64(i),
		HasSeq:       i%5 != 0,
		Measurements: []schemas.Measurement{{Name: "humidity", Value: 40 + float64(i)/8}, {Name: "temp", Value: 21.5 - float64(i)/16}},
	}
	if !r.HasSeq {
		r.Seq = 0
	}
	if i%7 == 0 {
		r.Tags = map[string]string{"site": "a\"b", "floor": "3"}
	}
	return r
}

func TestFileReadingsRoundTrip(t *testing.T) {
	f, err := NewFile(Readings, FileOptions{RowGroupRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	const n = 250
	for i := range n {
		r := testReading(i)
		f.b.appendReading(r, tagsJSON(r.Tags), 3, int64(1000+i))
		if err := f.flushIfFull(); err != nil {
			t.Fatal(err)
		}
	}
	if f.Rows() != 2*n {
		t.Fatalf("Rows = %d, want %d", f.Rows(), 2*n)
	}
	data, err := f.Close()
	if err != nil {
		t.Fatal(err)
	}
	tbl, rdr := readBack(t, data)
	if tbl.NumRows() != 2*n {
		t.Fatalf("rows read = %d, want %d", tbl.NumRows(), 2*n)
	}
	if got := rdr.NumRowGroups(); got != 5 {
		t.Errorf("row groups = %d, want 5 (100 rows each)", got)
	}
	// Parquet logical types: timestamps are MICROS, adjusted to UTC.
	sc := rdr.MetaData().Schema
	for _, name := range []string{"time", "received_at"} {
		col := sc.Column(sc.ColumnIndexByName(name))
		ts, ok := col.LogicalType().(schema.TimestampLogicalType)
		if !ok || ts.TimeUnit() != schema.TimeUnitMicros || !ts.IsAdjustedToUTC() {
			t.Errorf("%s logical type = %s, want Timestamp(micros, UTC)", name, col.LogicalType())
		}
	}
	rg := rdr.MetaData().RowGroup(0)
	for _, name := range []string{"device_id", "metric"} {
		cc, err := rg.ColumnChunk(sc.ColumnIndexByName(name))
		if err != nil {
			t.Fatal(err)
		}
		if !cc.HasDictionaryPage() {
			t.Errorf("%s is not dictionary-encoded (encodings %v)", name, cc.Encodings())
		}
		if cc.Compression().String() != "ZSTD" {
			t.Errorf("%s compression = %s, want ZSTD", name, cc.Compression())
		}
	}
	if !arrow.TypeEqual(tbl.Schema().Field(0).Type, tsUTC) {
		t.Errorf("arrow type of time = %s", tbl.Schema().Field(0).Type)
	}

	// Values equal the input, row by row.
	tr := array.NewTableReader(tbl, 1000)
	defer tr.Release()
	row := 0
	for tr.Next() {
		rec := tr.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			r := testReading(row / 2)
			m := r.Measurements[row%2]
			check := func(col string, got, want any) {
				if got != want {
					t.Fatalf("row %d %s = %v, want %v", row, col, got, want)
				}
			}
			check("time", int64(rec.Column(0).(*array.Timestamp).Value(i)), r.EventTime.UnixMicro())
			check("device_id", rec.Column(1).(*array.String).Value(i), r.DeviceID)
			check("metric", rec.Column(2).(*array.String).Value(i), m.Name)
			check("value", rec.Column(3).(*array.Float64).Value(i), m.Value)
			check("seq valid", rec.Column(4).IsValid(i), r.HasSeq)
			if r.HasSeq {
				check("seq", rec.Column(4).(*array.Int64).Value(i), r.Seq)
			}
			check("received_at", int64(rec.Column(5).(*array.Timestamp).Value(i)), r.ReceivedTime.UnixMicro())
			check("tags", rec.Column(6).(*array.String).ValueStr(i), map[bool]string{true: `{"floor":"3","site":"a\"b"}`, false: "(null)"}[r.Tags != nil])
			check("partition", rec.Column(7).(*array.Int32).Value(i), int32(3))
			check("offset", rec.Column(8).(*array.Int64).Value(i), int64(1000+row/2))
			row++
		}
	}
}

func TestFileMetricsAndActivity(t *testing.T) {
	ws := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	m := schemas.WindowMetric{DeviceID: "d1", Metric: "temp", WindowStart: ws, WindowEnd: ws.Add(time.Minute),
		Count: 3, Sum: 6, Min: 1, Max: 3, Mean: 2, Stddev: 0.8, First: 1, Last: 3, P50: 2, P95: 3, P99: 3,
		FirstTime: ws.Add(time.Second), LastTime: ws.Add(50 * time.Second), Revision: 2, EmittedAt: ws.Add(2 * time.Minute)}
	a := schemas.Activity{DeviceID: "d1", WindowStart: ws, WindowEnd: ws.Add(time.Minute), Messages: 3, SeqGaps: 1,
		SeqResets: 4, IgnoredFields: 6, Late: 2, Duplicates: 0, Revision: 1, EmittedAt: ws.Add(2 * time.Minute)}
	for _, tc := range []struct {
		ds     Dataset
		append func(*rowBuilder)
		check  func(arrow.RecordBatch) string
	}{
		{Metrics, func(b *rowBuilder) { b.appendMetric(&m, 1, 7) }, func(r arrow.RecordBatch) string {
			return r.Column(3).(*array.String).Value(0) + " " + r.Column(8).ValueStr(0) + " " + r.Column(17).ValueStr(0)
		}},
		{Activity, func(b *rowBuilder) { b.appendActivity(&a, 1, 8) }, func(r arrow.RecordBatch) string {
			return r.Column(2).(*array.String).Value(0) + " " + r.Column(4).ValueStr(0) + " " + r.Column(7).ValueStr(0) + " " + r.Column(13).ValueStr(0) + " " + r.Column(14).ValueStr(0)
		}},
	} {
		f, err := NewFile(tc.ds, FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tc.append(f.b)
		data, err := f.Close()
		if err != nil {
			t.Fatal(err)
		}
		tbl, _ := readBack(t, data)
		if !sameFields(tbl.Schema(), tc.ds.Schema()) {
			t.Errorf("%s schema read back:\n%s\nwant\n%s", tc.ds, tbl.Schema(), tc.ds.Schema())
		}
		tr := array.NewTableReader(tbl, 10)
		tr.Next()
		got := tc.check(tr.RecordBatch())
		want := map[Dataset]string{Metrics: "temp 2 2", Activity: "d1 1 (null) 4 6"}[tc.ds]
		if got != want {
			t.Errorf("%s: got %q, want %q", tc.ds, got, want)
		}
		tr.Release()
	}
}

func TestObjectKey(t *testing.T) {
	hour := hourOf(time.Date(2026, 11, 27, 14, 59, 59, 999, time.UTC))
	for _, tc := range []struct {
		prefix string
		ds     Dataset
		want   string
	}{
		{"", Readings, "readings/date=2026-11-27/hour=14/telemetry.raw+3+12345.parquet"},
		{"lake/", Metrics, "lake/metrics/date=2026-11-27/hour=14/telemetry.raw+3+12345.parquet"},
	} {
		if got := objectKey(tc.prefix, tc.ds, hour, "telemetry.raw", 3, 12345); got != tc.want {
			t.Errorf("objectKey = %q, want %q", got, tc.want)
		}
	}
	if got := hourOf(time.Date(1969, 12, 31, 23, 30, 0, 0, time.UTC)); got != -3600 {
		t.Errorf("hourOf before epoch = %d", got)
	}
}

var _ = parquet.V2_LATEST

// sameFields compares names, types and nullability (not field metadata).
func sameFields(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.NumFields() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Name != fb.Name || !arrow.TypeEqual(fa.Type, fb.Type) || fa.Nullable != fb.Nullable {
			return false
		}
	}
	return true
}
