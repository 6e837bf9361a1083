package schemas

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka topic names.
const (
	// TopicRaw carries one canonical Reading per accepted MQTT message,
	// encoded by AppendRaw. Key: device id. Record timestamp: event time.
	TopicRaw = "telemetry.raw"
	// TopicMetrics carries WindowMetric and Activity records, encoded by
	// AppendMetric and AppendActivity. Key: device id.
	TopicMetrics = "telemetry.metrics"
	// TopicDLQ carries rejected input as DeadLetter records: the original
	// bytes as value, the cause in headers.
	TopicDLQ = "telemetry.dlq"
)

// Kafka record header names and values.
const (
	// HeaderContentType names the encoding of a record value; on the raw and
	// metrics topics its value is ContentTypeJSON.
	HeaderContentType = "content-type"
	// HeaderSchemaVersion holds the record's schema version as a decimal
	// string ("1"). It is also inside every JSON value.
	HeaderSchemaVersion = "schema-version"
	// HeaderMQTTTopic holds the MQTT topic a raw reading was published on.
	HeaderMQTTTopic = "mqtt-topic"
	// ContentTypeJSON is the HeaderContentType value of JSON records.
	ContentTypeJSON = "application/json"
)

// SchemaVersion is the version of the telemetry.raw, telemetry.metrics and
// telemetry.dlq formats this package writes and reads. A record with any
// other version is rejected with ReasonInvalidRecord.
const SchemaVersion = 1

var (
	contentTypeJSONBytes = []byte(ContentTypeJSON)
	schemaVersionBytes   = []byte(strconv.Itoa(SchemaVersion))
)

// Measurement is one named value of a reading.
type Measurement struct {
	Name  string
	Value float64
}

// Reading is the canonical telemetry.raw v1 record: what one device reported
// in one MQTT message, after validation.
//
// A valid Reading (see Validate) has a valid device id; UTC times with
// microsecond precision; Seq == 0 when HasSeq is false and Seq >= 0
// otherwise; at least one measurement, sorted by name with no name twice,
// each with a valid name and a finite value; and Tags nil when there are none
// (at most MaxTags, keys valid names, values at most MaxTagValueLen bytes of
// text without control characters).
type Reading struct {
	// DeviceID identifies the device; it comes from the MQTT topic.
	DeviceID string
	// EventTime is when the device took the reading (its "ts").
	EventTime time.Time
	// ReceivedTime is when the bridge received the message.
	ReceivedTime time.Time
	// Seq is the device's message counter, meaningful when HasSeq is true.
	Seq    int64
	HasSeq bool
	// Measurements are sorted by Name, names unique.
	Measurements []Measurement
	// Tags are string labels sent by the device; nil when none.
	Tags map[string]string
	// IgnoredFields is how many fields of the device's payload the bridge
	// ignored (see IgnoreReason); telemetry.raw carries it as
	// "ignored_fields", absent when 0.
	IgnoredFields int
	// IgnoredBy splits IgnoredFields by IgnoreReason. Only Decoder.Decode
	// fills it: telemetry.raw carries the total only, so a Reading read
	// back from it has IgnoredBy all zero.
	IgnoredBy IgnoredCounts
}

// Value returns the value of the measurement called name, and false when
// there is none. It relies on Measurements being sorted.
func (r *Reading) Value(name string) (float64, bool) {
	i, ok := slices.BinarySearchFunc(r.Measurements, name, func(m Measurement, n string) int {
		return strings.Compare(m.Name, n)
	})
	if !ok {
		return 0, false
	}
	return r.Measurements[i].Value, true
}

// Clone returns a deep copy of r that shares no slice or map with it, for
// keeping a Reading that a decoder will overwrite.
func (r *Reading) Clone() *Reading {
	c := *r
	c.Measurements = slices.Clone(r.Measurements)
	if r.Tags != nil {
		c.Tags = make(map[string]string, len(r.Tags))
		for k, v := range r.Tags {
			c.Tags[k] = v
		}
	}
	return &c
}

// Validate reports whether r satisfies the invariants documented on Reading.
// The error is a *RejectError with ReasonInvalidRecord. Every Reading that
// Decoder.Decode or RawDecoder.Decode return satisfies it.
func (r *Reading) Validate() error {
	if !ValidDeviceID(r.DeviceID) {
		return invalidRecord("device_id %s is not a valid device id", quote(r.DeviceID))
	}
	if r.HasSeq && r.Seq < 0 {
		return invalidRecord("seq %d is negative", r.Seq)
	}
	if !r.HasSeq && r.Seq != 0 {
		return invalidRecord("seq %d is set but HasSeq is false", r.Seq)
	}
	if r.IgnoredFields < 0 {
		return invalidRecord("ignored_fields %d is negative", r.IgnoredFields)
	}
	if n := r.IgnoredBy.Total(); n != 0 && n != r.IgnoredFields {
		return invalidRecord("ignored fields by reason sum to %d, not ignored_fields %d", n, r.IgnoredFields)
	}
	if len(r.Measurements) == 0 {
		return invalidRecord("no measurements")
	}
	for i, m := range r.Measurements {
		if !ValidName(m.Name) {
			return invalidRecord("measurement name %s is not valid", quote(m.Name))
		}
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			return invalidRecord("measurement %s is not finite", quote(m.Name))
		}
		if i > 0 && r.Measurements[i-1].Name >= m.Name {
			return invalidRecord("measurements are not sorted by name with unique names at %s", quote(m.Name))
		}
	}
	return validateTags(r.Tags)
}

func validateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return invalidRecord("%d tags, more than %d", len(tags), MaxTags)
	}
	for k, v := range tags {
		if !ValidName(k) {
			return invalidRecord("tag key %s is not valid", quote(k))
		}
		if !validTagValue(v) {
			return invalidRecord("tag %s has an invalid value (over %d bytes or control characters)", quote(k), MaxTagValueLen)
		}
	}
	return nil
}

func validTagValue(v string) bool { return len(v) <= MaxTagValueLen && validText(v, true) }

func invalidRecord(format string, args ...any) *RejectError {
	return reject(ReasonInvalidRecord, fmt.Sprintf(format, args...))
}

// quote quotes s for an error message, shortened to a bounded length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// AppendRaw appends the telemetry.raw v1 JSON encoding of r to dst and
// returns the extended buffer. The encoding is one JSON object with keys in
// this order:
//
//	{"schema_version":1,"device_id":"d1","event_time_us":1764252000123456,
//	 "received_time_us":1764252000200000,"seq":42,
//	 "measurements":{"humidity":40.5,"temp":21.5},"tags":{"site":"a"}}
//
// Times are integer Unix microseconds. "seq" is present only when r.HasSeq,
// "tags" only when r has tags (written sorted by key), and a last member
// "ignored_fields" (r.IgnoredFields) only when it is not 0, added within v1
// as an optional member that older readers skip. Values are written as
// the shortest decimal that parses back to exactly the same float64.
// AppendRaw does not validate r: a Reading that fails Validate may encode to
// a record that RawDecoder rejects. It does not allocate beyond growing dst.
func AppendRaw(dst []byte, r *Reading) []byte {
	dst = append(dst, `{"schema_version":1,"device_id":`...)
	dst = appendString(dst, r.DeviceID)
	dst = append(dst, `,"event_time_us":`...)
	dst = strconv.AppendInt(dst, r.EventTime.UnixMicro(), 10)
	dst = append(dst, `,"received_time_us":`...)
	dst = strconv.AppendInt(dst, r.ReceivedTime.UnixMicro(), 10)
	if r.HasSeq {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, r.Seq, 10)
	}
	dst = append(dst, `,"measurements":{`...)
	for i, m := range r.Measurements {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, m.Name)
		dst = append(dst, ':')
		dst = appendFloat(dst, m.Value)
	}
	dst = append(dst, '}')
	if len(r.Tags) > 0 {
		dst = append(dst, `,"tags":`...)
		dst = appendStringMap(dst, r.Tags)
	}
	if r.IgnoredFields != 0 {
		dst = append(dst, `,"ignored_fields":`...)
		dst = strconv.AppendInt(dst, int64(r.IgnoredFields), 10)
	}
	return append(dst, '}')
}

// appendStringMap appends m as a JSON object with keys sorted.
func appendStringMap(dst []byte, m map[string]string) []byte {
	var buf [MaxTags]string
	keys := buf[:0]
	if len(m) > len(buf) {
		keys = make([]string, 0, len(m))
	}
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendString(dst, m[k])
	}
	return append(dst, '}')
}

// RecordHeaders returns the headers of a JSON record on TopicRaw or
// TopicMetrics: content type, schema version and, when mqttTopic is not
// empty, the source MQTT topic. The content-type and schema-version values
// are shared and must not be modified.
func RecordHeaders(mqttTopic string) []kgo.RecordHeader {
	h := make([]kgo.RecordHeader, 2, 3)
	h[0] = kgo.RecordHeader{Key: HeaderContentType, Value: contentTypeJSONBytes}
	h[1] = kgo.RecordHeader{Key: HeaderSchemaVersion, Value: schemaVersionBytes}
	if mqttTopic != "" {
		h = append(h, kgo.RecordHeader{Key: HeaderMQTTTopic, Value: []byte(mqttTopic)})
	}
	return h
}

// RawRecord returns the Kafka record for a reading: topic TopicRaw, key the
// device id, value the given encoding of r (from AppendRaw, not copied),
// timestamp the event time, and RecordHeaders(mqttTopic).
func RawRecord(value []byte, r *Reading, mqttTopic string) *kgo.Record {
	return &kgo.Record{
		Topic:     TopicRaw,
		Key:       []byte(r.DeviceID),
		Value:     value,
		Timestamp: r.EventTime,
		Headers:   RecordHeaders(mqttTopic),
	}
}

// maxRecordDepth bounds nesting in Kafka records: the formats nest two
// levels, unknown fields get a little room.
const maxRecordDepth = 32

// maxInterned bounds the per-decoder string intern table.
const maxInterned = 8192

// interner hands out one string per distinct byte sequence, so that decoding
// recurring names does not allocate. The table is cleared when full.
type interner map[string]string

func (t *interner) get(b []byte) string {
	if s, ok := (*t)[string(b)]; ok {
		return s
	}
	if *t == nil {
		*t = make(map[string]string, 64)
	} else if len(*t) >= maxInterned {
		clear(*t)
	}
	s := string(b)
	(*t)[s] = s
	return s
}

// nameCache interns measurement names. Besides the interner it remembers
// the names of the previous record by position: devices send the same names
// in the same order, and comparing one string is cheaper than a map lookup.
type nameCache struct {
	names interner
	last  []string
}

// hit returns the name at position i of the previous record if it equals b.
func (c *nameCache) hit(i int, b []byte) (string, bool) {
	if i < len(c.last) && c.last[i] == string(b) {
		return c.last[i], true
	}
	return "", false
}

// miss interns b and remembers it at position i.
func (c *nameCache) miss(i int, b []byte) string {
	s := c.names.get(b)
	if i < len(c.last) {
		c.last[i] = s
	} else if i == len(c.last) && i < 1024 {
		c.last = append(c.last, s)
	}
	return s
}

func (c *nameCache) get(i int, b []byte) string {
	if s, ok := c.hit(i, b); ok {
		return s
	}
	return c.miss(i, b)
}

// RawDecoder decodes telemetry.raw v1 records. It reuses its buffers between
// calls: keep one per goroutine; it is not safe for concurrent use. The zero
// value is ready to use.
type RawDecoder struct {
	rd    jsonReader
	names nameCache
	ids   interner
}

// DecodeRaw decodes one telemetry.raw record with a pooled RawDecoder. It is
// safe for concurrent use; see RawDecoder.Decode.
func DecodeRaw(b []byte, r *Reading) error {
	d := rawDecoders.Get().(*RawDecoder)
	err := d.Decode(b, r)
	rawDecoders.Put(d)
	return err
}

var rawDecoders = sync.Pool{New: func() any { return new(RawDecoder) }}

const (
	fSchemaVersion = 1 << iota
	fDeviceID
	fEventTime
	fReceivedTime
	fSeq
	fMeasurements
	fTags
	fIgnored
)

var rawRequired = [...]struct {
	bit  int
	name string
}{
	{fDeviceID, "device_id"},
	{fEventTime, "event_time_us"},
	{fReceivedTime, "received_time_us"},
	{fMeasurements, "measurements"},
}

// recordStart enters the top-level object of a record.
func recordStart(rd *jsonReader, b []byte) error {
	rd.reset(b, maxRecordDepth)
	if k := rd.kind(); k != kindObject {
		rd.skip()
		rd.end()
		if rd.err == nil {
			return invalidRecord("record is %s, want an object", kindName(k))
		}
		return malformedRecord(rd)
	}
	rd.enterObject()
	return nil
}

func malformedRecord(rd *jsonReader) error {
	if rd.err.tooDeep {
		return invalidRecord("malformed JSON: nesting deeper than %d at byte %d", maxRecordDepth, rd.err.off)
	}
	return invalidRecord("malformed JSON at byte %d: %s", rd.err.off, rd.err.msg)
}

// checkVersion checks the schema_version field as read.
func checkVersion(f field) error {
	switch {
	case f.kind == kindNone:
		return invalidRecord("missing schema_version")
	case f.kind != kindNumber:
		return invalidRecord("schema_version is %s, want the number %d", kindName(f.kind), SchemaVersion)
	}
	if n, ok := parseInt64(f.val); !ok || n != SchemaVersion {
		return invalidRecord("unsupported schema_version %s: this build reads only version %d", f.val, SchemaVersion)
	}
	return nil
}

// readField reads any value into f: strings and numbers keep their text,
// other kinds only their kind.
func readField(rd *jsonReader, f *field) {
	f.kind = rd.kind()
	switch f.kind {
	case kindString:
		f.val = rd.str()
	case kindNumber:
		rd.numInto(f)
	default:
		rd.skip()
	}
}

// Decode decodes b, a telemetry.raw v1 record as AppendRaw writes it, into r.
// It overwrites every field of r and may reuse the backing arrays of
// r.Measurements and r.Tags, so a Reading that must outlive the next call
// should be cloned. Unknown fields are ignored, so that v1 can gain optional
// fields; a missing required field, a field of the wrong type, a duplicate
// key, invalid JSON or a result that fails Reading.Validate yields a
// *RejectError with ReasonInvalidRecord. So does a schema_version other
// than 1, reported in preference to any other problem but malformed JSON.
// Measurements out of order are sorted. On error r is left in an
// unspecified state. Decode does not retain b.
func (d *RawDecoder) Decode(b []byte, r *Reading) error {
	rd := &d.rd
	if err := recordStart(rd, b); err != nil {
		return err
	}
	r.DeviceID = ""
	r.EventTime, r.ReceivedTime = time.Time{}, time.Time{}
	r.Seq, r.HasSeq = 0, false
	r.IgnoredFields, r.IgnoredBy = 0, IgnoredCounts{}
	r.Measurements = r.Measurements[:0]
	if r.Tags != nil {
		clear(r.Tags)
	}
	var version, f field
	var seen int
	var ferr error // first problem other than syntax
	fail := func(err error) {
		if ferr == nil {
			ferr = err
		}
	}
	for first := true; ; first = false {
		key, ok := rd.nextKey(first)
		if !ok {
			break
		}
		bit := 0
		switch string(key) {
		case "schema_version":
			bit = fSchemaVersion
			readField(rd, &version)
		case "device_id":
			bit = fDeviceID
			readField(rd, &f)
			if f.kind != kindString {
				fail(invalidRecord("device_id is %s, want a string", kindName(f.kind)))
				break
			}
			r.DeviceID = d.ids.get(f.val)
		case "event_time_us":
			bit = fEventTime
			readField(rd, &f)
			us, err := intField("event_time_us", &f)
			if err != nil {
				fail(err)
			}
			r.EventTime = microTime(us)
		case "received_time_us":
			bit = fReceivedTime
			readField(rd, &f)
			us, err := intField("received_time_us", &f)
			if err != nil {
				fail(err)
			}
			r.ReceivedTime = microTime(us)
		case "seq":
			bit = fSeq
			readField(rd, &f)
			if f.kind == kindNull {
				break
			}
			n, err := intField("seq", &f)
			if err != nil {
				fail(err)
			}
			r.Seq, r.HasSeq = n, true
		case "measurements":
			bit = fMeasurements
			if err := d.measurements(r); err != nil {
				fail(err)
			}
		case "tags":
			bit = fTags
			if err := d.tags(r); err != nil {
				fail(err)
			}
		case "ignored_fields":
			bit = fIgnored
			readField(rd, &f)
			n, err := intField("ignored_fields", &f)
			switch {
			case err != nil:
				fail(err)
			case n < 0 || n > math.MaxInt32:
				fail(invalidRecord("ignored_fields %d is not in [0, 2^31-1]", n))
			default:
				r.IgnoredFields = int(n)
			}
		default:
			rd.skip()
			continue
		}
		if seen&bit != 0 {
			fail(invalidRecord("key %s occurs twice", quote(string(key))))
		}
		seen |= bit
	}
	rd.end()
	if rd.err != nil {
		return malformedRecord(rd)
	}
	if err := checkVersion(version); err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	for _, f := range rawRequired {
		if seen&f.bit == 0 {
			return invalidRecord("missing required field %q", f.name)
		}
	}
	if len(r.Tags) == 0 {
		r.Tags = nil
	}
	sortMeasurements(r.Measurements)
	return r.Validate()
}

func intField(key string, f *field) (int64, error) {
	if f.kind != kindNumber {
		return 0, invalidRecord("%s is %s, want an integer", key, kindName(f.kind))
	}
	n, ok := parseInt64(f.val)
	if !ok {
		return 0, invalidRecord("%s is %s, want an integer in int64 range", key, f.val)
	}
	return n, nil
}

func (d *RawDecoder) measurements(r *Reading) error {
	rd := &d.rd
	if k := rd.kind(); k != kindObject {
		rd.skip()
		return invalidRecord("measurements is %s, want an object", kindName(k))
	}
	rd.enterObject()
	var err error
	for i, first := 0, true; ; i, first = i+1, false {
		key, ok := rd.nextKey(first)
		if !ok {
			return err
		}
		var f field
		readField(rd, &f)
		if f.kind != kindNumber {
			if err == nil {
				err = invalidRecord("measurement %s is %s, want a number", quote(string(key)), kindName(f.kind))
			}
			continue
		}
		r.Measurements = append(r.Measurements, Measurement{Name: d.names.get(i, key), Value: floatOf(f.dec, f.val)})
	}
}

func (d *RawDecoder) tags(r *Reading) error {
	rd := &d.rd
	switch k := rd.kind(); k {
	case kindNull:
		rd.skip()
		return nil
	case kindObject:
	default:
		rd.skip()
		return invalidRecord("tags is %s, want an object", kindName(k))
	}
	rd.enterObject()
	var err error
	for first := true; ; first = false {
		key, ok := rd.nextKey(first)
		if !ok {
			return err
		}
		var f field
		readField(rd, &f)
		if err != nil {
			continue
		}
		if f.kind != kindString {
			err = invalidRecord("tag %s is %s, want a string", quote(string(key)), kindName(f.kind))
			continue
		}
		if r.Tags == nil {
			r.Tags = make(map[string]string)
		}
		k := d.ids.get(key)
		if _, dup := r.Tags[k]; dup {
			err = invalidRecord("tag %s occurs twice", quote(k))
			continue
		}
		r.Tags[k] = d.ids.get(f.val)
	}
}

// sortMeasurements sorts by name; insertion sort is fastest for the few
// measurements of a typical reading and a no-op when already sorted.
func sortMeasurements(ms []Measurement) {
	if len(ms) > 32 {
		slices.SortFunc(ms, func(a, b Measurement) int { return strings.Compare(a.Name, b.Name) })
		return
	}
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].Name < ms[j-1].Name; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}
