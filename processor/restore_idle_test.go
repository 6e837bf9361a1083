package processor

import (
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// TestRestoreRestartsSilence: after a restore, a device's silence counts
// from the restore (its last reading was longer ago), until its next
// reading: its window is emitted by the idle rule only once the silence
// since the restore lets its watermark reach the window's end.
func TestRestoreRestartsSilence(t *testing.T) {
	wc := DefaultWindowConfig()
	wc.Size, wc.Lateness, wc.IdleTimeout = time.Minute, 5*time.Second, 30*time.Second
	t0 := time.Date(2026, 11, 27, 10, 0, 10, 0, time.UTC) // 10 s into its window
	eng, _ := NewEngine(wc)
	eng.Add(&schemas.Reading{DeviceID: "d", EventTime: t0, Seq: 1, HasSeq: true,
		Measurements: []schemas.Measurement{{Name: "temp", Value: 1}}}, t0)
	fresh, _ := NewEngine(wc)
	eng.Changes(func(k, v []byte) {
		if err := fresh.Restore(k, v); err != nil {
			t.Fatal(err)
		}
	})
	restored := t0.Add(10 * time.Minute)
	if err := fresh.FinishRestore(restored); err != nil {
		t.Fatal(err)
	}
	emitted := 0
	emit := func(em *Emission) {
		if em.Metric != nil {
			emitted++
		}
	}
	// The idle watermark is the newest event time plus the silence beyond
	// IdleTimeout: it reaches the window's end (50 s after the reading)
	// 80 s after the restore.
	fresh.Advance(restored.Add(79*time.Second), emit)
	if emitted != 0 {
		t.Fatalf("window emitted 79 s after the restore: silence counted from before it")
	}
	fresh.Advance(restored.Add(81*time.Second), emit)
	if emitted != 1 {
		t.Fatalf("%d metric records 81 s after the restore, want 1", emitted)
	}
}
