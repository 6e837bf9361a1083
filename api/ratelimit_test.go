package api

import (
	"fmt"
	"testing"
	"time"
)

// Limiters of tokens idle for a whole refill time are removed, so the
// map does not grow with every token ever seen; removing one changes no
// answer (a new bucket is full, as the idle one had become), and a token
// in use keeps its (empty) bucket.
func TestTokenLimitsEvictIdle(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	l := newTokenLimits(2, 4) // refills in 2 s
	l.now = func() time.Time { return now }
	if l.idle != 2*time.Second {
		t.Fatalf("idle %s, want the refill time 2s", l.idle)
	}
	for i := range 10000 {
		if !l.allow(fmt.Sprintf("tok%d", i)) {
			t.Fatalf("the first request of token %d was refused", i)
		}
	}
	if n := l.size(); n != 10000 {
		t.Fatalf("%d limiters, want 10000", n)
	}
	// "busy" empties its bucket and stays in use.
	for range 4 {
		l.allow("busy")
	}
	if l.allow("busy") {
		t.Fatal("a fifth request within the burst of 4 was allowed")
	}
	now = now.Add(1900 * time.Millisecond)
	l.allow("busy") // in use: not idle
	now = now.Add(200 * time.Millisecond)
	// 2.1 s after the 10,000 tokens were last used: they are gone; busy,
	// used 0.2 s ago, is kept with what is left of its bucket.
	if l.allow("fresh") != true {
		t.Fatal("a new token was refused")
	}
	if n := l.size(); n != 2 {
		t.Fatalf("%d limiters after the idle time, want 2 (busy, fresh)", n)
	}
	allowed := 0
	for range 4 {
		if l.allow("busy") {
			allowed++
		}
	}
	// busy: empty at 0 s, 3.8 tokens at 1.9 s (one taken), 3.2 at 2.1 s:
	// three of four allowed; a reset bucket would allow all four.
	if allowed != 3 {
		t.Fatalf("busy's bucket was reset: %d of 4 allowed", allowed)
	}
	// A removed token starts with a full bucket, as it would have had.
	for i := range 4 {
		if !l.allow("tok7") {
			t.Fatalf("request %d of a returning idle token refused", i+1)
		}
	}
	if l.allow("tok7") {
		t.Fatal("a returning token got more than its burst")
	}
}
