package schemas

import (
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// TopicReadings carries each accepted device message exactly once: the
// processor copies a telemetry.raw record here (same key, value bytes,
// headers and timestamp) in the transaction in which it counts it in its
// window, and only then; duplicates (same device, event time and seq),
// late readings and undecodable records are not copied. The sinks store
// this topic, not TopicRaw, so that the readings table, the lake's readings
// and the window metrics count the same set of device messages.
const TopicReadings = "telemetry.readings"

// DefaultTopicTemplate is the MQTT topic template used when none is configured.
const DefaultTopicTemplate = "devices/{device_id}/telemetry"

// DeviceIDPlaceholder marks the topic level that carries the device id in a
// topic template.
const DeviceIDPlaceholder = "{device_id}"

// MaxDeviceIDLen is the longest device id accepted, in bytes.
const MaxDeviceIDLen = 128

// MaxNameLen is the longest measurement name or tag key accepted, in bytes.
const MaxNameLen = 128

// ValidDeviceID reports whether id is a valid device id: non-empty, at most
// MaxDeviceIDLen bytes of valid UTF-8, with no control character (C0, DEL or
// C1). Every device id in every record satisfies it.
func ValidDeviceID(id string) bool {
	return len(id) <= MaxDeviceIDLen && validText(id, false)
}

// ValidName reports whether s is a valid measurement name or tag key:
// non-empty, at most MaxNameLen bytes of valid UTF-8, with no control
// character (C0, DEL or C1).
func ValidName(s string) bool {
	return len(s) <= MaxNameLen && validText(s, false)
}

// validText reports whether s is valid UTF-8 without control characters,
// and non-empty unless allowEmpty.
func validText(s string, allowEmpty bool) bool {
	if s == "" {
		return allowEmpty
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		if r >= 0x80 && r <= 0x9f {
			return false
		}
		i += size
	}
	return true
}

// validNameBytes is ValidName for bytes.
func validNameBytes(b []byte) bool {
	return len(b) <= MaxNameLen && validTextBytes(b, false)
}

// validTextBytes is validText for bytes, without copying them.
func validTextBytes(b []byte, allowEmpty bool) bool {
	return validText(unsafe.String(unsafe.SliceData(b), len(b)), allowEmpty)
}

type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelAny               // "+"
	levelID                // "{device_id}"
)

type topicLevel struct {
	kind    levelKind
	literal string
}

// TopicTemplate maps MQTT topics to device ids. It is compiled from a template
// of '/'-separated levels in which exactly one level is "{device_id}" and each
// other level is either a literal or "+", matching any single level, as in
// DefaultTopicTemplate. A TopicTemplate is immutable and safe for concurrent
// use.
type TopicTemplate struct {
	src    string
	levels []topicLevel
	filter string
}

// ParseTopicTemplate compiles a topic template. It fails when the template is
// empty, does not have exactly one "{device_id}" level, has "{device_id}"
// sharing a level with other characters, uses the '#' wildcard, has a '+'
// sharing a level with other characters, or contains a NUL character or
// invalid UTF-8.
func ParseTopicTemplate(s string) (*TopicTemplate, error) {
	if s == "" {
		return nil, fmt.Errorf("topic template is empty")
	}
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("topic template %q: contains a NUL character or invalid UTF-8", s)
	}
	if len(s) > 65535 {
		return nil, fmt.Errorf("topic template is %d bytes, longer than the MQTT limit of 65535", len(s))
	}
	t := &TopicTemplate{src: s}
	parts := strings.Split(s, "/")
	filter := make([]string, len(parts))
	ids := 0
	for i, p := range parts {
		switch {
		case p == DeviceIDPlaceholder:
			ids++
			t.levels = append(t.levels, topicLevel{kind: levelID})
			filter[i] = "+"
		case strings.Contains(p, DeviceIDPlaceholder):
			return nil, fmt.Errorf("topic template %q: %s must occupy a whole topic level, not part of %q", s, DeviceIDPlaceholder, p)
		case p == "+":
			t.levels = append(t.levels, topicLevel{kind: levelAny})
			filter[i] = "+"
		case strings.Contains(p, "#"):
			return nil, fmt.Errorf("topic template %q: the multi-level wildcard '#' is not supported; use '+' for single levels", s)
		case strings.Contains(p, "+"):
			return nil, fmt.Errorf("topic template %q: '+' must occupy a whole topic level, not part of %q", s, p)
		case strings.ContainsAny(p, "{}"):
			return nil, fmt.Errorf("topic template %q: unknown placeholder in level %q; only %s is supported", s, p, DeviceIDPlaceholder)
		default:
			t.levels = append(t.levels, topicLevel{kind: levelLiteral, literal: p})
			filter[i] = p
		}
	}
	if ids != 1 {
		return nil, fmt.Errorf("topic template %q: must contain exactly one %s level, found %d", s, DeviceIDPlaceholder, ids)
	}
	t.filter = strings.Join(filter, "/")
	return t, nil
}

// MustParseTopicTemplate is like ParseTopicTemplate but panics on error. It
// is meant for templates that are constants of the program, in package
// initialisation and tests.
func MustParseTopicTemplate(s string) *TopicTemplate {
	t, err := ParseTopicTemplate(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the template as it was given to ParseTopicTemplate.
func (t *TopicTemplate) String() string { return t.src }

// Filter returns the MQTT subscription filter that matches every topic the
// template matches, with each "{device_id}" and "+" level as "+", for example
// "devices/+/telemetry". Shared subscriptions prefix it with "$share/<group>/".
func (t *TopicTemplate) Filter() string { return t.filter }

// DeviceID returns the device id carried by topic, and false when topic does
// not match the template (different number of levels, a literal level that
// differs) or its device id level is not a valid device id (ValidDeviceID).
// As in MQTT, a wildcard or device id in the first level never matches a
// topic that starts with '$'. The returned id shares memory with topic.
func (t *TopicTemplate) DeviceID(topic string) (string, bool) {
	if len(t.levels) > 0 && t.levels[0].kind != levelLiteral && strings.HasPrefix(topic, "$") {
		return "", false
	}
	var id string
	rest := topic
	for i, lv := range t.levels {
		var level string
		last := i == len(t.levels)-1
		if last {
			if strings.IndexByte(rest, '/') >= 0 {
				return "", false // more levels than the template
			}
			level = rest
		} else {
			j := strings.IndexByte(rest, '/')
			if j < 0 {
				return "", false // fewer levels than the template
			}
			level, rest = rest[:j], rest[j+1:]
		}
		switch lv.kind {
		case levelLiteral:
			if level != lv.literal {
				return "", false
			}
		case levelID:
			id = level
		}
	}
	if !ValidDeviceID(id) {
		return "", false
	}
	return id, true
}
