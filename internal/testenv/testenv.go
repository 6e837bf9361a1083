package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/objstore"
)

// Env holds the addresses and credentials of the real services.
type Env struct {
	StateDir string

	MQTTURL            string
	MQTTUsername       string
	MQTTPassword       string
	MQTTDeviceUsername string
	MQTTDevicePassword string

	KafkaBrokers []string
	// KafkaSec is how Kafka is reached besides its brokers (TLS, the
	// admin's and the stages' SASL credentials); use KafkaConfig/KafkaEnv.
	KafkaSec KafkaSecurity

	PGDSN       string // schema owner, runs migrations
	PGWriterDSN string // sink role
	PGReaderDSN string // read-only role
	PGAdminDSN  string // superuser

	// S3Config is the lake sink's settings: its scoped key (it owns the
	// buckets Bucket makes), the https endpoint and the CA file.
	S3Config objstore.Config
	// S3Admin is S3Config with the store's root key, for setup only
	// (making buckets and handing them to S3Config's key); without
	// IOTPIPE_S3_ADMIN_ACCESS_KEY it is S3Config.
	S3Admin objstore.Config
	// S3BucketOwner is the user that gets the buckets (IOTPIPE_S3_BUCKET_OWNER,
	// default S3Config's key when an admin key is set).
	S3BucketOwner string
	// CAFile is the CA of the services' TLS certificates (IOTPIPE_PG_CA_FILE;
	// the DSNs name it in sslrootcert themselves).
	CAFile string
}

const howToStart = `integration tests need the real services: run 'make test', or 'scripts/services.sh up && eval "$(scripts/services.sh env)"' before 'go test -tags integration'`

// Load reads the service settings from the environment and fails the test
// when any is missing.
func Load(t testing.TB) *Env {
	t.Helper()
	var missing []string
	get := func(k string) string {
		v := os.Getenv(k)
		if v == "" {
			missing = append(missing, k)
		}
		return v
	}
	e := &Env{
		StateDir:           os.Getenv("IOTPIPE_STATE_DIR"),
		MQTTURL:            get("IOTPIPE_MQTT_URL"),
		MQTTUsername:       get("IOTPIPE_MQTT_USERNAME"),
		MQTTPassword:       get("IOTPIPE_MQTT_PASSWORD"),
		MQTTDeviceUsername: get("IOTPIPE_MQTT_DEVICE_USERNAME"),
		MQTTDevicePassword: get("IOTPIPE_MQTT_DEVICE_PASSWORD"),
		KafkaBrokers:       strings.Split(get("IOTPIPE_KAFKA_BROKERS"), ","),
		KafkaSec:           loadKafkaSecurity(os.Getenv, get),
		PGDSN:              get("IOTPIPE_PG_DSN"),
		PGWriterDSN:        get("IOTPIPE_PG_WRITER_DSN"),
		PGReaderDSN:        get("IOTPIPE_PG_READER_DSN"),
		PGAdminDSN:         get("IOTPIPE_PG_ADMIN_DSN"),
		S3Config: objstore.Config{
			Endpoint:  get("IOTPIPE_S3_ENDPOINT"),
			AccessKey: get("IOTPIPE_S3_ACCESS_KEY"),
			SecretKey: get("IOTPIPE_S3_SECRET_KEY"),
			Region:    get("IOTPIPE_S3_REGION"),
			Bucket:    get("IOTPIPE_S3_BUCKET"),
			CAFile:    os.Getenv("IOTPIPE_S3_CA_FILE"),
		},
		CAFile: os.Getenv("IOTPIPE_PG_CA_FILE"),
	}
	e.S3Admin = e.S3Config
	if k := os.Getenv("IOTPIPE_S3_ADMIN_ACCESS_KEY"); k != "" {
		e.S3Admin.AccessKey, e.S3Admin.SecretKey = k, os.Getenv("IOTPIPE_S3_ADMIN_SECRET_KEY")
		e.S3BucketOwner = os.Getenv("IOTPIPE_S3_BUCKET_OWNER")
		if e.S3BucketOwner == "" {
			e.S3BucketOwner = e.S3Config.AccessKey
		}
	}
	if len(missing) > 0 {
		t.Fatalf("missing %s; %s", strings.Join(missing, ", "), howToStart)
	}
	return e
}

// Context returns a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// Name returns a name unique to this test run: prefix, the test name
// reduced to [a-z0-9-] and a random suffix, at most 60 characters. It is
// valid as a Kafka topic, consumer group, bucket, SQL identifier (after
// replacing '-' by '_', see SchemaName) and MQTT topic level.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random name: %v", err)
	}
	suffix := hex.EncodeToString(b[:])
	maxBase := 60 - len(prefix) - len(suffix) - 2
	if len(base) > maxBase {
		base = strings.Trim(base[:maxBase], "-")
	}
	return prefix + "-" + base + "-" + suffix
}

// Eventually polls cond every interval until it returns nil or timeout
// passes; then the test fails with the last error cond returned.
func Eventually(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting: %v", err)
		case <-time.After(interval):
		}
	}
}

// WaitPort polls until a TCP connection to addr succeeds.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, 50*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// ---- Kafka ----

// Kafka returns a client of the real Kafka as the admin (a super user),
// closed when the test ends.
func (e *Env) Kafka(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return e.KafkaAs(t, Admin, opts...)
}

// KafkaAs returns a client of the real Kafka as principal (see
// KafkaConfig), closed when the test ends.
func (e *Env) KafkaAs(t testing.TB, principal string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c := e.KafkaConfig(t, principal)
	cl, err := kgo.NewClient(c.Opts(opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// KafkaAdmin returns an admin client of the real Kafka.
func (e *Env) KafkaAdmin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(e.Kafka(t))
}

// Topic creates a topic with a unique name and the given partitions,
// deleted when the test ends, and returns its name.
//
// Its records are never deleted by age (retention.ms -1 unless configs
// sets it): tests write fixed event times (e.g. 2026-11-27) as record
// timestamps, and the broker's time retention (7 days) deletes a segment
// whose newest timestamp is older at its next check (every 5 minutes),
// the active segment included. The topic then reads as empty: its start
// offset moves to its end, and a new consumer group starts there and
// waits for ever (issue 19's "stalled" exactly-once benchmark).
func (e *Env) Topic(t testing.TB, partitions int32, configs map[string]string) string {
	t.Helper()
	name := Name(t, "t")
	adm := e.KafkaAdmin(t)
	cfg := map[string]*string{}
	if _, ok := configs["retention.ms"]; !ok {
		keep := "-1"
		cfg["retention.ms"] = &keep
	}
	for k, v := range configs {
		cfg[k] = &v
	}
	ctx := Context(t, 30*time.Second)
	resp, err := adm.CreateTopic(ctx, partitions, 1, cfg, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, name)
	})
	return name
}

// Group returns a unique consumer group name.
func (e *Env) Group(t testing.TB) string { return Name(t, "g") }

// ---- PostgreSQL ----

// PG returns a connection pool as the schema owner (IOTPIPE_PG_DSN).
func (e *Env) PG(t testing.TB) *pgxpool.Pool { return e.pool(t, e.PGDSN) }

// PGAdmin returns a connection pool as the superuser.
func (e *Env) PGAdmin(t testing.TB) *pgxpool.Pool { return e.pool(t, e.PGAdminDSN) }

func (e *Env) pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	ctx := Context(t, 30*time.Second)
	p, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres pool: %v", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("postgres ping: %v; %s", err, howToStart)
	}
	t.Cleanup(p.Close)
	return p
}

// SchemaName returns a unique schema name (a valid unquoted identifier).
func SchemaName(t testing.TB) string {
	return strings.ReplaceAll(Name(t, "t"), "-", "_")
}

// Schema returns a unique schema name and drops that schema (with
// everything in it) when the test ends. It does not create it: the code
// under test (migrations) does.
func (e *Env) Schema(t testing.TB) string {
	t.Helper()
	name := SchemaName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// As the administrator (whoever created objects in it), but in the
		// pipeline's database: the admin DSN names the maintenance
		// database "postgres", where the schema is not.
		cfg, err := pgx.ParseConfig(e.PGAdminDSN)
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
			return
		}
		if own, err := pgx.ParseConfig(e.PGDSN); err == nil {
			cfg.Database = own.Database
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if err := QuiesceJobs(ctx, conn, name); err != nil {
			t.Logf("drop schema %s: %v; dropping it anyway", name, err)
		}
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// QuiesceJobs stops the TimescaleDB jobs (policies) of a schema before the
// schema is dropped: it waits (until ctx ends) until each scheduled job has
// had the first run TimescaleDB gives a new policy and none is running, then
// unschedules them. Dropping a schema while one of its jobs runs cancels the
// job, and TimescaleDB 2.28.3 has been seen to crash (SIGSEGV) in a refresh
// policy cancelled that way, which restarts the server under every other
// test. Without TimescaleDB in the database it does nothing.
func QuiesceJobs(ctx context.Context, conn *pgx.Conn, schema string) error {
	var tsdb bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL").Scan(&tsdb); err != nil || !tsdb {
		return err
	}
	for {
		rows, err := conn.Query(ctx, `
SELECT j.job_id, coalesce(s.job_status = 'Running', false) OR (j.scheduled AND coalesce(s.total_runs, 0) = 0)
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s USING (job_id)
LEFT JOIN timescaledb_information.continuous_aggregates ca
  ON j.hypertable_schema = ca.materialization_hypertable_schema AND j.hypertable_name = ca.materialization_hypertable_name
WHERE j.hypertable_schema = $1 OR ca.view_schema = $1`, schema)
		if err != nil {
			return fmt.Errorf("jobs of schema %s: %w", schema, err)
		}
		type job struct {
			id   int32
			busy bool
		}
		jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
			var j job
			err := r.Scan(&j.id, &j.busy)
			return j, err
		})
		if err != nil {
			return fmt.Errorf("jobs of schema %s: %w", schema, err)
		}
		busy := 0
		for _, j := range jobs {
			if j.busy {
				busy++
			}
		}
		if busy == 0 {
			for _, j := range jobs {
				if _, err := conn.Exec(ctx, "SELECT alter_job($1, scheduled => false)", j.id); err != nil {
					return fmt.Errorf("unschedule job %d: %w", j.id, err)
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d jobs of schema %s still running or not run yet: %w", busy, schema, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ---- S3 ----

// S3 returns a client of the real object store.
func (e *Env) S3(t testing.TB) *minio.Client {
	t.Helper()
	cl, err := objstore.New(e.S3Config)
	if err != nil {
		t.Fatalf("s3 client: %v", err)
	}
	return cl
}

// S3AdminClient returns a client with the store's root key (setup only).
func (e *Env) S3AdminClient(t testing.TB) *minio.Client {
	t.Helper()
	cl, err := objstore.New(e.S3Admin)
	if err != nil {
		t.Fatalf("s3 admin client: %v", err)
	}
	return cl
}

// BucketName returns a unique bucket name and removes that bucket and its
// objects (with the root key) when the test ends. It does not create it.
func (e *Env) BucketName(t testing.TB) string {
	t.Helper()
	name := Name(t, "t")
	cl := e.S3AdminClient(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if ok, err := cl.BucketExists(ctx, name); err != nil || !ok {
			return
		}
		for obj := range cl.ListObjects(ctx, name, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err == nil {
				_ = cl.RemoveObject(ctx, name, obj.Key, minio.RemoveObjectOptions{})
			}
		}
		if err := cl.RemoveBucket(ctx, name); err != nil {
			t.Logf("remove bucket %s: %v", name, err)
		}
	})
	return name
}

// Bucket creates a unique bucket with the root key, owned by the lake
// sink's key (S3BucketOwner) as `iotpipe init --s3-bucket-owner` leaves
// it, removed with its objects when the test ends, and returns its name.
func (e *Env) Bucket(t testing.TB) string {
	t.Helper()
	name := e.BucketName(t)
	ctx := Context(t, 30*time.Second)
	if err := e.S3AdminClient(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: e.S3Config.Region}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	if e.S3BucketOwner != "" {
		if _, err := objstore.ChangeBucketOwner(ctx, e.S3Admin, name, e.S3BucketOwner); err != nil {
			t.Fatalf("hand bucket %s to %s: %v", name, e.S3BucketOwner, err)
		}
	}
	return name
}

// ---- MQTT ----

// MQTTAddr returns the broker's host:port.
func (e *Env) MQTTAddr(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(e.MQTTURL)
	if err != nil || u.Host == "" {
		t.Fatalf("IOTPIPE_MQTT_URL %q: not a mqtt://host:port URL", e.MQTTURL)
	}
	return u.Host
}

// MQTTPrefix returns a unique first topic level for this test, so that
// tests sharing the broker never see each other's messages.
func (e *Env) MQTTPrefix(t testing.TB) string { return Name(t, "t") }

// MQTTClient connects an MQTT v5 client with the given credentials and a
// clean session, disconnected when the test ends. Messages received are
// passed to onPublish (may be nil).
func (e *Env) MQTTClient(t testing.TB, username, password string, onPublish func(paho.PublishReceived) (bool, error)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.MQTTAddr(t), 5*time.Second)
	if err != nil {
		t.Fatalf("mqtt dial: %v; %s", err, howToStart)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
	}
	c := paho.NewClient(cfg)
	ctx := Context(t, 10*time.Second)
	ack, err := c.Connect(ctx, &paho.Connect{
		ClientID:     Name(t, "c"),
		CleanStart:   true,
		KeepAlive:    30,
		Username:     username,
		UsernameFlag: true,
		Password:     []byte(password),
		PasswordFlag: true,
	})
	if err != nil {
		_ = conn.Close()
		t.Fatalf("mqtt connect as %s: %v", username, err)
	}
	if ack.ReasonCode != 0 {
		_ = conn.Close()
		t.Fatalf("mqtt connect as %s refused: reason %d", username, ack.ReasonCode)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c
}

// String describes the environment for test logs (no secrets).
func (e *Env) String() string {
	return fmt.Sprintf("mqtt=%s kafka=%s (tls %v, sasl %s) s3=%s", e.MQTTURL, strings.Join(e.KafkaBrokers, ","), e.KafkaSec.TLS, e.KafkaSec.Mechanism, e.S3Config.Endpoint)
}
