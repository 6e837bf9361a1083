//go:build integration

package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// Settings of BenchmarkAlertLatency: the stages run with the settings of
// `make demo` and docker compose (alert --commit-interval 200ms, notify
// --group-wait 1s, the other settings their defaults).
var (
	latencyProbes = 40     // IOTPIPE_BENCH_PROBES
	latencyLoad   = 10_000 // IOTPIPE_BENCH_LOAD: background readings/s on the raw topic
)

var latencyAlertCommit = "200ms" // IOTPIPE_BENCH_ALERT_COMMIT_INTERVAL (diagnosis only)

const (
	latencyGroupWait = "1s"
	latencyBgDevices = 1000
)

// BenchmarkAlertLatency measures the latency of an alert from a reading's
// arrival in Kafka to the webhook a person's endpoint receives, through
// `iotpipe alert` and `iotpipe notify` as child processes on the real
// services, under IOTPIPE_BENCH_LOAD readings/s of background load on the
// raw topic (readings of 1,000 devices that cross no threshold).
//
// The raw topic stamps each record with its append time
// (message.timestamp.type=LogAppendTime): the clock starts there. Each
// probe is a reading of a device of its own over the threshold of a rule
// of its own (its own webhook path: a recipient of its own, so neither
// notify's grouping nor its rate limit of other probes delays it); the
// clock stops when the local receiver (an HTTP server of the benchmark)
// gets the webhook. The alerts topic is followed read_committed too, so
// the latency splits into the alert stage's part (append → the FIRING
// visible to a read_committed consumer) and notify's (→ webhook).
//
// The ceiling, measured in the same run: a plain consumer of the raw topic
// sees each probe (kafka-p50/p99-ms), the latency of Kafka alone under the
// same load. Reported: p50/p99/max in ms, the parts, the floor, the
// background load achieved (readings/s) and the probes delivered.
func BenchmarkAlertLatency(b *testing.B) {
	if n, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_PROBES")); err == nil && n > 0 {
		latencyProbes = n
	}
	if n, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_LOAD")); err == nil && n >= 0 {
		latencyLoad = n
	}
	// For finding where the time goes only: another alert commit interval
	// than the demo's (the suite does not set it).
	if v := os.Getenv("IOTPIPE_BENCH_ALERT_COMMIT_INTERVAL"); v != "" {
		latencyAlertCommit = v
	}
	for range b.N {
		latencyRun(b)
	}
}

// hookReceiver is the benchmark's webhook endpoint: it records when the
// first message naming each device arrived.
type hookReceiver struct {
	mu  sync.Mutex
	got map[string]time.Time
	err error
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	var m struct {
		Data struct {
			DeviceID string           `json:"device_id"`
			Events   []*schemas.Alert `json:"events"`
		} `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(body, &m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.err = fmt.Errorf("webhook body: %w", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	devs := []string{m.Data.DeviceID}
	for _, e := range m.Data.Events {
		devs = append(devs, e.DeviceID)
	}
	for _, d := range devs {
		if _, ok := h.got[d]; d != "" && !ok {
			h.got[d] = at
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) at(dev string) (time.Time, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.got[dev]
	return t, ok, h.err
}

func latencyRun(b *testing.B) {
	b.StopTimer()
	f := newFixture(b, 3, 1)
	f.topics.Raw = f.env.Topic(b, 3, map[string]string{"message.timestamp.type": "LogAppendTime"})
	ctx := testenv.Context(b, 15*time.Minute)

	// The receiver.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	recv := &hookReceiver{got: map[string]time.Time{}}
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })

	// One rule per probe (and one for the warm-up probe).
	probe := func(i int) string { return "probe-" + strconv.Itoa(i) }
	for i := -1; i < latencyProbes; i++ {
		f.rule(b, rules.Rule{ID: "lat-" + strconv.Itoa(i+1), Kind: rules.KindReading, Scope: rules.ScopeDevice, ScopeID: probe(i),
			Metric: "temp", Operator: rules.GT, Trigger: 50, Clear: 40, Severity: rules.SeverityCritical,
			Recipients: []string{"webhook:http://" + ln.Addr().String() + "/hook/" + strconv.Itoa(i+1)}})
	}

	// The stages, as processes, with their own principals.
	group := f.env.Group(b)
	alertEnv := append(f.env.Environ(), f.env.KafkaEnv(b, testenv.Alert)...)
	ap := testenv.StartProc(b, "alert", alertEnv, "alert", "--group", group+"-alert", "--instance-id", "lat-alert",
		"--topic-raw", f.topics.Raw, "--topic-metrics", f.topics.Metrics, "--topic-alerts", f.topics.Alerts,
		"--topic-alert-changelog", f.topics.Changelog, "--pg-schema", f.schema,
		"--commit-interval", latencyAlertCommit, "--http-addr", "127.0.0.1:0")
	dlq := f.env.Topic(b, 1, nil)
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	notifyEnv := append(f.env.Environ(), f.env.KafkaEnv(b, testenv.Notify)...)
	np := testenv.StartProc(b, "notify", append(notifyEnv, "IOTPIPE_MQTT_URL="), "notify", "--group", group+"-notify", "--instance-id", "lat-notify",
		"--topic-alerts", f.topics.Alerts, "--topic-dlq", dlq, "--pg-schema", f.schema, "--webhook-secret", secret,
		"--group-wait", latencyGroupWait, "--http-addr", "127.0.0.1:0")
	ap.WaitLine("alert stage started", time.Minute)
	np.WaitLine("notify started", time.Minute)

	// The alerts topic, read_committed: when each FIRING became visible;
	// and the raw topic: when a plain consumer saw each probe (the floor:
	// Kafka's own produce → consume latency under the same load).
	var visMu sync.Mutex
	visible, rawSeen := map[string]time.Time{}, map[string]time.Time{}
	fctx, stopFollow := context.WithCancel(ctx)
	var followers sync.WaitGroup
	follow := func(topic string, into map[string]time.Time, opts ...kgo.Opt) {
		fol := f.env.Kafka(b, append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxWait(100*time.Millisecond))...)
		followers.Add(1)
		go func() {
			defer followers.Done()
			for fctx.Err() == nil {
				fs := fol.PollFetches(fctx)
				at := time.Now()
				fs.EachRecord(func(r *kgo.Record) {
					if !strings.HasPrefix(string(r.Key), "probe-") {
						return
					}
					visMu.Lock()
					if _, ok := into[string(r.Key)]; !ok {
						into[string(r.Key)] = at
					}
					visMu.Unlock()
				})
			}
		}()
	}
	follow(f.topics.Alerts, visible, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	follow(f.topics.Raw, rawSeen)
	defer func() { stopFollow(); followers.Wait() }()

	// The background load: latencyLoad readings/s in batches every 10 ms.
	bg := f.env.Kafka(b, kgo.ProducerLinger(5*time.Millisecond))
	bctx, stopLoad := context.WithCancel(ctx)
	var acked, failed atomic.Int64
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		if latencyLoad == 0 {
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		sent := 0
		for {
			select {
			case <-bctx.Done():
				return
			case now := <-tick.C:
				due := int(now.Sub(start).Seconds() * float64(latencyLoad))
				for ; sent < due; sent++ {
					d := sent % latencyBgDevices
					r := &schemas.Reading{DeviceID: "bg-" + strconv.Itoa(d), EventTime: now.UTC(), ReceivedTime: now.UTC(),
						Seq: int64(sent / latencyBgDevices), HasSeq: true, Measurements: []schemas.Measurement{{Name: "temp", Value: 20 + float64(sent%7)}}}
					rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "devices/bg/telemetry")
					rec.Topic = f.topics.Raw
					bg.Produce(bctx, rec, func(_ *kgo.Record, err error) {
						if err != nil {
							if bctx.Err() == nil {
								failed.Add(1)
							}
							return
						}
						acked.Add(1)
					})
				}
			}
		}
	}()
	defer func() { stopLoad(); <-loadDone }()

	prod := f.env.Kafka(b)
	send := func(i int) time.Time {
		now := time.Now().UTC()
		r := &schemas.Reading{DeviceID: probe(i), EventTime: now, ReceivedTime: now, Measurements: []schemas.Measurement{{Name: "temp", Value: 60}}}
		rec := schemas.RawRecord(schemas.AppendRaw(nil, r), r, "devices/"+probe(i)+"/telemetry")
		rec.Topic = f.topics.Raw
		res := prod.ProduceSync(ctx, rec)
		if err := res.FirstErr(); err != nil {
			b.Fatal(err)
		}
		return res[0].Record.Timestamp // the broker's append time
	}
	wait := func(dev string, within time.Duration) time.Time {
		var got time.Time
		testenv.Eventually(b, within, 5*time.Millisecond, func() error {
			at, ok, err := recv.at(dev)
			if err != nil {
				b.Fatal(err)
			}
			if !ok {
				return fmt.Errorf("no webhook for %s yet", dev)
			}
			got = at
			return nil
		})
		return got
	}

	// Warm-up under load: the path works end to end, the load is steady.
	loadStart := time.Now()
	testenv.Eventually(b, time.Minute, 100*time.Millisecond, func() error {
		if time.Since(loadStart) < 5*time.Second {
			return fmt.Errorf("load warming up")
		}
		return nil
	})
	t0 := send(-1)
	w := wait(probe(-1), 2*time.Minute)
	b.Logf("warm-up probe: %s", w.Sub(t0).Round(time.Millisecond))

	// The probes, one every 500 ms (they do not wait for each other).
	acked0, measureStart := acked.Load(), time.Now()
	appended := make([]time.Time, latencyProbes)
	b.StartTimer()
	tick := time.NewTicker(500 * time.Millisecond)
	for i := range latencyProbes {
		appended[i] = send(i)
		if appended[i].Before(measureStart.Add(-time.Second)) || appended[i].After(time.Now().Add(time.Second)) {
			b.Fatalf("probe %d: record timestamp %s is not an append time (the topic is not LogAppendTime?)", i, appended[i])
		}
		<-tick.C
	}
	tick.Stop()
	var total, alertPart, notifyPart, floor []float64
	for i := range latencyProbes {
		at := wait(probe(i), time.Minute)
		total = append(total, ms(at.Sub(appended[i])))
		visMu.Lock()
		v, ok := visible[probe(i)]
		visMu.Unlock()
		if ok {
			alertPart = append(alertPart, ms(v.Sub(appended[i])))
			notifyPart = append(notifyPart, ms(at.Sub(v)))
		}
		visMu.Lock()
		v, ok = rawSeen[probe(i)]
		visMu.Unlock()
		if ok {
			floor = append(floor, ms(v.Sub(appended[i])))
		}
	}
	b.StopTimer()
	loadRate := float64(acked.Load()-acked0) / time.Since(measureStart).Seconds()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d background records failed", n)
	}
	if latencyLoad > 0 && loadRate < 0.9*float64(latencyLoad) {
		b.Errorf("background load %.0f readings/s, below 90%% of the %d asked: the figures are not under the stated load", loadRate, latencyLoad)
	}
	b.ReportMetric(pct(total, 50), "p50-ms")
	b.ReportMetric(pct(total, 99), "p99-ms")
	b.ReportMetric(pct(total, 100), "max-ms")
	b.ReportMetric(pct(alertPart, 50), "alert-p50-ms")
	b.ReportMetric(pct(alertPart, 99), "alert-p99-ms")
	b.ReportMetric(pct(notifyPart, 50), "notify-p50-ms")
	b.ReportMetric(pct(notifyPart, 99), "notify-p99-ms")
	b.ReportMetric(pct(floor, 50), "kafka-p50-ms")
	b.ReportMetric(pct(floor, 99), "kafka-p99-ms")
	b.ReportMetric(loadRate, "load-readings/s")
	b.ReportMetric(float64(len(total)), "probes")
	b.Logf("alert --commit-interval %s, notify --group-wait %s", latencyAlertCommit, latencyGroupWait)
	b.Logf("latency append → webhook over %d probes under %.0f readings/s: p50 %.0f ms, p99 %.0f ms, max %.0f ms (alert part p50 %.0f / p99 %.0f ms; notify part p50 %.0f / p99 %.0f ms); floor, a plain consumer of raw: p50 %.0f / p99 %.0f ms",
		len(total), loadRate, pct(total, 50), pct(total, 99), pct(total, 100), pct(alertPart, 50), pct(alertPart, 99), pct(notifyPart, 50), pct(notifyPart, 99),
		pct(floor, 50), pct(floor, 99))
	b.Logf("all (ms): %s", fmtMs(total))
	stopLoad()
	<-loadDone
	ap.StopClean(30 * time.Second)
	np.StopClean(30 * time.Second)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the p-th percentile (nearest rank) of xs; 100 is the max.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func fmtMs(xs []float64) string {
	var sb strings.Builder
	for i, x := range xs {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%.0f", x)
	}
	return sb.String()
}
