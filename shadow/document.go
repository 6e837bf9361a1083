package shadow

// The document logic, pure: decoding with limits, RFC 7386 merge patches
// with per-key metadata, and the delta.
//
// The merge patch is written here rather than taken from
// github.com/evanphx/json-patch/v5 (MergePatch): RFC 7386's algorithm is a
// dozen lines (section 2), and the shadow must update the metadata tree of
// every key the patch touches in the same walk, which a bytes-in/bytes-out
// library cannot do.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// Errors callers test with errors.Is.
var (
	// ErrMalformed: the document is not a JSON object (or not JSON).
	ErrMalformed = errors.New("malformed document")
	// ErrLimit: a document exceeds a limit (*LimitError says which).
	ErrLimit = errors.New("document exceeds a limit")
	// ErrConflict: the write was based on a version that is no longer
	// the current one (*ConflictError holds the current version).
	ErrConflict = errors.New("version conflict")
	// ErrNoDevice: the device is not in the registry.
	ErrNoDevice = errors.New("no such device")
	// ErrNoSchema: the shadow tables do not exist (run iotpipe init).
	ErrNoSchema = errors.New("the shadow tables do not exist (run iotpipe init)")
)

// Limits bound a shadow document.
type Limits struct {
	// MaxBytes bounds the JSON size of an incoming document and of the
	// whole resulting state (desired + reported).
	MaxBytes int
	// MaxDepth bounds the nesting of objects and arrays inside desired or
	// reported (a flat object is depth 1).
	MaxDepth int
	// MaxKeys bounds the number of object members in desired or in
	// reported, counted through every level.
	MaxKeys int
}

// DefaultLimits: 8 KiB, depth 6, 200 keys (the limits of the managed
// shadows devices are written for).
func DefaultLimits() Limits { return Limits{MaxBytes: 8 << 10, MaxDepth: 6, MaxKeys: 200} }

// LimitError says which limit a document exceeds.
type LimitError struct {
	Limit string // "size", "depth" or "keys"
	Max   int
	Got   int
	What  string // "patch", "desired", "reported", "report"
}

func (e *LimitError) Error() string {
	unit := map[string]string{"size": "bytes", "depth": "levels", "keys": "keys"}[e.Limit]
	return fmt.Sprintf("%s is too large: %d %s, the limit is %d", e.What, e.Got, unit, e.Max)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// ConflictError is a write based on another version than the current.
type ConflictError struct {
	Expected, Current int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("version %d is stale: the shadow is at version %d", e.Expected, e.Current)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Object is a decoded JSON object; numbers are json.Number (exact).
type Object = map[string]any

// DecodeObject decodes a JSON object, checking its size first and its
// depth and keys after. what names the document in errors.
func DecodeObject(b []byte, l Limits, what string) (Object, error) {
	if l.MaxBytes > 0 && len(b) > l.MaxBytes {
		return nil, &LimitError{Limit: "size", Max: l.MaxBytes, Got: len(b), What: what}
	}
	v, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrMalformed, err)
	}
	o, ok := v.(Object)
	if !ok {
		return nil, fmt.Errorf("%s: %w: want a JSON object, got %s", what, ErrMalformed, kind(v))
	}
	if err := checkShape(o, l, what); err != nil {
		return nil, err
	}
	return o, nil
}

// decode decodes one JSON value with exact numbers and nothing after it.
func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

// checkShape checks depth and key count of o.
func checkShape(o Object, l Limits, what string) error {
	depth, keys := shape(o)
	if l.MaxDepth > 0 && depth > l.MaxDepth {
		return &LimitError{Limit: "depth", Max: l.MaxDepth, Got: depth, What: what}
	}
	if l.MaxKeys > 0 && keys > l.MaxKeys {
		return &LimitError{Limit: "keys", Max: l.MaxKeys, Got: keys, What: what}
	}
	return nil
}

// shape returns the nesting depth (a flat object is 1) and member count.
func shape(v any) (depth, keys int) {
	switch x := v.(type) {
	case Object:
		d := 0
		for _, c := range x {
			cd, ck := shape(c)
			d = max(d, cd)
			keys += 1 + ck
		}
		return d + 1, keys
	case []any:
		d := 0
		for _, c := range x {
			cd, ck := shape(c)
			d = max(d, cd)
			keys += ck
		}
		return d + 1, keys
	}
	return 0, 0
}

// Merge applies the merge patch to target in place (RFC 7386 section 2)
// and records ts as the change time of every key the patch sets in meta
// (the metadata tree of target, also changed in place). It reports
// whether target changed.
func Merge(target, meta, patch Object, ts int64) (changed bool) {
	for k, pv := range patch {
		old, had := target[k]
		if pv == nil {
			if had {
				delete(target, k)
				delete(meta, k)
				changed = true
			}
			continue
		}
		if po, ok := pv.(Object); ok {
			to, wasObj := old.(Object)
			if !wasObj { // absent or a leaf: becomes an object
				to = Object{}
				target[k] = to
				changed = true
			}
			mo, ok := meta[k].(Object)
			if !ok || !wasObj {
				mo = metaFor(to, ts)
				meta[k] = mo
			}
			if Merge(to, mo, po, ts) {
				changed = true
			}
			continue
		}
		// A leaf (or an array, replaced whole). Merge's result for a
		// non-object patch value is the value itself.
		if had && Equal(old, pv) {
			continue
		}
		target[k] = clean(pv)
		meta[k] = leafMeta(ts)
		changed = true
	}
	return changed
}

// clean returns v with the nulls of its objects removed, as RFC 7386
// does for a value that replaces (MergePatch({}, v)), recursively.
func clean(v any) any {
	switch x := v.(type) {
	case Object:
		out := Object{}
		for k, c := range x {
			if c != nil {
				out[k] = clean(c)
			}
		}
		return out
	case []any:
		return x
	}
	return v
}

func leafMeta(ts int64) Object { return Object{"timestamp": ts} }

// metaFor builds the metadata tree of v with every leaf at ts.
func metaFor(v Object, ts int64) Object {
	m := Object{}
	for k, c := range v {
		if co, ok := c.(Object); ok {
			m[k] = metaFor(co, ts)
		} else {
			m[k] = leafMeta(ts)
		}
	}
	return m
}

// Delta returns the members of desired that differ from reported:
// missing from reported or with another value, recursively through
// objects present in both. Empty when reported has caught up.
func Delta(desired, reported Object) Object {
	out := Object{}
	for k, dv := range desired {
		if dv == nil { // never stored (merging deletes nulls)
			continue
		}
		rv, ok := reported[k]
		do, dIsObj := dv.(Object)
		ro, rIsObj := rv.(Object)
		switch {
		case dIsObj && rIsObj:
			if sub := Delta(do, ro); len(sub) > 0 {
				out[k] = sub
			}
		case !ok || !Equal(dv, rv):
			out[k] = dv
		}
	}
	return out
}

// DeltaMeta returns the metadata of the keys in delta.
func DeltaMeta(delta, meta Object) Object {
	out := Object{}
	for k, v := range delta {
		m := meta[k]
		if vo, ok := v.(Object); ok {
			if mo, ok := m.(Object); ok {
				out[k] = DeltaMeta(vo, mo)
				continue
			}
		}
		if m != nil {
			out[k] = m
		}
	}
	return out
}

// Equal compares two decoded JSON values; numbers by value.
func Equal(a, b any) bool {
	switch x := a.(type) {
	case Object:
		y, ok := b.(Object)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !Equal(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, okx := new(big.Float).SetString(string(x))
		fy, oky := new(big.Float).SetString(string(y))
		return okx && oky && fx.Cmp(fy) == 0
	default:
		return a == b
	}
}

// copyObject returns a deep copy of o.
func copyObject(o Object) Object {
	out := make(Object, len(o))
	for k, v := range o {
		out[k] = copyValue(v)
	}
	return out
}

func copyValue(v any) any {
	switch x := v.(type) {
	case Object:
		return copyObject(x)
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = copyValue(x[i])
		}
		return out
	}
	return v
}
