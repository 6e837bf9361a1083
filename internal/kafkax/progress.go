package kafkax

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultStallAfter is how long a consumer stage may go without committed
// progress while input waits before it reports a stall.
const DefaultStallAfter = 2 * time.Minute

// Progress follows, for every partition a consumer stage reads, how far its
// committed position is behind the end of the partition, and whether it is
// still making committed progress. Every consumer stage exports the same
// three series from it:
//
//	<ns>_<sub>_consumer_lag_records{topic,partition}  end offset (high watermark) − committed offset
//	<ns>_<sub>_consumer_lag_seconds{topic,partition}  age of the oldest record not yet committed (0 when none waits)
//	<ns>_<sub>_stalled                                 1 while some partition has input waiting and no committed progress for StallAfter
//
// "Committed" is the stage's own notion of done (a Kafka transaction, an
// uploaded and committed batch, a database transaction holding the
// offsets): the stage calls Committed or CommittedAll after it. End offsets
// come from the high watermarks of fetch responses, so a stage that stops
// fetching keeps the last ones it saw: still enough to see that input waits.
// Record ages come from the records' Kafka timestamps (the bridge's
// append time), to the granularity of one fetch.
//
// Safe for concurrent use. Memory is bounded: per partition at most
// maxChunks fetch boundaries are remembered.
type Progress struct {
	stallAfter time.Duration
	now        func() time.Time

	mu    sync.Mutex
	parts map[tp]*partProgress

	recs    *prometheus.GaugeVec
	secs    *prometheus.GaugeVec
	stalled prometheus.Gauge
}

type tp struct {
	topic string
	part  int32
}

// chunk is one fetch's records of a partition: [start, end) and the
// timestamp of its first record.
type chunk struct {
	start, end int64
	ts         time.Time
}

type partProgress struct {
	hwm       int64 // high watermark from the last fetch, -1 unknown
	committed int64 // next offset to process after the last commit, -1 unknown
	// committedTS is the timestamp of the last committed record.
	committedTS time.Time
	// chunks are the fetches not yet (wholly) committed, oldest first.
	chunks []chunk
	// since is when this partition last made committed progress, or when
	// input started waiting on it, whichever is later.
	since   time.Time
	waiting bool
}

// maxChunks bounds the fetch boundaries kept per partition; when a stage
// fetches far ahead of what it commits, the oldest boundaries stay (they
// give the age of the oldest waiting record) and the newest are merged.
const maxChunks = 256

// NewProgress registers the three series under namespace ns and subsystem
// sub on reg (nil: not registered) and reports a stall after stallAfter
// (zero or less: never).
func NewProgress(ns, sub string, reg prometheus.Registerer, stallAfter time.Duration) *Progress {
	p := &Progress{
		stallAfter: stallAfter,
		now:        time.Now,
		parts:      make(map[tp]*partProgress),
		recs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "consumer_lag_records", Help: "Records in the partition after the last committed one (fetch high watermark minus committed offset), by topic and partition."},
			[]string{"topic", "partition"}),
		secs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "consumer_lag_seconds", Help: "Age of the oldest record not yet committed (its Kafka timestamp), by topic and partition; 0 when nothing waits."},
			[]string{"topic", "partition"}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "stalled", Help: fmt.Sprintf("1 while input waits on some partition and nothing was committed on it for the stall time (%s), else 0.", stallAfter)}),
	}
	if reg != nil {
		reg.MustRegister(p.recs, p.secs, p.stalled)
	}
	return p
}

func (p *Progress) part(topic string, part int32) *partProgress {
	k := tp{topic, part}
	pp := p.parts[k]
	if pp == nil {
		pp = &partProgress{hwm: -1, committed: -1, since: p.now()}
		p.parts[k] = pp
	}
	return pp
}

// Fetched records what a poll returned: the partitions' high watermarks
// and the offsets and timestamps of their records.
func (p *Progress) Fetched(fs kgo.Fetches) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	fs.EachPartition(func(f kgo.FetchTopicPartition) {
		if f.Err != nil && len(f.Records) == 0 {
			return
		}
		pp := p.part(f.Topic, f.Partition)
		if f.HighWatermark >= 0 {
			pp.hwm = f.HighWatermark
		}
		if n := len(f.Records); n > 0 {
			first, last := f.Records[0], f.Records[n-1]
			if pp.committed < 0 {
				pp.committed = first.Offset // where this consumer started
			}
			pp.addChunk(chunk{start: first.Offset, end: last.Offset + 1, ts: first.Timestamp})
			if last.Offset+1 > pp.hwm {
				pp.hwm = last.Offset + 1
			}
		}
		p.update(tp{f.Topic, f.Partition}, pp, now)
	})
	p.updateStalled(now)
}

func (pp *partProgress) addChunk(c chunk) {
	// A fetch at or before what was fetched already is a re-read (a
	// rewind after an aborted transaction): forget what it replaces.
	i := len(pp.chunks)
	for i > 0 && pp.chunks[i-1].start >= c.start {
		i--
	}
	pp.chunks = pp.chunks[:i]
	if len(pp.chunks) >= maxChunks {
		last := &pp.chunks[len(pp.chunks)-1]
		last.end = max(last.end, c.end)
		return
	}
	pp.chunks = append(pp.chunks, c)
}

// Committed records that everything before offset (the next offset to
// process) of topic/partition is done. A partition never fetched (or
// forgotten since) is ignored.
func (p *Progress) Committed(topic string, part int32, offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	pp := p.parts[tp{topic, part}]
	if pp == nil {
		return
	}
	p.commit(pp, offset, now)
	p.update(tp{topic, part}, pp, now)
	p.updateStalled(now)
}

// CommittedAll records that everything fetched so far, on every partition,
// is done (a stage whose commit covers all it polled).
func (p *Progress) CommittedAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for k, pp := range p.parts {
		if n := len(pp.chunks); n > 0 {
			p.commit(pp, pp.chunks[n-1].end, now)
		}
		p.update(k, pp, now)
	}
	p.updateStalled(now)
}

func (p *Progress) commit(pp *partProgress, offset int64, now time.Time) {
	if offset <= pp.committed {
		return
	}
	pp.committed = offset
	pp.since = now
	i := 0
	for i < len(pp.chunks) && pp.chunks[i].end <= offset {
		pp.committedTS = pp.chunks[i].ts
		i++
	}
	pp.chunks = append(pp.chunks[:0], pp.chunks[i:]...)
	if offset > pp.hwm {
		pp.hwm = offset
	}
}

// Forget drops the partitions a stage no longer reads (revoked, lost) and
// their series.
func (p *Progress) Forget(m map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for topic, parts := range m {
		for _, part := range parts {
			delete(p.parts, tp{topic, part})
			ps := strconv.Itoa(int(part))
			p.recs.DeleteLabelValues(topic, ps)
			p.secs.DeleteLabelValues(topic, ps)
		}
	}
	p.updateStalled(p.now())
}

// update recomputes one partition's lag series; p.mu held.
func (p *Progress) update(k tp, pp *partProgress, now time.Time) {
	lag := int64(0)
	if pp.hwm >= 0 && pp.committed >= 0 && pp.hwm > pp.committed {
		lag = pp.hwm - pp.committed
	}
	waiting := lag > 0
	if waiting && !pp.waiting {
		pp.since = now // input started waiting now: the stall clock starts
	}
	pp.waiting = waiting
	age := 0.0
	if waiting {
		switch {
		case len(pp.chunks) > 0 && !pp.chunks[0].ts.IsZero():
			age = now.Sub(pp.chunks[0].ts).Seconds()
		case !pp.committedTS.IsZero():
			age = now.Sub(pp.committedTS).Seconds()
		}
	}
	ps := strconv.Itoa(int(k.part))
	p.recs.WithLabelValues(k.topic, ps).Set(float64(lag))
	p.secs.WithLabelValues(k.topic, ps).Set(max(age, 0))
}

// stalledParts lists the stalled partitions, most records first; p.mu held.
func (p *Progress) stalledParts(now time.Time) []stall {
	if p.stallAfter <= 0 {
		return nil
	}
	var out []stall
	for k, pp := range p.parts {
		if pp.waiting && now.Sub(pp.since) >= p.stallAfter {
			out = append(out, stall{k, pp.hwm - pp.committed, now.Sub(pp.since)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].records != out[j].records {
			return out[i].records > out[j].records
		}
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].part < out[j].part
	})
	return out
}

type stall struct {
	tp
	records int64
	for_    time.Duration
}

func (p *Progress) updateStalled(now time.Time) {
	v := 0.0
	if len(p.stalledParts(now)) > 0 {
		v = 1
	}
	p.stalled.Set(v)
}

// ErrStalled is wrapped by Check's error while the stage is stalled.
var ErrStalled = errors.New("stalled")

// Check is a readiness check: it fails, naming the partition with the
// most waiting records, while the stage is stalled. It also refreshes the
// stalled gauge, so a stage blocked outside its poll loop still shows it.
func (p *Progress) Check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for k, pp := range p.parts {
		p.update(k, pp, now)
	}
	st := p.stalledParts(now)
	p.updateStalled(now)
	if len(st) == 0 {
		return nil
	}
	s := st[0]
	more := ""
	if len(st) > 1 {
		more = fmt.Sprintf(" (and %d more partitions)", len(st)-1)
	}
	return fmt.Errorf("%w: %d records wait on %s/%d and nothing was committed there for %s%s",
		ErrStalled, s.records, s.topic, s.part, s.for_.Round(time.Second), more)
}
