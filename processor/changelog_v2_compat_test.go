package processor

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// v2Step is one input of the changelog version 2 compatibility case: a
// reading (with the ignored fields the bridge counted in it) at a wall
// time, or a tick (Dev "").
type v2Step struct {
	wall, ts time.Duration
	dev      string
	seq      int64
	ignored  int
}

// v2Before is what the processor before ignored_fields saw before its
// changelog was dumped into testdata/changelog_v2/v2.json (at wall 28 s):
// d1 has a closed window kept as a late-counting summary ([0 s, 10 s)),
// an emitted window still open ([10 s, 20 s)) and open ones; d2 an open
// window. (Its readings carry ignored fields too: that version dropped
// them, so the restored windows start at 0.)
var v2Before = []v2Step{
	{wall: 1500 * time.Millisecond, ts: 1 * time.Second, dev: "d1", seq: 1, ignored: 1},
	{wall: 2500 * time.Millisecond, ts: 2 * time.Second, dev: "d1", seq: 2},
	{wall: 3500 * time.Millisecond, ts: 3 * time.Second, dev: "d1", seq: 3, ignored: 2},
	{wall: 5500 * time.Millisecond, ts: 5 * time.Second, dev: "d2", seq: 1, ignored: 1},
	{wall: 8500 * time.Millisecond, ts: 8 * time.Second, dev: "d2", seq: 2},
	{wall: 12500 * time.Millisecond, ts: 12 * time.Second, dev: "d1", seq: 4},
	{wall: 16500 * time.Millisecond, ts: 16 * time.Second, dev: "d1", seq: 5, ignored: 1},
	{wall: 22500 * time.Millisecond, ts: 22 * time.Second, dev: "d1", seq: 6},
	{wall: 27500 * time.Millisecond, ts: 27 * time.Second, dev: "d1", seq: 7},
	{wall: 28 * time.Second},
}

// v2After is the continuation after the restore: both versions were given
// it; the version before ignored_fields wrote v2_emissions_after.
var v2After = []v2Step{
	{wall: 29 * time.Second, ts: 2 * time.Second, dev: "d1", seq: 9, ignored: 5}, // closed window: late
	{wall: 29 * time.Second, ts: 18 * time.Second, dev: "d1", seq: 10, ignored: 2},
	{wall: 30 * time.Second, ts: 28 * time.Second, dev: "d1", seq: 8, ignored: 3},
	{wall: 30500 * time.Millisecond, ts: 28 * time.Second, dev: "d1", seq: 8, ignored: 3}, // re-send: duplicate
	{wall: 31 * time.Second, ts: 9 * time.Second, dev: "d2", seq: 3, ignored: 4},
	{wall: 38 * time.Second},
	{wall: 300 * time.Second},
}

// runV2Steps feeds steps to eng and returns the outcome of each reading
// (ticks give -1).
func runV2Steps(eng *Engine, steps []v2Step, emit func(*Emission)) []Outcome {
	var outs []Outcome
	for _, s := range steps {
		now := goldenBase.Add(s.wall)
		if s.dev == "" {
			outs = append(outs, -1)
		} else {
			r := v1Reading(s.dev, s.ts, s.seq, float64(s.ts/time.Second))
			r.IgnoredFields = s.ignored
			outs = append(outs, eng.Add(r, now))
		}
		eng.Advance(now, emit)
	}
	return outs
}

// TestRestoreChangelogV2: a changelog written by the version before
// ignored_fields (testdata/changelog_v2/v2.json, written by commit 39d8783
// from v2Before) restores into this version; the same continuation
// (v2After) gives the same records as that version gave, byte for byte
// once ignored_fields is left out; the activity records carry the ignored
// fields of the continuation's accepted readings only (the late reading's
// and the re-send's add nothing). This version, given v2Before without
// ignored fields, writes version 4 records for the same keys, and those
// restore to an engine that gives the same continuation records.
func TestRestoreChangelogV2(t *testing.T) {
	b, err := os.ReadFile("testdata/changelog_v2/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Changelog []struct{ K, V string }
		After     []string `json:"v2_emissions_after"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	eng, _ := NewEngine(goldenWindow)
	for _, kv := range dump.Changelog {
		k, _ := base64.StdEncoding.DecodeString(kv.K)
		var v []byte
		if kv.V != "" {
			v, _ = base64.StdEncoding.DecodeString(kv.V)
			if v[0] != stateVersion {
				t.Fatalf("record %q has version %d, want the version 2 written before ignored_fields", k, v[0])
			}
		}
		if err := eng.Restore(k, v); err != nil {
			t.Fatalf("restore %q: %v", k, err)
		}
	}
	if err := eng.FinishRestore(goldenBase.Add(28 * time.Second)); err != nil {
		t.Fatal(err)
	}

	// This version, given v2Before without ignored fields, writes version 4
	// records for the same keys, restored into own.
	clean := slices.Clone(v2Before)
	for i := range clean {
		clean[i].ignored = 0
	}
	now, _ := NewEngine(goldenWindow)
	runV2Steps(now, clean, func(*Emission) {})
	written := map[string]string{}
	own, _ := NewEngine(goldenWindow)
	now.Changes(func(k, v []byte) {
		k64 := base64.StdEncoding.EncodeToString(k)
		if v == nil {
			delete(written, k64)
		} else {
			written[k64] = base64.StdEncoding.EncodeToString(v)
			if kind, _, _, _, _ := parseKey(k); kind == keyWindow && v[0] != stateVersion4 {
				t.Errorf("window record %s written as version %d, want %d", k64, v[0], stateVersion4)
			}
		}
		if err := own.Restore(k, v); err != nil {
			t.Fatalf("restore this version's record %q: %v", k, err)
		}
	})
	if err := own.FinishRestore(goldenBase.Add(28 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(written) != len(dump.Changelog) {
		t.Errorf("this version wrote %d changelog records for v2Before, the previous one %d", len(written), len(dump.Changelog))
	}
	for _, kv := range dump.Changelog {
		if _, ok := written[kv.K]; !ok {
			t.Errorf("changelog record %s: not written by this version", kv.K)
		}
	}
	var ownGot []string
	runV2Steps(own, v2After, func(em *Emission) {
		if em.Metric != nil {
			ownGot = append(ownGot, string(schemas.AppendMetric(nil, em.Metric)))
			return
		}
		a := *em.Activity
		a.IgnoredFields = 0
		ownGot = append(ownGot, string(schemas.AppendActivity(nil, &a)))
	})

	type win struct {
		dev string
		ws  time.Duration
	}
	ignored := map[win]int64{}
	var got []string
	outs := runV2Steps(eng, v2After, func(em *Emission) {
		if em.Metric != nil {
			got = append(got, string(schemas.AppendMetric(nil, em.Metric)))
			return
		}
		a := *em.Activity
		ignored[win{a.DeviceID, a.WindowStart.Sub(goldenBase)}] = a.IgnoredFields
		a.IgnoredFields = 0
		got = append(got, string(schemas.AppendActivity(nil, &a)))
	})
	if len(got) != len(dump.After) {
		t.Fatalf("%d records after the restore, the previous version gave %d:\n%q\n%q", len(got), len(dump.After), got, dump.After)
	}
	for i := range got {
		if got[i] != dump.After[i] {
			t.Errorf("record %d:\ngot  %s\nwant %s", i, got[i], dump.After[i])
		}
	}
	if !slices.Equal(ownGot, dump.After) {
		t.Errorf("continuation after restoring this version's version 4 records:\n%q\nwant\n%q", ownGot, dump.After)
	}
	// Independently: the sum of the accepted continuation readings' ignored
	// fields per window (the restored windows contributed 0).
	want := map[win]int64{}
	for i, s := range v2After {
		if s.dev != "" && outs[i] == Accepted {
			want[win{s.dev, s.ts.Truncate(goldenWindow.Size)}] += int64(s.ignored)
		}
	}
	if outs[0] != Late || outs[3] != Duplicate {
		t.Fatalf("outcomes %v: want the first reading late and the re-send a duplicate", outs)
	}
	if want[win{"d1", 20 * time.Second}] != 3 || want[win{"d2", 0}] != 4 {
		t.Fatalf("expected sums %v", want)
	}
	for w, n := range ignored {
		if n != want[w] {
			t.Errorf("activity %s %v: ignored_fields %d, want %d", w.dev, w.ws, n, want[w])
		}
	}
	for w, n := range want {
		if _, ok := ignored[w]; !ok && n != 0 {
			t.Errorf("no activity record for %s %v (ignored_fields %d expected)", w.dev, w.ws, n)
		}
	}
}
