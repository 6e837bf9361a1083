package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// ActiveSet is the set of active device ids of a registry, for checks on
// every message without a query per message: Load fills it, Watch keeps
// it current (on every change notice of the registry's schema, and every
// refresh period in case a notice was missed). Has is safe for concurrent
// use and never blocks.
type ActiveSet struct {
	s   *Store
	ids atomic.Pointer[map[string]struct{}]
	// Reloads counts the loads done.
	Reloads atomic.Int64
}

// NewActiveSet returns an empty set over s.
func NewActiveSet(s *Store) *ActiveSet {
	a := &ActiveSet{s: s}
	empty := map[string]struct{}{}
	a.ids.Store(&empty)
	return a
}

// Has reports whether id is a registered, active device.
func (a *ActiveSet) Has(id string) bool {
	_, ok := (*a.ids.Load())[id]
	return ok
}

// Len is the number of active devices.
func (a *ActiveSet) Len() int { return len(*a.ids.Load()) }

// Load reads the active ids now.
func (a *ActiveSet) Load(ctx context.Context) error {
	ids, err := a.s.ActiveIDs(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	a.ids.Store(&m)
	a.Reloads.Add(1)
	return nil
}

// Watch keeps the set current until ctx ends: it LISTENs on
// NotifyChannel over a connection of its own (dsn) and reloads on every
// notice for the store's schema, every refresh, and after reconnecting.
// Errors are logged; the last set stays in use meanwhile.
func (a *ActiveSet) Watch(ctx context.Context, dsn string, refresh time.Duration, log *slog.Logger) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := a.listen(ctx, dsn, refresh)
		if ctx.Err() != nil {
			return
		}
		log.Warn("registry watch failed; the last device set stays in use", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (a *ActiveSet) listen(ctx context.Context, dsn string, refresh time.Duration) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("registry watch: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return fmt.Errorf("registry watch: listen: %w", err)
	}
	// Changes made before LISTEN took effect are picked up here.
	if err := a.Load(ctx); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, refresh)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if n.Payload != a.s.schema {
				continue
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// periodic refresh
		default:
			return fmt.Errorf("registry watch: %w", err)
		}
		if err := a.Load(ctx); err != nil {
			return err
		}
	}
}
