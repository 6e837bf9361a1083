//go:build integration

package timescale

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// TestSinkPostgresRestart stops a private PostgreSQL while records keep
// arriving, starts it again, and checks that the sink, never restarted,
// resumes by itself and loses and duplicates nothing.
func TestSinkPostgresRestart(t *testing.T) {
	pg := testenv.StartPrivate(t, "postgres")
	f := newFixture(t, pg.Env, 2, 1)
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)

	cfg := f.config()
	cfg.BatchRows = 200
	runSink(t, cfg)

	// Load: 20 bursts of 100 readings, a few ms apart, from a producer
	// goroutine owned by this test.
	const bursts, per = 20, 100
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prod := pg.Kafka(t)
	half := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for b := range bursts {
			if b == bursts/2 {
				close(half)
			}
			recs := make([]*kgo.Record, 0, per)
			for i := range per {
				n := int64(b*per + i)
				recs = append(recs, readingRecord(f.raw, fmt.Sprintf("dev-%d", n%7), n, base.Add(time.Duration(n)*time.Millisecond), float64(n)))
			}
			if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				done <- err
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond): // pacing of the load, not synchronisation
			}
		}
	}()

	// Wait until the sink is writing, then take the database away under load.
	f.waitCount(t, time.Minute, 1, `SELECT least(count(*), 1) FROM $S.readings`)
	<-half
	pg.Stop("postgres")
	select {
	case err := <-done: // the producer keeps going while the database is down
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("producer did not finish")
	}
	pg.Start("postgres")

	want := int64(2 * bursts * per)
	f.waitCount(t, 2*time.Minute, want, `SELECT count(*) FROM $S.readings`)
	if n := f.count(t, `SELECT count(*) FROM (SELECT DISTINCT device_id, metric, seq FROM $S.readings) d`); n != want {
		t.Fatalf("distinct readings = %d, want %d", n, want)
	}
}
