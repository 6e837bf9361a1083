package lake

import (
	"encoding/json"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotpipe/iotpipe/schemas"
)

// Dataset is one table of the lake: a folder of Parquet files with one schema.
type Dataset int

// The datasets of the lake.
const (
	// Readings holds one row per measurement of a telemetry.readings record
	// (a telemetry.raw record the processor accepted).
	Readings Dataset = iota
	// Metrics holds one row per telemetry.metrics record of kind "metric".
	Metrics
	// Activity holds one row per telemetry.metrics record of kind "activity".
	Activity
	numDatasets
)

// String returns the dataset's folder name: readings, metrics or activity.
func (d Dataset) String() string {
	switch d {
	case Readings:
		return "readings"
	case Metrics:
		return "metrics"
	case Activity:
		return "activity"
	}
	return "unknown"
}

var tsUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

func field(name string, t arrow.DataType, nullable bool) arrow.Field {
	return arrow.Field{Name: name, Type: t, Nullable: nullable}
}

// Column names shared by every dataset: the Kafka position of the record
// the row came from (lineage).
const (
	colPartition = "kafka_partition"
	colOffset    = "kafka_offset"
)

// ReadingsSchema is the Arrow schema of the readings dataset. Timestamps are
// UTC microseconds (Parquet TIMESTAMP(MICROS, isAdjustedToUTC=true)).
var ReadingsSchema = arrow.NewSchema([]arrow.Field{
	field("time", tsUTC, false),
	field("device_id", arrow.BinaryTypes.String, false),
	field("metric", arrow.BinaryTypes.String, false),
	field("value", arrow.PrimitiveTypes.Float64, false),
	field("seq", arrow.PrimitiveTypes.Int64, true),
	field("received_at", tsUTC, false),
	field("tags", arrow.BinaryTypes.String, true),
	field(colPartition, arrow.PrimitiveTypes.Int32, false),
	field(colOffset, arrow.PrimitiveTypes.Int64, false),
}, nil)

// MetricsSchema is the Arrow schema of the metrics dataset (window
// aggregates). Consumers keep the row with the highest revision per
// (device_id, metric, window_start).
var MetricsSchema = arrow.NewSchema([]arrow.Field{
	field("window_start", tsUTC, false),
	field("window_end", tsUTC, false),
	field("device_id", arrow.BinaryTypes.String, false),
	field("metric", arrow.BinaryTypes.String, false),
	field("count", arrow.PrimitiveTypes.Int64, false),
	field("sum", arrow.PrimitiveTypes.Float64, false),
	field("min", arrow.PrimitiveTypes.Float64, false),
	field("max", arrow.PrimitiveTypes.Float64, false),
	field("mean", arrow.PrimitiveTypes.Float64, false),
	field("stddev", arrow.PrimitiveTypes.Float64, false),
	field("first", arrow.PrimitiveTypes.Float64, false),
	field("last", arrow.PrimitiveTypes.Float64, false),
	field("p50", arrow.PrimitiveTypes.Float64, false),
	field("p95", arrow.PrimitiveTypes.Float64, false),
	field("p99", arrow.PrimitiveTypes.Float64, false),
	field("first_time", tsUTC, false),
	field("last_time", tsUTC, false),
	field("revision", arrow.PrimitiveTypes.Int64, false),
	field("emitted_at", tsUTC, false),
	field(colPartition, arrow.PrimitiveTypes.Int32, false),
	field(colOffset, arrow.PrimitiveTypes.Int64, false),
}, nil)

// ActivitySchema is the Arrow schema of the activity dataset (per device
// per window: messages, sequence gaps, late and duplicate messages, seq
// resets, ignored payload fields). seq_resets and then ignored_fields are
// the last columns: files written before they existed lack them (read them
// with union_by_name / schema merging; absent means 0).
var ActivitySchema = arrow.NewSchema([]arrow.Field{
	field("window_start", tsUTC, false),
	field("window_end", tsUTC, false),
	field("device_id", arrow.BinaryTypes.String, false),
	field("messages", arrow.PrimitiveTypes.Int64, false),
	field("seq_gaps", arrow.PrimitiveTypes.Int64, false),
	field("late", arrow.PrimitiveTypes.Int64, false),
	field("duplicates", arrow.PrimitiveTypes.Int64, false),
	field("first_seen", tsUTC, true),
	field("last_seen", tsUTC, true),
	field("revision", arrow.PrimitiveTypes.Int64, false),
	field("emitted_at", tsUTC, false),
	field(colPartition, arrow.PrimitiveTypes.Int32, false),
	field(colOffset, arrow.PrimitiveTypes.Int64, false),
	field("seq_resets", arrow.PrimitiveTypes.Int64, false),
	field("ignored_fields", arrow.PrimitiveTypes.Int64, false),
}, nil)

// Schema returns the Arrow schema of d.
func (d Dataset) Schema() *arrow.Schema {
	switch d {
	case Metrics:
		return MetricsSchema
	case Activity:
		return ActivitySchema
	}
	return ReadingsSchema
}

// rowBuilder accumulates the rows of one dataset in Arrow builders.
type rowBuilder struct {
	rb    *array.RecordBuilder
	ts    []*array.TimestampBuilder // by column index, nil if not a timestamp
	str   []*array.StringBuilder
	f64   []*array.Float64Builder
	i64   []*array.Int64Builder
	i32   []*array.Int32Builder
	rows  int
	bytes int // rough in-memory size of the pending rows
}

func newRowBuilder(mem memory.Allocator, sc *arrow.Schema) *rowBuilder {
	b := &rowBuilder{rb: array.NewRecordBuilder(mem, sc)}
	n := sc.NumFields()
	b.ts = make([]*array.TimestampBuilder, n)
	b.str = make([]*array.StringBuilder, n)
	b.f64 = make([]*array.Float64Builder, n)
	b.i64 = make([]*array.Int64Builder, n)
	b.i32 = make([]*array.Int32Builder, n)
	for i, f := range b.rb.Fields() {
		switch x := f.(type) {
		case *array.TimestampBuilder:
			b.ts[i] = x
		case *array.StringBuilder:
			b.str[i] = x
		case *array.Float64Builder:
			b.f64[i] = x
		case *array.Int64Builder:
			b.i64[i] = x
		case *array.Int32Builder:
			b.i32[i] = x
		}
	}
	return b
}

// record returns the pending rows as a record and resets the builder.
func (b *rowBuilder) record() arrow.RecordBatch {
	b.rows, b.bytes = 0, 0
	return b.rb.NewRecordBatch()
}

func (b *rowBuilder) release() { b.rb.Release() }

// Fixed per-row in-memory sizes (values + offsets + validity), used to
// bound memory and to rotate files by size before they are compressed.
const (
	readingRowBytes  = 8 + 4 + 4 + 8 + 9 + 8 + 4 + 4 + 8
	metricRowBytes   = 8*17 + 4 + 4 + 4
	activityRowBytes = 8*12 + 4 + 4
)

// appendReading appends one row per measurement of r; tags is r.Tags as a
// JSON object (sorted keys), or "" for none.
func (b *rowBuilder) appendReading(r *schemas.Reading, tags string, partition int32, offset int64) {
	t := arrow.Timestamp(r.EventTime.UnixMicro())
	recv := arrow.Timestamp(r.ReceivedTime.UnixMicro())
	n := len(r.Measurements)
	for i := range r.Measurements {
		m := &r.Measurements[i]
		b.ts[0].Append(t)
		b.str[1].Append(r.DeviceID)
		b.str[2].Append(m.Name)
		b.f64[3].Append(m.Value)
		if r.HasSeq {
			b.i64[4].Append(r.Seq)
		} else {
			b.i64[4].AppendNull()
		}
		b.ts[5].Append(recv)
		if tags != "" {
			b.str[6].Append(tags)
		} else {
			b.str[6].AppendNull()
		}
		b.i32[7].Append(partition)
		b.i64[8].Append(offset)
		b.bytes += readingRowBytes + len(r.DeviceID) + len(m.Name) + len(tags)
	}
	b.rows += n
}

func us(t interface{ UnixMicro() int64 }) arrow.Timestamp { return arrow.Timestamp(t.UnixMicro()) }

func (b *rowBuilder) appendMetric(m *schemas.WindowMetric, partition int32, offset int64) {
	b.ts[0].Append(us(m.WindowStart))
	b.ts[1].Append(us(m.WindowEnd))
	b.str[2].Append(m.DeviceID)
	b.str[3].Append(m.Metric)
	b.i64[4].Append(m.Count)
	for i, v := range [...]float64{m.Sum, m.Min, m.Max, m.Mean, m.Stddev, m.First, m.Last, m.P50, m.P95, m.P99} {
		b.f64[5+i].Append(v)
	}
	b.ts[15].Append(us(m.FirstTime))
	b.ts[16].Append(us(m.LastTime))
	b.i64[17].Append(m.Revision)
	b.ts[18].Append(us(m.EmittedAt))
	b.i32[19].Append(partition)
	b.i64[20].Append(offset)
	b.rows++
	b.bytes += metricRowBytes + len(m.DeviceID) + len(m.Metric)
}

func (b *rowBuilder) appendActivity(a *schemas.Activity, partition int32, offset int64) {
	b.ts[0].Append(us(a.WindowStart))
	b.ts[1].Append(us(a.WindowEnd))
	b.str[2].Append(a.DeviceID)
	b.i64[3].Append(a.Messages)
	b.i64[4].Append(a.SeqGaps)
	b.i64[5].Append(a.Late)
	b.i64[6].Append(a.Duplicates)
	if a.FirstSeen.IsZero() {
		b.ts[7].AppendNull()
		b.ts[8].AppendNull()
	} else {
		b.ts[7].Append(us(a.FirstSeen))
		b.ts[8].Append(us(a.LastSeen))
	}
	b.i64[9].Append(a.Revision)
	b.ts[10].Append(us(a.EmittedAt))
	b.i32[11].Append(partition)
	b.i64[12].Append(offset)
	b.i64[13].Append(a.SeqResets)
	b.i64[14].Append(a.IgnoredFields)
	b.rows++
	b.bytes += activityRowBytes + len(a.DeviceID)
}

// tagsJSON returns tags as a JSON object with sorted keys, "" when empty.
func tagsJSON(tags map[string]string) string {
	if len(tags) == 0 {
		return ""
	}
	b, err := json.Marshal(tags) // sorts the keys
	if err != nil {
		return ""
	}
	return string(b)
}
