//go:build integration

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// The identity tests check issue 13's rule end to end: a device message is
// identified by (device, event time, seq), decided once by the processor,
// and every store — the readings table, the lake's readings and
// device_metrics — counts the same set of messages. The fleet is written
// here, message by message over MQTT, and the expected count and sum of
// every device × metric × window are recomputed from what was sent, with no
// project code: duplicates (device re-sends, same seq and time) and MQTT
// redeliveries (bridge SIGKILLs) are counted once, a reused seq with another
// time is a new reading.
//
// Some messages also carry fields the bridge ignores (strings, booleans,
// null, objects, arrays, top-level members beside "metrics"), some devices
// send flat payloads: device_activity.ignored_fields must sum, per device,
// the ignored fields of the distinct messages (re-sends and redeliveries
// once), counted here from what was sent.

const (
	idWindow = 10 * time.Second
	// The idle timeout is longer than any stage's downtime in these tests,
	// so that a restart never makes an out-of-order reading late.
	idIdle = 15 * time.Second
)

// idMsg is one device message as the device sends it.
type idMsg struct {
	dev       string
	ts        time.Time
	seq       int64
	temp, hum float64
	// flat: temp and hum as top-level members instead of in "metrics".
	flat bool
	// extra: top-level members the bridge ignores (none is a number).
	extra []string
}

// idExtras are top-level members the bridge ignores with its default
// settings, one per reason, beside "metrics" or in a flat payload.
var idExtras = []string{`"fw":"1.2.3"`, `"temp_s":"21.5"`, `"bad":"NaN"`, `"door":true`,
	`"note":null`, `"cfg":{"mode":1}`, `"arr":[1,2]`}

func (m idMsg) payload() []byte {
	var extra string
	for _, e := range m.extra {
		extra += "," + e
	}
	if m.flat {
		return fmt.Appendf(nil, `{"seq":%d,"ts":"%s","temp":%g,"hum":%g%s}`,
			m.seq, m.ts.UTC().Format(time.RFC3339Nano), m.temp, m.hum, extra)
	}
	return fmt.Appendf(nil, `{"seq":%d,"ts":"%s","metrics":{"temp":%g,"hum":%g}%s}`,
		m.seq, m.ts.UTC().Format(time.RFC3339Nano), m.temp, m.hum, extra)
}

// idKey is one device × metric × window (window = Unix seconds / 10).
type idKey struct {
	dev, metric string
	win         int64
}

type idAgg struct {
	count int64
	sum   float64
}

// idFleet is what the test sends: the publish order (re-sends included)
// and the expected aggregates of the distinct messages.
type idFleet struct {
	order    []idMsg
	distinct int
	resends  int
	want     map[idKey]idAgg
	ignored  map[string]int64 // per device: ignored fields of its distinct messages
	normal   []string         // devices with a right clock (the fast device's neighbours)
	fast     string
	backlog  string
	reseq    string
}

// quarter rounds to a multiple of 0.25, so that every sum is exact in
// float64 whatever the order of addition.
func quarter(v float64) float64 { return math.Round(v*4) / 4 }

// newIDFleet builds the fleet: normal devices sending every step with
// their messages shuffled within 1s of event time (out of order, within
// the lateness) and ~3% re-sent; a device restarting its seq counter every
// 30 messages; a device whose clock is 4 minutes fast; and a device that
// sent 10 readings 10 minutes ago, went offline, and uploads its 10-minute
// backlog at the end, in order.
func newIDFleet(rng *rand.Rand, normal, perDevice int, base time.Time) *idFleet {
	const step = 250 * time.Millisecond
	f := &idFleet{want: map[idKey]idAgg{}, ignored: map[string]int64{}, fast: "fast-0", backlog: "backlog-0", reseq: "reseq-0"}
	for d := range normal {
		f.normal = append(f.normal, fmt.Sprintf("dev-%02d", d))
	}
	streams := map[string][]idMsg{}
	devs := append(slices.Clone(f.normal), f.reseq, f.fast)
	for di, dev := range devs {
		var ms []idMsg
		for i := range perDevice {
			m := idMsg{dev: dev, ts: base.Add(time.Duration(i) * step), seq: int64(i + 1),
				temp: quarter(20 + rng.NormFloat64()*3), hum: quarter(40 + rng.NormFloat64()*5), flat: di%2 == 0}
			if rng.IntN(4) == 0 { // 1 to 3 ignored fields
				ex := slices.Clone(idExtras)
				rng.Shuffle(len(ex), func(a, b int) { ex[a], ex[b] = ex[b], ex[a] })
				m.extra = ex[:1+rng.IntN(3)]
			}
			switch dev {
			case f.reseq:
				m.seq = int64(i%30 + 1) // restarts its counter: same seq, another time
			case f.fast:
				m.ts = m.ts.Add(4 * time.Minute)
			}
			ms = append(ms, m)
		}
		for i := 0; i+4 <= len(ms); i += 4 { // out of order within 1s
			blk := ms[i : i+4]
			rng.Shuffle(len(blk), func(a, b int) { blk[a], blk[b] = blk[b], blk[a] })
		}
		streams[dev] = ms
	}
	// The backlog device: 10 readings 10 minutes ago, first...
	old := base.Add(-10 * time.Minute)
	var online, backlog []idMsg
	for i := range 10 {
		online = append(online, idMsg{dev: f.backlog, ts: old.Add(time.Duration(i) * time.Second), seq: int64(i + 1),
			temp: quarter(15 + rng.NormFloat64()), hum: quarter(50 + rng.NormFloat64())})
	}
	// ... and, at the end, what it buffered while offline: 10 minutes of
	// readings, every 2s, in order.
	for i := range 300 {
		backlog = append(backlog, idMsg{dev: f.backlog, ts: old.Add(10*time.Second + time.Duration(i)*2*time.Second), seq: int64(11 + i),
			temp: quarter(15 + rng.NormFloat64()), hum: quarter(50 + rng.NormFloat64())})
	}
	f.order = append(f.order, online...)
	var again []idMsg
	for i := range perDevice {
		round := slices.Clone(again)
		again = again[:0]
		for _, dev := range devs {
			m := streams[dev][i]
			round = append(round, m)
			if rng.IntN(33) == 0 { // a device re-send, a little later
				again = append(again, m)
				f.resends++
			}
		}
		rng.Shuffle(len(round), func(a, b int) { round[a], round[b] = round[b], round[a] })
		f.order = append(f.order, round...)
	}
	f.order = append(f.order, again...)
	f.order = append(f.order, backlog...)

	// The expected aggregates: each distinct (device, time, seq) once.
	seen := map[string]bool{}
	for _, m := range f.order {
		id := fmt.Sprintf("%s|%d|%d", m.dev, m.ts.UnixMicro(), m.seq)
		if seen[id] {
			continue
		}
		seen[id] = true
		f.distinct++
		f.ignored[m.dev] += int64(len(m.extra))
		w := int64(math.Floor(float64(m.ts.UnixMicro()) / float64(idWindow.Microseconds())))
		for _, mv := range []struct {
			name string
			v    float64
		}{{"temp", m.temp}, {"hum", m.hum}} {
			k := idKey{m.dev, mv.name, w}
			a := f.want[k]
			a.count++
			a.sum += mv.v
			f.want[k] = a
		}
	}
	return f
}

func TestPipelineOneIdentity(t *testing.T) { runIdentity(t, false) }

func TestPipelineOneIdentityKills(t *testing.T) { runIdentity(t, true) }

// runIdentity runs the fleet through the whole pipeline with two bridge
// SIGKILLs mid-stream (killAll: every stage SIGKILLed twice or more), then
// checks that for every device, metric and window, count and sum over the
// readings table and over the lake's readings files equal device_metrics
// and the independent recomputation, and that nothing was late.
func runIdentity(t *testing.T, killAll bool) {
	env := testenv.Load(t)
	normal, perDevice, rate := 10, 240, 250.0
	if os.Getenv("IOTPIPE_FULL") == "1" {
		normal, perDevice, rate = 40, 320, 600.0
	}
	ctx := testenv.Context(t, 8*time.Minute)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	base := time.Now().UTC().Add(-100 * time.Second).Truncate(idWindow)
	fleet := newIDFleet(rng, normal, perDevice, base)
	t.Logf("seed %d: %d devices, %d publishes (%d distinct messages, %d re-sends), %d device × metric × windows",
		seed, normal+3, len(fleet.order), fleet.distinct, fleet.resends, len(fleet.want))

	id := testenv.Name(t, "e2eid")
	schema := env.Schema(t)
	bucket := env.BucketName(t)
	topics := map[string]string{"RAW": id + ".raw", "READINGS": id + ".readings", "METRICS": id + ".metrics",
		"DLQ": id + ".dlq", "PROCESSOR_CHANGELOG": id + ".changelog", "ALERTS": id + ".alerts"}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var names []string
		for _, n := range topics {
			names = append(names, n)
		}
		_, _ = env.KafkaAdmin(t).DeleteTopics(cctx, names...)
	})
	// One set of variables for every stage, as a deployment would have it:
	// IOTPIPE_TOPIC_READINGS is the processor's output, init's new topic
	// and the sinks' input (IOTPIPE_TOPIC_RAW, also set, must not reach
	// the sinks).
	base2 := append(env.Environ(), "IOTPIPE_PG_SCHEMA="+schema, "IOTPIPE_S3_BUCKET="+bucket,
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_LOG_FORMAT=json")
	for k, v := range topics {
		base2 = append(base2, "IOTPIPE_TOPIC_"+k+"="+v)
	}

	initProc := testenv.StartProc(t, "init", base2, "init", "--raw-partitions", "3", "--metrics-partitions", "2", "--dlq-partitions", "1")
	select {
	case <-initProc.Done():
	case <-ctx.Done():
		t.Fatalf("iotpipe init did not finish: %v\n%s", ctx.Err(), initProc.Log())
	}
	if code := initProc.ExitCode(); code != 0 {
		t.Fatalf("iotpipe init: exit %d\n%s", code, initProc.Log())
	}
	if !strings.Contains(initProc.Log(), "topic "+topics["READINGS"]+" (3 partitions): created") {
		t.Fatalf("init did not create the readings topic with the raw topic's 3 partitions:\n%s", initProc.Log())
	}

	template := "devices/" + id + "/{device_id}/telemetry"
	start := map[string]func() *stage{
		"bridge": func() *stage {
			return testenv.StartProc(t, "bridge", append(append([]string(nil), base2...), env.KafkaEnv(t, testenv.Bridge)...), "bridge", "--topic-template", template,
				"--mqtt-share-group", id, "--mqtt-client-id", id+"-bridge", "--mqtt-session-expiry", "2m")
		},
		"processor": func() *stage {
			return testenv.StartProc(t, "processor", append(append([]string(nil), base2...), env.KafkaEnv(t, testenv.Processor)...), "processor", "--group", id+"-processor", "--instance-id", id+"-p1",
				"--window", idWindow.String(), "--lateness", "3s", "--idle-timeout", idIdle.String(), "--commit-interval", "200ms")
		},
		"sink timescale": func() *stage {
			return testenv.StartProc(t, "sink timescale", append(append([]string(nil), base2...), env.KafkaEnv(t, testenv.SinkTimescale)...), "sink", "timescale", "--group", id+"-sink-ts",
				"--instance-id", id+"-ts1", "--batch-delay", "300ms", "--batch-rows", "500")
		},
		"sink lake": func() *stage {
			return testenv.StartProc(t, "sink lake", append(append([]string(nil), base2...), env.KafkaEnv(t, testenv.SinkLake)...), "sink", "lake", "--group", id+"-sink-lake",
				"--instance-id", id+"-lake1", "--max-age", "2s")
		},
	}
	stages := map[string]*stage{}
	for name, fn := range start {
		stages[name] = fn()
	}
	// Publish only once the bridge has subscribed, or the broker drops the
	// messages ("no matching subscribers").
	stages["bridge"].WaitLine("subscribed", 60*time.Second)

	// The kills, at fractions of the publishes.
	type kill struct {
		at    float64
		stage string
	}
	kills := []kill{{0.3, "bridge"}, {0.65, "bridge"}}
	if killAll {
		kills = []kill{{0.1, "bridge"}, {0.2, "processor"}, {0.3, "sink timescale"}, {0.4, "sink lake"},
			{0.5, "bridge"}, {0.6, "processor"}, {0.7, "sink lake"}, {0.8, "sink timescale"}, {0.9, "processor"}}
	}
	dev := env.MQTTClient(t, env.MQTTDeviceUsername, env.MQTTDevicePassword, nil)
	pubStart := time.Now()
	for i, m := range fleet.order {
		for len(kills) > 0 && float64(i) >= kills[0].at*float64(len(fleet.order)) {
			k := kills[0]
			kills = kills[1:]
			stages[k.stage].KillWait(10 * time.Second)
			t.Logf("SIGKILL %s after %d of %d publishes", k.stage, i, len(fleet.order))
			stages[k.stage] = start[k.stage]()
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := dev.Publish(pctx, &paho.Publish{Topic: strings.Replace(template, "{device_id}", m.dev, 1), QoS: 1, Payload: m.payload()})
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if resp.ReasonCode != 0 {
			t.Fatalf("publish %d: broker answered reason code %d (0x10: no subscriber)", i, resp.ReasonCode)
		}
		if ahead := time.Duration(float64(i+1)/rate*float64(time.Second)) - time.Since(pubStart); ahead > 0 {
			time.Sleep(ahead) // pacing the publisher, not synchronising
		}
	}
	t.Logf("published %d messages in %s", len(fleet.order), time.Since(pubStart).Round(time.Millisecond))

	// Every store converges to the recomputation.
	pg := env.PG(t)
	s3 := env.S3(t)
	var last string
	testenv.Eventually(t, 3*time.Minute, time.Second, func() error {
		for _, q := range []struct {
			name string
			get  func() (map[idKey]idAgg, error)
		}{
			{"device_metrics", func() (map[idKey]idAgg, error) {
				return pgAggs(ctx, pg, fmt.Sprintf(`SELECT device_id, metric, floor(extract(epoch FROM bucket) / %d)::bigint, count, sum
					FROM %s.device_metrics`, int(idWindow.Seconds()), schema))
			}},
			{"readings", func() (map[idKey]idAgg, error) {
				return pgAggs(ctx, pg, fmt.Sprintf(`SELECT device_id, metric, floor(extract(epoch FROM time) / %d)::bigint, count(*), sum(value)
					FROM %s.readings GROUP BY 1, 2, 3`, int(idWindow.Seconds()), schema))
			}},
			{"lake readings", func() (map[idKey]idAgg, error) { return lakeAggs(ctx, s3, bucket, "readings/") }},
		} {
			got, err := q.get()
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			if err := diffAggs(got, fleet.want); err != nil {
				if s := q.name + ": " + err.Error(); s != last {
					last = s
					t.Logf("not yet: %s", s)
				}
				return fmt.Errorf("%s: %w", q.name, err)
			}
		}
		return nil
	})
	t.Logf("readings, lake readings and device_metrics equal the recomputation in all %d device × metric × windows", len(fleet.want))

	// Ignored payload fields: per device, those of its distinct messages,
	// once each (device re-sends and redeliveries carried them again).
	var wantIgnored int64
	for _, n := range fleet.ignored {
		wantIgnored += n
	}
	diffIgnored := func(store string, have map[string]int64) error {
		var diffs []string
		for d, n := range fleet.ignored {
			if have[d] != n {
				diffs = append(diffs, fmt.Sprintf("%s: %d, want %d", d, have[d], n))
			}
		}
		for d, n := range have {
			if _, ok := fleet.ignored[d]; !ok && n != 0 {
				diffs = append(diffs, fmt.Sprintf("%s: %d, want 0", d, n))
			}
		}
		if len(diffs) > 0 {
			slices.Sort(diffs)
			return fmt.Errorf("%s ignored_fields per device: %s", store, strings.Join(diffs, "; "))
		}
		return nil
	}
	testenv.Eventually(t, time.Minute, time.Second, func() error {
		have := map[string]int64{}
		rows, err := pg.Query(ctx, fmt.Sprintf(`SELECT device_id, sum(ignored_fields)::bigint FROM %s.device_activity GROUP BY 1`, schema))
		if err != nil {
			return err
		}
		var d string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&d, &n}, func() error { have[d] = n; return nil }); err != nil {
			return err
		}
		if err := diffIgnored("device_activity", have); err != nil {
			return err
		}
		lake, err := lakeIgnored(ctx, s3, bucket)
		if err != nil {
			return err
		}
		return diffIgnored("lake activity", lake)
	})
	if wantIgnored == 0 {
		t.Fatal("the fleet sent no ignored field: the check above checked nothing")
	}
	t.Logf("device_activity.ignored_fields and the lake's activity files equal the %d ignored fields of the distinct messages, per device", wantIgnored)

	// Nothing late: not the fast device's neighbours, not the backlog
	// device, nobody; no dead letter at all.
	rows, err := pg.Query(ctx, fmt.Sprintf(`SELECT device_id, sum(late), sum(duplicates), sum(seq_resets), sum(messages)
		FROM %s.device_activity GROUP BY 1 ORDER BY 1`, schema))
	if err != nil {
		t.Fatal(err)
	}
	var dups, resets, messages int64
	for rows.Next() {
		var d string
		var l, du, rs, ms int64
		if err := rows.Scan(&d, &l, &du, &rs, &ms); err != nil {
			t.Fatal(err)
		}
		if l != 0 {
			t.Errorf("device %s: %d late readings, want 0", d, l)
		}
		if d == fleet.reseq && rs == 0 {
			t.Errorf("device %s restarted its seq every 30 messages, but seq_resets is 0", d)
		}
		dups, resets, messages = dups+du, resets+rs, messages+ms
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if messages != int64(fleet.distinct) {
		t.Errorf("device_activity counts %d messages, want the %d distinct ones", messages, fleet.distinct)
	}
	if dlq := countRecords(t, ctx, env, topics["DLQ"]); dlq != 0 {
		t.Errorf("%d dead letters, want none", dlq)
	}
	raw := countRecords(t, ctx, env, topics["RAW"])
	readings := countRecords(t, ctx, env, topics["READINGS"])
	t.Logf("telemetry.raw holds %d records for %d publishes of %d distinct messages (%d device re-sends, %d MQTT redeliveries); the readings topic %d; activity: %d duplicates removed, %d seq resets",
		raw, len(fleet.order), fleet.distinct, fleet.resends, raw-int64(len(fleet.order)), readings, dups, resets)
	if readings != int64(fleet.distinct) {
		t.Errorf("readings topic holds %d records, want the %d distinct messages", readings, fleet.distinct)
	}
	// The fast device's neighbours: devices in its raw partition (with a
	// watermark per partition they would have lost their readings as late).
	parts := devicePartitions(t, ctx, env, topics["RAW"])
	var neighbours []string
	for _, d := range fleet.normal {
		if parts[d] == parts[fleet.fast] {
			neighbours = append(neighbours, d)
		}
	}
	if len(neighbours) == 0 {
		t.Errorf("no device shares the fast device's raw partition %d: the test does not check its neighbours", parts[fleet.fast])
	}
	t.Logf("fast device %s in raw partition %d with neighbours %v; backlog device %s: none late", fleet.fast, parts[fleet.fast], neighbours, fleet.backlog)
	if raw < int64(len(fleet.order)) {
		t.Errorf("raw topic holds %d records, fewer than the %d acknowledged publishes", raw, len(fleet.order))
	}
	for _, name := range []string{"bridge", "processor", "sink timescale", "sink lake"} {
		stop(t, stages[name], 30*time.Second)
	}
}

// devicePartitions reads topic and returns each key's partition.
func devicePartitions(t *testing.T, ctx context.Context, env *testenv.Env, topic string) map[string]int32 {
	t.Helper()
	cl := env.Kafka(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	out := map[string]int32{}
	idle := time.Now()
	for time.Since(idle) < 3*time.Second {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			if schemas.IsHeartbeat(r.Headers) {
				return // a bridge's heartbeat, not a device's record
			}
			out[string(r.Key)] = r.Partition
			idle = time.Now()
		})
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
	return out
}

func pgAggs(ctx context.Context, pg *pgxpool.Pool, q string) (map[idKey]idAgg, error) {
	rows, err := pg.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[idKey]idAgg{}
	for rows.Next() {
		var k idKey
		var a idAgg
		if err := rows.Scan(&k.dev, &k.metric, &k.win, &a.count, &a.sum); err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("two rows for %+v", k)
		}
		out[k] = a
	}
	return out, rows.Err()
}

// lakeAggs reads every Parquet file under prefix (time, device_id, metric,
// value) with arrow-go and aggregates per device × metric × window.
func lakeAggs(ctx context.Context, cl *minio.Client, bucket, prefix string) (map[idKey]idAgg, error) {
	out := map[idKey]idAgg{}
	for obj := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		o, err := cl.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(o)
		_ = o.Close()
		if err != nil {
			return nil, err
		}
		if err := addParquet(ctx, buf.Bytes(), out); err != nil {
			return nil, fmt.Errorf("%s: %w", obj.Key, err)
		}
	}
	return out, nil
}

// lakeIgnored reads the lake's activity files and sums ignored_fields per
// device over the highest revision of each device window.
func lakeIgnored(ctx context.Context, cl *minio.Client, bucket string) (map[string]int64, error) {
	type win struct {
		dev string
		ws  int64
	}
	type row struct{ rev, ignored int64 }
	latest := map[win]row{}
	for obj := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "activity/", Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		o, err := cl.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(o)
		_ = o.Close()
		if err != nil {
			return nil, err
		}
		rdr, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", obj.Key, err)
		}
		fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		if err != nil {
			rdr.Close()
			return nil, err
		}
		tbl, err := fr.ReadTable(ctx)
		rdr.Close()
		if err != nil {
			return nil, err
		}
		cols := map[string]*arrow.Chunked{}
		for _, name := range []string{"device_id", "window_start", "revision", "ignored_fields"} {
			idx := tbl.Schema().FieldIndices(name)
			if len(idx) != 1 {
				tbl.Release()
				return nil, fmt.Errorf("%s: no column %q", obj.Key, name)
			}
			cols[name] = tbl.Column(idx[0]).Data()
		}
		for ci := range cols["device_id"].Chunks() {
			dc := cols["device_id"].Chunks()[ci]
			ws, ok1 := cols["window_start"].Chunks()[ci].(*array.Timestamp)
			rv, ok2 := cols["revision"].Chunks()[ci].(*array.Int64)
			ig, ok3 := cols["ignored_fields"].Chunks()[ci].(*array.Int64)
			if !ok1 || !ok2 || !ok3 {
				tbl.Release()
				return nil, fmt.Errorf("%s: unexpected column types", obj.Key)
			}
			for i := 0; i < dc.Len(); i++ {
				k := win{strAt(dc, i), int64(ws.Value(i))}
				if r, ok := latest[k]; !ok || rv.Value(i) > r.rev {
					latest[k] = row{rv.Value(i), ig.Value(i)}
				}
			}
		}
		tbl.Release()
	}
	out := map[string]int64{}
	for k, r := range latest {
		out[k.dev] += r.ignored
	}
	return out, nil
}

func addParquet(ctx context.Context, b []byte, out map[idKey]idAgg) error {
	rdr, err := file.NewParquetReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer rdr.Close()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	tbl, err := fr.ReadTable(ctx)
	if err != nil {
		return err
	}
	defer tbl.Release()
	col := func(name string) (*arrow.Chunked, error) {
		idx := tbl.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("no column %q", name)
		}
		return tbl.Column(idx[0]).Data(), nil
	}
	tc, err := col("time")
	if err != nil {
		return err
	}
	dc, err := col("device_id")
	if err != nil {
		return err
	}
	mc, err := col("metric")
	if err != nil {
		return err
	}
	vc, err := col("value")
	if err != nil {
		return err
	}
	for ci, tch := range tc.Chunks() {
		ts, ok := tch.(*array.Timestamp)
		if !ok {
			return fmt.Errorf("time column is %s", tch.DataType())
		}
		unit := ts.DataType().(*arrow.TimestampType).Unit
		vs, ok := vc.Chunks()[ci].(*array.Float64)
		if !ok {
			return fmt.Errorf("value column is %s", vc.Chunks()[ci].DataType())
		}
		for i := 0; i < ts.Len(); i++ {
			us := int64(ts.Value(i))
			switch unit {
			case arrow.Millisecond:
				us *= 1000
			case arrow.Nanosecond:
				us /= 1000
			case arrow.Second:
				us *= 1_000_000
			}
			k := idKey{dev: strAt(dc.Chunks()[ci], i), metric: strAt(mc.Chunks()[ci], i),
				win: int64(math.Floor(float64(us) / float64(idWindow.Microseconds())))}
			a := out[k]
			a.count++
			a.sum += vs.Value(i)
			out[k] = a
		}
	}
	return nil
}

// strAt reads a string column's value, plain or dictionary-encoded.
func strAt(a arrow.Array, i int) string {
	switch a := a.(type) {
	case *array.String:
		return a.Value(i)
	case *array.Dictionary:
		return strAt(a.Dictionary(), a.GetValueIndex(i))
	case *array.Binary:
		return string(a.Value(i))
	}
	return "<" + a.DataType().String() + ">"
}

// diffAggs describes the first differences between got and want.
func diffAggs(got, want map[idKey]idAgg) error {
	var diffs []string
	for k, w := range want {
		if g := got[k]; g != w {
			diffs = append(diffs, fmt.Sprintf("%s/%s window %d: count %d sum %g, want %d %g", k.dev, k.metric, k.win, g.count, g.sum, w.count, w.sum))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s/%s window %d: count %d sum %g, want no row", k.dev, k.metric, k.win, g.count, g.sum))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	return fmt.Errorf("%d of %d windows differ, e.g. %s", len(diffs), len(want), strings.Join(diffs[:min(3, len(diffs))], "; "))
}
