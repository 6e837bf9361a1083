package e2e

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// poller measures the latency from event time to queryable row: every
// pollInterval it asks PostgreSQL, on its own connection, for the probe
// devices' readings rows newer than the last it saw. A row's latency is
// the start of the first query that returned it minus its event time, so
// the resolution is the poll interval (plus the query's own time).
type poller struct {
	conn   *pgx.Conn
	query  string
	mu     sync.Mutex
	probes []string
	last   []time.Time
	lat    []float64
}

// newPoller connects with the read-only DSN, or with the owner's when
// the reader cannot read the run's schema.
func newPoller(ctx context.Context, readerDSN, ownerDSN, schema string) (*poller, error) {
	q := fmt.Sprintf(`SELECT r.device_id, r.time FROM unnest($1::text[], $2::timestamptz[]) AS p(d, t)
JOIN %s.readings r ON r.device_id = p.d AND r.metric = '%s' AND r.time > p.t`, pgx.Identifier{schema}.Sanitize(), probeMetric)
	var errs []error
	for _, dsn := range []string{readerDSN, ownerDSN} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		if err == nil {
			_, err = conn.Exec(cctx, q, []string{}, []time.Time{})
			if err == nil {
				cancel()
				return &poller{conn: conn, query: q}, nil
			}
			_ = conn.Close(cctx)
		}
		cancel()
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("latency poller: cannot query %s.readings: %v", schema, errs)
}

func (p *poller) close() { _ = p.conn.Close(context.Background()) }

// reset starts a phase: new probe devices, rows from now on, no samples.
func (p *poller) reset(probes []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes = append([]string(nil), probes...)
	p.last = make([]time.Time, len(probes))
	now := time.Now()
	for i := range p.last {
		p.last[i] = now
	}
	p.lat = nil
}

// take returns the phase's latencies in seconds and clears them.
func (p *poller) take() []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lat
	p.lat = nil
	return l
}

// stats returns p50, p99 and the number of samples so far.
func (p *poller) stats() (float64, float64, int) {
	p.mu.Lock()
	l := append([]float64(nil), p.lat...)
	p.mu.Unlock()
	return percentile(l, 50), percentile(l, 99), len(l)
}

func (p *poller) run(ctx context.Context) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		probes, last := append([]string(nil), p.probes...), append([]time.Time(nil), p.last...)
		p.mu.Unlock()
		if len(probes) == 0 {
			continue
		}
		start := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rows, err := p.conn.Query(qctx, p.query, probes, last)
		if err != nil {
			cancel()
			continue
		}
		type seen struct {
			dev string
			at  time.Time
		}
		var got []seen
		for rows.Next() {
			var s seen
			if rows.Scan(&s.dev, &s.at) == nil {
				got = append(got, s)
			}
		}
		rows.Close()
		cancel()
		p.mu.Lock()
		if len(p.probes) == len(probes) && (len(probes) == 0 || p.probes[0] == probes[0]) {
			for _, s := range got {
				for i, d := range p.probes {
					if d == s.dev {
						if s.at.After(p.last[i]) {
							p.last[i] = s.at
						}
						p.lat = append(p.lat, start.Sub(s.at).Seconds())
					}
				}
			}
		}
		p.mu.Unlock()
	}
}
