package processor

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// TestRestoreChangelogV1: a changelog written by the per-partition
// watermark version (testdata/changelog_v1/v1.json, written by that
// version: two devices, closed windows with late-count summaries, an
// emitted window still open, open ones, and the partition's watermark) restores into this version, and the same
// continuation (a reading for a window that version had closed, a new
// reading) gives the same records with the same revisions as that version
// gave (emission times aside): nothing counted twice, no revision reused,
// what was closed stays closed.
func TestRestoreChangelogV1(t *testing.T) {
	b, err := os.ReadFile("testdata/changelog_v1/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Changelog []struct{ K, V string }
		After     []string `json:"v1_emissions_after"`
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
		}
		if err := eng.Restore(k, v); err != nil {
			t.Fatalf("restore %q: %v", k, err)
		}
	}
	if err := eng.FinishRestore(goldenBase.Add(36 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if eng.Devices() != 2 || eng.OpenKeys() != 2 {
		t.Fatalf("restored %d devices, %d open keys; want 2, 2", eng.Devices(), eng.OpenKeys())
	}
	key := func(b []byte) string {
		var rec schemas.MetricsRecord
		if err := schemas.DecodeMetricsRecord(b, &rec); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if rec.Kind == schemas.KindMetric {
			m := rec.Metric
			return fmt.Sprintf("metric %s %s %s rev %d count %d sum %v", m.DeviceID, m.Metric, m.WindowStart.Format("15:04:05"), m.Revision, m.Count, m.Sum)
		}
		a := rec.Activity
		return fmt.Sprintf("activity %s %s rev %d messages %d late %d dups %d gaps %d", a.DeviceID, a.WindowStart.Format("15:04:05"), a.Revision, a.Messages, a.Late, a.Duplicates, a.SeqGaps)
	}
	var got, want []string
	for _, s := range dump.After {
		want = append(want, key([]byte(s)))
	}
	emit := func(em *Emission) {
		if em.Metric != nil {
			got = append(got, key(schemas.AppendMetric(nil, em.Metric)))
		} else {
			got = append(got, key(schemas.AppendActivity(nil, em.Activity)))
		}
	}
	if out := eng.Add(v1Reading("d1", 18*time.Second, 3, 18), goldenBase.Add(37*time.Second)); out != Late {
		t.Errorf("a reading for a window the old version had closed: outcome %d, want Late", out)
	}
	if out := eng.Add(v1Reading("d1", 29*time.Second, 8, 29), goldenBase.Add(37*time.Second)); out != Accepted {
		t.Errorf("a reading for a window the old version had emitted, not closed: outcome %d, want Accepted", out)
	}
	eng.Add(v1Reading("d2", 35*time.Second, -1, 35), goldenBase.Add(38*time.Second))
	eng.Advance(goldenBase.Add(38*time.Second), emit)
	eng.Advance(goldenBase.Add(300*time.Second), emit)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after restoring a version 1 changelog:\ngot  %q\nwant %q", got, want)
	}
}

func v1Reading(dev string, ts time.Duration, seq int64, v float64) *schemas.Reading {
	t := goldenBase.Add(ts)
	r := &schemas.Reading{DeviceID: dev, EventTime: t, ReceivedTime: t, Measurements: []schemas.Measurement{{Name: "v", Value: v}}}
	if seq >= 0 {
		r.Seq, r.HasSeq = seq, true
	}
	return r
}
