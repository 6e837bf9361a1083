//go:build integration

// Package e2e runs the whole pipeline as a user would: the iotpipe binary's
// init, bridge, processor and both sinks as processes against the real
// services, fed by a simulated fleet over MQTT, and checks what arrives in
// PostgreSQL, in the lake and in the dead-letter topic, then runs every
// Grafana dashboard query against the database the pipeline filled.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/deploy/grafana"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
	"github.com/iotpipe/iotpipe/test/internal/pipecheck"
)

// stage is one stage of the pipeline as a child process.
type stage = testenv.Proc

// stop sends SIGTERM and expects a clean exit (code 0) within the bound;
// a failure is reported and the other stages are still stopped.
func stop(t *testing.T, s *stage, within time.Duration) {
	t.Helper()
	code, err := s.Proc.Stop(within)
	if err != nil || code != 0 {
		t.Errorf("%s did not exit cleanly on SIGTERM: exit %d, %v\n%s", s.Describe(), code, err, s.Tail(30))
	}
}

func TestPipelineEndToEnd(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, 5*time.Minute)

	id := testenv.Name(t, "e2e")
	schema := env.Schema(t)
	bucket := env.BucketName(t)
	topicRaw, topicMetrics, topicDLQ, topicChangelog := id+".raw", id+".metrics", id+".dlq", id+".changelog"
	topicReadings := id + ".readings"
	topicAlerts := id + ".alerts" // init creates it, the TimescaleDB sink reads it (no alert stage runs here)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = env.KafkaAdmin(t).DeleteTopics(cctx, topicRaw, topicMetrics, topicDLQ, topicChangelog, topicReadings, topicAlerts)
	})

	// The services' settings, explicitly: nothing else of this process's
	// environment reaches the stages.
	base := append(env.Environ(),
		"IOTPIPE_TOPIC_RAW="+topicRaw, "IOTPIPE_TOPIC_METRICS="+topicMetrics, "IOTPIPE_TOPIC_DLQ="+topicDLQ,
		"IOTPIPE_TOPIC_PROCESSOR_CHANGELOG="+topicChangelog, "IOTPIPE_TOPIC_READINGS="+topicReadings,
		"IOTPIPE_TOPIC_ALERTS="+topicAlerts, "IOTPIPE_PG_SCHEMA="+schema, "IOTPIPE_S3_BUCKET="+bucket,
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_LOG_FORMAT=json",
	)

	// 1. init, as an operator would.
	initProc := testenv.StartProc(t, "init", base, "init", "--raw-partitions", "3", "--metrics-partitions", "2", "--dlq-partitions", "1")
	select {
	case <-initProc.Done():
	case <-ctx.Done():
		t.Fatalf("iotpipe init did not finish: %v\n%s", ctx.Err(), initProc.Log())
	}
	if code := initProc.ExitCode(); code != 0 {
		t.Fatalf("iotpipe init: exit %d\n%s", code, initProc.Log())
	}

	// 2. The stages.
	template := "devices/" + id + "/{device_id}/telemetry"
	bridge := testenv.StartProc(t, "bridge", append(append([]string(nil), base...), env.KafkaEnv(t, testenv.Bridge)...), "bridge",
		"--topic-template", template, "--mqtt-share-group", id, "--mqtt-client-id", id+"-bridge")
	processor := testenv.StartProc(t, "processor", append(append([]string(nil), base...), env.KafkaEnv(t, testenv.Processor)...), "processor",
		"--group", id+"-processor", "--instance-id", id+"-p1",
		"--window", "5s", "--lateness", "1s", "--idle-timeout", "2s", "--commit-interval", "200ms")
	sinkTS := testenv.StartProc(t, "sink timescale", append(append([]string(nil), base...), env.KafkaEnv(t, testenv.SinkTimescale)...), "sink", "timescale",
		"--group", id+"-sink-ts", "--batch-delay", "300ms")
	sinkLake := testenv.StartProc(t, "sink lake", append(append([]string(nil), base...), env.KafkaEnv(t, testenv.SinkLake)...), "sink", "lake",
		"--group", id+"-sink-lake", "--max-age", "2s")

	// 3. A fleet: 20 devices, 25 messages each, 10 % invalid.
	const devices, perDevice = 20, 25
	invalid := []devicesim.Kind{devicesim.MalformedJSON, devicesim.BinaryGarbage, devicesim.MissingTimestamp,
		devicesim.FutureTimestamp, devicesim.NaNValue, devicesim.EmptyPayload, devicesim.DeeplyNested}
	var sim *devicesim.Sim
	testenv.Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		// Publish only once the bridge has subscribed, or the broker drops
		// the messages ("no matching subscribers").
		if bridge.Count("subscribed") == 0 {
			return errors.New("bridge not subscribed yet")
		}
		return nil
	})
	sim, err := devicesim.New(func() devicesim.Config {
		c := devicesim.DefaultConfig()
		c.URL = env.MQTTURL
		c.Username = env.MQTTDeviceUsername
		c.Password = env.MQTTDevicePassword
		c.Devices = devices
		c.DeviceIDPrefix = "e2e-"
		c.TopicTemplate = template
		c.Rate = 10
		c.MessagesPerDevice = perDevice
		c.InvalidFraction = 0.1
		c.InvalidKinds = invalid
		c.ValidKinds = devicesim.AllValidKinds()
		return c
	}(), service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Run(ctx); err != nil {
		t.Fatalf("simulator: %v", err)
	}
	st := sim.Stats()
	t.Logf("fleet: %+v", st)
	if st.Acked != devices*perDevice || st.NoSubscribers != 0 || st.Unconfirmed != 0 {
		t.Fatalf("fleet not fully acknowledged: %+v", st)
	}
	wantRows := 2 * st.AckedValid // temp and humidity in every valid payload

	// 4. Everything arrives: readings, window metrics (all windows closed by
	// the idle watermark), activity, dead letters, lake files.
	pg := env.PG(t)
	testenv.Eventually(t, 90*time.Second, 500*time.Millisecond, func() error {
		var rows, counted, messages int64
		err := pg.QueryRow(ctx, fmt.Sprintf(`SELECT
			(SELECT count(*) FROM %[1]s.readings),
			(SELECT coalesce(sum(count), 0) FROM %[1]s.device_metrics),
			(SELECT coalesce(sum(messages), 0) FROM %[1]s.device_activity)`, schema)).Scan(&rows, &counted, &messages)
		if err != nil {
			return err
		}
		if rows != wantRows || counted != wantRows || messages != st.AckedValid {
			return fmt.Errorf("readings %d, counted in windows %d, activity messages %d; want %d, %d, %d",
				rows, counted, messages, wantRows, wantRows, st.AckedValid)
		}
		return nil
	})
	var dups int64
	if err := pg.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT device_id, metric, seq FROM %s.readings
		GROUP BY 1, 2, 3 HAVING count(*) > 1) d`, schema)).Scan(&dups); err != nil || dups != 0 {
		t.Fatalf("duplicate readings: %d (%v)", dups, err)
	}

	dlq := countRecords(t, ctx, env, topicDLQ)
	if dlq != st.AckedInvalid {
		t.Fatalf("dead letters %d, want %d (the invalid messages)", dlq, st.AckedInvalid)
	}

	s3 := env.S3(t)
	testenv.Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		n, err := pipecheck.LakeRows(ctx, s3, bucket, "readings/")
		if err != nil {
			return err
		}
		if n != wantRows {
			return fmt.Errorf("lake readings rows %d, want %d", n, wantRows)
		}
		return nil
	})

	// 5. Every dashboard query runs as Grafana's read-only role and returns rows.
	// The shadow panel needs a shadow: device 0 is registered and given one
	// (desired vs reported, one key pending), as iotpipe api and a device
	// report would write it.
	dev0 := devicesim.DeviceID("e2e-", 0)
	sch := pgx.Identifier{schema}.Sanitize()
	for _, q := range []string{
		`INSERT INTO ` + sch + `.devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING`,
		`INSERT INTO ` + sch + `.device_shadows (device_id, desired, reported, version, desired_at, reported_at)
		 VALUES ($1, '{"config": {"interval_s": 10}, "led": "on"}', '{"config": {"interval_s": 30}, "led": "on"}', 2, now(), now())`,
	} {
		if _, err := pg.Exec(ctx, q, dev0); err != nil {
			t.Fatalf("register %s and give it a shadow: %v", dev0, err)
		}
	}
	reader, err := pgxpool.New(ctx, env.PGReaderDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	checkDashboards(t, ctx, reader, schema)
	checkPrometheusQueries(t, bridge, processor, sinkTS, sinkLake)

	// 6. Clean shutdown, source to sink.
	stop(t, bridge, 30*time.Second)
	stop(t, processor, 30*time.Second)
	stop(t, sinkTS, 30*time.Second)
	stop(t, sinkLake, 30*time.Second)
}

func countRecords(t *testing.T, ctx context.Context, env *testenv.Env, topic string) int64 {
	t.Helper()
	// An empty topic needs no reading; a non-empty one is read until it
	// has been quiet for 3 s after its first record. A reader on a loaded
	// machine (-race, a busy broker) can take many seconds for its first
	// fetch, so quiet time only counts once something was read.
	adm := env.KafkaAdmin(t)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("start offsets of %s: %v", topic, err)
	}
	var span int64
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			span += o.Offset - s.Offset
		}
	})
	if span == 0 {
		return 0
	}
	cl := env.Kafka(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var n int64
	first := time.Now().Add(time.Minute)
	idle := time.Now()
	for (n == 0 && time.Now().Before(first)) || (n > 0 && time.Since(idle) < 3*time.Second) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			if !schemas.IsHeartbeat(r.Headers) { // a bridge's heartbeat is no device record
				n++
				idle = time.Now()
			}
		})
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
	return n
}

func checkDashboards(t *testing.T, ctx context.Context, db *pgxpool.Pool, schema string) {
	t.Helper()
	ds, err := grafana.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	vars := map[string]string{
		"schema": schema, "metric": "temp", "device": devicesim.DeviceID("e2e-", 0),
		// The fleet has stopped: with a zero threshold every device is silent,
		// so the silent-device panels have rows to show.
		"silent": "0 seconds",
	}
	// This pipeline runs no alert stage: with no alert event stored, the
	// alert panels may be empty (their SQL still runs here, as the reader;
	// deploy/grafana's TestAlertQueries checks their rows on known events).
	var stored int64
	if err := db.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "alert_events"}.Sanitize()).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	noAlerts := stored == 0
	queries := 0
	run := func(where, raw string) {
		q, err := grafana.Expand(raw, now.Add(-time.Hour), now.Add(time.Minute), 5*time.Second, vars)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		rows, err := db.Query(ctx, q)
		if err != nil {
			t.Errorf("%s: %v\n%s", where, err, q)
			return
		}
		n := 0
		for rows.Next() {
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			t.Errorf("%s: %v\n%s", where, err, q)
			return
		}
		if n == 0 && !(noAlerts && strings.Contains(raw, "alert")) {
			t.Errorf("%s: no rows\n%s", where, q)
		}
		queries++
	}
	for _, d := range ds {
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				run(d.Title+" / variable "+v.Name, v.Query)
			}
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.IsSQL() {
					run(d.Title+" / "+p.Title, tg.RawSQL)
				}
			}
		}
	}
	t.Logf("ran %d dashboard queries as the read-only role", queries)
}

var (
	metricsAddr = regexp.MustCompile(`"msg":"serving metrics and health"[^\n]*"addr":"([^"]+)"`)
	metricName  = regexp.MustCompile(`\biotpipe_[a-z0-9_]+`)
)

// checkPrometheusQueries scrapes every stage's /metrics and checks that
// each iotpipe_* metric the Prometheus panels query is one a stage
// exports, so a renamed metric cannot leave a panel silently empty.
func checkPrometheusQueries(t *testing.T, stages ...*stage) {
	t.Helper()
	exported := map[string]bool{}
	for _, s := range stages {
		m := metricsAddr.FindStringSubmatch(s.Log())
		if m == nil {
			t.Errorf("%s did not log its metrics address", s.Name())
			continue
		}
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			t.Errorf("%s /metrics: %v", s.Name(), err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("%s /metrics: %v", s.Name(), err)
			continue
		}
		for _, line := range strings.Split(string(body), "\n") {
			// "# HELP name" lines name every family, also those without samples yet.
			line = strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
			if n := metricName.FindString(line); n != "" && strings.HasPrefix(line, n) {
				exported[n] = true
			}
		}
	}
	ds, err := grafana.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, d := range ds {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, n := range metricName.FindAllString(tg.Expr, -1) {
					checked++
					if !exported[n] && !exported[strings.TrimSuffix(n, "_bucket")] {
						t.Errorf("%s / %s queries %s, which no stage exports", d.Title, p.Title, n)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no Prometheus query found in the dashboards")
	}
	t.Logf("checked %d metric references of the Prometheus panels against %d exported families", checked, len(exported))
}
