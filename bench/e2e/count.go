package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// stageCounter reads a counter from a stage's /metrics.
func (r *runner) stageCounter(ctx context.Context, stage, name string, match ...string) (int64, error) {
	m, err := scrape(ctx, r.addrs[stage])
	if err != nil {
		return 0, fmt.Errorf("%s /metrics: %w", stage, err)
	}
	return int64(m.Sum(name, match...)), nil
}

// countCheck waits for the pipeline to drain after the last simulator
// stopped, then compares what the devices got a PUBACK for with what
// every stage wrote.
func (r *runner) countCheck(ctx context.Context) error {
	c := &r.res.Count
	c.PublishedAcked, c.Published, c.Unconfirmed = r.ackedDone.Load(), r.pubDone.Load(), r.unconf.Load()
	c.LakeRowsSource = "sink lake /metrics iotpipe_lake_rows_total{dataset=\"readings\"} (rows in uploaded, committed Parquet files)"
	conn := r.pg

	// Drained: no lag and every row written. Give up when nothing moved
	// for stableDrainFor + lakeMaxAge, or at the deadline.
	t0 := time.Now()
	deadline := t0.Add(maxDrainWait)
	type state struct {
		s               lagSample
		raw, rows, lake int64
	}
	var last state
	stableSince := time.Now()
	lastLog := t0
	for {
		s, raw, _, err := r.lagNow(ctx)
		want := raw * measurements
		if err == nil {
			// Cheap while draining: the sink's committed-rows counter (the
			// table is counted once drained).
			rows, err1 := r.stageCounter(ctx, "sink timescale", "iotpipe_sink_timescale_rows_total", "table", "readings")
			lake, err2 := r.stageCounter(ctx, "sink lake", "iotpipe_lake_rows_total", "dataset", "readings")
			if err1 == nil && err2 == nil {
				if s.Total() == 0 && rows >= want && lake >= want {
					break
				}
				s.At = 0
				if cur := (state{s, raw, rows, lake}); cur != last {
					last, stableSince = cur, time.Now()
				} else if time.Since(stableSince) >= stableDrainFor+lakeMaxAge {
					r.note("drain: nothing moved for %s: lag bridge %d processor %d timescale %d lake %d, %d readings rows and %d lake rows (raw records × %d = %d)",
						stableDrainFor+lakeMaxAge, s.Bridge, s.Processor, s.Timescale, s.Lake, rows, lake, measurements, want)
					break
				}
			}
		}
		if time.Since(lastLog) >= progressEvery {
			lastLog = time.Now()
			r.logf("drain %3.0fs: lag bridge %d processor %d timescale %d lake %d", time.Since(t0).Seconds(), s.Bridge, s.Processor, s.Timescale, s.Lake)
		}
		if time.Now().After(deadline) {
			r.note("drain: gave up after %s (lag bridge %d processor %d timescale %d lake %d)", time.Since(t0).Round(time.Second), s.Bridge, s.Processor, s.Timescale, s.Lake)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case dead := <-r.cs.died:
			return fmt.Errorf("%s exited %d while draining; log %s:\n%s", dead.name, dead.exitCode(), dead.logPath, tail(dead.logPath, 15))
		case <-time.After(time.Second):
		}
	}
	c.DrainS = time.Since(t0).Seconds()

	_, raw, dlq, err := r.lagNow(ctx)
	if err != nil {
		return fmt.Errorf("count check: %w", err)
	}
	c.RawRecords, c.DLQRecords = raw, dlq
	// One pass, grouped by (device, metric): a device's seq runs from 0
	// without gaps, so count − (max − min + 1) > 0 are duplicates. (A
	// count(DISTINCT …) over tens of millions of rows takes minutes.)
	q := fmt.Sprintf(`SELECT count(*), count(DISTINCT device_id), coalesce(sum(n), 0),
       coalesce(sum(greatest(n - span, 0)), 0), coalesce(sum(greatest(span - n, 0)), 0)
FROM (SELECT device_id, metric, count(*) AS n, max(seq) - min(seq) + 1 AS span FROM %s GROUP BY device_id, metric) g`,
		pgx.Identifier{r.n.schema, "readings"}.Sanitize())
	qctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var groups, devices, gaps int64
	if err := conn.QueryRow(qctx, q).Scan(&groups, &devices, &c.ReadingsRows, &c.ReadingsDuplicateRows, &gaps); err != nil {
		return fmt.Errorf("count check: readings: %w", err)
	}
	if devices > 0 && groups%devices == 0 {
		c.MeasurementsPerMsg = int(groups / devices)
	}
	if gaps > 0 {
		r.note("count check: %d rows missing inside devices' seq ranges", gaps)
	}
	var errs []string
	if c.LakeRows, err = r.stageCounter(ctx, "sink lake", "iotpipe_lake_rows_total", "dataset", "readings"); err != nil {
		errs = append(errs, err.Error())
	}
	if c.ProcessorReadings, err = r.stageCounter(ctx, "processor", "iotpipe_processor_readings_accepted_total"); err != nil {
		errs = append(errs, err.Error())
	}
	if c.ProcessorDuplicates, err = r.stageCounter(ctx, "processor", "iotpipe_processor_duplicates_total"); err != nil {
		errs = append(errs, err.Error())
	}
	diff := func(cond bool, format string, args ...any) {
		if !cond {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	diff(c.PublishedAcked > 0, "no message was acknowledged")
	if extra := inKafkaTotal(c) - c.PublishedAcked - c.Unconfirmed; extra > 0 {
		errs = append(errs, fmt.Sprintf("Kafka holds %d records more than were acked (+ unconfirmed): duplicates, e.g. the broker redelivering to the bridge after a reconnect (see the bridge log in %s)", extra, r.res.LogDir))
	}
	// Unconfirmed messages (a simulator stopped with messages in flight)
	// may or may not have reached the broker: then raw+dlq may exceed the
	// acked count by at most that many, and the stages must agree with raw.
	inKafka := c.RawRecords + c.DLQRecords
	if c.Unconfirmed == 0 {
		diff(inKafka == c.PublishedAcked, "raw %d + dlq %d records ≠ %d acked", c.RawRecords, c.DLQRecords, c.PublishedAcked)
	} else {
		diff(inKafka >= c.PublishedAcked && inKafka <= c.PublishedAcked+c.Unconfirmed,
			"raw %d + dlq %d records outside [acked %d, acked + unconfirmed %d]", c.RawRecords, c.DLQRecords, c.PublishedAcked, c.PublishedAcked+c.Unconfirmed)
		if extra := inKafka - c.PublishedAcked; extra >= 0 && extra <= c.Unconfirmed {
			r.note("count check: %d messages were unconfirmed when a simulator was stopped; Kafka holds %d of them", c.Unconfirmed, extra)
		}
	}
	if inKafka < c.PublishedAcked {
		// Where did they go? Mosquitto says so in its log when it drops
		// messages queued for a session.
		if n, first := brokerDrops(r.e.stateDir, r.n.bridgeClient); n > 0 {
			errs = append(errs, fmt.Sprintf("Mosquitto dropped messages queued for the bridge's session after acknowledging them to the devices (%d log lines %q, first: %s)",
				n, "Outgoing messages are being dropped for client "+r.n.bridgeClient, first))
		}
	}
	diff(c.DLQRecords == 0, "%d dead letters (the load has no invalid messages)", c.DLQRecords)
	diff(c.MeasurementsPerMsg == measurements, "%d measurements per message, want %d", c.MeasurementsPerMsg, measurements)
	diff(c.ReadingsRows == c.RawRecords*measurements, "readings rows %d ≠ %d raw records × %d", c.ReadingsRows, c.RawRecords, measurements)
	diff(c.ReadingsDuplicateRows == 0, "%d duplicate readings rows", c.ReadingsDuplicateRows)
	diff(c.LakeRows == c.ReadingsRows, "lake rows %d ≠ readings rows %d", c.LakeRows, c.ReadingsRows)
	diff(c.ProcessorReadings == c.RawRecords, "processor readings %d ≠ %d raw records", c.ProcessorReadings, c.RawRecords)
	diff(c.ProcessorDuplicates == 0, "processor dropped %d duplicates", c.ProcessorDuplicates)
	c.OK = len(errs) == 0
	c.Mismatch = strings.Join(errs, "; ")
	r.logf("count check: acked %d, raw %d + dlq %d, readings rows %d (%d per message), lake rows %d, processor readings %d, drained in %.0fs: ok=%t %s",
		c.PublishedAcked, c.RawRecords, c.DLQRecords, c.ReadingsRows, c.MeasurementsPerMsg, c.LakeRows, c.ProcessorReadings, c.DrainS, c.OK, c.Mismatch)
	if !c.OK {
		return fmt.Errorf("count check failed: %s", c.Mismatch)
	}
	return nil
}

func inKafkaTotal(c *Count) int64 { return c.RawRecords + c.DLQRecords }

// brokerDrops counts the lines of the local Mosquitto's log
// (<stateDir>/mqtt/logs/mosquitto.log, as scripts/services.sh writes it)
// that report dropping messages queued for client, and returns the first.
func brokerDrops(stateDir, client string) (n int, first string) {
	if stateDir == "" {
		return 0, ""
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "mqtt", "logs", "mosquitto.log"))
	if err != nil {
		return 0, ""
	}
	want := "Outgoing messages are being dropped for client " + client + "."
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, want) {
			if n == 0 {
				first = strings.TrimSpace(l)
			}
			n++
		}
	}
	return n, first
}
