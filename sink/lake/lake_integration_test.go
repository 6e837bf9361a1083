//go:build integration

package lake

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// TestReadBackIndependent writes readings, metrics, activity and bad
// records through the sink into versitygw and reads the lake back with
// pyarrow: types, row counts and values must equal the input.
func TestReadBackIndependent(t *testing.T) {
	env := testenv.Load(t)
	raw, met, dlq := env.Topic(t, 3, nil), env.Topic(t, 2, nil), env.Topic(t, 1, nil)
	bucket, group := env.Bucket(t), env.Group(t)
	cl := env.Kafka(t)
	base := pastBase(1)
	const n = 3000
	produceReadings(t, cl, raw, 0, n, 50, base, 4*time.Second)

	ws := base.Add(14 * time.Minute)
	m := schemas.WindowMetric{DeviceID: "dev-0001", Metric: "temp", WindowStart: ws, WindowEnd: ws.Add(time.Minute),
		Count: 3, Sum: 6.5, Min: 1.5, Max: 3, Mean: 6.5 / 3, Stddev: 0.6236095644623235, First: 1.5, Last: 3, P50: 2, P95: 3, P99: 3,
		FirstTime: ws.Add(time.Second), LastTime: ws.Add(59 * time.Second), Revision: 1, EmittedAt: ws.Add(2 * time.Minute)}
	a := schemas.Activity{DeviceID: "dev-0001", WindowStart: ws, WindowEnd: ws.Add(time.Minute), Messages: 3, SeqGaps: 1,
		FirstSeen: ws.Add(time.Second), LastSeen: ws.Add(59 * time.Second), Revision: 1, EmittedAt: ws.Add(2 * time.Minute)}
	a0 := a
	a0.DeviceID, a0.Messages, a0.FirstSeen, a0.LastSeen = "dev-0002", 0, time.Time{}, time.Time{}
	ctx := testenv.Context(t, time.Minute)
	recs := []*kgo.Record{
		{Topic: met, Key: []byte(m.DeviceID), Value: schemas.AppendMetric(nil, &m)},
		{Topic: met, Key: []byte(a.DeviceID), Value: schemas.AppendActivity(nil, &a)},
		{Topic: met, Key: []byte(a0.DeviceID), Value: schemas.AppendActivity(nil, &a0)},
		{Topic: met, Key: []byte("x"), Value: []byte(`{"schema_version":2}`)},
		{Topic: raw, Key: []byte("bad"), Value: []byte("not json")},
		{Topic: raw, Key: []byte("bad"), Value: []byte(`{"schema_version":1,"device_id":"d"}`)},
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	want := offsetsOf(t, env, raw, n)

	cfg := testConfig(t, env, bucket, raw, met, dlq, group)
	cfg.MaxRows = 2500 // several batches per partition
	cfg.MaxAge = time.Second
	cfg.RowGroupRows = 1000
	_, reg, stop := runSink(t, cfg)
	testenv.Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		return committedAll(ctx, env, t, group, raw, met)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	lake := readLake(t, env.S3(t), bucket, "lake/")
	rd := lake["readings"]
	if rd == nil {
		t.Fatalf("no readings dataset in %v", lake)
	}
	// Types as specified, as an independent reader sees them.
	for col, want := range map[string][2]string{
		"time":        {"INT64", "Timestamp(isAdjustedToUTC=true, timeUnit=microseconds, is_from_converted_type=false, force_set_converted_type=false)"},
		"received_at": {"INT64", "Timestamp(isAdjustedToUTC=true, timeUnit=microseconds, is_from_converted_type=false, force_set_converted_type=false)"},
		"device_id":   {"BYTE_ARRAY", "String"},
		"value":       {"DOUBLE", "None"},
		"seq":         {"INT64", "Int(bitWidth=64, isSigned=true)"},
	} {
		if got := rd.Columns[col]; got != want {
			t.Errorf("readings.%s parquet type = %v, want %v", col, got, want)
		}
	}
	if got := rd.Arrow["time"]; got != "timestamp[us, tz=UTC]" {
		t.Errorf("readings.time arrow type = %s", got)
	}
	if !slices.Equal(rd.Codecs, []string{"ZSTD"}) {
		t.Errorf("codecs = %v, want ZSTD", rd.Codecs)
	}
	for _, c := range []string{"device_id", "metric"} {
		if !slices.Contains(rd.Dictionary, c) {
			t.Errorf("%s not dictionary-encoded (dictionary columns %v)", c, rd.Dictionary)
		}
	}
	if !slices.Equal(rd.HiveFields, []string{"date", "hour"}) {
		t.Errorf("hive partition fields = %v", rd.HiveFields)
	}
	rows := readingRows(t, rd)
	wantRows := 0
	for _, r := range want {
		wantRows += len(r.Measurements)
	}
	if len(rows) != wantRows || rd.HiveRows != wantRows {
		t.Errorf("readings rows = %d (hive scan %d), want %d", len(rows), rd.HiveRows, wantRows)
	}
	checkExactlyOnce(t, rows, want)
	for _, r := range rows {
		hour := time.UnixMicro(r.Time).UTC().Format("date=2006-01-02/hour=15/")
		if !strings.HasPrefix(r.File, "readings/"+hour) || !strings.HasSuffix(r.File, ".parquet") ||
			!strings.Contains(r.File, "/"+raw+"+") {
			t.Fatalf("row at %s in file %s", hour, r.File)
		}
	}
	t.Logf("readings: %d rows in %d files, %d row groups", len(rows), rd.Files, rd.RowGroups)

	// Metrics and activity.
	if mt := lake["metrics"]; mt == nil || len(mt.Rows) != 1 {
		t.Fatalf("metrics dataset: %+v", mt)
	} else if got := mt.Rows[0]; got[0].(float64) != float64(ws.UnixMicro()) || got[3] != "temp" || got[8] != m.Mean || got[17].(float64) != 1 {
		t.Errorf("metrics row = %v", got)
	}
	if ac := lake["activity"]; ac == nil || len(ac.Rows) != 2 {
		t.Fatalf("activity dataset: %+v", ac)
	} else {
		if got := ac.Columns["first_seen"]; got[1] != rd.Columns["time"][1] {
			t.Errorf("activity.first_seen type = %v", got)
		}
		nulls := 0
		for _, r := range ac.Rows {
			if r[7] == nil {
				nulls++
			}
		}
		if nulls != 1 {
			t.Errorf("activity rows with no first_seen = %d, want 1", nulls)
		}
	}

	// Bad records went to the DLQ with their source, nothing else.
	dcl := env.Kafka(t, kgo.ConsumeTopics(dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var dead []*schemas.DeadLetter
	testenv.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		dcl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			d, err := schemas.RecordDeadLetter(r)
			if err != nil {
				t.Errorf("dlq record: %v", err)
				return
			}
			dead = append(dead, d)
		})
		if len(dead) < 3 {
			return errorf("dlq has %d records, want 3", len(dead))
		}
		return nil
	})
	for _, d := range dead {
		if d.Reason != schemas.ReasonInvalidRecord || d.Stage != schemas.StageSinkLake || d.SourceOffset < 0 ||
			(d.SourceTopic != raw && d.SourceTopic != met) {
			t.Errorf("dead letter %+v", d)
		}
	}
	if got := metricValue(reg, "iotpipe_lake_rows_total", "readings"); int(got) != wantRows {
		t.Errorf("rows_total{readings} = %v, want %d", got, wantRows)
	}
}
