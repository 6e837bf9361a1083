//go:build integration

package main

import (
	"bytes"
	"context"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas/migrations"
)

// initEnv is the environment `iotpipe init` sees in these tests: the real
// services, with a unique topic prefix, bucket and schema for this test.
func initEnv(t *testing.T, env *testenv.Env) (vars map[string]string, topics []string, bucket, schema string) {
	prefix := testenv.Name(t, "t")
	topics = []string{prefix + ".raw", prefix + ".metrics", prefix + ".dlq", prefix + ".changelog", prefix + ".readings", prefix + ".alerts", prefix + ".shadow", prefix + ".alertchangelog"}
	bucket = env.BucketName(t)
	schema = env.Schema(t)
	t.Cleanup(func() {
		adm := kadm.NewClient(env.Kafka(t))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topics...)
	})
	vars = map[string]string{
		"IOTPIPE_TOPIC_RAW":                 topics[0],
		"IOTPIPE_TOPIC_METRICS":             topics[1],
		"IOTPIPE_TOPIC_DLQ":                 topics[2],
		"IOTPIPE_TOPIC_PROCESSOR_CHANGELOG": topics[3],
		"IOTPIPE_TOPIC_READINGS":            topics[4],
		"IOTPIPE_TOPIC_ALERTS":              topics[5],
		"IOTPIPE_TOPIC_SHADOW":              topics[6],
		"IOTPIPE_TOPIC_ALERT_CHANGELOG":     topics[7],
		"IOTPIPE_RAW_PARTITIONS":            "4",
		"IOTPIPE_METRICS_PARTITIONS":        "2",
		"IOTPIPE_DLQ_PARTITIONS":            "1",
		"IOTPIPE_PG_DSN":                    env.PGDSN,
		"IOTPIPE_PG_SCHEMA":                 schema,
		"IOTPIPE_S3_ENDPOINT":               env.S3Config.Endpoint,
		"IOTPIPE_S3_ACCESS_KEY":             env.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY":             env.S3Config.SecretKey,
		"IOTPIPE_S3_REGION":                 env.S3Config.Region,
		"IOTPIPE_S3_BUCKET":                 bucket,
	}
	// The CA file, and the root key that makes the bucket and hands it to
	// the lake's key (IOTPIPE_S3_BUCKET_OWNER).
	for k, v := range env.S3Vars() {
		vars[k] = v
	}
	maps.Copy(vars, env.KafkaVars(t, testenv.Admin)) // init runs as Kafka's super user
	return vars, topics, bucket, schema
}

func runInitWith(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(testenv.Context(t, 2*time.Minute), Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }}, append([]string{"init"}, args...))
	t.Logf("iotpipe init %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestInitTwiceIsIdempotent(t *testing.T) {
	env := testenv.Load(t)
	vars, topics, bucket, schema := initEnv(t, env)

	code, out, _ := runInitWith(t, vars)
	if code != ExitOK {
		t.Fatalf("first init failed")
	}
	if strings.Count(out, ": created") != len(topics)+1 {
		t.Fatalf("first init should create %d topics and the bucket:\n%s", len(topics), out)
	}

	ctx := testenv.Context(t, time.Minute)
	adm := env.KafkaAdmin(t)
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{topics[0]: 4, topics[1]: 2, topics[2]: 1, topics[3]: 4, topics[4]: 4, topics[5]: 4, topics[6]: 4, topics[7]: 4}
	for name, n := range want {
		d, ok := details[name]
		if !ok || d.Err != nil {
			t.Fatalf("topic %s missing: %v", name, d.Err)
		}
		if len(d.Partitions) != n {
			t.Errorf("topic %s has %d partitions, want %d", name, len(d.Partitions), n)
		}
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topics[3])
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := rcs.On(topics[3], nil)
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.MaybeValue() != "compact" {
			t.Errorf("changelog cleanup.policy = %q, want compact", c.MaybeValue())
		}
	}
	if ok, err := env.S3(t).BucketExists(ctx, bucket); err != nil || !ok {
		t.Fatalf("bucket %s exists=%v err=%v", bucket, ok, err)
	}
	pg := env.PG(t)
	conn, err := pg.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	version, flavor, err := migrations.Status(ctx, conn.Conn(), schema)
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	if version != migrations.Latest() {
		t.Fatalf("schema at version %d, latest is %d", version, migrations.Latest())
	}
	t.Logf("schema %s at version %d, flavor %s", schema, version, flavor)

	code, out, _ = runInitWith(t, vars)
	if code != ExitOK {
		t.Fatalf("second init failed")
	}
	if strings.Contains(out, "created") || strings.Contains(out, "applied") || strings.Contains(out, "updated") {
		t.Fatalf("second init changed something:\n%s", out)
	}
	if !strings.Contains(out, "nothing to change") {
		t.Fatalf("second init does not say it changed nothing:\n%s", out)
	}

	// A drifted topic config is restored, and said so.
	v := "60000"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, topics[0]); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runInitWith(t, vars)
	if code != ExitOK || !strings.Contains(out, topics[0]+" (4 partitions): updated retention.ms=") {
		t.Fatalf("drifted retention not restored:\n%s", out)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestInitFailsFastNamingTheSetting(t *testing.T) {
	env := testenv.Load(t)
	cases := []struct {
		name     string
		override map[string]string
		want     string
	}{
		{"unreachable kafka", map[string]string{"IOTPIPE_KAFKA_BROKERS": closedPort(t)}, "--kafka-brokers (IOTPIPE_KAFKA_BROKERS="},
		{"wrong database password", map[string]string{"IOTPIPE_SKIP": "kafka,s3", "IOTPIPE_PG_DSN": strings.Replace(env.PGDSN, ":iotpipe-dev@", ":wrong@", 1)}, "--pg-dsn (IOTPIPE_PG_DSN)"},
		{"unreachable database", map[string]string{"IOTPIPE_SKIP": "kafka,s3", "IOTPIPE_PG_DSN": "postgres://iotpipe:x@" + closedPort(t) + "/iotpipe?sslmode=disable"}, "--pg-dsn (IOTPIPE_PG_DSN)"},
		{"unreachable s3", map[string]string{"IOTPIPE_SKIP": "kafka,postgres", "IOTPIPE_S3_ENDPOINT": "http://" + closedPort(t)}, "--s3-endpoint (IOTPIPE_S3_ENDPOINT="},
		{"wrong s3 secret", map[string]string{"IOTPIPE_SKIP": "kafka,postgres", "IOTPIPE_S3_SECRET_KEY": "wrong-secret"}, "--s3-access-key/--s3-secret-key"},
		{"wrong s3 admin secret", map[string]string{"IOTPIPE_SKIP": "kafka,postgres", "IOTPIPE_S3_ADMIN_SECRET_KEY": "wrong-secret"}, "--s3-admin-access-key/--s3-admin-secret-key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vars, _, _, _ := initEnv(t, env)
			vars["IOTPIPE_TIMEOUT"] = "5s"
			for k, v := range tc.override {
				vars[k] = v
			}
			start := time.Now()
			code, _, errOut := runInitWith(t, vars)
			took := time.Since(start)
			if code != ExitFailed {
				t.Fatalf("exit %d, want %d", code, ExitFailed)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("error does not name %q: %s", tc.want, errOut)
			}
			if took > 15*time.Second {
				t.Fatalf("took %s to fail; want within seconds", took)
			}
			if strings.Contains(errOut, "iotpipe-dev") || strings.Contains(errOut, env.S3Config.SecretKey) || strings.Contains(errOut, "wrong-secret") {
				t.Fatalf("error leaks a secret: %s", errOut)
			}
		})
	}
}
