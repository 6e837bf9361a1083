package devicesim

import (
	"strings"
	"testing"
	"time"
)

func TestProgressFormat(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := sample{at: start.Add(5 * time.Second), cpu: 10 * time.Millisecond, st: Stats{Published: 1000}}
	cur := sample{at: start.Add(10 * time.Second), cpu: 30 * time.Millisecond,
		st: Stats{Published: 2000, Acked: 1990, AckedInvalid: 20, Unconfirmed: 3}}
	got := formatProgress(prev, cur, start)
	want := "simulate:    10s     200.0 msg/s  published 2000  acked 1990 (invalid 20)  unconfirmed 3  refused 0  no-subscribers 0  cpu 20.0µs/msg"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if s := perMsg(time.Second, 0); s != "-" {
		t.Errorf("perMsg with no message: %q", s)
	}
	var b strings.Builder
	writeSummary(&b, sample{at: start}, sample{at: start.Add(10 * time.Second), cpu: 50 * time.Millisecond,
		st: Stats{Published: 5000, Acked: 5000, AckedValid: 4950, AckedInvalid: 50, Duplicates: 7, Late: 2, OutOfOrder: 9, Connections: 1}})
	for _, w := range []string{"published 5000 (500.0 msg/s)", "valid 4950, invalid 50", "duplicates 7, out-of-order 9, late 2", "cpu 10.0µs/msg"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("summary %q lacks %q", b.String(), w)
		}
	}
	if cpuTime() <= 0 {
		t.Error("cpuTime is not positive")
	}
}
