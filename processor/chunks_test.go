package processor

import (
	"bytes"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// fullLog is every changelog record written, in order.
type fullLog [][2][]byte

// commitLog applies Changes to a compacted view of the changelog (last
// value per key) and to full, and returns the bytes written by this commit.
func commitLog(eng *Engine, log map[string][]byte, full *fullLog) (written int) {
	eng.Changes(func(k, v []byte) {
		if full != nil {
			*full = append(*full, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
		}
		written += len(k) + len(v)
		if v == nil {
			delete(log, string(k))
		} else {
			log[string(k)] = bytes.Clone(v)
		}
	})
	return written
}

// restoreLog rebuilds an engine from a compacted changelog view, in the
// map's (random) order: FinishRestore decodes window records with their
// chunks at the end.
func restoreLog(t *testing.T, log map[string][]byte, now time.Time) *Engine {
	t.Helper()
	eng, _ := NewEngine(benchWindow())
	for k, v := range log {
		if err := eng.Restore([]byte(k), v); err != nil {
			t.Fatalf("restore %q: %v", k, err)
		}
	}
	if err := eng.FinishRestore(now); err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestChangelogChunks: a device at 500 Hz (identity strings of many KB)
// commits every 500 ms: each commit writes about what changed (identity
// chunks), not its whole window, while an out-of-order reading or enough
// chunks make the window record whole again with the chunks deleted; after
// every commit the compacted changelog (window records restored after
// their chunks) restores to the same identities and
// aggregates, and holds no chunk that no window counts.
func TestChangelogChunks(t *testing.T) {
	eng, _ := NewEngine(benchWindow())
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	log := map[string][]byte{}
	var full fullLog
	const hz = 500
	var perCommit []int
	seq := int64(0)
	for c := range 118 { // 59 s: one window
		for i := range hz / 2 {
			ts := time.Duration(c)*500*time.Millisecond + time.Duration(i)*time.Second/hz + time.Duration(seq%3)*time.Microsecond
			r := &schemas.Reading{DeviceID: "fast", EventTime: t0.Add(ts), Seq: seq, HasSeq: true,
				Measurements: []schemas.Measurement{{Name: "v", Value: float64(seq % 100)}}}
			seq++
			if c == 80 && i == 0 {
				r.EventTime = t0.Add(time.Second + 7*time.Microsecond) // out of order: an insert
			}
			if out := eng.Add(r, t0.Add(ts)); out != Accepted {
				t.Fatalf("reading %d: outcome %d", seq, out)
			}
		}
		// A slow device beside it: never chunked.
		eng.Add(&schemas.Reading{DeviceID: "slow", EventTime: t0.Add(time.Duration(c) * 500 * time.Millisecond), Seq: int64(c), HasSeq: true,
			Measurements: []schemas.Measurement{{Name: "v", Value: 1}}}, t0)
		perCommit = append(perCommit, commitLog(eng, log, &full))

		got := restoreLog(t, log, t0)
		for _, dev := range []string{"fast", "slow"} {
			want, have := eng.dev(dev).wins[0], got.dev(dev).wins[0]
			if !bytes.Equal(want.idBytes(), have.idBytes()) || want.first() != have.first() || want.ids.last != have.ids.last ||
				want.ids.maxSeq != have.ids.maxSeq || want.aggs[0].count() != have.aggs[0].count() || want.aggs[0].sum() != have.aggs[0].sum() ||
				!bytes.Equal(want.bins(0), have.bins(0)) || want.messages != have.messages {
				t.Fatalf("commit %d: %s restored with %d identity bytes, %d values; want %d, %d", c, dev, len(have.idBytes()), have.aggs[0].count(), len(want.idBytes()), want.aggs[0].count())
			}
		}
		fast := eng.dev("fast").wins[0]
		for k := range log {
			if kind, _, dev, n, _ := parseKey([]byte(k)); kind == keyChunk && (dev != "fast" || n > fast.chunks) {
				t.Fatalf("commit %d: chunk %d of %s in the changelog, the window counts %d", c, n, dev, fast.chunks)
			}
		}
		if c == 80 && fast.chunks != 1 {
			t.Fatalf("commit %d: an out-of-order identity, yet %d chunks kept (want chunk 1 rewritten whole)", c, fast.chunks)
		}
	}
	fast := eng.dev("fast").wins[0]
	if len(fast.idBytes()) < 20000 {
		t.Fatalf("identity string %d bytes: the test wants a large window", len(fast.idBytes()))
	}
	// Steady state: most commits write a chunk plus the window record,
	// far below the identity string; over the window, all commits
	// together write a small multiple of the final state.
	total, small := 0, 0
	for _, n := range perCommit {
		total += n
		if n < len(fast.idBytes())/4 {
			small++
		}
	}
	var compacted int
	for k, v := range log {
		compacted += len(k) + len(v)
	}
	t.Logf("identity string %d B; commits wrote %d B in all (%d B average, %d of %d below a quarter of the string); compacted changelog %d B",
		len(fast.idBytes()), total, total/len(perCommit), small, len(perCommit), compacted)
	if small < len(perCommit)*3/4 {
		t.Errorf("only %d of %d commits wrote less than a quarter of the identity string", small, len(perCommit))
	}
	if total > 12*len(fast.idBytes()) {
		t.Errorf("commits wrote %d B in all for a %d B identity string", total, len(fast.idBytes()))
	}
	if compacted > 3*len(fast.idBytes()) {
		t.Errorf("compacted changelog %d B for a %d B identity string", compacted, len(fast.idBytes()))
	}
	// The log as written, and as the log cleaner may leave it (older
	// values removed only below some offset), restore in log order to the
	// same state.
	want := eng.dev("fast").wins[0]
	for cut := 0; cut <= len(full); cut += len(full)/7 + 1 {
		latest := map[string]int{}
		for i, kv := range full[:cut] {
			latest[string(kv[0])] = i
		}
		got, _ := NewEngine(benchWindow())
		for i, kv := range full {
			if i < cut && i < latest[string(kv[0])] {
				continue // cleaned
			}
			if err := got.Restore(kv[0], kv[1]); err != nil {
				t.Fatalf("cleaned below %d: restore record %d: %v", cut, i, err)
			}
		}
		if err := got.FinishRestore(t0); err != nil {
			t.Fatalf("cleaned below %d: %v", cut, err)
		}
		if have := got.dev("fast").wins[0]; !bytes.Equal(have.idBytes(), want.idBytes()) || have.aggs[0].count() != want.aggs[0].count() {
			t.Fatalf("cleaned below %d: %d identity bytes, %d values; want %d, %d", cut, len(have.idBytes()), have.aggs[0].count(), len(want.idBytes()), want.aggs[0].count())
		}
	}

	// Closing the window (a reading in the next one, then silence) deletes
	// its chunks.
	eng.Add(&schemas.Reading{DeviceID: "fast", EventTime: t0.Add(61 * time.Second), Seq: seq, HasSeq: true,
		Measurements: []schemas.Measurement{{Name: "v", Value: 1}}}, t0.Add(61*time.Second))
	eng.Advance(t0.Add(time.Hour), func(*Emission) {})
	if w := eng.dev("fast").win(t0.UnixMicro()); w != nil && !w.closed {
		t.Fatalf("window [0 s, 60 s) still open")
	}
	commitLog(eng, log, nil)
	for k := range log {
		if kind, _, _, _, _ := parseKey([]byte(k)); kind == keyChunk {
			t.Fatalf("chunk %q left after the window closed", k)
		}
	}
}
