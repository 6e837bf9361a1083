package timescale

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/schemas"
)

func validConfig() Config {
	c := DefaultConfig()
	c.DSN = "postgres://u@localhost/db"
	return c
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"raw topic skipped", func(c *Config) { c.TopicRaw = SkipTopic }, ""},
		{"no instance id: dynamic membership", func(c *Config) { c.InstanceID = "" }, ""},
		{"zero session timeout", func(c *Config) { c.SessionTimeout = 0 }, "SessionTimeout"},
		{"no brokers", func(c *Config) { c.Kafka.Brokers = nil }, "Kafka.Brokers"},
		{"no group", func(c *Config) { c.Group = "" }, "Group"},
		{"no raw topic", func(c *Config) { c.TopicRaw = "" }, "TopicRaw"},
		{"same topics", func(c *Config) { c.TopicDLQ = c.TopicMetrics }, "TopicDLQ"},
		{"no dsn", func(c *Config) { c.DSN = "" }, "DSN"},
		{"bad dsn", func(c *Config) { c.DSN = "postgres://u@host:notaport/db" }, "DSN"},
		{"bad schema", func(c *Config) { c.Schema = "Drop Table" }, "Schema"},
		{"zero batch", func(c *Config) { c.BatchRows = 0 }, "BatchRows"},
		{"zero delay", func(c *Config) { c.BatchDelay = 0 }, "BatchDelay"},
		{"retry order", func(c *Config) { c.RetryMax = c.RetryMin / 2 }, "RetryMax"},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "ShutdownTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.field != "" && (len(config.Fields(err)) == 0 || config.Fields(err)[0].Field != tt.field):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func rawRec(t *testing.T, off int64, dev string, n int) *kgo.Record {
	t.Helper()
	r := schemas.Reading{DeviceID: dev, EventTime: time.UnixMicro(1_764_252_000_000_000).UTC(), ReceivedTime: time.UnixMicro(1_764_252_000_100_000).UTC()}
	for i := range n {
		r.Measurements = append(r.Measurements, schemas.Measurement{Name: fmt.Sprintf("m%d", i), Value: float64(i)})
	}
	return &kgo.Record{Topic: "raw", Partition: 0, Offset: off, Value: schemas.AppendRaw(nil, &r)}
}

func metRec(off int64, dev string, start int64, rev int64) *kgo.Record {
	s := time.UnixMicro(start).UTC()
	m := schemas.WindowMetric{DeviceID: dev, Metric: "temp", WindowStart: s, WindowEnd: s.Add(time.Minute), Count: 1,
		FirstTime: s, LastTime: s, Revision: rev}
	return &kgo.Record{Topic: "met", Partition: 1, Offset: off, Value: schemas.AppendMetric(nil, &m)}
}

func TestBatchAdd(t *testing.T) {
	b := newBatch("raw", "met", "")
	now := time.Now()
	b.add(rawRec(t, 10, "d1", 3), now)
	b.add(&kgo.Record{Topic: "raw", Offset: 11, Value: []byte("{")}, now)
	b.add(metRec(5, "d1", 1_764_252_000_000_000, 2), now)
	b.add(metRec(6, "d1", 1_764_252_000_000_000, 3), now) // supersedes offset 5
	b.add(metRec(7, "d1", 1_764_252_000_000_000, 1), now) // superseded by offset 6
	b.add(metRec(8, "d2", 1_764_252_000_000_000, 1), now)
	b.add(&kgo.Record{Topic: "other", Offset: 1, Value: []byte("{}")}, now)

	if got, want := len(b.readings), 3; got != want {
		t.Fatalf("readings rows = %d, want %d", got, want)
	}
	if b.rows != 3+4 {
		t.Fatalf("rows = %d, want 7", b.rows)
	}
	wantKinds := []recKind{kindReading, kindInvalid, kindMetric, kindMetric, kindMetric, kindMetric, kindInvalid}
	wantSup := []bool{false, false, true, false, true, false, false}
	for i, s := range b.srcs {
		if s.kind != wantKinds[i] || s.superseded != wantSup[i] {
			t.Errorf("record %d: kind %d superseded %t, want %d %t", i, s.kind, s.superseded, wantKinds[i], wantSup[i])
		}
	}
	parts := b.partitions()
	if parts[tp{"raw", 0}] != [2]int64{10, 11} || parts[tp{"met", 1}] != [2]int64{5, 8} {
		t.Fatalf("partitions = %v", parts)
	}
	b.reset()
	if !b.empty() || b.rows != 0 || len(b.metricIdx) != 0 {
		t.Fatal("reset left state behind")
	}
}

func TestReadingSource(t *testing.T) {
	b := newBatch("raw", "met", "")
	b.add(rawRec(t, 1, "d1", 2), time.Now())
	b.add(metRec(2, "d1", 1_764_252_000_000_000, 1), time.Now())
	b.add(rawRec(t, 3, "d2", 3), time.Now())
	b.add(rawRec(t, 4, "d0", 1), time.Now())
	src := &readingSource{b: b, idxs: []int{0, 1, 2, 3}, vals: make([]any, len(readingCols))}
	var got []string
	for src.Next() {
		v, _ := src.Values()
		got = append(got, fmt.Sprintf("%s/%s", v[1], v[2]))
		if v[4] != nil {
			t.Errorf("seq = %v, want NULL for a reading without seq", v[4])
		}
	}
	// Sorted by device and metric (then time), not in arrival order.
	if strings.Join(got, " ") != "d0/m0 d1/m0 d1/m1 d2/m0 d2/m1 d2/m2" {
		t.Fatalf("rows = %v", got)
	}
	src = &readingSource{b: b, idxs: []int{2}, vals: make([]any, len(readingCols))}
	n := 0
	for src.Next() {
		n++
	}
	if n != 3 {
		t.Fatalf("subset rows = %d, want 3", n)
	}
}

func TestIsDataError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "23514"}, true},                         // check violation
		{fmt.Errorf("copy: %w", &pgconn.PgError{Code: "22003"}), true}, // numeric out of range
		{&pgconn.PgError{Code: "22008"}, true},                         // datetime out of range
		{&pgconn.PgError{Code: "54000"}, true},                         // program limit
		{&pgconn.PgError{Code: "57P01"}, false},                        // admin shutdown: retry
		{&pgconn.PgError{Code: "40001"}, false},                        // serialization: retry
		{&pgconn.PgError{Code: "42501"}, false},                        // privilege: retry, operator fixes
		{errors.New("dial tcp: connection refused"), false},
	}
	for _, tt := range tests {
		if got := isDataError(tt.err); got != tt.want {
			t.Errorf("isDataError(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}

func TestUpsertSQL(t *testing.T) {
	got := upsertSQL(`"s"."device_activity"`, "stage", []string{"bucket", "device_id", "messages", "revision"}, "device_id, bucket")
	for _, want := range []string{
		`INSERT INTO "s"."device_activity" AS t (bucket, device_id, messages, revision, updated_at) SELECT bucket, device_id, messages, revision, now() FROM stage`,
		`ON CONFLICT (device_id, bucket) DO UPDATE SET messages = EXCLUDED.messages, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at WHERE t.revision < EXCLUDED.revision`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("upsert SQL\n%s\nlacks\n%s", got, want)
		}
	}
}

func TestDeadLetters(t *testing.T) {
	b := newBatch("raw", "met", "")
	b.add(&kgo.Record{Topic: "raw", Partition: 2, Offset: 42, Key: []byte("d1"), Value: []byte("{")}, time.Now())
	now := time.Date(2026, 11, 27, 14, 0, 0, 123456789, time.UTC)
	recs := deadLetters(b, []rejection{{0, schemas.ReasonInvalidRecord, "bad"}}, "dlq", now)
	if len(recs) != 1 || recs[0].Topic != "dlq" {
		t.Fatalf("records = %+v", recs)
	}
	d, err := schemas.RecordDeadLetter(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != schemas.ReasonInvalidRecord || d.Stage != schemas.StageSinkTimescale || d.SourceTopic != "raw" ||
		d.SourcePartition != 2 || d.SourceOffset != 42 || string(d.Value) != "{" || string(d.Key) != "d1" || d.Error != "bad" {
		t.Fatalf("dead letter = %+v", d)
	}
}

// TestBatchAddAlerts: alert records decode into alerts; a record that does
// not validate is kept for the DLQ with the decoder's reason; with no
// alerts topic, a record from it is unexpected.
func TestBatchAddAlerts(t *testing.T) {
	a := &schemas.Alert{SchemaVersion: 1, EventID: "e1", State: schemas.AlertFiring, RuleID: "hot", Kind: "reading",
		Severity: "critical", DeviceID: "d1", Metric: "temp", Operator: ">", Value: 95, Threshold: 90,
		EventTime: time.UnixMicro(1_764_252_000_000_000).UTC()}
	v, err := schemas.EncodeAlert(a)
	if err != nil {
		t.Fatal(err)
	}
	b := newBatch("raw", "met", "alerts")
	now := time.Now()
	b.add(&kgo.Record{Topic: "alerts", Offset: 1, Value: v}, now)
	b.add(&kgo.Record{Topic: "alerts", Offset: 2, Value: []byte(`{"schema_version":1,"event_id":"e2","state":"MAYBE"}`)}, now)
	if len(b.alerts) != 1 || b.alerts[0].EventID != "e1" || b.rows != 1 {
		t.Fatalf("alerts %v rows %d", b.alerts, b.rows)
	}
	if s := b.srcs[0]; s.kind != kindAlert || s.lo != 0 || s.hi != 1 {
		t.Fatalf("alert source %+v", s)
	}
	if s := b.srcs[1]; s.kind != kindInvalid || !strings.Contains(s.err, "MAYBE") {
		t.Fatalf("invalid alert source %+v", s)
	}
	b.reset()
	if len(b.alerts) != 0 {
		t.Fatal("reset kept alerts")
	}
	nb := newBatch("raw", "met", "")
	nb.add(&kgo.Record{Topic: "alerts", Offset: 1, Value: v}, now)
	if nb.srcs[0].kind != kindInvalid || len(nb.alerts) != 0 {
		t.Fatalf("alerts record without an alerts topic: %+v", nb.srcs[0])
	}
}

// A bridge heartbeat in the stored raw topic is no reading: no row, not
// invalid (no dead letter), its offset consumed like any other's.
func TestBatchSkipsHeartbeats(t *testing.T) {
	b := newBatch("raw", "met", "")
	now := time.Now()
	hb := schemas.HeartbeatRecord("raw", 0, schemas.Heartbeat{Bridge: "b1", Time: now})
	hb.Offset = 12
	b.add(rawRec(t, 11, "d1", 2), now)
	b.add(hb, now)
	b.add(rawRec(t, 13, "d1", 1), now)
	if len(b.readings) != 3 || b.rows != 3 || len(b.srcs) != 3 {
		t.Fatalf("rows %d (%d readings), sources %d; want 3, 3, 3", b.rows, len(b.readings), len(b.srcs))
	}
	if s := b.srcs[1]; s.kind != kindReading || s.lo != s.hi {
		t.Fatalf("heartbeat source %+v, want a reading source without rows", s)
	}
}
