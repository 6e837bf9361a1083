package schemas

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
)

// Defaults of DecodeOptions (see DefaultDecodeOptions).
const (
	DefaultMaxPayloadBytes = 64 << 10
	DefaultMaxMeasurements = 256
	DefaultMaxFutureSkew   = 5 * time.Minute
	DefaultMaxPastSkew     = 7 * 24 * time.Hour
	DefaultMaxDepth        = 16
)

// Fixed limits on device payload tags.
const (
	// MaxTags is the largest number of tags a reading may carry.
	MaxTags = 64
	// MaxTagValueLen is the longest tag value, in bytes.
	MaxTagValueLen = 256
)

// DecodeOptions configures a Decoder. Start from DefaultDecodeOptions: a
// zero field is refused by Validate, never read as a default.
type DecodeOptions struct {
	// Topic maps MQTT topics to device ids (default DefaultTopicTemplate).
	Topic *TopicTemplate
	// MaxPayloadBytes rejects longer payloads before parsing
	// (default DefaultMaxPayloadBytes, 64 KiB).
	MaxPayloadBytes int
	// MaxMeasurements rejects payloads with more measurements
	// (default DefaultMaxMeasurements, 256).
	MaxMeasurements int
	// MaxFutureSkew rejects readings whose event time is later than the
	// received time by more than this (default DefaultMaxFutureSkew, 5m).
	MaxFutureSkew time.Duration
	// MaxPastSkew rejects readings whose event time is earlier than the
	// received time by more than this (default DefaultMaxPastSkew, 7 days).
	MaxPastSkew time.Duration
	// MaxDepth rejects payloads whose objects and arrays nest deeper than
	// this; the payload object itself is depth 1, "metrics" depth 2
	// (default DefaultMaxDepth, 16; at least 2, at most 300).
	MaxDepth int

	// AcceptBools makes true and false measurements of value 1 and 0, at
	// the top level and under "metrics". Off by default: a top-level
	// boolean is ignored and counted (IgnoredBoolValue), and one under
	// "metrics" rejects the message (ReasonInvalidMeasurement), because a
	// boolean is a state rather than a reading unless the operator says
	// otherwise.
	AcceptBools bool
	// NumericStrings makes strings that hold exactly a JSON number
	// ("21.5", "-3", "1e3"; no spaces, no leading '+' or zeros)
	// measurements, at the top level and under "metrics". "NaN" and
	// infinity strings then reject the message with ReasonNonFinite, as
	// numbers beyond the float64 range do: they never reach an aggregate.
	// Off by default: such strings are ignored and counted at the top level
	// (IgnoredNumericString, IgnoredNonFiniteString) and reject the message
	// under "metrics", because a device that quotes its numbers is more
	// often sending labels than readings.
	NumericStrings bool
	// Strict rejects, with ReasonIgnoredField, every message that has a
	// field the decoder would ignore (see IgnoreReason), instead of
	// accepting it and counting the field. Off by default.
	Strict bool
}

// maxDepthLimit bounds DecodeOptions.MaxDepth.
const maxDepthLimit = 300

// DefaultDecodeOptions returns every default of DecodeOptions.
func DefaultDecodeOptions() DecodeOptions {
	return DecodeOptions{
		Topic:           defaultTopic,
		MaxPayloadBytes: DefaultMaxPayloadBytes,
		MaxMeasurements: DefaultMaxMeasurements,
		MaxFutureSkew:   DefaultMaxFutureSkew,
		MaxPastSkew:     DefaultMaxPastSkew,
		MaxDepth:        DefaultMaxDepth,
	}
}

var defaultTopic = MustParseTopicTemplate(DefaultTopicTemplate)

// Validate reports every field of o that is out of range, each as a
// *config.FieldError. A zero is never read as a default.
func (o *DecodeOptions) Validate() error {
	var p config.Problems
	p.Check(o.Topic == nil, "Topic", "no topic template")
	p.Check(o.MaxPayloadBytes <= 0, "MaxPayloadBytes", "must be positive")
	p.Check(o.MaxMeasurements <= 0, "MaxMeasurements", "must be positive")
	p.Check(o.MaxFutureSkew <= 0, "MaxFutureSkew", "must be positive")
	p.Check(o.MaxPastSkew <= 0, "MaxPastSkew", "must be positive")
	if o.MaxDepth < 2 || o.MaxDepth > maxDepthLimit {
		p.Add("MaxDepth", "%d must be between 2 and %d", o.MaxDepth, maxDepthLimit)
	}
	return p.Err()
}

// Decoder turns device payloads into Readings. It reuses its buffers between
// calls and keeps a bounded table of the measurement names and tags it has
// seen, so that decoding a steady stream allocates nothing. A Decoder is not
// safe for concurrent use: keep one per goroutine.
type Decoder struct {
	opts  DecodeOptions
	rd    jsonReader
	names interner
	// last holds the measurement names of the previous payload by
	// position: devices repeat the same names in the same order, and a
	// string comparison is cheaper than a map lookup.
	last []string

	// perm, when permOK, is the permutation that sorts d.last[:len(perm)]
	// by name, which are unique: a payload whose names all match d.last
	// by position needs neither sorting nor a duplicate check.
	perm    []int
	permOK  bool
	scratch []Measurement

	top     []field // numeric top-level fields
	metrics []field // members of "metrics"
	tagKVs  []field // members of "tags"

	// Top-level members other than the reserved ones, while reading:
	// how many (others) and the first one's key; the ignored ones among
	// them by reason (ign) and the first ignored one. Which of the two
	// sets is ignored depends on whether "metrics" is present, which is
	// known only at the end.
	others      int
	firstOther  []byte
	ign         IgnoredCounts
	ignN        int
	firstIgn    []byte
	firstIgnWhy IgnoreReason
}

// field is a member of a JSON object as read: key and value unescaped (for
// strings), the literal text for numbers, nothing for other kinds.
type field struct {
	key  []byte
	kind byte
	val  []byte
	dec  decimal // for numbers
}

// NewDecoder returns a Decoder for opts; it fails when opts.Validate does.
func NewDecoder(opts DecodeOptions) (*Decoder, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("decode options: %w", err)
	}
	return &Decoder{opts: opts}, nil
}

// Options returns the options of d.
func (d *Decoder) Options() DecodeOptions { return d.opts }

// Decode validates one MQTT message and fills r with the reading it carries,
// or returns a *RejectError saying why the message can never be accepted.
//
// topic is the MQTT topic the message was published on; the device id is
// taken from it with the topic template. A "device_id" field in the payload
// is ignored: the topic, which the broker can authenticate, always wins.
// received is when the bridge received the message; it becomes
// r.ReceivedTime (UTC, truncated to microseconds) and is the reference for
// the skew limits.
//
// The payload is one JSON object (strict RFC 8259, UTF-8, no byte order
// mark) with:
//
//   - "ts" (required): an RFC 3339 date-time string with any UTC offset, or
//     an epoch number whose unit is detected by magnitude (see
//     EpochMillisThreshold). The event time is kept in UTC, truncated to
//     microseconds.
//   - "seq" (optional, null = absent): the device's message counter, an
//     integer in [0, 2^63-1] (42.0 counts as 42).
//   - "metrics" (optional): an object of measurement name to number. When
//     present it holds all the measurements, and every value must be a
//     number.
//   - Without "metrics", every top-level field with a numeric value, except
//     the reserved ts, seq, tags and device_id, is a measurement.
//   - "tags" (optional, null = absent): an object of string values, at most
//     MaxTags, copied into r.Tags.
//
// Other top-level fields that are not numbers (strings, booleans, null,
// arrays, objects), and every non-reserved top-level field when "metrics"
// is present, are ignored, but must still be well-formed JSON. Each ignored
// field is counted by IgnoreReason in r.IgnoredBy, and in total in
// r.IgnoredFields (which telemetry.raw carries). The options change this:
// AcceptBools and NumericStrings turn booleans and numeric strings into
// measurements, Strict rejects any message with an ignored field
// (ReasonIgnoredField). Values are float64: integers beyond 2^53 are
// rounded. Measurement names must satisfy ValidName and be unique; values
// must be finite. See the Reason constants for every rejection.
//
// Decode overwrites every field of r and may reuse the backing arrays of
// r.Measurements and r.Tags; Clone a Reading that must outlive the next call.
// On error r is left in an unspecified state. Decode does not retain payload.
func (d *Decoder) Decode(topic string, payload []byte, received time.Time, r *Reading) error {
	if len(payload) > d.opts.MaxPayloadBytes {
		return reject(ReasonPayloadTooLarge, fmt.Sprintf("payload is %d bytes, more than the maximum of %d", len(payload), d.opts.MaxPayloadBytes))
	}
	if skipWS(payload, 0) == len(payload) {
		if len(payload) == 0 {
			return reject(ReasonEmptyPayload, "payload is empty")
		}
		return reject(ReasonEmptyPayload, "payload holds only whitespace")
	}
	id, ok := d.opts.Topic.DeviceID(topic)
	if !ok {
		return reject(ReasonNoDeviceID, fmt.Sprintf("topic %s does not match template %s with a valid device id", quote(topic), quote(d.opts.Topic.String())))
	}

	// Read the whole document first, so that any syntax error is reported
	// as malformed_json whatever else is wrong.
	var ts, seq, metrics, tags field
	if err := d.read(payload, &ts, &seq, &metrics, &tags); err != nil {
		return err
	}

	r.DeviceID = id
	r.ReceivedTime = truncMicro(received)
	if err := d.eventTime(ts, r); err != nil {
		return err
	}
	if err := d.seq(seq, r); err != nil {
		return err
	}
	if err := d.ignored(metrics.kind != kindNone, r); err != nil {
		return err
	}
	r.Measurements = r.Measurements[:0]
	fields := d.top
	if metrics.kind != kindNone {
		if metrics.kind != kindObject {
			return reject(ReasonInvalidMeasurement, fmt.Sprintf("metrics is %s, want an object", kindName(metrics.kind)))
		}
		fields = d.metrics
		if len(fields) == 0 {
			return reject(ReasonNoMeasurements, "metrics object is empty")
		}
	} else if len(fields) == 0 {
		if r.IgnoredFields > 0 {
			return reject(ReasonNoMeasurements, fmt.Sprintf("no numeric top-level field and no metrics object (%d field(s) ignored, the first, %s, as %s)",
				r.IgnoredFields, quote(string(d.firstIgn)), d.firstIgnWhy))
		}
		return reject(ReasonNoMeasurements, "no numeric top-level field and no metrics object")
	}
	if len(fields) > d.opts.MaxMeasurements {
		return reject(ReasonTooManyMeasurements, fmt.Sprintf("%d measurements, more than the maximum of %d", len(fields), d.opts.MaxMeasurements))
	}
	allHit := true
	for i := range fields {
		hit, err := d.addMeasurement(i, &fields[i], r)
		if err != nil {
			return err
		}
		allHit = allHit && hit
	}
	if err := d.sortMeasurements(r, allHit); err != nil {
		return err
	}
	return d.tags(tags, r)
}

// read parses the payload into the reserved fields, d.top, d.metrics and
// d.tagKVs.
func (d *Decoder) read(payload []byte, ts, seq, metrics, tags *field) error {
	rd := &d.rd
	rd.reset(payload, d.opts.MaxDepth)
	d.top, d.metrics, d.tagKVs = d.top[:0], d.metrics[:0], d.tagKVs[:0]
	d.others, d.firstOther = 0, nil
	d.ign, d.ignN, d.firstIgn = IgnoredCounts{}, 0, nil
	if k := rd.kind(); k != kindObject {
		rd.skip()
		rd.end()
		if rd.err == nil {
			return reject(ReasonMalformedJSON, fmt.Sprintf("payload is %s, want an object", kindName(k)))
		}
		return d.malformed(payload)
	}
	rd.enterObject()
	var dup []byte
	for first := true; ; first = false {
		key, ok := rd.nextKey(first)
		if !ok {
			break
		}
		var slot *field
		switch string(key) {
		case "ts":
			slot = ts
		case "seq":
			slot = seq
		case "metrics":
			slot = metrics
		case "tags":
			slot = tags
		case "device_id":
			rd.skip()
			continue
		default:
			if d.others == 0 {
				d.firstOther = key
			}
			d.others++
			if k := rd.kind(); k == kindNumber {
				d.top = append(d.top, field{key: key, kind: kindNumber})
				rd.numInto(&d.top[len(d.top)-1])
			} else {
				d.topOther(key, k)
			}
			continue
		}
		if slot.kind != kindNone && dup == nil {
			dup = key
		}
		switch {
		case slot == metrics && rd.kind() == kindObject:
			slot.kind = kindObject
			d.metrics = d.readMembers(d.metrics)
		case slot == tags && rd.kind() == kindObject:
			slot.kind = kindObject
			d.tagKVs = d.readMembers(d.tagKVs)
		default:
			*slot = field{}
			readField(rd, slot)
		}
	}
	rd.end()
	if rd.err != nil {
		return d.malformed(payload)
	}
	if dup != nil {
		return reject(ReasonMalformedJSON, fmt.Sprintf("key %s occurs more than once", quote(string(dup))))
	}
	return nil
}

// topOther reads a top-level member that is not a number and not
// reserved: a measurement when an option says so, otherwise counted as
// ignored (for the case without "metrics").
func (d *Decoder) topOther(key []byte, k byte) {
	rd := &d.rd
	var why IgnoreReason
	switch k {
	case kindString:
		s := rd.str()
		if rd.err != nil {
			return
		}
		var dec decimal
		switch {
		case isNonFiniteWord(s):
			if d.opts.NumericStrings {
				// A measurement that addMeasurement rejects as non-finite.
				d.top = append(d.top, field{key: key, kind: kindString, val: s})
				return
			}
			why = IgnoredNonFiniteString
		case numericString(s, &dec):
			if d.opts.NumericStrings {
				d.top = append(d.top, field{key: key, kind: kindNumber, val: s, dec: dec})
				return
			}
			why = IgnoredNumericString
		default:
			why = IgnoredStringValue
		}
	case kindBool:
		if d.opts.AcceptBools {
			d.top = append(d.top, field{key: key})
			readValue(rd, &d.top[len(d.top)-1])
			return
		}
		why = IgnoredBoolValue
		rd.skip()
	default:
		switch k {
		case kindNull:
			why = IgnoredNullValue
		case kindObject:
			why = IgnoredObjectValue
		case kindArray:
			why = IgnoredArrayValue
		}
		rd.skip() // reports anything that is not a value
	}
	if d.ignN == 0 {
		d.firstIgn, d.firstIgnWhy = key, why
	}
	d.ign[why]++
	d.ignN++
}

// numericString reports whether s holds exactly a JSON number, and splits
// it into *dec.
func numericString(s []byte, dec *decimal) bool {
	if len(s) == 0 || s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return false
	}
	end, err := scanDecimal(s, 0, dec)
	return err == nil && end == len(s)
}

// readValue is readField that also keeps, for a boolean, its first byte
// ('t' or 'f') in f.val.
func readValue(rd *jsonReader, f *field) {
	if rd.kind() == kindBool {
		f.kind = kindBool
		f.val = rd.b[rd.i : rd.i+1]
		rd.skip()
		return
	}
	readField(rd, f)
}

// ignored sets r.IgnoredFields and r.IgnoredBy from what read found, and
// rejects the message under Strict when a field was ignored. With
// "metrics" present every non-reserved top-level member is ignored.
func (d *Decoder) ignored(hasMetrics bool, r *Reading) error {
	if hasMetrics {
		r.IgnoredBy = IgnoredCounts{}
		r.IgnoredBy[IgnoredBesideMetrics] = uint32(d.others)
		r.IgnoredFields = d.others
		d.firstIgn, d.firstIgnWhy = d.firstOther, IgnoredBesideMetrics
	} else {
		r.IgnoredBy = d.ign
		r.IgnoredFields = d.ignN
	}
	if d.opts.Strict && r.IgnoredFields > 0 {
		return reject(ReasonIgnoredField, fmt.Sprintf("field %s would be ignored (%s) and strict payloads are on (%d field(s) in all)",
			quote(string(d.firstIgn)), d.firstIgnWhy, r.IgnoredFields))
	}
	return nil
}

// readMembers reads an object and appends its members to dst.
func (d *Decoder) readMembers(dst []field) []field {
	rd := &d.rd
	if !rd.enterObject() {
		return dst
	}
	for first := true; ; first = false {
		key, ok := rd.nextKey(first)
		if !ok {
			return dst
		}
		dst = append(dst, field{key: key})
		readValue(rd, &dst[len(dst)-1])
	}
}

func (d *Decoder) malformed(payload []byte) error {
	jerr := d.rd.err
	switch {
	case hasPrefix(payload, "\xef\xbb\xbf"):
		return reject(ReasonMalformedJSON, "payload starts with a UTF-8 byte order mark, which JSON does not allow")
	case jerr.tooDeep:
		return reject(ReasonMalformedJSON, fmt.Sprintf("JSON nests deeper than the maximum depth of %d at byte %d", d.opts.MaxDepth, jerr.off))
	}
	return reject(ReasonMalformedJSON, fmt.Sprintf("invalid JSON at byte %d: %s", jerr.off, jerr.msg))
}

func (d *Decoder) eventTime(ts field, r *Reading) error {
	var us int64
	var msg string
	switch ts.kind {
	case kindNone:
		return reject(ReasonMissingTimestamp, `payload has no "ts" field`)
	case kindNull:
		return reject(ReasonMissingTimestamp, `"ts" is null`)
	case kindString:
		us, msg = parseRFC3339(ts.val)
		if msg != "" {
			return reject(ReasonInvalidTimestamp, fmt.Sprintf("%s: %s", msg, quote(string(ts.val))))
		}
	case kindNumber:
		us, msg = parseEpoch(ts.dec)
		if msg != "" {
			return reject(ReasonInvalidTimestamp, fmt.Sprintf("%s: %s", msg, ts.val))
		}
	default:
		return reject(ReasonInvalidTimestamp, fmt.Sprintf("ts is %s, want an RFC 3339 string or an epoch number", kindName(ts.kind)))
	}
	r.EventTime = microTime(us)
	if ahead := r.EventTime.Sub(r.ReceivedTime); ahead > d.opts.MaxFutureSkew {
		return reject(ReasonTimestampSkew, fmt.Sprintf("event time %s is %s in the future of received time %s (maximum %s)",
			r.EventTime.Format(time.RFC3339Nano), ahead, r.ReceivedTime.Format(time.RFC3339Nano), d.opts.MaxFutureSkew))
	}
	if behind := r.ReceivedTime.Sub(r.EventTime); behind > d.opts.MaxPastSkew {
		return reject(ReasonTimestampSkew, fmt.Sprintf("event time %s is %s in the past of received time %s (maximum %s)",
			r.EventTime.Format(time.RFC3339Nano), behind, r.ReceivedTime.Format(time.RFC3339Nano), d.opts.MaxPastSkew))
	}
	return nil
}

func (d *Decoder) seq(f field, r *Reading) error {
	r.Seq, r.HasSeq = 0, false
	switch f.kind {
	case kindNone, kindNull:
		return nil
	case kindNumber:
	default:
		return reject(ReasonInvalidSeq, fmt.Sprintf("seq is %s, want a non-negative integer", kindName(f.kind)))
	}
	dec := f.dec
	n, ok := dec.scaled(0)
	if dec.neg && dec.mant != 0 || !dec.integral() || !ok || n > math.MaxInt64 {
		return reject(ReasonInvalidSeq, fmt.Sprintf("seq %s is not an integer in [0, 2^63-1]", f.val))
	}
	r.Seq, r.HasSeq = int64(n), true
	return nil
}

// addMeasurement appends the i-th measurement after checking its name and
// value, and reports whether its name matched d.last. Top-level fields reach
// it only when they are numbers, or booleans and strings that an option
// makes measurements.
func (d *Decoder) addMeasurement(i int, f *field, r *Reading) (hit bool, err error) {
	var name string
	if i < len(d.last) && d.last[i] == string(f.key) {
		name, hit = d.last[i], true
	} else {
		if !validNameBytes(f.key) {
			return false, reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement name %s is empty, longer than %d bytes or holds a control character", quote(string(f.key)), MaxNameLen))
		}
		name = d.names.get(f.key)
		d.permOK = false
		if i < len(d.last) {
			d.last[i] = name
		} else {
			d.last = append(d.last, name) // i == len(d.last): fields come in order
		}
	}
	var v float64
	switch f.kind {
	case kindNumber:
		v = floatOf(f.dec, f.val)
	case kindBool:
		if !d.opts.AcceptBools {
			return false, reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement %s under metrics is a boolean, want a number (booleans are measurements only with AcceptBools)", quote(name)))
		}
		if f.val[0] == 't' {
			v = 1
		}
	case kindString:
		if isNonFiniteWord(f.val) {
			return false, reject(ReasonNonFinite, fmt.Sprintf("measurement %s is %s", quote(name), quote(string(f.val))))
		}
		var dec decimal
		switch {
		case !d.opts.NumericStrings:
			return false, reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement %s under metrics is a string, want a number (strings holding a number are measurements only with NumericStrings)", quote(name)))
		case !numericString(f.val, &dec):
			return false, reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement %s under metrics is the string %s, want a number", quote(name), quote(string(f.val))))
		}
		v = floatOf(dec, f.val)
	default:
		return false, reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement %s under metrics is %s, want a number", quote(name), kindName(f.kind)))
	}
	if math.IsInf(v, 0) {
		return false, reject(ReasonNonFinite, fmt.Sprintf("measurement %s: %s is beyond the float64 range", quote(name), quote(string(f.val))))
	}
	r.Measurements = append(r.Measurements, Measurement{Name: name, Value: v})
	return hit, nil
}

// isNonFiniteWord reports whether s spells NaN or an infinity, in any case,
// as devices written in JavaScript or Python tend to send them.
func isNonFiniteWord(s []byte) bool {
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	switch len(s) {
	case 3:
		return strings.EqualFold(string(s), "nan") || strings.EqualFold(string(s), "inf")
	case 8:
		return strings.EqualFold(string(s), "infinity")
	}
	return false
}

// sortMeasurements sorts r.Measurements by name and rejects duplicate
// names. When every name matched the previous payload's by position, the
// permutation found then is reused.
func (d *Decoder) sortMeasurements(r *Reading, allHit bool) error {
	ms := r.Measurements
	d.scratch = append(d.scratch[:0], ms...)
	if !allHit || !d.permOK || len(d.perm) != len(ms) {
		d.perm = d.perm[:0]
		for i := range ms {
			d.perm = append(d.perm, i)
		}
		slices.SortFunc(d.perm, func(a, b int) int { return strings.Compare(ms[a].Name, ms[b].Name) })
		for i := 1; i < len(d.perm); i++ {
			if ms[d.perm[i]].Name == ms[d.perm[i-1]].Name {
				return reject(ReasonInvalidMeasurement, fmt.Sprintf("measurement %s occurs more than once", quote(ms[d.perm[i]].Name)))
			}
		}
		d.permOK = true
	}
	for i, p := range d.perm {
		ms[i] = d.scratch[p]
	}
	return nil
}

func (d *Decoder) tags(f field, r *Reading) error {
	switch f.kind {
	case kindNone, kindNull:
		r.Tags = nil
		return nil
	case kindObject:
	default:
		return reject(ReasonInvalidTags, fmt.Sprintf("tags is %s, want an object of strings", kindName(f.kind)))
	}
	n := len(d.tagKVs)
	if n > MaxTags {
		return reject(ReasonInvalidTags, fmt.Sprintf("%d tags, more than the maximum of %d", n, MaxTags))
	}
	if n == 0 {
		r.Tags = nil
		return nil
	}
	if r.Tags == nil {
		r.Tags = make(map[string]string, n)
	} else {
		clear(r.Tags)
	}
	for _, t := range d.tagKVs {
		if !validNameBytes(t.key) {
			return reject(ReasonInvalidTags, fmt.Sprintf("tag key %s is empty, longer than %d bytes or holds a control character", quote(string(t.key)), MaxNameLen))
		}
		if t.kind != kindString {
			return reject(ReasonInvalidTags, fmt.Sprintf("tag %s is %s, want a string", quote(string(t.key)), kindName(t.kind)))
		}
		if len(t.val) > MaxTagValueLen || !validTextBytes(t.val, true) {
			return reject(ReasonInvalidTags, fmt.Sprintf("tag %s: value is longer than %d bytes or holds a control character", quote(string(t.key)), MaxTagValueLen))
		}
		key := d.names.get(t.key)
		if _, dup := r.Tags[key]; dup {
			return reject(ReasonInvalidTags, fmt.Sprintf("tag %s occurs more than once", quote(key)))
		}
		r.Tags[key] = d.names.get(t.val)
	}
	return nil
}
