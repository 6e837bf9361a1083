//go:build integration

package main

// Kafka principals and ACLs, end to end: `iotpipe init --kafka-acls`
// creates each stage's principal with exactly its ACLs (on this test's own
// topics and groups, under users of its own), each stage runs with its
// own principal, and a stage given another stage's principal stops at
// once with one line naming --kafka-sasl-username and what Kafka denied.

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// aclFixture is a pipeline's worth of topics and groups, and the
// principals init created for them.
type aclFixture struct {
	env                                    *testenv.Env
	raw, readings, metrics, dlq, changelog string
	alerts, alertChangelog, shadow         string
	schema                                 string
	groups                                 map[string]string // by stage
	users                                  map[string]kafkaacl.Credentials
	lakeBucket                             string
}

func newACLFixture(t *testing.T) *aclFixture {
	t.Helper()
	env := testenv.Load(t)
	f := &aclFixture{env: env, raw: env.Topic(t, 2, nil), readings: env.Topic(t, 2, nil), metrics: env.Topic(t, 2, nil),
		dlq: env.Topic(t, 1, nil), changelog: env.Topic(t, 2, map[string]string{"cleanup.policy": "compact"}),
		alerts: env.Topic(t, 2, nil), alertChangelog: env.Topic(t, 2, map[string]string{"cleanup.policy": "compact"}), shadow: env.Topic(t, 2, nil),
		schema: env.Schema(t), groups: map[string]string{}, users: map[string]kafkaacl.Credentials{}}
	id := testenv.Name(t, "u")
	vars := map[string]string{}
	for _, st := range kafkaacl.Stages {
		f.groups[st] = env.Group(t)
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		f.users[st] = kafkaacl.Credentials{User: id + "-" + st, Password: hex.EncodeToString(b[:])}
		v := "IOTPIPE_KAFKA_" + strings.ToUpper(strings.ReplaceAll(st, "-", "_"))
		vars[v+"_USERNAME"], vars[v+"_PASSWORD"] = f.users[st].User, f.users[st].Password
	}
	for k, v := range env.KafkaVars(t, testenv.Admin) {
		vars[k] = v
	}
	for k, v := range map[string]string{
		"IOTPIPE_SKIP": "s3", "IOTPIPE_KAFKA_ACLS": "true", "IOTPIPE_PG_DSN": env.PGDSN, "IOTPIPE_PG_SCHEMA": f.schema,
		"IOTPIPE_TOPIC_RAW": f.raw, "IOTPIPE_TOPIC_READINGS": f.readings, "IOTPIPE_TOPIC_METRICS": f.metrics,
		"IOTPIPE_TOPIC_DLQ": f.dlq, "IOTPIPE_TOPIC_PROCESSOR_CHANGELOG": f.changelog,
		"IOTPIPE_RAW_PARTITIONS": "2", "IOTPIPE_METRICS_PARTITIONS": "2", "IOTPIPE_DLQ_PARTITIONS": "1",
		"IOTPIPE_PROCESSOR_GROUP": f.groups[kafkaacl.StageProcessor], "IOTPIPE_SINK_LAKE_GROUP": f.groups[kafkaacl.StageSinkLake],
		"IOTPIPE_SINK_TIMESCALE_GROUP": f.groups[kafkaacl.StageSinkTimescale],
		"IOTPIPE_NOTIFY_GROUP":         f.groups[kafkaacl.StageNotify], "IOTPIPE_SHADOW_CONSUMER_GROUP": f.groups[kafkaacl.StageShadow],
		"IOTPIPE_TOPIC_ALERTS": f.alerts, "IOTPIPE_TOPIC_SHADOW": f.shadow,
		"IOTPIPE_TOPIC_ALERT_CHANGELOG": f.alertChangelog, "IOTPIPE_ALERT_GROUP": f.groups[kafkaacl.StageAlert],
	} {
		vars[k] = v
	}
	c := &cli{t: t, vars: vars}
	out := c.ok("init")
	for _, st := range kafkaacl.Stages {
		if !strings.Contains(out, "principal User:"+f.users[st].User+" ("+st+"): credentials created, created ACLs:") {
			t.Fatalf("init --kafka-acls did not report creating %s's principal:\n%s", st, out)
		}
	}
	if out := c.ok("init"); !strings.Contains(out, "nothing to change") || strings.Contains(out, "created ACLs") {
		t.Fatalf("second init --kafka-acls changed something:\n%s", out)
	}
	return f
}

// as returns the variables of a stage process running as principal of
// stage who, with this fixture's topics and the group of stage.
func (f *aclFixture) as(t *testing.T, stage, who string) []string {
	t.Helper()
	c := f.env.KafkaConfig(t, testenv.Admin)
	c.SASL = kafkax.SASL{Mechanism: kafkax.MechanismSCRAMSHA512, Username: f.users[who].User, Password: f.users[who].Password}
	raw := "IOTPIPE_TOPIC_RAW=" + f.raw // the sinks read readings and metrics only
	if strings.HasPrefix(stage, "sink") {
		raw = "IOTPIPE_TOPIC_READINGS=" + f.readings
	}
	var extra []string
	switch stage {
	case "notify":
		extra = []string{"IOTPIPE_TOPIC_ALERTS=" + f.alerts}
	case "shadow-consumer":
		dsn := os.Getenv("IOTPIPE_PG_REGISTRY_DSN") // scripts/services.sh env
		if dsn == "" {
			t.Fatal("IOTPIPE_PG_REGISTRY_DSN is not set: eval \"$(scripts/services.sh env)\"")
		}
		extra = []string{"IOTPIPE_TOPIC_SHADOW=" + f.shadow, "IOTPIPE_PG_REGISTRY_DSN=" + dsn}
	}
	return append(append(testenv.KafkaConfigEnv(c), extra...), append(f.env.Environ()[:0:0],
		raw, "IOTPIPE_TOPIC_READINGS="+f.readings, "IOTPIPE_TOPIC_METRICS="+f.metrics,
		"IOTPIPE_TOPIC_DLQ="+f.dlq, "IOTPIPE_TOPIC_PROCESSOR_CHANGELOG="+f.changelog, "IOTPIPE_TOPIC_ALERTS="+f.alerts,
		"IOTPIPE_GROUP="+f.groups[stage], "IOTPIPE_INSTANCE_ID="+f.groups[stage]+"-0",
		"IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_LOG_FORMAT=text",
		"IOTPIPE_MQTT_URL="+f.env.MQTTURL, "IOTPIPE_MQTT_USERNAME="+f.env.MQTTUsername, "IOTPIPE_MQTT_PASSWORD="+f.env.MQTTPassword,
		"IOTPIPE_MQTT_CLIENT_ID="+f.groups[stage],
		"IOTPIPE_S3_ENDPOINT="+f.env.S3Config.Endpoint, "IOTPIPE_S3_ACCESS_KEY="+f.env.S3Config.AccessKey,
		"IOTPIPE_S3_SECRET_KEY="+f.env.S3Config.SecretKey, "IOTPIPE_S3_REGION="+f.env.S3Config.Region,
		"IOTPIPE_S3_BUCKET="+f.bucket(t), "IOTPIPE_S3_CA_FILE="+f.env.S3Config.CAFile,
		"IOTPIPE_PG_WRITER_DSN="+f.env.PGWriterDSN, "IOTPIPE_PG_SCHEMA="+f.schema,
		"IOTPIPE_TOPIC_ALERTS="+f.alerts, "IOTPIPE_TOPIC_ALERT_CHANGELOG="+f.alertChangelog, "IOTPIPE_PG_READER_DSN="+f.env.PGReaderDSN,
	)...)
}

// denied runs stage as principal who and checks that it exits at once
// (exit 2) with one line naming the flag, the principal and what Kafka
// denied.
func (f *aclFixture) denied(t *testing.T, who string, wantDenied string, args ...string) {
	t.Helper()
	stage := strings.Join(args, "-")
	p := testenv.StartProc(t, stage+" as "+who, f.as(t, stage, who), args...)
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s as %s did not stop on the denial within 60s\n%s", stage, who, p.Tail(20))
	}
	code := p.ExitCode()
	var line string
	for _, l := range strings.Split(strings.TrimSpace(p.Tail(20)), "\n") {
		if strings.HasPrefix(l, "iotpipe ") {
			line = l
		}
	}
	t.Logf("%s as %s: exit %d: %s", stage, who, code, line)
	for _, want := range []string{"--kafka-sasl-username (IOTPIPE_KAFKA_SASL_USERNAME)", "denied by a Kafka ACL",
		`principal "` + f.users[who].User + `"`, wantDenied} {
		if code != ExitUsage || !strings.Contains(line, want) {
			t.Fatalf("%s as %s: exit %d, want %d and a line with %q:\n%s", stage, who, code, ExitUsage, want, p.Tail(20))
		}
	}
}

// runs starts stage as its own principal and waits for the log line that
// says it works.
func (f *aclFixture) runs(t *testing.T, line string, args ...string) {
	t.Helper()
	stage := strings.Join(args, "-")
	p := testenv.StartProc(t, stage, f.as(t, stage, stage), args...)
	p.WaitLine(line, 60*time.Second)
	p.StopClean(30 * time.Second)
}

func TestKafkaACLBridge(t *testing.T) {
	f := newACLFixture(t)
	// The lake sink's principal may not even see the raw topic.
	f.denied(t, kafkaacl.StageSinkLake, "describe topics "+f.raw+" and "+f.dlq, "bridge")
}

func TestKafkaACLProcessor(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "restored state", "processor")
	// The bridge's principal may write raw but not read it, join the
	// group or use a transactional id.
	f.denied(t, kafkaacl.StageBridge, "initialise the transactional producer (transactional id iotpipe-processor."+f.groups[kafkaacl.StageProcessor], "processor")
}

func TestKafkaACLSinkLake(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "partition assigned", "sink", "lake")
	// The TimescaleDB sink's principal reads the same topics, in another
	// group.
	f.denied(t, kafkaacl.StageSinkTimescale, "join consumer group "+f.groups[kafkaacl.StageSinkLake], "sink", "lake")
}

func TestKafkaACLSinkTimescale(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "partitions assigned", "sink", "timescale")
	// The bridge's principal may not read.
	f.denied(t, kafkaacl.StageBridge, "read (consume) topic", "sink", "timescale")
}

func TestKafkaACLAlert(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "restored state", "alert")
	// The processor's principal reads raw and runs transactions, but
	// under its own transactional-id prefix only.
	f.denied(t, kafkaacl.StageProcessor, "use of the transactional id", "alert")
	// The notify principal may not even read raw nor join the alert group.
	f.denied(t, kafkaacl.StageNotify, "Kafka denied", "alert")
}

func TestKafkaACLNotify(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "partitions assigned", "notify")
	// The shadow consumer's principal reads another topic: it may not
	// read the alerts.
	f.denied(t, kafkaacl.StageShadow, "read (consume) topic "+f.alerts+" in consumer group "+f.groups[kafkaacl.StageNotify], "notify")
}

func TestKafkaACLShadowConsumer(t *testing.T) {
	f := newACLFixture(t)
	f.runs(t, "partitions assigned", "shadow-consumer")
	// notify's principal reads the alerts: it may not read the shadow
	// requests.
	f.denied(t, kafkaacl.StageNotify, "read (consume) topic "+f.shadow+" in consumer group "+f.groups[kafkaacl.StageShadow], "shadow-consumer")
}

// bucket is a bucket of this test handed to the lake's S3 key (made on
// first use).
func (f *aclFixture) bucket(t *testing.T) string {
	if f.lakeBucket == "" {
		f.lakeBucket = f.env.Bucket(t)
	}
	return f.lakeBucket
}
