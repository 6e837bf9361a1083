package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitsWithinBoundsAndJittered(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 2 * time.Second
	b := New(lo, hi)
	// The k-th wait lies in [c/2, c], c = min(hi, 2^(k+1)·lo).
	for run := range 200 {
		b.Reset()
		c := 2 * lo
		for k := range 10 {
			w := b.NextBackOff()
			if w < lo || w > hi {
				t.Fatalf("run %d wait %d = %s, outside [%s, %s]", run, k, w, lo, hi)
			}
			if w < c/2 || w > c {
				t.Fatalf("run %d wait %d = %s, outside [%s, %s]", run, k, w, c/2, c)
			}
			c = min(2*c, hi)
		}
	}
	// Jitter: two clients starting together do not draw the same waits.
	a, b2 := New(lo, hi), New(lo, hi)
	same := 0
	for range 20 {
		if a.NextBackOff() == b2.NextBackOff() {
			same++
		}
	}
	if same > 2 {
		t.Fatalf("%d of 20 waits equal between two backoffs: no jitter", same)
	}
}

func TestMinEqualsMax(t *testing.T) {
	b := New(time.Second, time.Second)
	for range 5 {
		if w := b.NextBackOff(); w != time.Second {
			t.Fatalf("wait %s, want 1s", w)
		}
	}
}

func TestDoRetriesUntilSuccess(t *testing.T) {
	calls := 0
	var notified []int
	err := Do(t.Context(), New(time.Millisecond, 2*time.Millisecond), func() error {
		calls++
		if calls < 4 {
			return errors.New("not yet")
		}
		return nil
	}, func(attempt int, err error, wait time.Duration) { notified = append(notified, attempt) })
	if err != nil || calls != 4 {
		t.Fatalf("Do = %v after %d calls", err, calls)
	}
	if len(notified) != 3 || notified[0] != 1 || notified[2] != 3 {
		t.Fatalf("notify attempts %v, want [1 2 3]", notified)
	}
}

func TestDoPermanent(t *testing.T) {
	fatal := errors.New("fatal")
	calls := 0
	err := Do(t.Context(), New(time.Millisecond, time.Millisecond), func() error {
		calls++
		return Permanent(fatal)
	}, nil)
	if !errors.Is(err, fatal) || calls != 1 {
		t.Fatalf("Do = %v after %d calls; want the permanent error after 1", err, calls)
	}
}

func TestDoStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	err := Do(ctx, New(time.Hour, time.Hour), func() error {
		calls++
		cancel()
		return errors.New("down")
	}, nil)
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("Do = %v after %d calls; want context.Canceled after 1", err, calls)
	}
	// Cancelled during the wait.
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Do(ctx, New(time.Hour, time.Hour), func() error { return errors.New("down") }, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("Do = %v after %s", err, time.Since(start))
	}
}
