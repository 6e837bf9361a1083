package processor

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/schemas"
)

// WindowConfig sets the event-time windowing of an Engine.
type WindowConfig struct {
	// Size is the length of the tumbling windows; they are aligned to the
	// Unix epoch: [k·Size, (k+1)·Size). Default 1m (DefaultWindowConfig).
	Size time.Duration
	// Lateness is the allowed lateness. The watermark trails the largest
	// event time seen by Lateness, a window is first emitted when the
	// watermark passes its end, and a reading for it is still accepted (and
	// the window re-emitted with a higher revision) until the watermark
	// passes end+Lateness; after that the reading is late. Default 30s.
	Lateness time.Duration
	// IdleTimeout is how long a partition may receive nothing before its
	// watermark advances with the wall clock, so that windows of quiet
	// devices and partitions close. Default 30s.
	IdleTimeout time.Duration
	// LateRetention is how long after a window's state is dropped its
	// activity summary is kept, so that late readings are counted in the
	// window's activity record (re-emitted with a higher revision).
	// Default 5m.
	LateRetention time.Duration
}

// Defaults of WindowConfig.
const (
	DefaultWindowSize    = time.Minute
	DefaultLateness      = 30 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
	DefaultLateRetention = 5 * time.Minute
)

// DefaultWindowConfig returns the defaults of WindowConfig.
func DefaultWindowConfig() WindowConfig {
	return WindowConfig{Size: DefaultWindowSize, Lateness: DefaultLateness, IdleTimeout: DefaultIdleTimeout, LateRetention: DefaultLateRetention}
}

// Validate reports every field out of range as a *config.FieldError.
func (c *WindowConfig) Validate() error {
	var p config.Problems
	switch {
	case c.Size < time.Millisecond || c.Size%time.Microsecond != 0:
		p.Add("Size", "%s: must be at least 1ms, in whole microseconds", c.Size)
	case c.Size > 24*time.Hour:
		p.Add("Size", "%s: must be at most 24h", c.Size)
	}
	p.Check(c.Lateness < 0, "Lateness", "must not be negative")
	p.Check(c.IdleTimeout <= 0, "IdleTimeout", "must be positive")
	p.Check(c.LateRetention < 0, "LateRetention", "must not be negative")
	return p.Err()
}

// Outcome says what an Engine did with a reading.
type Outcome int

const (
	// Accepted: the reading was aggregated into its window.
	Accepted Outcome = iota
	// Duplicate: the reading's identity was already counted in its window;
	// it was dropped and counted in the window's activity record.
	Duplicate
	// Late: the reading's window had already closed for good; the caller
	// sends it to the DLQ with schemas.ReasonLate.
	Late
)

// Emission is one telemetry.metrics record to write: exactly one of Metric
// and Activity is set. Both point into storage the Engine reuses: encode
// them before the emit callback returns.
type Emission struct {
	Metric   *schemas.WindowMetric
	Activity *schemas.Activity
	// Delay is how far the watermark had passed the window's end when it was
	// first emitted (0 for re-emissions).
	Delay time.Duration
}

// Stats are the Engine's cumulative counters.
type Stats struct {
	Accepted, Duplicates, Late      int64
	WindowsOpened, WindowsClosed    int64 // metric windows (device × metric × window)
	MetricsEmitted, ActivityEmitted int64
}

// Engine aggregates the readings of one input partition into tumbling
// event-time windows per device × metric. It is a pure function of the
// readings it is given and of the wall-clock times passed to Add and
// Advance: it does no I/O, reads no clock and is not safe for concurrent
// use.
//
// Its whole state can be written out as key/value changes (Changes) and
// rebuilt from them (Restore); that is how it survives crashes and
// rebalances.
type Engine struct {
	cfg                             WindowConfig
	size, lateness, idle, retention int64 // µs

	hasWM     bool
	maxEvent  int64 // largest event time seen (µs)
	wm        int64 // watermark (µs); valid when hasWM
	lastInput time.Time

	slots     map[int64]*slot
	openAggs  int // metric aggregates in windows whose state is kept
	devWins   int // device windows (open or summary)
	metaDirty bool
	dirty     []*devWin

	stats Stats

	metric   schemas.WindowMetric
	activity schemas.Activity
}

// slot holds every device's state for one window start.
type slot struct {
	start   int64
	emitted bool // the watermark passed the end: first emission done
	closed  bool // the watermark passed end+lateness: only summaries left
	devs    map[string]*devWin
	reemit  []*devWin
}

// devWin is the state of one device in one window: its metric aggregates,
// the identities seen (for dedup and seq gaps) and the activity counters.
type devWin struct {
	dev    string
	start  int64
	aggs   []*agg  // sorted by name
	ids    []int64 // identities seen (see identity), sorted
	seqs   []tseq  // readings with seq, for gap counting
	closed bool

	messages, dups, late int64
	firstSeen, lastSeen  int64
	gaps                 int64 // computed at each activity emission
	actRev               int64
	actChanged           bool

	dirty, queued, deleted bool
}

type tseq struct{ t, seq int64 }

// NewEngine returns an empty engine; it fails when cfg.Validate does (a
// zero field is not replaced by a default: start from DefaultWindowConfig).
func NewEngine(cfg WindowConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:       cfg,
		size:      cfg.Size.Microseconds(),
		lateness:  cfg.Lateness.Microseconds(),
		idle:      cfg.IdleTimeout.Microseconds(),
		retention: cfg.LateRetention.Microseconds(),
		slots:     make(map[int64]*slot),
	}, nil
}

// Watermark returns the current watermark and false before any input.
func (e *Engine) Watermark() (time.Time, bool) {
	return time.UnixMicro(e.wm).UTC(), e.hasWM
}

// OpenKeys is the number of metric aggregates (device × metric × window)
// whose state is kept: the quantity that memory grows with.
func (e *Engine) OpenKeys() int { return e.openAggs }

// DeviceWindows is the number of device windows held, open or summary.
func (e *Engine) DeviceWindows() int { return e.devWins }

// Stats returns the cumulative counters.
func (e *Engine) Stats() Stats { return e.stats }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// identity is the dedup key of a reading: its seq, or (as a negative
// number, so the two never collide) the complement of its event time.
func identity(t, seq int64) int64 {
	if seq >= 0 {
		return seq
	}
	return ^t
}

// Add folds one reading in, at wall-clock time now. A reading whose window
// has closed for good is Late (counted in the window's activity summary
// while that is kept); a reading whose identity was seen in its window is a
// Duplicate.
func (e *Engine) Add(r *schemas.Reading, now time.Time) Outcome {
	e.lastInput = now
	t := r.EventTime.UnixMicro()
	seq := int64(-1)
	if r.HasSeq {
		seq = r.Seq
	}
	start := floorDiv(t, e.size) * e.size
	end := start + e.size
	if e.hasWM && end+e.lateness <= e.wm {
		e.stats.Late++
		if s := e.slots[start]; s != nil {
			dw := s.devs[r.DeviceID]
			if dw == nil {
				dw = e.newDevWin(s, r.DeviceID, true)
			}
			dw.late++
			dw.actChanged = true
			e.queue(s, dw)
			e.markDirty(dw)
		}
		return Late
	}
	s := e.slots[start]
	if s == nil {
		s = &slot{start: start, devs: make(map[string]*devWin)}
		e.slots[start] = s
	}
	dw := s.devs[r.DeviceID]
	if dw == nil {
		dw = e.newDevWin(s, r.DeviceID, false)
	}
	e.advanceTo(t)
	if !dw.addID(identity(t, seq)) {
		e.stats.Duplicates++
		dw.dups++
		dw.actChanged = true
		e.queue(s, dw)
		e.markDirty(dw)
		return Duplicate
	}
	if seq >= 0 {
		dw.seqs = append(dw.seqs, tseq{t, seq})
	}
	if dw.messages == 0 || t < dw.firstSeen {
		dw.firstSeen = t
	}
	if dw.messages == 0 || t > dw.lastSeen {
		dw.lastSeen = t
	}
	dw.messages++
	dw.actChanged = true
	for i := range r.Measurements {
		m := &r.Measurements[i]
		dw.aggFor(e, m.Name).add(m.Value, t, seq)
	}
	e.stats.Accepted++
	e.queue(s, dw)
	e.markDirty(dw)
	return Accepted
}

func (e *Engine) advanceTo(t int64) {
	if !e.hasWM || t > e.maxEvent {
		e.maxEvent = t
		if wm := t - e.lateness; !e.hasWM || wm > e.wm {
			e.wm = wm
			e.hasWM = true
		}
		e.metaDirty = true
	}
}

func (e *Engine) newDevWin(s *slot, dev string, closed bool) *devWin {
	dw := &devWin{dev: dev, start: s.start, closed: closed}
	s.devs[dev] = dw
	e.devWins++
	return dw
}

// addID records an identity and reports whether it is new. Identities
// mostly arrive in increasing order (seq rises), which appends.
func (dw *devWin) addID(id int64) bool {
	n := len(dw.ids)
	if n == 0 || id > dw.ids[n-1] {
		dw.ids = append(dw.ids, id)
		return true
	}
	i, found := slices.BinarySearch(dw.ids, id)
	if found {
		return false
	}
	dw.ids = slices.Insert(dw.ids, i, id)
	return true
}

func (dw *devWin) aggFor(e *Engine, name string) *agg {
	// Devices report a handful of metrics: a sorted slice beats a map.
	i, found := slices.BinarySearchFunc(dw.aggs, name, func(a *agg, n string) int { return cmp.Compare(a.name, n) })
	if found {
		return dw.aggs[i]
	}
	a := newAgg(name)
	dw.aggs = slices.Insert(dw.aggs, i, a)
	e.openAggs++
	e.stats.WindowsOpened++
	return a
}

// queue marks dw for re-emission when its window was already emitted.
func (e *Engine) queue(s *slot, dw *devWin) {
	if s.emitted && !dw.queued {
		dw.queued = true
		s.reemit = append(s.reemit, dw)
	}
}

func (e *Engine) markDirty(dw *devWin) {
	if !dw.dirty {
		dw.dirty = true
		e.dirty = append(e.dirty, dw)
	}
}

// Advance moves the watermark by the wall clock when the partition has been
// idle for IdleTimeout, then emits every window the watermark has passed
// (and re-emits windows updated since their last emission), closes windows
// past their lateness and forgets summaries past LateRetention. Emissions
// come in a deterministic order: by window start, device, metric name, with
// each device's activity record after its metrics.
func (e *Engine) Advance(now time.Time, emit func(*Emission)) {
	if e.hasWM && !e.lastInput.IsZero() {
		if quiet := now.Sub(e.lastInput).Microseconds() - e.idle; quiet > 0 {
			if wm := e.maxEvent - e.lateness + quiet; wm > e.wm {
				e.wm = wm
				e.metaDirty = true
			}
		}
	}
	if !e.hasWM || len(e.slots) == 0 {
		return
	}
	starts := make([]int64, 0, len(e.slots))
	for st, s := range e.slots {
		if st+e.size <= e.wm || len(s.reemit) > 0 {
			starts = append(starts, st)
		}
	}
	slices.Sort(starts)
	for _, st := range starts {
		s := e.slots[st]
		end := st + e.size
		if !s.emitted && end <= e.wm {
			s.emitted = true
			devs := make([]*devWin, 0, len(s.devs))
			for _, dw := range s.devs {
				devs = append(devs, dw)
			}
			slices.SortFunc(devs, func(a, b *devWin) int { return cmp.Compare(a.dev, b.dev) })
			delay := time.Duration(e.wm-end) * time.Microsecond
			for _, dw := range devs {
				e.emitDevWin(dw, now, delay, emit)
			}
			for _, dw := range s.reemit {
				dw.queued = false
			}
			s.reemit = s.reemit[:0]
		} else if s.emitted && len(s.reemit) > 0 {
			slices.SortFunc(s.reemit, func(a, b *devWin) int { return cmp.Compare(a.dev, b.dev) })
			for _, dw := range s.reemit {
				dw.queued = false
				e.emitDevWin(dw, now, 0, emit)
			}
			s.reemit = s.reemit[:0]
		}
		if !s.closed && end+e.lateness <= e.wm {
			s.closed = true
			for _, dw := range s.devs {
				e.closeDevWin(dw)
			}
		}
		if s.closed && end+e.lateness+e.retention <= e.wm {
			for _, dw := range s.devs {
				dw.deleted = true
				e.devWins--
				e.markDirty(dw)
			}
			delete(e.slots, st)
		}
	}
}

func (e *Engine) closeDevWin(dw *devWin) {
	if dw.closed {
		return
	}
	dw.closed = true
	e.openAggs -= len(dw.aggs)
	e.stats.WindowsClosed += int64(len(dw.aggs))
	dw.aggs, dw.ids, dw.seqs = nil, nil, nil
	e.markDirty(dw)
}

func (e *Engine) emitDevWin(dw *devWin, now time.Time, delay time.Duration, emit func(*Emission)) {
	ws := time.UnixMicro(dw.start).UTC()
	we := time.UnixMicro(dw.start + e.size).UTC()
	at := now.UTC().Truncate(time.Microsecond)
	for _, a := range dw.aggs {
		if !a.changed {
			continue
		}
		a.changed = false
		a.revision++
		m := &e.metric
		*m = schemas.WindowMetric{
			DeviceID: dw.dev, Metric: a.name, WindowStart: ws, WindowEnd: we,
			Count: a.count, Sum: a.sum(), Min: a.min, Max: a.max, Mean: a.mean(), Stddev: a.stddev(),
			First: a.first, Last: a.last,
			P50: a.quantile(0.50), P95: a.quantile(0.95), P99: a.quantile(0.99),
			FirstTime: time.UnixMicro(a.firstT).UTC(), LastTime: time.UnixMicro(a.lastT).UTC(),
			Revision: a.revision, EmittedAt: at,
		}
		e.stats.MetricsEmitted++
		emit(&Emission{Metric: m, Delay: delay})
	}
	if !dw.actChanged {
		return
	}
	dw.actChanged = false
	dw.actRev++
	if !dw.closed {
		dw.gaps = seqGaps(dw.seqs)
	}
	ac := &e.activity
	*ac = schemas.Activity{
		DeviceID: dw.dev, WindowStart: ws, WindowEnd: we,
		Messages: dw.messages, SeqGaps: dw.gaps, Late: dw.late, Duplicates: dw.dups,
		Revision: dw.actRev, EmittedAt: at,
	}
	if dw.messages > 0 {
		ac.FirstSeen = time.UnixMicro(dw.firstSeen).UTC()
		ac.LastSeen = time.UnixMicro(dw.lastSeen).UTC()
	}
	e.stats.ActivityEmitted++
	emit(&Emission{Activity: ac, Delay: delay})
	e.markDirty(dw)
}

func (e *Engine) oldestOpen() (int64, bool) {
	oldest, found := int64(0), false
	for st, s := range e.slots {
		if !s.closed && (!found || st < oldest) {
			oldest, found = st, true
		}
	}
	return oldest, found
}

// CloseOldest moves the watermark far enough to close the oldest window
// that still holds open aggregates (to its end plus the lateness), so that
// the next Advance emits it and drops its state. It reports false when no
// window is open. The processor uses it at its memory cap; readings that
// arrive later for that window are late.
func (e *Engine) CloseOldest() bool {
	oldest, found := e.oldestOpen()
	if !found {
		return false
	}
	if wm := oldest + e.size + e.lateness; !e.hasWM || wm > e.wm {
		e.wm, e.hasWM = wm, true
		e.metaDirty = true
	}
	return true
}

// seqGaps counts the device messages missing in a window: walking the
// readings in event-time order, each rise of seq by d > 1 counts d−1
// missing messages; a fall (a device restart) counts none. Gaps that
// straddle a window boundary are counted in neither window.
func seqGaps(s []tseq) int64 {
	if len(s) < 2 {
		return 0
	}
	slices.SortFunc(s, func(a, b tseq) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	var gaps int64
	for i := 1; i < len(s); i++ {
		if d := s[i].seq - s[i-1].seq; d > 1 {
			gaps += d - 1
		}
	}
	return gaps
}

// Changes calls fn for every state change since the last call, as
// changelog key/value pairs: the value of a device window's key is its
// encoded state, nil (a tombstone) once it is forgotten; the meta key holds
// the watermark. Applying the pairs with Restore to an empty Engine rebuilds
// this one. value is only valid during the call.
func (e *Engine) Changes(fn func(key, value []byte)) {
	var kb, vb []byte
	if e.metaDirty {
		e.metaDirty = false
		vb = e.appendMeta(vb[:0])
		fn([]byte(metaKey), vb)
	}
	for _, dw := range e.dirty {
		dw.dirty = false
		kb = appendStateKey(kb[:0], dw.start, dw.dev)
		if dw.deleted {
			fn(kb, nil)
			continue
		}
		vb = appendDevWin(vb[:0], dw)
		fn(kb, vb)
	}
	clear(e.dirty)
	e.dirty = e.dirty[:0]
}

// ErrBadState reports a changelog record this version cannot read.
var ErrBadState = errors.New("invalid processor state record")

// Restore applies one changelog record (as written by Changes) to the
// engine; records must come in log order. Call FinishRestore after the last.
func (e *Engine) Restore(key, value []byte) error {
	if string(key) == metaKey {
		if value == nil {
			e.hasWM = false
			return nil
		}
		return e.decodeMeta(value)
	}
	start, dev, err := parseStateKey(key)
	if err != nil {
		return err
	}
	s := e.slots[start]
	if value == nil {
		if s != nil {
			if _, ok := s.devs[dev]; ok {
				delete(s.devs, dev)
				if len(s.devs) == 0 {
					delete(e.slots, start)
				}
			}
		}
		return nil
	}
	dw, err := decodeDevWin(value, dev, start)
	if err != nil {
		return fmt.Errorf("state of device %q window %s: %w", dev, time.UnixMicro(start).UTC().Format(time.RFC3339), err)
	}
	if s == nil {
		s = &slot{start: start, devs: make(map[string]*devWin)}
		e.slots[start] = s
	}
	s.devs[dev] = dw
	return nil
}

// FinishRestore rebuilds the derived fields after Restore and starts the
// idle timer at now.
func (e *Engine) FinishRestore(now time.Time) {
	e.lastInput = now
	e.openAggs, e.devWins = 0, 0
	for st, s := range e.slots {
		end := st + e.size
		s.emitted = e.hasWM && end <= e.wm
		s.closed = e.hasWM && end+e.lateness <= e.wm
		for _, dw := range s.devs {
			e.devWins++
			if !dw.closed {
				e.openAggs += len(dw.aggs)
			}
		}
	}
	e.dirty = e.dirty[:0]
	e.metaDirty = false
}
