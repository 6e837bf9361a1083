//go:build integration

package alert

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// The scripted crossings of the crash test: every device's temperature
// moves between three levels, normal (below the clear threshold), the
// hysteresis band (between clear and trigger) and hot (above the
// trigger), in segments of random length; the rule fires after two hot
// readings in a row and resolves at the first normal one.
const (
	crashTrigger, crashClear = 30.0, 25.0
	crashForCount            = 2
)

var crashLevels = []float64{20, 27, 35}

// crashReading is one scripted reading.
type crashReading struct {
	dev string
	at  time.Time
	v   float64
}

// crashWorkload generates n readings of devices, in rounds of one reading
// per device (shuffled within the round), with some redeliveries of an
// earlier record of the same device.
func crashWorkload(rng *rand.Rand, n, devices int, t0 time.Time) (readings []crashReading, batches [][]*kgo.Record) {
	level := make([]int, devices)
	left := make([]int, devices)
	var prev []*kgo.Record
	for round := 0; len(readings) < n; round++ {
		var batch []*kgo.Record
		for d := 0; d < devices && len(readings) < n; d++ {
			if left[d] == 0 {
				level[d], left[d] = rng.IntN(len(crashLevels)), 1+rng.IntN(8)
			}
			left[d]--
			v := crashLevels[level[d]] + rng.Float64()*2 - 1
			r := crashReading{dev: "dev-" + strconv.Itoa(d), at: t0.Add(time.Duration(round)*time.Second + time.Duration(rng.IntN(900))*time.Millisecond), v: v}
			readings = append(readings, r)
			rec := reading(r.dev, r.at, int64(round), m("temp", v))
			batch = append(batch, rec)
			if rng.IntN(100) == 0 {
				dup := *rec
				prev = append(prev, &dup) // redelivered a round later: older than the device's last
			}
		}
		batch = append(batch, prev...)
		prev = nil
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		batches = append(batches, batch)
	}
	return readings, batches
}

// expectedCrossings computes the events from what was sent, on its own
// (not with alerting/eval): per device in event-time order, FIRING at the
// second hot reading in a row from normal, RESOLVED at the first reading
// at or below the clear threshold after that.
func expectedCrossings(readings []crashReading) map[string]int {
	byDev := map[string][]crashReading{}
	for _, r := range readings {
		byDev[r.dev] = append(byDev[r.dev], r)
	}
	want := map[string]int{}
	for dev, rs := range byDev {
		sort.Slice(rs, func(i, j int) bool { return rs[i].at.Before(rs[j].at) })
		firing, hot := false, 0
		for _, r := range rs {
			switch {
			case !firing && r.v > crashTrigger:
				if hot++; hot >= crashForCount {
					firing, hot = true, 0
					want[eventKey("FIRING", "hot", dev, r.at)]++
				}
			case !firing:
				hot = 0
			case r.v <= crashClear:
				firing = false
				want[eventKey("RESOLVED", "hot", dev, r.at)]++
			}
		}
	}
	return want
}

func eventKey(state, rule, dev string, at time.Time) string {
	return fmt.Sprintf("%s %s %s %s", state, rule, dev, at.UTC().Format(time.RFC3339Nano))
}

// The window part of the crash test: every device gets a window aggregate
// of "hum" every 10 s of event time, its p95 at one of three levels;
// rule "p95" fires at p95 >= 80 and resolves below 70. Some windows are
// sent again as a later revision (same end: not evaluated again).
const crashWindowTrigger, crashWindowClear = 80.0, 70.0

var crashWindowLevels = []float64{60, 75, 85}

type crashWindow struct {
	dev string
	end time.Time
	p95 float64
}

// crashWindows generates the windows of the readings' time span, in
// rounds of one window per device, shuffled within the round.
func crashWindows(rng *rand.Rand, rounds, devices int, t0 time.Time) (windows []crashWindow, batches [][]*kgo.Record) {
	for round := 1; round <= rounds; round++ {
		var batch, revs []*kgo.Record
		for d := range devices {
			w := crashWindow{dev: "dev-" + strconv.Itoa(d), end: t0.Add(time.Duration(round) * 10 * time.Second),
				p95: crashWindowLevels[rng.IntN(len(crashWindowLevels))] + rng.Float64()*2 - 1}
			windows = append(windows, w)
			batch = append(batch, windowRec(w, 1))
			if rng.IntN(20) == 0 {
				rev := w
				rev.p95 = crashWindowLevels[rng.IntN(len(crashWindowLevels))]
				revs = append(revs, windowRec(rev, 2)) // a later revision: not evaluated again
			}
		}
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		batch = append(batch, revs...) // after their first emissions
		batches = append(batches, batch)
	}
	return windows, batches
}

func windowRec(w crashWindow, rev int64) *kgo.Record {
	m := &schemas.WindowMetric{DeviceID: w.dev, Metric: "hum", WindowStart: w.end.Add(-10 * time.Second), WindowEnd: w.end, Count: 10,
		Sum: 500, Min: 40, Max: w.p95 + 1, Mean: 50, First: 50, Last: 50, P50: 50, P95: w.p95, P99: w.p95 + 0.5,
		FirstTime: w.end.Add(-10 * time.Second), LastTime: w.end.Add(-time.Second), Revision: rev, EmittedAt: time.Now().UTC()}
	return &kgo.Record{Key: []byte(w.dev), Value: schemas.AppendMetric(nil, m), Timestamp: m.WindowStart}
}

// expectedWindowCrossings computes the window rule's events on its own.
func expectedWindowCrossings(windows []crashWindow, want map[string]int) {
	byDev := map[string][]crashWindow{}
	for _, w := range windows {
		byDev[w.dev] = append(byDev[w.dev], w)
	}
	for dev, ws := range byDev {
		sort.Slice(ws, func(i, j int) bool { return ws[i].end.Before(ws[j].end) })
		firing := false
		for _, w := range ws {
			switch {
			case !firing && w.p95 >= crashWindowTrigger:
				firing = true
				want[eventKey("FIRING", "p95", dev, w.end)]++
			case firing && w.p95 < crashWindowClear:
				firing = false
				want[eventKey("RESOLVED", "p95", dev, w.end)]++
			}
		}
	}
}

// alertProc starts `iotpipe alert` as a child process, flags only.
func alertProc(t *testing.T, f *fixture, group, instance string, extra ...string) *testenv.Proc {
	t.Helper()
	args := append(append([]string{"alert"}, testenv.KafkaCLIArgs(f.env.KafkaConfig(t, testenv.Alert))...),
		"--group", group, "--instance-id", instance,
		"--topic-raw", f.topics.Raw, "--topic-metrics", f.topics.Metrics, "--topic-alerts", f.topics.Alerts,
		"--topic-alert-changelog", f.topics.Changelog, "--pg-reader-dsn", f.env.PGReaderDSN, "--pg-schema", f.schema,
		"--commit-interval", "200ms", "--session-timeout", "6s", "--transaction-timeout", "10s",
		"--http-addr", "127.0.0.1:0", "--log-format", "json")
	return testenv.StartProc(t, "alert "+instance, nil, append(args, extra...)...)
}

// TestCrashExactlyOnce SIGKILLs the alert stage (a child process) at
// random moments under load, one kill inside a transaction commit, and
// restarts it; a second instance joins and leaves once (two rebalances).
// The events of telemetry.alerts, read read_committed, must be exactly
// one FIRING and one RESOLVED per scripted crossing, as computed from the
// input independently of the stage. CI size: 40k readings of 100
// devices, 3 kills; IOTPIPE_FULL=1: 400k readings of 1,000 devices, 6
// kills.
func TestCrashExactlyOnce(t *testing.T) {
	n, devices, kills, rate := 40_000, 100, 3, 3000.0
	if os.Getenv("IOTPIPE_FULL") == "1" {
		n, devices, kills, rate = 400_000, 1000, 6, 15000.0
	}
	// Raw and metrics partition p share changelog partition p.
	f := newFixture(t, 4, 4)
	ctx := testenv.Context(t, 15*time.Minute)
	f.rule(t, rules.Rule{ID: "hot", Metric: "temp", Operator: rules.GT, Trigger: crashTrigger, Clear: crashClear, ForCount: crashForCount})
	f.rule(t, rules.Rule{ID: "p95", Kind: rules.KindWindow, Metric: "hum", Statistic: "p95", Operator: rules.GE, Trigger: crashWindowTrigger, Clear: crashWindowClear})
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 17))
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	readings, batches := crashWorkload(rng, n, devices, t0)
	want := expectedCrossings(readings)
	windows, wbatches := crashWindows(rng, n/devices/10, devices, t0)
	expectedWindowCrossings(windows, want)
	t.Logf("seed %d: %d readings and %d windows of %d devices at %.0f/s, %d kills; %d scripted transitions", seed, n, len(windows), devices, rate, kills, len(want))
	testenv.Binary(t)
	out := readAlerts(ctx, t, f.env, f.topics.Alerts)
	group := f.env.Group(t)

	produced := make(chan error, 1)
	go func() {
		// The windows go along with the readings they summarise: one
		// round of windows per ten rounds of readings.
		cl := f.env.Kafka(t)
		for i := 0; i < len(batches); i += 10 {
			if err := produceAt(ctx, cl, f.topics.Raw, batches[i:min(i+10, len(batches))], rate); err != nil {
				produced <- err
				return
			}
			if w := i / 10; w < len(wbatches) {
				if err := produceAt(ctx, cl, f.topics.Metrics, wbatches[w:w+1], rate); err != nil {
					produced <- err
					return
				}
			}
		}
		produced <- nil
	}()
	start := time.Now()
	produceFor := time.Duration(float64(n) / rate * float64(time.Second))
	randomWait := func() time.Duration {
		return time.Duration(500+rng.IntN(int(produceFor.Milliseconds())/(kills+3)+1)) * time.Millisecond
	}
	a := alertProc(t, f, group, "a")
	a.WaitLine("restored state", 60*time.Second)
	for k := range kills {
		if k == 1 {
			// Inside a transaction commit: after the events and changelog
			// records are flushed, before the offsets and the transaction
			// are committed.
			a.KillWait(10 * time.Second)
			a = alertProc(t, f, group, "a", "--debug-commit-delay", "300ms")
			a.WaitLine("restored state", 60*time.Second)
			a.WaitLine("transaction commit started", 30*time.Second)
			time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
			t.Logf("kill %d (inside a transaction commit) at %s", k+1, time.Since(start).Round(time.Millisecond))
		} else {
			time.Sleep(randomWait())
			t.Logf("kill %d at %s", k+1, time.Since(start).Round(time.Millisecond))
		}
		a.KillWait(10 * time.Second)
		a = alertProc(t, f, group, "a")
		if k == 0 {
			a.WaitLine("restored state", 60*time.Second)
			b := alertProc(t, f, group, "b")
			b.WaitLine("restored state", 60*time.Second)
			t.Logf("rebalance: instance b joined at %s", time.Since(start).Round(time.Millisecond))
			time.Sleep(randomWait())
			b.StopClean(30 * time.Second)
			t.Logf("instance b left at %s", time.Since(start).Round(time.Millisecond))
		}
	}
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	t.Logf("input produced in %s", time.Since(start).Round(time.Millisecond))
	testenv.Eventually(t, 5*time.Minute, 500*time.Millisecond, func() error {
		got := map[string]int{}
		ids := map[string]bool{}
		for _, ev := range out.snapshot(t) {
			if ids[ev.EventID] {
				t.Fatalf("event id %s twice (%s %s at %s)", ev.EventID, ev.State, ev.DeviceID, ev.EventTime)
			}
			ids[ev.EventID] = true
			got[eventKey(string(ev.State), ev.RuleID, ev.DeviceID, ev.EventTime)]++
		}
		for k, c := range got {
			if want[k] == 0 {
				t.Fatalf("event %s was not scripted (%d events so far)", k, len(ids))
			}
			if c > 1 {
				t.Fatalf("event %s %d times", k, c)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d of %d scripted events", len(got), len(want))
		}
		return nil
	})
	t.Logf("exactly the %d scripted FIRING/RESOLVED events, each once, %s after start", len(want), time.Since(start).Round(time.Millisecond))
	a.StopClean(30 * time.Second)
}

// produceAt writes the batches to topic at about rate records/s.
func produceAt(ctx context.Context, cl *kgo.Client, topic string, batches [][]*kgo.Record, rate float64) error {
	start := time.Now()
	sent := 0
	for _, b := range batches {
		for _, r := range b {
			r.Topic = topic
		}
		if err := cl.ProduceSync(ctx, b...).FirstErr(); err != nil {
			return err
		}
		sent += len(b)
		if ahead := time.Duration(float64(sent)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
			select {
			case <-time.After(ahead):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}
