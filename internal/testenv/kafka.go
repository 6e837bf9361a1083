package testenv

// Kafka over SASL_SSL: every client a test builds, and every stage it runs,
// authenticates with a principal of its own. The admin (a super user)
// creates topics and reads results; each stage runs as a test principal
// that has its stage's operations (bridge: write; processor: read, write,
// its transactions; sinks: read, write dead letters) on every topic and
// group ("*" ACLs, since each test names its own), granted once per
// cluster and test process by the same code as `iotpipe init --kafka-acls`.
// The exact per-name ACLs of init are what the ACL tests check.

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
	"github.com/iotpipe/iotpipe/internal/kafkax"
)

// Kafka principals of KafkaConfig and KafkaEnv.
const (
	// Admin is the super user of the services (IOTPIPE_KAFKA_SASL_*).
	Admin = "admin"
	// The stages' test principals (IOTPIPE_KAFKA_<STAGE>_PASSWORD).
	Bridge         = kafkaacl.StageBridge
	Processor      = kafkaacl.StageProcessor
	SinkLake       = kafkaacl.StageSinkLake
	SinkTimescale  = kafkaacl.StageSinkTimescale
	Notify         = kafkaacl.StageNotify
	ShadowConsumer = kafkaacl.StageShadow
	Alert          = kafkaacl.StageAlert
)

// KafkaSecurity is how the services' Kafka is reached besides its brokers.
type KafkaSecurity struct {
	TLS       bool
	CAFile    string
	Mechanism string
	// Username and Password are the admin's (a super user).
	Username, Password string
	// Stages are the stages' credentials, keyed by Bridge, Processor, ...
	Stages map[string]kafkaacl.Credentials
	// PlainStageBrokers, when set, is a PLAINTEXT listener of the same
	// brokers: KafkaConfig gives every stage principal these brokers
	// without TLS or SASL (User:ANONYMOUS, with the stages' test grants),
	// while the admin stays on SASL_SSL (StartKafkaSecBench).
	PlainStageBrokers []string
}

// loadKafkaSecurity reads IOTPIPE_KAFKA_TLS, _CA_FILE, _SASL_* and the
// stages' _<STAGE>_USERNAME/_PASSWORD; get records what is missing.
// IOTPIPE_KAFKA_TLS=false (a PLAINTEXT broker of the benchmark) needs
// nothing else.
func loadKafkaSecurity(lookup, get func(string) string) KafkaSecurity {
	if lookup("IOTPIPE_KAFKA_TLS") == "false" {
		return KafkaSecurity{}
	}
	s := KafkaSecurity{
		TLS:       get("IOTPIPE_KAFKA_TLS") == "true",
		CAFile:    get("IOTPIPE_KAFKA_CA_FILE"),
		Mechanism: get("IOTPIPE_KAFKA_SASL_MECHANISM"),
		Username:  get("IOTPIPE_KAFKA_SASL_USERNAME"),
		Password:  get("IOTPIPE_KAFKA_SASL_PASSWORD"),
		Stages:    map[string]kafkaacl.Credentials{},
	}
	for _, st := range kafkaacl.Stages {
		v := "IOTPIPE_KAFKA_" + strings.ToUpper(strings.ReplaceAll(st, "-", "_"))
		s.Stages[st] = kafkaacl.Credentials{User: get(v + "_USERNAME"), Password: get(v + "_PASSWORD")}
	}
	return s
}

// testUser is the SCRAM user of a stage's test principal: the stage's
// user with a "test-" prefix, so that the "*" grants of the tests never
// widen the principals `iotpipe init --kafka-acls` manages.
func testUser(user string) string { return "test-" + user }

// KafkaConfig returns the connection of principal (Admin, Bridge,
// Processor, SinkLake, SinkTimescale) to the services' Kafka; a stage's
// test principal is created with its grants first (once per cluster).
func (e *Env) KafkaConfig(t testing.TB, principal string) kafkax.Config {
	t.Helper()
	c := kafkax.DefaultConfig("iotpipe-test-" + principal)
	c.Brokers = e.KafkaBrokers
	s := e.KafkaSec
	c.TLS = kafkax.TLS{Enabled: s.TLS, CAFile: s.CAFile}
	if s.Username == "" { // PLAINTEXT (benchmark baseline)
		return c
	}
	c.SASL = kafkax.SASL{Mechanism: s.Mechanism, Username: s.Username, Password: s.Password}
	if principal == Admin {
		return c
	}
	cred, ok := s.Stages[principal]
	if !ok {
		t.Fatalf("testenv: unknown Kafka principal %q (want %s or one of %v)", principal, Admin, kafkaacl.Stages)
	}
	if len(s.PlainStageBrokers) > 0 {
		c.Brokers, c.TLS, c.SASL = s.PlainStageBrokers, kafkax.TLS{}, kafkax.DefaultConfig("").SASL // no username: no SASL
		return c
	}
	e.ensureTestPrincipals(t)
	c.SASL = kafkax.SASL{Mechanism: kafkax.MechanismSCRAMSHA512, Username: testUser(cred.User), Password: cred.Password}
	return c
}

// KafkaPlainAdmin is the admin's connection with SASL PLAIN (for kcat).
func (e *Env) KafkaPlainAdmin(t testing.TB) kafkax.Config {
	t.Helper()
	c := e.KafkaConfig(t, Admin)
	if c.SASL.Enabled() {
		c.SASL.Mechanism = kafkax.MechanismPlain
	}
	return c
}

// KafkaEnv returns the IOTPIPE_KAFKA_* variables of principal's
// connection (see KafkaConfig), for a child process; they come after
// Environ's, which they override.
func (e *Env) KafkaEnv(t testing.TB, principal string) []string {
	t.Helper()
	return KafkaConfigEnv(e.KafkaConfig(t, principal))
}

// KafkaConfigEnv returns the IOTPIPE_KAFKA_* variables that give c to a
// child process.
func KafkaConfigEnv(c kafkax.Config) []string {
	return []string{
		"IOTPIPE_KAFKA_BROKERS=" + strings.Join(c.Brokers, ","),
		"IOTPIPE_KAFKA_TLS=" + strconv.FormatBool(c.TLS.Enabled),
		"IOTPIPE_KAFKA_CA_FILE=" + c.TLS.CAFile,
		"IOTPIPE_KAFKA_SASL_MECHANISM=" + c.SASL.Mechanism,
		"IOTPIPE_KAFKA_SASL_USERNAME=" + c.SASL.Username,
		"IOTPIPE_KAFKA_SASL_PASSWORD=" + c.SASL.Password,
	}
}

// KafkaCLIArgs returns the command-line flags that give c to `iotpipe`.
func KafkaCLIArgs(c kafkax.Config) []string {
	return []string{"--kafka-brokers", strings.Join(c.Brokers, ","), "--kafka-tls=" + strconv.FormatBool(c.TLS.Enabled),
		"--kafka-ca-file", c.TLS.CAFile, "--kafka-sasl-mechanism", c.SASL.Mechanism,
		"--kafka-sasl-username", c.SASL.Username, "--kafka-sasl-password", c.SASL.Password}
}

// KCatArgs returns kcat's (librdkafka's) settings for c. librdkafka 2.0.2
// (Debian's kcat) fails SCRAM against Kafka 4.1, so give it the admin with
// mechanism PLAIN (over TLS), which scripts/services.sh enables for the
// admin alone.
func KCatArgs(c kafkax.Config) []string {
	args := []string{"-b", strings.Join(c.Brokers, ",")}
	if c.TLS.Enabled {
		args = append(args, "-X", "ssl.ca.location="+c.TLS.CAFile)
	}
	switch {
	case c.TLS.Enabled && c.SASL.Enabled():
		args = append(args, "-X", "security.protocol=SASL_SSL")
	case c.TLS.Enabled:
		args = append(args, "-X", "security.protocol=SSL")
	case c.SASL.Enabled():
		args = append(args, "-X", "security.protocol=SASL_PLAINTEXT")
	}
	if c.SASL.Enabled() {
		args = append(args, "-X", "sasl.mechanisms="+c.SASL.Mechanism, "-X", "sasl.username="+c.SASL.Username, "-X", "sasl.password="+c.SASL.Password)
	}
	return args
}

var (
	principalsMu   sync.Mutex
	principalsDone = map[string]bool{} // by broker list
)

// ensureTestPrincipals creates the stages' test principals and their "*"
// grants on this cluster, once per test process.
func (e *Env) ensureTestPrincipals(t testing.TB) {
	t.Helper()
	key := strings.Join(e.KafkaBrokers, ",")
	principalsMu.Lock()
	defer principalsMu.Unlock()
	if principalsDone[key] {
		return
	}
	users := map[string]kafkaacl.Credentials{}
	for st, c := range e.KafkaSec.Stages {
		users[st] = kafkaacl.Credentials{User: testUser(c.User), Password: c.Password}
	}
	e.ensurePrincipals(t, kafkaacl.StagePrincipals(testNames, users))
	principalsDone[key] = true
}

// testNames are the names of the test principals' grants: every topic
// and group (each test names its own).
var testNames = kafkaacl.PipelineNames{
	Raw: "*", Readings: "*", Metrics: "*", DLQ: "*", Changelog: "*",
	ProcessorGroup: "*", LakeGroup: "*", TimescaleGroup: "*",
	Alerts: "*", Shadow: "*", NotifyGroup: "*", ShadowGroup: "*",
	TransactionalIDPrefix: "iotpipe-processor.", // processor.Config.TransactionalID
	AlertChangelog:        "*", AlertGroup: "*",
	AlertTransactionalIDPrefix: "iotpipe-alert.", // alert.TransactionalIDPrefix
}

// ensurePrincipals creates ps's users and grants as the admin.
func (e *Env) ensurePrincipals(t testing.TB, ps []kafkaacl.Principal) {
	t.Helper()
	admin := e.KafkaConfig(t, Admin)
	cl, err := kgo.NewClient(admin.Opts()...)
	if err != nil {
		t.Fatalf("kafka admin client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := kafkaacl.EnsurePrincipals(ctx, kadm.NewClient(cl), admin, ps); err != nil {
		t.Fatalf("testenv: Kafka principals on %s: %v", strings.Join(e.KafkaBrokers, ","), admin.Explain(err))
	}
}

// KafkaVars is KafkaEnv as a map, for tests that keep their variables in
// one.
func (e *Env) KafkaVars(t testing.TB, principal string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range e.KafkaEnv(t, principal) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}
