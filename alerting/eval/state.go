package eval

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Phase of a series.
type Phase uint8

// Phases.
const (
	OK Phase = iota
	Pending
	Firing
)

func (p Phase) String() string {
	switch p {
	case OK:
		return "OK"
	case Pending:
		return "PENDING"
	case Firing:
		return "FIRING"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Key names a series: Metric is empty for no_data rules.
type Key struct {
	RuleID, DeviceID, Metric string
}

func (k Key) less(o Key) bool {
	if k.RuleID != o.RuleID {
		return k.RuleID < o.RuleID
	}
	if k.DeviceID != o.DeviceID {
		return k.DeviceID < o.DeviceID
	}
	return k.Metric < o.Metric
}

// State is one series' state machine.
type State struct {
	Phase Phase
	// Seen is set once a value was evaluated; Last is its event time
	// (Unix ns), for ignoring older values.
	Seen bool
	Last int64
	// Count and Since: PENDING's breaching values so far and the event
	// time of the first.
	Count uint32
	Since int64
	// FiredID is the FIRING event's id while FIRING.
	FiredID string

	dirty bool // changed since the last Engine.Dirty (not encoded)
}

// ErrCorrupt is returned for an undecodable state or key.
var ErrCorrupt = errors.New("eval: corrupt encoded state")

const stateVersion = 1

// AppendBinary appends the state's encoding (version byte, phase, flags,
// varints, id) to dst: 5-30 bytes plus the fired id.
func (s *State) AppendBinary(dst []byte) []byte {
	var flags byte
	if s.Seen {
		flags = 1
	}
	dst = append(dst, stateVersion, byte(s.Phase), flags)
	dst = binary.AppendVarint(dst, s.Last)
	dst = binary.AppendUvarint(dst, uint64(s.Count))
	dst = binary.AppendVarint(dst, s.Since)
	dst = binary.AppendUvarint(dst, uint64(len(s.FiredID)))
	return append(dst, s.FiredID...)
}

// DecodeState decodes AppendBinary's output.
func DecodeState(b []byte) (State, error) {
	var s State
	if len(b) < 3 || b[0] != stateVersion || b[1] > byte(Firing) || b[2] > 1 {
		return s, ErrCorrupt
	}
	s.Phase, s.Seen = Phase(b[1]), b[2] == 1
	b = b[3:]
	var n int
	if s.Last, n = binary.Varint(b); n <= 0 {
		return s, ErrCorrupt
	}
	b = b[n:]
	c, n := binary.Uvarint(b)
	if n <= 0 || c > 1<<32-1 {
		return s, ErrCorrupt
	}
	s.Count, b = uint32(c), b[n:]
	if s.Since, n = binary.Varint(b); n <= 0 {
		return s, ErrCorrupt
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l != uint64(len(b)-n) {
		return s, ErrCorrupt
	}
	s.FiredID = string(b[n:])
	return s, nil
}

// AppendBinary appends the key's encoding: three length-prefixed strings.
func (k Key) AppendBinary(dst []byte) []byte {
	for _, s := range []string{k.RuleID, k.DeviceID, k.Metric} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// DecodeKey decodes Key.AppendBinary's output.
func DecodeKey(b []byte) (Key, error) {
	var parts [3]string
	for i := range parts {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return Key{}, ErrCorrupt
		}
		parts[i] = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	if len(b) != 0 {
		return Key{}, ErrCorrupt
	}
	return Key{parts[0], parts[1], parts[2]}, nil
}

// Dirty returns the series changed since the last call, in key order, with
// their states; a nil state means the series was dropped (a tombstone).
func (e *Engine) Dirty() []Change {
	out := make([]Change, 0, len(e.dirty)+1)
	seen := make(map[Key]bool, len(e.dirty))
	for _, k := range e.dirty {
		if seen[k] {
			continue
		}
		seen[k] = true
		c := Change{Key: k}
		if s := e.series[k]; s != nil {
			s.dirty = false
			cp := *s
			c.State = &cp
		}
		out = append(out, c)
	}
	e.dirty = e.dirty[:0]
	if e.wmDirty {
		cp := e.wm
		out = append(out, Change{Key: WatermarkKey, State: &cp})
		e.wmDirty = false
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.less(out[j].Key) })
	return out
}

// Change is one series' new state; State nil: dropped.
type Change struct {
	Key   Key
	State *State
}

// Restore puts a series' state back (from a changelog); nil drops it.
func (e *Engine) Restore(k Key, s *State) {
	if k == WatermarkKey {
		e.wm = State{}
		if s != nil {
			e.wm = *s
		}
		return
	}
	if s == nil {
		delete(e.series, k)
		return
	}
	cp := *s
	cp.dirty = false
	e.series[k] = &cp
}

// Series returns the number of series held.
func (e *Engine) Series() int { return len(e.series) }
