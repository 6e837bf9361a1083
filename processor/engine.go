package processor

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
	"unique"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/schemas"
)

// WindowConfig sets the event-time windowing of an Engine.
type WindowConfig struct {
	// Size is the length of the tumbling windows; they are aligned to the
	// Unix epoch: [k·Size, (k+1)·Size). Default 1m (DefaultWindowConfig).
	Size time.Duration
	// Lateness is the allowed lateness. A device's watermark trails the
	// largest event time seen from that device by Lateness, a window is
	// first emitted when the device's watermark passes its end, and a
	// reading for it is still accepted (and the window re-emitted with a
	// higher revision) until the watermark passes end+Lateness; after that
	// the reading is late. Default 30s.
	Lateness time.Duration
	// IdleTimeout is how long a device may send nothing before its
	// watermark advances with the clock, so that its windows close. The
	// clock is the partition's ingest clock (the bridges' heartbeats: a
	// device is silent only while the ingest path is flowing), or the wall
	// clock on a partition where no heartbeat was seen. Default 30s.
	IdleTimeout time.Duration
	// LateRetention is how long after a window's state is dropped its
	// activity summary is kept, so that late readings are counted in the
	// window's activity record (re-emitted with a higher revision).
	// Default 5m.
	LateRetention time.Duration
	// MaxFutureSkew is how far ahead of the processor's wall clock an event
	// time may be: a reading further ahead goes to the DLQ
	// (timestamp_skew), and no device's watermark is ever ahead of the wall
	// clock plus MaxFutureSkew. Keep it at least the bridge's
	// --max-future-skew. Default 5m, as the bridge's.
	MaxFutureSkew time.Duration
	// HeartbeatExpiry: a bridge whose latest heartbeat on a partition is
	// more than this behind the newest heartbeat of another bridge there
	// no longer holds the partition's ingest clock (a bridge scaled away);
	// within it, a stalled bridge holds the clock. Default 2m.
	HeartbeatExpiry time.Duration
}

// Defaults of WindowConfig.
const (
	DefaultWindowSize    = time.Minute
	DefaultLateness      = 30 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
	DefaultLateRetention = 5 * time.Minute
	DefaultMaxFutureSkew = schemas.DefaultMaxFutureSkew
	// DefaultHeartbeatExpiry is the default of WindowConfig.HeartbeatExpiry.
	DefaultHeartbeatExpiry = 2 * time.Minute
)

// DefaultDeviceRetention is how long the state of a silent device is kept
// when the raw topic's retention is not known: Kafka's default retention,
// and `iotpipe init`'s default for the raw topic.
const DefaultDeviceRetention = 7 * 24 * time.Hour

// DefaultWindowConfig returns the defaults of WindowConfig.
func DefaultWindowConfig() WindowConfig {
	return WindowConfig{Size: DefaultWindowSize, Lateness: DefaultLateness, IdleTimeout: DefaultIdleTimeout,
		LateRetention: DefaultLateRetention, MaxFutureSkew: DefaultMaxFutureSkew, HeartbeatExpiry: DefaultHeartbeatExpiry}
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
	p.Check(c.MaxFutureSkew < 0, "MaxFutureSkew", "must not be negative")
	p.Check(c.HeartbeatExpiry <= 0, "HeartbeatExpiry", "must be positive")
	return p.Err()
}

// Outcome says what an Engine did with a reading.
type Outcome int

const (
	// Accepted: the reading was aggregated into its window.
	Accepted Outcome = iota
	// Duplicate: the reading's identity (device, event time, seq) was
	// already counted in its window; it was dropped and counted in the
	// window's activity record.
	Duplicate
	// Late: the reading's window had already closed for good for its
	// device; the caller sends it to the DLQ with schemas.ReasonLate.
	Late
	// TooFarAhead: the reading's event time is more than MaxFutureSkew
	// ahead of the wall clock; the caller sends it to the DLQ with
	// schemas.ReasonTimestampSkew. It changes no state.
	TooFarAhead
)

// Emission is one telemetry.metrics record to write: exactly one of Metric
// and Activity is set. Both point into storage the Engine reuses: encode
// them before the emit callback returns.
type Emission struct {
	Metric   *schemas.WindowMetric
	Activity *schemas.Activity
	// Delay is how far the device's watermark had passed the window's end
	// when it was first emitted (0 for re-emissions).
	Delay time.Duration
	// NewSeqResets is, for an activity record, how much its SeqResets rose
	// since the window's previous emission.
	NewSeqResets int64
}

// Stats are the Engine's cumulative counters.
type Stats struct {
	Accepted, Duplicates, Late, TooFarAhead int64
	SeqResets                               int64 // accepted readings that reused a seq of their window with another time
	IgnoredFields                           int64 // payload fields the bridge ignored, summed over accepted readings
	WindowsOpened, WindowsClosed            int64 // metric windows (device × metric × window)
	MetricsEmitted, ActivityEmitted         int64
}

// Engine aggregates the readings of one input partition into tumbling
// event-time windows per device × metric, with a watermark per device. It
// is a pure function of the readings it is given and of the times passed
// to Add and Advance (AddAt and AdvanceAt: a wall clock and an idle clock):
// it does no I/O, reads no clock and is not safe for concurrent use.
//
// Its whole state can be written out as key/value changes (Changes) and
// rebuilt from them (Restore); that is how it survives crashes and
// rebalances.
type Engine struct {
	cfg                                   WindowConfig
	size, lateness, idle, retention, skew int64 // µs
	devRetention                          int64 // µs; see SetDeviceRetention

	devs    devIndex  // the devices by id
	devList []*device // the same devices, for iteration; device.idx is the position

	// floor, from a changelog written by the per-partition watermark
	// version: windows ending at or before it are closed for good for
	// every device. legacyWM is that version's watermark (which windows it
	// had emitted).
	hasFloor        bool
	floor, legacyWM int64

	openAggs  int // metric aggregates in windows whose state is kept
	devWins   int // device windows (open or summary)
	dirtyWins []*devWin
	dirtyDevs []*device

	hasWM bool
	minWM int64 // the smallest device watermark at the last Advance

	lateDev *device // the device of the last Late outcome
	// chunks and restWins hold the identity chunk records and the version
	// 4 window records read by Restore until FinishRestore decodes them:
	// a log that compaction cleaned only in part can hold a window record
	// whose chunks were since rewritten; only the last value of each key
	// counts.
	chunks   map[chunkKey][]byte
	restWins map[chunkKey][]byte // n = 0
	scratch  []tseq              // identities, for an out-of-order insert
	bins     *binCache           // memoised sketch bin keys (allocated by NewEngine)

	attn     []*device // devices with work at the next Advance
	due      dueHeap   // devices waiting for a wall-clock time
	nextScan int64     // µs: when Advance next recomputes minWM

	pending []pendingEmit // scratch of Advance
	settle  []*device     // scratch of Advance

	stats Stats

	metric   schemas.WindowMetric
	activity schemas.Activity
}

// device is the per-device part of the state: its event-time clock.
type device struct {
	id string
	// maxEvent is the largest event time accepted from the device (µs).
	maxEvent int64
	// closeTo: the device's windows ending at or before it are closed for
	// good (never lowered).
	closeTo int64
	// lastInput is the idle-clock time of the device's last reading (µs;
	// stored, for DeviceRetention); idleFrom is when its current silence
	// started counting: lastInput, or the restore time if later (memory
	// only).
	lastInput, idleFrom int64
	wins                []*devWin // held windows, by start
	// next is the smallest watermark at which Advance has work for the
	// device (see plan); dueAt/dueGen its entry in the due heap.
	next  int64
	dueAt int64
	idx   int32 // position in Engine.devList
	// dueGen wraps at 256: a stale heap entry that matches again only
	// makes Advance visit the device and plan it anew.
	dueGen               uint8
	dirty, deleted, attn bool
}

// devWin is the state of one device in one window: its metric aggregates,
// the identities seen (for dedup, seq gaps and seq resets) and the
// activity counters.
type devWin struct {
	d     *device
	start int64
	aggs  []agg // sorted by name
	ids   idSet // identities seen, sorted by (t, seq); seq −1 without seq

	messages           int64
	gaps               int64 // computed at each activity emission
	dups, late, resets int32 // saturating (see inc)
	ignored            int32 // ignored payload fields of the accepted readings (saturating)
	actRev             int32
	resetsEmitted      int32 // resets in the last activity emission (memory only)
	// The identity string in the changelog: idsBase bytes in the window
	// record, up to idsSent in chunk records 1..chunks (see
	// Engine.sendIDs); idsSent 0 = to be written whole.
	idsBase, idsSent int32
	idsOff           int32 // where the identities start in ids.b (after the bins)
	chunks           uint8

	emitted, closed bool
	fl              winFlags // the rarer flags, packed (TestStateLayout)
}

// winFlags are flags of a devWin.
type winFlags uint8

const (
	wLegacy     winFlags = 1 << iota // restored from a version 1 record (emitted not known yet)
	wActChanged                      // the activity record changed since its last emission
	wDirty                           // in Engine.dirtyWins
	wQueued                          // to be re-emitted at the next Advance
	wDeleted                         // forgotten: a tombstone is due
)

func (dw *devWin) is(f winFlags) bool { return dw.fl&f != 0 }

func (dw *devWin) set(f winFlags, on bool) {
	if on {
		dw.fl |= f
	} else {
		dw.fl &^= f
	}
}

// tseq is a reading's identity within its device: event time and seq (−1
// when the reading has none).
type tseq struct{ t, seq int64 }

func cmpTseq(a, b tseq) int {
	if c := cmp.Compare(a.t, b.t); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

type pendingEmit struct {
	dw    *devWin
	delay int64
	first bool
}

// NewEngine returns an empty engine; it fails when cfg.Validate does (a
// zero field is not replaced by a default: start from DefaultWindowConfig).
func NewEngine(cfg WindowConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:          cfg,
		size:         cfg.Size.Microseconds(),
		lateness:     cfg.Lateness.Microseconds(),
		idle:         cfg.IdleTimeout.Microseconds(),
		retention:    cfg.LateRetention.Microseconds(),
		skew:         cfg.MaxFutureSkew.Microseconds(),
		devRetention: DefaultDeviceRetention.Microseconds(),
		bins:         new(binCache),
	}, nil
}

// SetDeviceRetention sets how long a silent device's state is kept (its
// open windows and its clock), DefaultDeviceRetention unless set. The
// processor sets it to the raw topic's retention: a device that comes back
// within it with buffered readings newer than its last one has all of them
// counted. After it, the device's windows are closed and its state is
// forgotten.
func (e *Engine) SetDeviceRetention(d time.Duration) {
	if d > 0 {
		e.devRetention = d.Microseconds()
	}
}

// Watermark returns the smallest device watermark, as recomputed by
// Advance at most every 5 s of wall-clock time, and false before there is
// one.
func (e *Engine) Watermark() (time.Time, bool) {
	return time.UnixMicro(e.minWM).UTC(), e.hasWM
}

// OpenKeys is the number of metric aggregates (device × metric × window)
// whose state is kept: the quantity that memory grows with.
func (e *Engine) OpenKeys() int { return e.openAggs }

// DeviceWindows is the number of device windows held, open or summary.
func (e *Engine) DeviceWindows() int { return e.devWins }

// Devices is the number of devices whose clock is held.
func (e *Engine) Devices() int { return len(e.devList) }

// Stats returns the cumulative counters.
func (e *Engine) Stats() Stats { return e.stats }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// watermark is d's watermark at idle-clock time now (µs): its largest
// event time minus the lateness; once the device has been silent for
// IdleTimeout, its largest event time plus the silence beyond IdleTimeout;
// never more than now + MaxFutureSkew (the idle clock is never ahead of
// the wall clock, so neither is this bound).
func (e *Engine) watermark(d *device, now int64) int64 {
	w := d.maxEvent - e.lateness
	if q := now - d.idleFrom - e.idle; q > 0 && d.maxEvent+q > w {
		w = d.maxEvent + q
	}
	return min(w, now+e.skew)
}

// raiseClose closes for good, at now, the windows of d that end at or
// before its watermark minus the lateness, but never one ending after its
// largest event time: a silent device's newest window stays open, so that
// the readings it buffered while offline, all newer than its last one,
// still count.
func (e *Engine) raiseClose(d *device, now int64) {
	if c := min(d.maxEvent, e.watermark(d, now)-e.lateness); c > d.closeTo {
		d.closeTo = c
		e.markDevDirty(d)
	}
}

func (e *Engine) newDevice(id string, t int64) *device {
	d := &device{id: id, idx: int32(len(e.devList)), maxEvent: t, closeTo: t - 2*e.lateness, next: math.MaxInt64, dueAt: math.MaxInt64}
	if e.hasFloor && e.floor > d.closeTo {
		d.closeTo = e.floor
	}
	e.devList = append(e.devList, d)
	e.devs.put(e.devList, d)
	return d
}

// dev returns the device with id, or nil.
func (e *Engine) dev(id string) *device { return e.devs.get(e.devList, id) }

// inc adds 1 to a per-window counter, which stops at its largest value.
func inc(p *int32) {
	if *p < math.MaxInt32 {
		*p++
	}
}

func (e *Engine) removeDevice(d *device) {
	e.devs.del(e.devList, d)
	last := e.devList[len(e.devList)-1]
	if last != d {
		from := last.idx
		last.idx = d.idx
		e.devs.moved(last, from)
	}
	e.devList[d.idx] = last
	e.devList[len(e.devList)-1] = nil
	e.devList = e.devList[:len(e.devList)-1]
	d.deleted = true
	e.markDevDirty(d)
}

// win returns d's window starting at start, or nil.
func (d *device) win(start int64) *devWin {
	for i := len(d.wins) - 1; i >= 0; i-- {
		if d.wins[i].start == start {
			return d.wins[i]
		}
		if d.wins[i].start < start {
			return nil
		}
	}
	return nil
}

func (e *Engine) newDevWin(d *device, start int64) *devWin {
	dw := &devWin{d: d, start: start, ids: idSet{maxSeq: -1}}
	i := len(d.wins)
	for i > 0 && d.wins[i-1].start > start {
		i--
	}
	d.wins = slices.Insert(d.wins, i, dw)
	e.devWins++
	return dw
}

// Add folds one reading in, at wall-clock time now. A reading more than
// MaxFutureSkew ahead of now is TooFarAhead; a reading whose window has
// closed for good for its device is Late (counted in the window's activity
// summary while that is kept); a reading whose identity (event time, seq)
// was seen in its window is a Duplicate. A reading that reuses a seq of
// its window with another event time is Accepted and counted as a seq
// reset.
func (e *Engine) Add(r *schemas.Reading, now time.Time) Outcome {
	return e.AddAt(r, now, now, now)
}

// AddAt is Add with the idle clock apart from the wall clock: wall (the
// processor's clock) judges how far ahead the reading is (MaxFutureSkew);
// clock is the idle clock, on which a device's silence is measured (see
// WindowConfig.IdleTimeout), and seen is when the reading entered the
// pipeline on that clock (its silence counts from there; taken as clock
// when earlier). Add(r, now) is AddAt(r, now, now, now). The idle clock
// must not run ahead of the wall clock.
func (e *Engine) AddAt(r *schemas.Reading, wall, clock, seen time.Time) Outcome {
	nowUS := clock.UnixMicro()
	t := r.EventTime.UnixMicro()
	if t > wall.UnixMicro()+e.skew {
		e.stats.TooFarAhead++
		return TooFarAhead
	}
	seq := int64(-1)
	if r.HasSeq {
		seq = r.Seq
	}
	start := floorDiv(t, e.size) * e.size
	end := start + e.size
	d := e.dev(r.DeviceID)
	if d == nil {
		if e.hasFloor && end <= e.floor {
			e.stats.Late++
			e.lateDev = nil
			return Late
		}
		d = e.newDevice(r.DeviceID, t)
	} else {
		// What the device's silence closed until now stays closed.
		if e.watermark(d, nowUS) >= d.next {
			e.attend(d)
		}
		e.raiseClose(d, nowUS)
	}
	seenUS := max(seen.UnixMicro(), nowUS)
	d.lastInput, d.idleFrom = seenUS, seenUS
	e.markDevDirty(d)
	dw := d.win(start)
	if end <= d.closeTo {
		e.stats.Late++
		e.lateDev = d
		if dw != nil {
			inc(&dw.late)
			dw.set(wActChanged, true)
			e.queue(dw)
			e.markDirty(dw)
		}
		return Late
	}
	if dw == nil {
		dw = e.newDevWin(d, start)
		e.attend(d)
	}
	if t > d.maxEvent {
		d.maxEvent = t
		if t-e.lateness >= d.next {
			e.attend(d)
		}
	}
	id := tseq{t, seq}
	wl, had := dw.ids.last, !dw.noIDs()
	// The window's smallest identity is decoded only when needed: a
	// reading after the window's last (the common case) leaves it as it
	// is, and agg.add then compares with the last only.
	appended := had && cmpTseq(id, wl) > 0
	var wf tseq
	if !appended {
		wf = dw.first()
	}
	switch dw.ids.add(id, dw.start, dw.idsOff, &e.scratch) {
	case idDuplicate:
		e.stats.Duplicates++
		inc(&dw.dups)
		dw.set(wActChanged, true)
		e.queue(dw)
		e.markDirty(dw)
		return Duplicate
	case idSeqReset:
		inc(&dw.resets)
		e.stats.SeqResets++
	}
	if had && cmpTseq(id, wl) < 0 {
		// Inserted before the end: the bytes already in the changelog
		// changed, so the next record holds them whole.
		dw.idsSent = 0
	}
	dw.messages++
	// Only here, past dedup: a re-sent message's ignored fields count once.
	dw.ignored = int32(min(int64(dw.ignored)+int64(r.IgnoredFields), math.MaxInt32))
	e.stats.IgnoredFields += int64(r.IgnoredFields)
	dw.set(wActChanged, true)
	// An aggregate's first/last identities are its window's unless it
	// missed one of the window's readings: then it keeps its own.
	for i := range r.Measurements {
		m := &r.Measurements[i]
		ai := dw.aggFor(e, m.Name, i)
		a := &dw.aggs[ai]
		f, l := a.edges(wf, wl)
		own := a.ext != nil && a.ext.own
		if a.touched() && !own {
			f, l = dw.first(), dw.ids.last // a second value in one reading
		}
		if a.count() == 0 && had {
			own = true // new in a window with earlier readings
		}
		a.add(m.Value, id, f, l, own)
		dw.addBin(ai, e.bins.key(m.Value)) // NaN never reaches an aggregate
	}
	for i := range dw.aggs {
		a := &dw.aggs[i]
		if a.touched() {
			a.setBit(aggTouchedBit, false)
			continue
		}
		if had && (a.ext == nil || !a.ext.own) {
			if appended {
				wf, appended = dw.first(), false // unchanged by the append
			}
			if dw.ids.last != wl || dw.first() != wf {
				a.setEdges(wf, wl) // the window's edges moved without it
			}
		}
	}
	e.stats.Accepted++
	e.queue(dw)
	e.markDirty(dw)
	return Accepted
}

type idResult int

const (
	idNew idResult = iota
	idDuplicate
	idSeqReset // new identity, but its seq is already used in the window
)

// aggFor returns the position in dw.aggs of the aggregate of metric name,
// adding it when needed; hint is where it probably is (the measurement's
// position in its reading).
func (dw *devWin) aggFor(e *Engine, name string, hint int) int {
	// Devices report a handful of metrics, in the same order every time:
	// a sorted slice beats a map.
	if hint < len(dw.aggs) && dw.aggs[hint].metric() == name {
		return hint
	}
	i := 0
	for ; i < len(dw.aggs); i++ {
		if c := cmp.Compare(dw.aggs[i].metric(), name); c >= 0 {
			if c == 0 {
				return i
			}
			break
		}
	}
	{
		if len(dw.aggs) == cap(dw.aggs) {
			// Grow to what the device's other windows hold, or by one: an
			// agg is large, and doubling would keep unused ones for the
			// window's life.
			n := len(dw.aggs) + 1
			for _, w := range dw.d.wins {
				n = max(n, len(w.aggs))
			}
			aggs := make([]agg, len(dw.aggs), n)
			copy(aggs, dw.aggs)
			dw.aggs = aggs
		}
		dw.insertBins(i)
		dw.aggs = slices.Insert(dw.aggs, i, agg{name: dw.d.metricHandle(name)})
		e.openAggs++
		e.stats.WindowsOpened++
	}
	return i
}

// metricHandle returns the interned name, taken from an aggregate of
// another of d's windows when one has it (cheaper than unique.Make).
func (d *device) metricHandle(name string) unique.Handle[string] {
	for _, w := range d.wins {
		for i := range w.aggs {
			if w.aggs[i].metric() == name {
				return w.aggs[i].name
			}
		}
	}
	return unique.Make(name)
}

// queue marks dw for re-emission when it was already emitted.
func (e *Engine) queue(dw *devWin) {
	if dw.emitted && !dw.is(wQueued) {
		dw.set(wQueued, true)
		e.attend(dw.d)
	}
}

func (e *Engine) markDirty(dw *devWin) {
	if !dw.is(wDirty) {
		dw.set(wDirty, true)
		e.dirtyWins = append(e.dirtyWins, dw)
	}
}

func (e *Engine) markDevDirty(d *device) {
	if !d.dirty {
		d.dirty = true
		e.dirtyDevs = append(e.dirtyDevs, d)
	}
}

// Advance lets every device's watermark move to wall-clock time now (a
// device silent for IdleTimeout advances with the wall clock), then emits
// every window its device's watermark has passed (and re-emits windows
// updated since their last emission), closes windows past their lateness,
// forgets summaries past LateRetention and devices silent for longer than
// the device retention. Emissions come in a deterministic order: by window
// start, device, metric name, with each device's activity record after
// its metrics.
//
// Its cost grows with the devices that have something to do, not with all
// devices held: Add marks a device for attention when its watermark passes
// its next threshold (a window end, a close, a deletion) or a window needs
// re-emission, and a device whose silence will move its watermark to its
// next threshold (or past the device retention) waits in a heap ordered by
// that wall-clock time.
func (e *Engine) Advance(now time.Time, emit func(*Emission)) {
	e.AdvanceAt(now, now, emit)
}

// AdvanceAt is Advance with the idle clock apart from the wall clock (see
// AddAt): silences are measured on clock, the emissions are stamped with
// wall.
func (e *Engine) AdvanceAt(wall, clock time.Time, emit func(*Emission)) {
	now := wall
	nowUS := clock.UnixMicro()
	for len(e.due) > 0 && e.due[0].at <= nowUS {
		it := heap.Pop(&e.due).(dueItem)
		if d := it.d; !d.deleted && d.dueGen == it.gen {
			d.dueAt = math.MaxInt64
			e.attend(d)
		}
	}
	if !e.hasWM || nowUS >= e.nextScan {
		e.scanWatermarks(nowUS)
	}
	e.pending = e.pending[:0]
	e.settle = e.settle[:0]
	for _, d := range e.attn {
		if nowUS-d.lastInput > e.devRetention && len(d.wins) > 0 {
			// Silent for longer than the raw topic keeps its input: close
			// what is left.
			if end := d.wins[len(d.wins)-1].start + e.size; end > d.closeTo {
				d.closeTo = end
				e.markDevDirty(d)
			}
		}
		e.raiseClose(d, nowUS)
		w := max(e.watermark(d, nowUS), d.closeTo)
		settle := len(d.wins) == 0 && nowUS-d.lastInput > e.devRetention
		for _, dw := range d.wins {
			end := dw.start + e.size
			switch {
			case !dw.emitted && end <= w:
				e.pending = append(e.pending, pendingEmit{dw: dw, delay: w - end, first: true})
			case dw.emitted && dw.is(wQueued):
				e.pending = append(e.pending, pendingEmit{dw: dw})
			}
			if (!dw.closed && end <= d.closeTo) || (dw.closed && end+e.lateness+e.retention <= w) {
				settle = true
			}
		}
		if settle {
			e.settle = append(e.settle, d)
		}
	}
	slices.SortFunc(e.pending, func(a, b pendingEmit) int {
		return cmp.Or(cmp.Compare(a.dw.start, b.dw.start), cmp.Compare(a.dw.d.id, b.dw.d.id))
	})
	for _, p := range e.pending {
		p.dw.emitted = true
		p.dw.set(wQueued, false)
		e.emitDevWin(p.dw, now, time.Duration(p.delay)*time.Microsecond, emit)
	}
	for _, d := range e.settle {
		w := max(e.watermark(d, nowUS), d.closeTo)
		kept := d.wins[:0]
		for _, dw := range d.wins {
			end := dw.start + e.size
			if !dw.closed && end <= d.closeTo {
				e.closeDevWin(dw)
			}
			if dw.closed && end+e.lateness+e.retention <= w {
				dw.set(wDeleted, true)
				e.devWins--
				e.markDirty(dw)
				continue
			}
			kept = append(kept, dw)
		}
		clear(d.wins[len(kept):])
		d.wins = kept
		if len(d.wins) == 0 && nowUS-d.lastInput > e.devRetention {
			e.removeDevice(d)
		}
	}
	for _, d := range e.attn {
		d.attn = false
		if !d.deleted {
			e.plan(d, nowUS)
		}
	}
	clear(e.attn)
	e.attn = e.attn[:0]
	clear(e.pending)
	clear(e.settle)
}

// attend queues d for the next Advance.
func (e *Engine) attend(d *device) {
	if !d.attn {
		d.attn = true
		e.attn = append(e.attn, d)
	}
}

// plan works out, after an Advance visited d, the smallest watermark at
// which d has work again (d.next: a window to emit, close or forget), and
// when d's silence alone would get it there or past the device retention:
// that wall-clock time goes into the heap (an earlier entry stays, and the
// device is re-planned when it fires).
func (e *Engine) plan(d *device, now int64) {
	next := int64(math.MaxInt64)
	for _, dw := range d.wins {
		end := dw.start + e.size
		switch {
		case !dw.emitted:
			next = min(next, end)
		case !dw.closed && end <= d.maxEvent:
			next = min(next, end+e.lateness)
		case dw.closed:
			next = min(next, end+e.lateness+e.retention)
		}
	}
	d.next = next
	at := d.lastInput + e.devRetention + 1
	if next != math.MaxInt64 {
		// Idle: watermark = maxEvent + (now − idleFrom − idle), at most
		// now + skew.
		idleAt := d.idleFrom + e.idle + max(1, next-d.maxEvent)
		at = min(at, max(idleAt, next-e.skew))
	}
	at = max(at, now+1)
	if at < d.dueAt {
		d.dueAt = at
		d.dueGen++
		heap.Push(&e.due, dueItem{at: at, d: d, gen: d.dueGen})
	}
}

// scanWatermarks computes the smallest device watermark (for Watermark),
// at most every scanEvery of wall-clock time.
func (e *Engine) scanWatermarks(now int64) {
	e.hasWM = false
	for _, d := range e.devList {
		if w := max(e.watermark(d, now), d.closeTo); !e.hasWM || w < e.minWM {
			e.minWM, e.hasWM = w, true
		}
	}
	e.nextScan = now + scanEvery
}

const scanEvery = 5_000_000 // µs

// dueItem is a device waiting for a wall-clock time; stale when gen is not
// the device's dueGen.
type dueItem struct {
	at  int64
	d   *device
	gen uint8
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = dueItem{}
	*h = old[:len(old)-1]
	return it
}

func (e *Engine) closeDevWin(dw *devWin) {
	if dw.closed {
		return
	}
	dw.closed = true
	e.openAggs -= len(dw.aggs)
	e.stats.WindowsClosed += int64(len(dw.aggs))
	dw.aggs, dw.ids, dw.idsOff = nil, idSet{firstT: dw.ids.firstT, last: dw.ids.last, maxSeq: -1}, 0
	e.markDirty(dw)
}

func (e *Engine) emitDevWin(dw *devWin, now time.Time, delay time.Duration, emit func(*Emission)) {
	ws := time.UnixMicro(dw.start).UTC()
	we := time.UnixMicro(dw.start + e.size).UTC()
	at := now.UTC().Truncate(time.Microsecond)
	sec := 0 // the offset of aggregate i's bins section
	var wf tseq
	if len(dw.aggs) > 0 {
		wf = dw.first()
	}
	for i := range dw.aggs {
		a := &dw.aggs[i]
		bl, k := binary.Uvarint(dw.ids.b[sec:])
		bins := dw.ids.b[sec+k : sec+k+int(bl)]
		sec += k + int(bl)
		if !a.changed() {
			continue
		}
		f, l := a.edges(wf, dw.ids.last)
		a.setBit(aggChangedBit, false)
		a.setRevision(a.revision() + 1)
		m := &e.metric
		*m = schemas.WindowMetric{
			DeviceID: dw.d.id, Metric: a.metric(), WindowStart: ws, WindowEnd: we,
			Count: a.count(), Sum: a.sum(), Min: a.min, Max: a.max, Mean: a.mean(), Stddev: a.stddev(),
			First: a.first, Last: a.last,
			P50: a.quantile(bins, 0.50), P95: a.quantile(bins, 0.95), P99: a.quantile(bins, 0.99),
			FirstTime: time.UnixMicro(f.t).UTC(), LastTime: time.UnixMicro(l.t).UTC(),
			Revision: int64(a.revision()), EmittedAt: at,
		}
		e.stats.MetricsEmitted++
		emit(&Emission{Metric: m, Delay: delay})
	}
	if !dw.is(wActChanged) {
		return
	}
	dw.set(wActChanged, false)
	dw.actRev++
	if !dw.closed {
		dw.gaps = seqGaps(dw.idBytes(), dw.start)
	}
	ac := &e.activity
	*ac = schemas.Activity{
		DeviceID: dw.d.id, WindowStart: ws, WindowEnd: we,
		Messages: dw.messages, SeqGaps: dw.gaps, SeqResets: int64(dw.resets), Late: int64(dw.late), Duplicates: int64(dw.dups),
		IgnoredFields: int64(dw.ignored), Revision: int64(dw.actRev), EmittedAt: at,
	}
	if dw.messages > 0 {
		ac.FirstSeen = time.UnixMicro(dw.ids.firstT).UTC()
		ac.LastSeen = time.UnixMicro(dw.ids.last.t).UTC()
	}
	e.stats.ActivityEmitted++
	newResets := int64(max(dw.resets-dw.resetsEmitted, 0))
	dw.resetsEmitted = dw.resets
	emit(&Emission{Activity: ac, Delay: delay, NewSeqResets: newResets})
	e.markDirty(dw)
}

// lateError explains why r, just judged Late, is late.
func (e *Engine) lateError(r *schemas.Reading) string {
	et := r.EventTime.Format(time.RFC3339Nano)
	if e.lateDev == nil {
		return fmt.Sprintf("event time %s is in a window that closed for good before this processor kept a clock per device (windows ending at or before %s)",
			et, time.UnixMicro(e.floor).UTC().Format(time.RFC3339Nano))
	}
	d := e.lateDev
	return fmt.Sprintf("event time %s is in a window of device %q that closed for good: its windows ending at or before %s are closed (the device's newest event time is %s, allowed lateness %s)",
		et, d.id, time.UnixMicro(d.closeTo).UTC().Format(time.RFC3339Nano), time.UnixMicro(d.maxEvent).UTC().Format(time.RFC3339Nano), e.cfg.Lateness)
}

func (e *Engine) oldestOpen() (int64, bool) {
	oldest, found := int64(0), false
	for _, d := range e.devList {
		for _, dw := range d.wins {
			if !dw.closed {
				if !found || dw.start < oldest {
					oldest, found = dw.start, true
				}
				break
			}
		}
	}
	return oldest, found
}

// CloseOldest closes for good the oldest windows that still hold open
// aggregates (those of every device with the oldest window start), so that
// the next Advance emits them and drops their state. It reports false when
// no window is open. The processor uses it at its memory cap; readings
// that arrive later for those windows are late.
func (e *Engine) CloseOldest() bool {
	oldest, found := e.oldestOpen()
	if !found {
		return false
	}
	end := oldest + e.size
	for _, d := range e.devList {
		if dw := d.win(oldest); dw != nil && !dw.closed && end > d.closeTo {
			d.closeTo = end
			e.markDevDirty(d)
			e.attend(d)
		}
	}
	return true
}

// seqGaps counts the device messages missing in a window: walking the
// readings with a seq in (event time, seq) order, each rise of seq by
// d > 1 counts d−1 missing messages; a fall (a device restart) counts
// none. Gaps that straddle a window boundary are counted in neither
// window. ids is an identity string (see idSet).
func seqGaps(ids []byte, start int64) int64 {
	var gaps int64
	prev := int64(-1)
	it := newIDIter(ids, start)
	for x, ok := it.next(); ok; x, ok = it.next() {
		if x.seq < 0 {
			continue
		}
		if prev >= 0 {
			if d := x.seq - prev; d > 1 {
				gaps += d - 1
			}
		}
		prev = x.seq
	}
	return gaps
}

// Changes calls fn for every state change since the last call, as
// changelog key/value pairs: the value of a device's or device window's
// key is its encoded state, nil (a tombstone) once it is forgotten; a
// window whose identities pass chunkMinBase bytes also has identity chunk
// records, written before its window record, with only what was added
// since the last call (see chunkMinBase). Applying the pairs with Restore
// to an empty Engine, then FinishRestore, rebuilds this one. key and value
// are only valid during the call.
func (e *Engine) Changes(fn func(key, value []byte)) {
	var kb, vb []byte
	for _, d := range e.dirtyDevs {
		d.dirty = false
		kb = appendDeviceKey(kb[:0], d.id)
		if d.deleted {
			fn(kb, nil)
			continue
		}
		vb = appendDevice(vb[:0], d)
		fn(kb, vb)
	}
	clear(e.dirtyDevs)
	e.dirtyDevs = e.dirtyDevs[:0]
	for _, dw := range e.dirtyWins {
		dw.set(wDirty, false)
		kb = appendStateKey(kb[:0], dw.start, dw.d.id)
		if dw.is(wDeleted) || dw.closed {
			kb = e.dropChunks(kb, dw, 1, fn)
		}
		if dw.is(wDeleted) {
			fn(kb, nil)
			continue
		}
		if !dw.closed {
			kb = e.sendIDs(kb, dw, fn)
		}
		vb = appendDevWin(vb[:0], dw)
		fn(kb, vb)
	}
	clear(e.dirtyWins)
	e.dirtyWins = e.dirtyWins[:0]
}

// A window's identity string grows with its readings; rewriting it whole
// at every commit would make a device at hundreds of Hz write its whole
// window every half second. So a window record holds the string itself
// only while it is shorter than chunkMinBase bytes. Beyond, the string is
// in identity chunk records (key: window key + 0xFF + chunk number 1..255,
// value: version 4 and bytes that continue the string): chunk 1 holds the
// whole string as of its writing (idsBase bytes), each later commit adds a
// chunk with only what was added since, and the window record says how
// many chunks there are. When the added chunks would sum to more than
// chunk 1, after maxChunks chunks, or when an identity was inserted before
// the end, chunk 1 is written whole again and the others are deleted
// (tombstones). So a commit writes the window record (aggregates, bins,
// counters: no identities) and about what was added, the rewrites cost at
// most about the final string again over a window, and the compacted
// changelog holds at most about twice the string.
const maxChunks = 255

// chunkMinBase is 512 bytes; tests lower it to put every window in chunks.
var chunkMinBase int32 = 512

// sendIDs writes, for this commit, the identity chunks of dw that are due
// (see chunkMinBase); kb is dw's key.
func (e *Engine) sendIDs(kb []byte, dw *devWin, fn func(key, value []byte)) []byte {
	ids := dw.idBytes()
	n := int32(len(ids))
	if n < chunkMinBase {
		kb = e.dropChunks(kb, dw, 1, fn) // in the window record
		dw.idsBase, dw.idsSent = n, n
		return kb
	}
	k := len(kb)
	switch {
	case dw.idsSent == 0 || dw.chunks == 0 || dw.chunks == maxChunks || n-dw.idsBase > dw.idsBase:
		kb = e.dropChunks(kb, dw, 2, fn)
		kb = appendChunkKey(kb, 1)
		fn(kb, appendChunk(nil, ids))
		dw.chunks, dw.idsBase = 1, n
	case n > dw.idsSent:
		dw.chunks++
		kb = appendChunkKey(kb, dw.chunks)
		fn(kb, appendChunk(nil, ids[dw.idsSent:]))
	}
	dw.idsSent = n
	return kb[:k]
}

// dropChunks writes a tombstone for each of dw's identity chunks from
// number from on.
func (e *Engine) dropChunks(kb []byte, dw *devWin, from int, fn func(key, value []byte)) []byte {
	k := len(kb)
	for c := from; c <= int(dw.chunks); c++ {
		kb = appendChunkKey(kb[:k], uint8(c))
		fn(kb, nil)
	}
	dw.chunks = uint8(min(int(dw.chunks), from-1))
	return kb[:k]
}

// ErrBadState reports a changelog record this version cannot read.
var ErrBadState = errors.New("invalid processor state record")

// restoreDevice returns the device being restored, creating a placeholder
// (clock unknown until its own record comes) when needed.
func (e *Engine) restoreDevice(id string) *device {
	d := e.dev(id)
	if d == nil {
		d = &device{id: id, idx: int32(len(e.devList)), maxEvent: math.MinInt64, closeTo: math.MinInt64, next: math.MaxInt64, dueAt: math.MaxInt64}
		e.devList = append(e.devList, d)
		e.devs.put(e.devList, d)
	}
	return d
}

// Restore applies one changelog record (as written by Changes, or by the
// per-partition watermark version) to the engine; records must come in log
// order. Call FinishRestore after the last.
func (e *Engine) Restore(key, value []byte) error {
	switch kind, start, id, chunk, err := parseKey(key); {
	case err != nil:
		return err
	case kind == keyMeta:
		if value == nil {
			e.hasFloor = false
			return nil
		}
		return e.decodeMeta(value)
	case kind == keyChunk:
		ck := chunkKey{start, id, chunk}
		if value == nil {
			delete(e.chunks, ck)
			return nil
		}
		b, err := decodeChunk(value)
		if err != nil {
			return fmt.Errorf("identity chunk %d of device %q window %s: %w", chunk, id, time.UnixMicro(start).UTC().Format(time.RFC3339), err)
		}
		if e.chunks == nil {
			e.chunks = map[chunkKey][]byte{}
		}
		e.chunks[ck] = b
		return nil
	case kind == keyDevice:
		if value == nil {
			if d := e.dev(id); d != nil {
				d.maxEvent, d.closeTo, d.lastInput = math.MinInt64, math.MinInt64, 0
			}
			return nil
		}
		d := e.restoreDevice(id)
		if err := decodeDevice(value, d); err != nil {
			return fmt.Errorf("state of device %q: %w", id, err)
		}
		return nil
	default:
		wk := chunkKey{start: start, dev: id}
		delete(e.restWins, wk)
		if len(value) > 0 && value[0] == stateVersion4 {
			// Decoded by FinishRestore, with its chunks; what an earlier
			// record of the key restored is replaced.
			if d := e.dev(id); d != nil {
				if i := slices.IndexFunc(d.wins, func(w *devWin) bool { return w.start == start }); i >= 0 {
					d.wins = slices.Delete(d.wins, i, i+1)
				}
			}
			if e.restWins == nil {
				e.restWins = map[chunkKey][]byte{}
			}
			e.restWins[wk] = bytes.Clone(value)
			return nil
		}
		d := e.dev(id)
		if value == nil {
			if d != nil {
				if i := slices.IndexFunc(d.wins, func(w *devWin) bool { return w.start == start }); i >= 0 {
					d.wins = slices.Delete(d.wins, i, i+1)
				}
			}
			return nil
		}
		dw, err := decodeDevWin(value, start)
		if err != nil {
			return fmt.Errorf("state of device %q window %s: %w", id, time.UnixMicro(start).UTC().Format(time.RFC3339), err)
		}
		e.placeWin(id, dw)
		return nil
	}
}

// placeWin puts a restored window into its device's windows, replacing
// one with the same start.
func (e *Engine) placeWin(id string, dw *devWin) {
	{
		d := e.restoreDevice(id)
		dw.d = d
		start := dw.start
		if i := slices.IndexFunc(d.wins, func(w *devWin) bool { return w.start == start }); i >= 0 {
			d.wins[i] = dw
			return
		}
		i := len(d.wins)
		for i > 0 && d.wins[i-1].start > start {
			i--
		}
		d.wins = slices.Insert(d.wins, i, dw)
	}
}

// FinishRestore decodes the window records Restore kept for the end (with
// their identity chunks), rebuilds the derived fields and starts the idle
// timer of every device at now (or at its last reading, if that is
// later). It fails (ErrBadState) when a window record is corrupt or one of
// its chunks is missing; the engine is then unusable.
func (e *Engine) FinishRestore(now time.Time) error {
	keys := slices.SortedFunc(maps.Keys(e.restWins), func(a, b chunkKey) int {
		return cmp.Or(cmp.Compare(a.dev, b.dev), cmp.Compare(a.start, b.start))
	})
	for _, k := range keys {
		dw, err := decodeDevWinChunks(e.restWins[k], k.start, func(c uint8) ([]byte, bool) {
			b, ok := e.chunks[chunkKey{k.start, k.dev, c}]
			return b, ok
		})
		if err != nil {
			return fmt.Errorf("state of device %q window %s: %w", k.dev, time.UnixMicro(k.start).UTC().Format(time.RFC3339), err)
		}
		e.placeWin(k.dev, dw)
	}
	e.restWins, e.chunks = nil, nil
	nowUS := now.UnixMicro()
	e.openAggs, e.devWins = 0, 0
	kept := e.devList[:0]
	for _, d := range e.devList {
		noRecord := d.maxEvent == math.MinInt64 // an old changelog, or a device tombstone
		for _, dw := range d.wins {
			if dw.is(wLegacy) {
				// Written by the per-partition watermark version: it had
				// emitted the windows its watermark had passed.
				dw.emitted = dw.closed || (e.hasFloor && dw.start+e.size <= e.legacyWM)
				dw.set(wLegacy, false)
			}
			if noRecord && dw.messages > 0 && (d.maxEvent == math.MinInt64 || dw.ids.last.t > d.maxEvent) {
				d.maxEvent = dw.ids.last.t
			}
			e.devWins++
			if !dw.closed {
				e.openAggs += len(dw.aggs)
			}
		}
		if d.maxEvent == math.MinInt64 {
			if len(d.wins) == 0 {
				continue // forgotten (the index is rebuilt below)
			}
			d.maxEvent = d.wins[len(d.wins)-1].start // only late-count summaries left
		}
		if d.closeTo == math.MinInt64 {
			d.closeTo = d.maxEvent - 2*e.lateness
			if e.hasFloor {
				d.closeTo = max(d.closeTo, e.floor)
			}
		}
		if d.lastInput == 0 {
			d.lastInput = nowUS
		}
		d.idleFrom = max(d.lastInput, nowUS)
		d.idx = int32(len(kept))
		kept = append(kept, d)
		e.attend(d)
	}
	clear(e.devList[len(kept):])
	e.devList = kept
	e.devs.reset(kept)
	e.dirtyWins = e.dirtyWins[:0]
	e.dirtyDevs = e.dirtyDevs[:0]
	return nil
}
