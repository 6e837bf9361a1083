package schemas

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// MetricsKind tells the two record kinds of telemetry.metrics apart; it is
// the "kind" field of their JSON encoding.
type MetricsKind string

const (
	// KindMetric marks a WindowMetric record.
	KindMetric MetricsKind = "metric"
	// KindActivity marks an Activity record.
	KindActivity MetricsKind = "activity"
)

// WindowMetric is the aggregate of one metric of one device over one
// event-time window [WindowStart, WindowEnd): a telemetry.metrics v1 record
// of kind "metric". All times are UTC with microsecond precision.
//
// A window may be emitted more than once: when a late reading within the
// allowed lateness updates it, it is emitted again with a higher Revision,
// and consumers keep the record with the highest Revision for
// (DeviceID, Metric, WindowStart).
type WindowMetric struct {
	DeviceID string
	// Metric is the measurement name.
	Metric string
	// WindowStart is inclusive, WindowEnd exclusive.
	WindowStart, WindowEnd time.Time
	// Count is the number of readings aggregated, at least 1.
	Count int64
	// Sum, Min, Max, Mean and Stddev (population standard deviation) of the
	// values.
	Sum, Min, Max, Mean, Stddev float64
	// First and Last are the values with the earliest and latest event time.
	First, Last float64
	// P50, P95 and P99 are percentiles of the values; the processor
	// documents whether they are exact or estimated.
	P50, P95, P99 float64
	// FirstTime and LastTime are the event times of First and Last; both lie
	// in the window.
	FirstTime, LastTime time.Time
	// Revision is 1 for the first emission of the window and rises with each
	// re-emission.
	Revision int64
	// EmittedAt is the wall-clock time the processor emitted this revision.
	EmittedAt time.Time
}

// Activity summarises the messages of one device over one event-time window
// [WindowStart, WindowEnd): a telemetry.metrics v1 record of kind
// "activity". Like WindowMetric it may be re-emitted with a higher Revision.
type Activity struct {
	DeviceID string
	// WindowStart is inclusive, WindowEnd exclusive.
	WindowStart, WindowEnd time.Time
	// Messages is the number of accepted messages in the window.
	Messages int64
	// SeqGaps counts device messages missing according to "seq".
	SeqGaps int64
	// SeqResets counts accepted messages that reused the seq of another
	// message of the window with a different event time (a device that
	// restarted its counter): they are new readings, counted in Messages,
	// not duplicates. Optional on the wire (absent means 0).
	SeqResets int64
	// IgnoredFields sums the payload fields the bridge ignored (the
	// telemetry.raw record's ignored_fields: non-numeric top-level members,
	// members beside a metrics object) over the accepted messages of the
	// window. A duplicate, late or rejected message adds nothing, so a
	// device re-send is counted once. Optional on the wire: written only
	// when not 0, absent means 0.
	IgnoredFields int64
	// Late counts readings for this window that arrived too late and went to
	// the DLQ with ReasonLate.
	Late int64
	// Duplicates counts messages dropped as duplicates (same event time
	// and seq again).
	Duplicates int64
	// FirstSeen and LastSeen are the earliest and latest event times of the
	// messages counted; both zero when Messages is 0, and otherwise in the
	// window with FirstSeen <= LastSeen.
	FirstSeen, LastSeen time.Time
	// Revision is 1 for the first emission of the window and rises with each
	// re-emission.
	Revision int64
	// EmittedAt is the wall-clock time the processor emitted this revision.
	EmittedAt time.Time
}

// MetricsRecord is a decoded telemetry.metrics record: Kind says which of
// Metric and Activity holds it; the other is left as it was.
type MetricsRecord struct {
	Kind     MetricsKind
	Metric   WindowMetric
	Activity Activity
}

func finite(fs ...float64) bool {
	for _, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
	}
	return true
}

func validWindow(start, end time.Time) bool { return start.Before(end) }

func inWindow(t, start, end time.Time) bool { return !t.Before(start) && t.Before(end) }

// Validate reports whether m is a valid record: valid device id and metric
// name (ValidName), WindowStart before WindowEnd, Count >= 1, every float
// finite, Min <= Max, Stddev >= 0, FirstTime <= LastTime both in the window,
// and Revision >= 1. The error is a *RejectError with ReasonInvalidRecord.
func (m *WindowMetric) Validate() error {
	switch {
	case !ValidDeviceID(m.DeviceID):
		return invalidRecord("device_id %s is not a valid device id", quote(m.DeviceID))
	case !ValidName(m.Metric):
		return invalidRecord("metric %s is not a valid measurement name", quote(m.Metric))
	case !validWindow(m.WindowStart, m.WindowEnd):
		return invalidRecord("window_start_us is not before window_end_us")
	case m.Count < 1:
		return invalidRecord("count %d is less than 1", m.Count)
	case !finite(m.Sum, m.Min, m.Max, m.Mean, m.Stddev, m.First, m.Last, m.P50, m.P95, m.P99):
		return invalidRecord("an aggregate is NaN, infinite or missing")
	case m.Min > m.Max:
		return invalidRecord("min %v is greater than max %v", m.Min, m.Max)
	case m.Stddev < 0:
		return invalidRecord("stddev %v is negative", m.Stddev)
	case m.FirstTime.After(m.LastTime):
		return invalidRecord("first_time_us is after last_time_us")
	case !inWindow(m.FirstTime, m.WindowStart, m.WindowEnd) || !inWindow(m.LastTime, m.WindowStart, m.WindowEnd):
		return invalidRecord("first_time_us or last_time_us lies outside the window")
	case m.Revision < 1:
		return invalidRecord("revision %d is less than 1", m.Revision)
	}
	return nil
}

// Validate reports whether a is a valid record: valid device id,
// WindowStart before WindowEnd, non-negative counters, FirstSeen and
// LastSeen both zero or both in the window with FirstSeen <= LastSeen, and
// Revision >= 1. The error is a *RejectError with ReasonInvalidRecord.
func (a *Activity) Validate() error {
	switch {
	case !ValidDeviceID(a.DeviceID):
		return invalidRecord("device_id %s is not a valid device id", quote(a.DeviceID))
	case !validWindow(a.WindowStart, a.WindowEnd):
		return invalidRecord("window_start_us is not before window_end_us")
	case a.Messages < 0 || a.SeqGaps < 0 || a.SeqResets < 0 || a.Late < 0 || a.Duplicates < 0 || a.IgnoredFields < 0:
		return invalidRecord("a counter is negative")
	case a.FirstSeen.IsZero() != a.LastSeen.IsZero():
		return invalidRecord("first_seen_us and last_seen_us must be both present or both absent")
	case !a.FirstSeen.IsZero() && a.FirstSeen.After(a.LastSeen):
		return invalidRecord("first_seen_us is after last_seen_us")
	case !a.FirstSeen.IsZero() && (!inWindow(a.FirstSeen, a.WindowStart, a.WindowEnd) || !inWindow(a.LastSeen, a.WindowStart, a.WindowEnd)):
		return invalidRecord("first_seen_us or last_seen_us lies outside the window")
	case a.Revision < 1:
		return invalidRecord("revision %d is less than 1", a.Revision)
	}
	return nil
}

func appendIntField(dst []byte, key string, v int64) []byte {
	dst = append(dst, key...)
	return strconv.AppendInt(dst, v, 10)
}

func appendTimeField(dst []byte, key string, t time.Time) []byte {
	return appendIntField(dst, key, t.UnixMicro())
}

func appendFloatField(dst []byte, key string, f float64) []byte {
	dst = append(dst, key...)
	return appendFloat(dst, f)
}

// AppendMetric appends the telemetry.metrics v1 JSON encoding of m (kind
// "metric") to dst and returns the extended buffer:
//
//	{"schema_version":1,"kind":"metric","device_id":"d1","metric":"temp",
//	 "window_start_us":...,"window_end_us":...,"count":3,"sum":...,"min":...,
//	 "max":...,"mean":...,"stddev":...,"first":...,"last":...,"p50":...,
//	 "p95":...,"p99":...,"first_time_us":...,"last_time_us":...,
//	 "revision":1,"emitted_at_us":...}
//
// Times are integer Unix microseconds; floats are written so that they parse
// back exactly. AppendMetric does not validate m; a NaN or infinite value is
// written as null, which decoders reject.
func AppendMetric(dst []byte, m *WindowMetric) []byte {
	dst = append(dst, `{"schema_version":1,"kind":"metric","device_id":`...)
	dst = appendString(dst, m.DeviceID)
	dst = append(dst, `,"metric":`...)
	dst = appendString(dst, m.Metric)
	dst = appendTimeField(dst, `,"window_start_us":`, m.WindowStart)
	dst = appendTimeField(dst, `,"window_end_us":`, m.WindowEnd)
	dst = appendIntField(dst, `,"count":`, m.Count)
	dst = appendFloatField(dst, `,"sum":`, m.Sum)
	dst = appendFloatField(dst, `,"min":`, m.Min)
	dst = appendFloatField(dst, `,"max":`, m.Max)
	dst = appendFloatField(dst, `,"mean":`, m.Mean)
	dst = appendFloatField(dst, `,"stddev":`, m.Stddev)
	dst = appendFloatField(dst, `,"first":`, m.First)
	dst = appendFloatField(dst, `,"last":`, m.Last)
	dst = appendFloatField(dst, `,"p50":`, m.P50)
	dst = appendFloatField(dst, `,"p95":`, m.P95)
	dst = appendFloatField(dst, `,"p99":`, m.P99)
	dst = appendTimeField(dst, `,"first_time_us":`, m.FirstTime)
	dst = appendTimeField(dst, `,"last_time_us":`, m.LastTime)
	dst = appendIntField(dst, `,"revision":`, m.Revision)
	dst = appendTimeField(dst, `,"emitted_at_us":`, m.EmittedAt)
	return append(dst, '}')
}

// AppendActivity appends the telemetry.metrics v1 JSON encoding of a (kind
// "activity") to dst and returns the extended buffer:
//
//	{"schema_version":1,"kind":"activity","device_id":"d1",
//	 "window_start_us":...,"window_end_us":...,"messages":12,"seq_gaps":0,
//	 "seq_resets":0,"late":0,"duplicates":0,"first_seen_us":...,
//	 "last_seen_us":...,"revision":1,"emitted_at_us":...}
//
// first_seen_us and last_seen_us are omitted when zero, ignored_fields
// (after duplicates) when 0. AppendActivity does not validate a.
func AppendActivity(dst []byte, a *Activity) []byte {
	dst = append(dst, `{"schema_version":1,"kind":"activity","device_id":`...)
	dst = appendString(dst, a.DeviceID)
	dst = appendTimeField(dst, `,"window_start_us":`, a.WindowStart)
	dst = appendTimeField(dst, `,"window_end_us":`, a.WindowEnd)
	dst = appendIntField(dst, `,"messages":`, a.Messages)
	dst = appendIntField(dst, `,"seq_gaps":`, a.SeqGaps)
	dst = appendIntField(dst, `,"seq_resets":`, a.SeqResets)
	dst = appendIntField(dst, `,"late":`, a.Late)
	dst = appendIntField(dst, `,"duplicates":`, a.Duplicates)
	if a.IgnoredFields != 0 {
		dst = appendIntField(dst, `,"ignored_fields":`, a.IgnoredFields)
	}
	if !a.FirstSeen.IsZero() {
		dst = appendTimeField(dst, `,"first_seen_us":`, a.FirstSeen)
	}
	if !a.LastSeen.IsZero() {
		dst = appendTimeField(dst, `,"last_seen_us":`, a.LastSeen)
	}
	dst = appendIntField(dst, `,"revision":`, a.Revision)
	dst = appendTimeField(dst, `,"emitted_at_us":`, a.EmittedAt)
	return append(dst, '}')
}

// MetricsDecoder decodes telemetry.metrics v1 records. It reuses its buffers
// between calls: keep one per goroutine; it is not safe for concurrent use.
// The zero value is ready to use.
type MetricsDecoder struct {
	rd    jsonReader
	names interner
	vals  [numMetricsFields]field
}

var metricsDecoders = sync.Pool{New: func() any { return new(MetricsDecoder) }}

// DecodeMetricsRecord decodes one telemetry.metrics record with a pooled
// MetricsDecoder. It is safe for concurrent use; see MetricsDecoder.Decode.
func DecodeMetricsRecord(b []byte, rec *MetricsRecord) error {
	d := metricsDecoders.Get().(*MetricsDecoder)
	err := d.Decode(b, rec)
	metricsDecoders.Put(d)
	return err
}

// The members of both metrics record kinds, as indexes into
// MetricsDecoder.vals.
const (
	mfSchemaVersion = iota
	mfKind
	mfDeviceID
	mfMetric
	mfWindowStart
	mfWindowEnd
	mfCount
	mfSum
	mfMin
	mfMax
	mfMean
	mfStddev
	mfFirst
	mfLast
	mfP50
	mfP95
	mfP99
	mfFirstTime
	mfLastTime
	mfMessages
	mfSeqGaps
	mfSeqResets
	mfLate
	mfDuplicates
	mfIgnoredFields
	mfFirstSeen
	mfLastSeen
	mfRevision
	mfEmittedAt
	numMetricsFields
)

var metricsFieldNames = [numMetricsFields]string{
	"schema_version", "kind", "device_id", "metric", "window_start_us", "window_end_us",
	"count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p95", "p99",
	"first_time_us", "last_time_us", "messages", "seq_gaps", "seq_resets", "late", "duplicates",
	"ignored_fields", "first_seen_us", "last_seen_us", "revision", "emitted_at_us",
}

func metricsFieldIndex(key []byte) int {
	switch string(key) {
	case "schema_version":
		return mfSchemaVersion
	case "kind":
		return mfKind
	case "device_id":
		return mfDeviceID
	case "metric":
		return mfMetric
	case "window_start_us":
		return mfWindowStart
	case "window_end_us":
		return mfWindowEnd
	case "count":
		return mfCount
	case "sum":
		return mfSum
	case "min":
		return mfMin
	case "max":
		return mfMax
	case "mean":
		return mfMean
	case "stddev":
		return mfStddev
	case "first":
		return mfFirst
	case "last":
		return mfLast
	case "p50":
		return mfP50
	case "p95":
		return mfP95
	case "p99":
		return mfP99
	case "first_time_us":
		return mfFirstTime
	case "last_time_us":
		return mfLastTime
	case "messages":
		return mfMessages
	case "seq_gaps":
		return mfSeqGaps
	case "seq_resets":
		return mfSeqResets
	case "late":
		return mfLate
	case "duplicates":
		return mfDuplicates
	case "ignored_fields":
		return mfIgnoredFields
	case "first_seen_us":
		return mfFirstSeen
	case "last_seen_us":
		return mfLastSeen
	case "revision":
		return mfRevision
	case "emitted_at_us":
		return mfEmittedAt
	}
	return -1
}

// Decode decodes b, a telemetry.metrics v1 record, into rec: it sets
// rec.Kind and overwrites rec.Metric or rec.Activity accordingly, leaving
// the other untouched. Unknown fields (including those of the other kind)
// are ignored; a schema_version other than 1 (reported first), an unknown
// kind, a missing or mistyped field, a duplicate key, invalid JSON or a
// record that fails Validate yields a *RejectError with
// ReasonInvalidRecord. Decode does not retain b.
func (d *MetricsDecoder) Decode(b []byte, rec *MetricsRecord) error {
	rd := &d.rd
	if err := recordStart(rd, b); err != nil {
		return err
	}
	clear(d.vals[:])
	var dup []byte
	for first := true; ; first = false {
		key, ok := rd.nextKey(first)
		if !ok {
			break
		}
		i := metricsFieldIndex(key)
		if i < 0 {
			rd.skip()
			continue
		}
		if d.vals[i].kind != kindNone && dup == nil {
			dup = key
		}
		d.vals[i] = field{}
		readField(rd, &d.vals[i])
	}
	rd.end()
	if rd.err != nil {
		return malformedRecord(rd)
	}
	if err := checkVersion(d.vals[mfSchemaVersion]); err != nil {
		return err
	}
	if dup != nil {
		return invalidRecord("key %s occurs twice", quote(string(dup)))
	}
	kf := d.vals[mfKind]
	if kf.kind != kindString {
		return invalidRecord(`"kind" is %s, want %q or %q`, kindName(kf.kind), KindMetric, KindActivity)
	}
	var err error
	switch MetricsKind(kf.val) {
	case KindMetric:
		rec.Kind = KindMetric
		m := &rec.Metric
		*m = WindowMetric{}
		d.str(mfDeviceID, &m.DeviceID, &err)
		d.str(mfMetric, &m.Metric, &err)
		d.time(mfWindowStart, &m.WindowStart, false, &err)
		d.time(mfWindowEnd, &m.WindowEnd, false, &err)
		d.int(mfCount, &m.Count, &err)
		for i, p := range [...]*float64{&m.Sum, &m.Min, &m.Max, &m.Mean, &m.Stddev, &m.First, &m.Last, &m.P50, &m.P95, &m.P99} {
			d.float(mfSum+i, p, &err)
		}
		d.time(mfFirstTime, &m.FirstTime, false, &err)
		d.time(mfLastTime, &m.LastTime, false, &err)
		d.int(mfRevision, &m.Revision, &err)
		d.time(mfEmittedAt, &m.EmittedAt, false, &err)
		if err != nil {
			return err
		}
		return m.Validate()
	case KindActivity:
		rec.Kind = KindActivity
		a := &rec.Activity
		*a = Activity{}
		d.str(mfDeviceID, &a.DeviceID, &err)
		d.time(mfWindowStart, &a.WindowStart, false, &err)
		d.time(mfWindowEnd, &a.WindowEnd, false, &err)
		d.int(mfMessages, &a.Messages, &err)
		d.int(mfSeqGaps, &a.SeqGaps, &err)
		d.optInt(mfSeqResets, &a.SeqResets, &err)
		d.int(mfLate, &a.Late, &err)
		d.int(mfDuplicates, &a.Duplicates, &err)
		d.optInt(mfIgnoredFields, &a.IgnoredFields, &err)
		d.time(mfFirstSeen, &a.FirstSeen, true, &err)
		d.time(mfLastSeen, &a.LastSeen, true, &err)
		d.int(mfRevision, &a.Revision, &err)
		d.time(mfEmittedAt, &a.EmittedAt, false, &err)
		if err != nil {
			return err
		}
		return a.Validate()
	default:
		return invalidRecord("unknown kind %s, want %q or %q", quote(string(kf.val)), KindMetric, KindActivity)
	}
}

// present reports whether field i was given, setting *err when a required
// one is missing.
func (d *MetricsDecoder) present(i int, optional bool, err *error) bool {
	if *err != nil {
		return false
	}
	if d.vals[i].kind == kindNone {
		if !optional {
			*err = invalidRecord("missing required field %q", metricsFieldNames[i])
		}
		return false
	}
	return true
}

func (d *MetricsDecoder) str(i int, dst *string, err *error) {
	if !d.present(i, false, err) {
		return
	}
	f := d.vals[i]
	if f.kind != kindString {
		*err = invalidRecord("%s is %s, want a string", metricsFieldNames[i], kindName(f.kind))
		return
	}
	*dst = d.names.get(f.val)
}

func (d *MetricsDecoder) int(i int, dst *int64, err *error) {
	if !d.present(i, false, err) {
		return
	}
	*dst, *err = intField(metricsFieldNames[i], &d.vals[i])
}

// optInt reads an optional integer field (added to version 1 later):
// absent means 0.
func (d *MetricsDecoder) optInt(i int, dst *int64, err *error) {
	if !d.present(i, true, err) {
		return
	}
	*dst, *err = intField(metricsFieldNames[i], &d.vals[i])
}

func (d *MetricsDecoder) time(i int, dst *time.Time, optional bool, err *error) {
	if !d.present(i, optional, err) {
		return
	}
	us, e := intField(metricsFieldNames[i], &d.vals[i])
	if e != nil {
		*err = e
		return
	}
	*dst = microTime(us)
}

func (d *MetricsDecoder) float(i int, dst *float64, err *error) {
	if !d.present(i, false, err) {
		return
	}
	f := d.vals[i]
	if f.kind != kindNumber {
		*err = invalidRecord("%s is %s, want a number", metricsFieldNames[i], kindName(f.kind))
		return
	}
	*dst = floatOf(f.dec, f.val)
}
