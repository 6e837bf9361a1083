package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// tokenLimits holds a token-bucket limiter per API token. A limiter left
// idle for as long as its bucket takes to fill up again is removed: a new
// one would start full, so removing it changes no answer, and the map
// only holds the tokens used within that time (a map that grew with every
// token ever seen would grow without bound).
type tokenLimits struct {
	limit rate.Limit
	burst int
	idle  time.Duration // time to refill a whole bucket (at least a second)
	now   func() time.Time

	mu        sync.Mutex
	m         map[string]*tokenLimiter
	lastSweep time.Time
}

type tokenLimiter struct {
	l    *rate.Limiter
	last time.Time
}

func newTokenLimits(perSecond float64, burst int) *tokenLimits {
	idle := time.Second
	if perSecond > 0 {
		idle = max(idle, time.Duration(float64(burst)/perSecond*float64(time.Second)))
	}
	return &tokenLimits{limit: rate.Limit(perSecond), burst: burst, idle: idle, now: time.Now, m: map[string]*tokenLimiter{}}
}

// allow takes one request of token id from its bucket.
func (t *tokenLimits) allow(id string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) >= t.idle {
		t.sweep(now)
	}
	e := t.m[id]
	if e == nil {
		e = &tokenLimiter{l: rate.NewLimiter(t.limit, t.burst)}
		t.m[id] = e
	}
	e.last = now
	return e.l.AllowN(now, 1)
}

// sweep removes the limiters idle for a whole refill time; at most once
// per refill time, so its cost per request stays constant.
func (t *tokenLimits) sweep(now time.Time) {
	for id, e := range t.m {
		if now.Sub(e.last) >= t.idle {
			delete(t.m, id)
		}
	}
	t.lastSweep = now
}

// size is the number of limiters held.
func (t *tokenLimits) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
