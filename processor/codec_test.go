package processor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// Every window record is written as version 4 (the ignored count after
// the seq resets); it restores to the same counters, open and closed
// (late-counting summary). Versions 2 and 3 are read by the changelog
// compatibility tests.
func TestDevWinIgnoredFieldsCodec(t *testing.T) {
	eng, _ := NewEngine(goldenWindow)
	add := func(dev string, ts time.Duration, seq int64, ignored int, wall time.Duration) Outcome {
		r := v1Reading(dev, ts, seq, 1)
		r.IgnoredFields = ignored
		return eng.Add(r, goldenBase.Add(wall))
	}
	add("clean", time.Second, 1, 0, time.Second)
	add("dirty", time.Second, 1, 2, time.Second)
	add("dirty", 2*time.Second, 2, 3, 2*time.Second)
	if out := add("dirty", 2*time.Second, 2, 3, 3*time.Second); out != Duplicate {
		t.Fatalf("re-send: outcome %d, want Duplicate", out)
	}
	check := func(phase string, closed bool) map[string][]byte {
		t.Helper()
		recs := map[string][]byte{}
		eng.Changes(func(k, v []byte) {
			if kind, start, dev, _, _ := parseKey(k); kind == keyWindow && start == goldenBase.UnixMicro() && v != nil {
				recs[dev] = bytes.Clone(v)
			}
		})
		for dev, wantV := range map[string]byte{"clean": stateVersion4, "dirty": stateVersion4} {
			v := recs[dev]
			if len(v) == 0 || v[0] != wantV {
				t.Fatalf("%s: %s window record %x, want version %d", phase, dev, v, wantV)
			}
			orig := eng.dev(dev).wins[0]
			dw, err := decodeDevWin(v, orig.start)
			if err != nil {
				t.Fatalf("%s: decode %s: %v", phase, dev, err)
			}
			if dw.closed != closed || dw.ignored != orig.ignored || dw.messages != orig.messages || dw.dups != orig.dups ||
				dw.resets != orig.resets || dw.ids.firstT != orig.ids.firstT || dw.ids.last.t != orig.ids.last.t ||
				dw.actRev != orig.actRev || dw.idCount() != orig.idCount() || (!closed && dw.ids.last != orig.ids.last) || len(dw.aggs) != len(orig.aggs) {
				t.Errorf("%s: %s decoded %+v, want %+v", phase, dev, *dw, *orig)
			}
		}
		if got := eng.dev("dirty").wins[0].ignored; got != 5 {
			t.Fatalf("%s: dirty window ignored %d, want 5 (2 + 3; the re-send adds nothing)", phase, got)
		}
		return recs
	}
	check("open", false)
	// Readings at 20 s close the [0 s, 10 s) windows for good (kept as
	// late-counting summaries); a late reading with ignored fields adds
	// none to its summary.
	add("dirty", 20*time.Second, 3, 0, 20*time.Second)
	add("clean", 20*time.Second, 2, 0, 20*time.Second)
	eng.Advance(goldenBase.Add(20*time.Second), func(*Emission) {})
	if out := add("dirty", 3*time.Second, 9, 7, 21*time.Second); out != Late {
		t.Fatalf("reading for a closed window: outcome %d, want Late", out)
	}
	add("clean", 3*time.Second, 9, 0, 21*time.Second)
	closed := check("closed", true)

	// Both closed summaries restore in a fresh engine with their counts.
	fresh, _ := NewEngine(goldenWindow)
	eng.Changes(func([]byte, []byte) {})
	for dev, v := range closed {
		if err := fresh.Restore(appendStateKey(nil, goldenBase.UnixMicro(), dev), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := fresh.FinishRestore(goldenBase.Add(21 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"clean", "dirty"} {
		dw := fresh.dev(dev).wins[0]
		want := map[string]int32{"clean": 0, "dirty": 5}[dev]
		if dw.ignored != want || !dw.closed || dw.late != 1 {
			t.Errorf("restored %s: ignored %d closed %v late %d, want %d true 1", dev, dw.ignored, dw.closed, dw.late, want)
		}
	}
}

// A version 4 record that is cut short or holds a negative ignored count
// is ErrBadState; so is an unknown version.
func TestDevWinIgnoredFieldsCorrupt(t *testing.T) {
	dw := &devWin{start: 0, messages: 2, ignored: 4, ids: idSet{firstT: 1, last: tseq{2, 0}}, actRev: 1, closed: true}
	v := appendDevWin(nil, dw)
	if v[0] != stateVersion4 {
		t.Fatalf("version %d", v[0])
	}
	got, err := decodeDevWin(v, 0)
	if err != nil || got.ignored != 4 || got.messages != 2 || got.ids.last.t != 2 {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	neg := bytes.Clone(v[:6]) // version, flags, messages, dups, late, resets
	neg = binary.AppendVarint(neg, -1)
	neg = append(neg, v[7:]...)
	for name, b := range map[string][]byte{
		"truncated":       v[:6],
		"negative":        neg,
		"unknown version": append([]byte{5}, v[1:]...),
	} {
		if _, err := decodeDevWin(b, 0); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: err %v, want ErrBadState", name, err)
		}
	}
}
