// Package retry is iotpipe's one backoff between attempts of an operation
// that may fail for a while (a database, S3 or Kafka that is restarting,
// an MQTT broker that is away): exponential with jitter, on
// github.com/cenkalti/backoff/v5.
//
// Contract:
//   - Every wait lies within [Min, Max]. The k-th wait (k = 0, 1, ...) is
//     drawn uniformly from [c/2, c] with c = min(Max, 2^(k+1)·Min), so
//     the waits double on average like a plain exponential backoff, yet
//     two clients that failed at the same moment do not retry in step
//     (a recovering database is not hit by every sink at once).
//   - Do retries until the operation succeeds, returns an error marked
//     with Permanent (returned unwrapped, at once), or ctx ends (ctx's
//     error is returned). There is no limit on attempts or elapsed time:
//     the callers are long-running stages whose outage handling is to
//     wait.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff yields the waits between attempts; see the package contract.
// The zero value is not usable: use New.
type Backoff struct {
	min, max time.Duration
	exp      backoff.ExponentialBackOff
}

// New returns a Backoff whose waits lie within [min, max]. A max below
// min is raised to min; a min ≤ 0 is taken as 1ms.
func New(min, max time.Duration) *Backoff {
	if min <= 0 {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	b := &Backoff{min: min, max: max}
	// ExponentialBackOff draws from interval·[1-f, 1+f]: with interval
	// 0.75·c and f = 1/3 that is [c/2, c].
	b.exp = backoff.ExponentialBackOff{
		InitialInterval:     time.Duration(1.5 * float64(min)), // 0.75 · 2·Min
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         time.Duration(0.75 * float64(max)),
	}
	b.exp.Reset()
	return b
}

// NextBackOff returns the next wait (backoff.BackOff).
func (b *Backoff) NextBackOff() time.Duration {
	return min(max(b.exp.NextBackOff(), b.min), b.max)
}

// Reset starts the sequence again at its first wait (backoff.BackOff).
func (b *Backoff) Reset() { b.exp.Reset() }

// Permanent marks err as not worth retrying: Do returns it at once.
func Permanent(err error) error { return backoff.Permanent(err) }

// Do calls op until it returns nil, a Permanent error or ctx ends,
// waiting b's waits between attempts (b is Reset first). Before each
// wait it calls notify (when not nil) with the attempt number (from 1),
// op's error and the wait. When ctx ends it returns ctx.Err().
func Do(ctx context.Context, b *Backoff, op func() error, notify func(attempt int, err error, wait time.Duration)) error {
	attempt := 0
	opts := []backoff.RetryOption{
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // no limit: see the package contract
		backoff.WithNotify(func(err error, wait time.Duration) {
			if notify != nil {
				notify(attempt, err, wait)
			}
		}),
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		return struct{}{}, op()
	}, opts...)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
