package testenv

import (
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
)

// AnonymousUser is the principal Kafka gives clients of a PLAINTEXT
// listener (User:ANONYMOUS).
const AnonymousUser = "ANONYMOUS"

// StartKafkaSecBench starts a private single-node Kafka (stopped and
// deleted when the test ends) with two client listeners on the same
// broker: SASL_SSL, as the services', and PLAINTEXT
// (IOTPIPE_KAFKA_PLAINTEXT_PORT). It returns two views of it: sasl, where
// every principal connects over SASL_SSL as usual, and plain, where the
// stage principals connect over PLAINTEXT as User:ANONYMOUS, which gets
// exactly the stages' test grants (the same "*" ACLs as the test
// principals, so both go through the same authorizer work), while the
// admin stays on SASL_SSL. One JVM, one page cache, one set of topics:
// the only difference between the two is the client transport, which is
// what the SASL_SSL-vs-PLAINTEXT benchmarks measure.
func StartKafkaSecBench(t testing.TB) (sasl, plain *Env) {
	t.Helper()
	p := StartPrivateWith(t, []string{"IOTPIPE_KAFKA_PLAINTEXT_PORT=" + freePort(t)}, "kafka")
	pb := p.vars()["IOTPIPE_KAFKA_PLAINTEXT_BROKERS"]
	if pb == "" {
		t.Fatal("testenv: scripts/services.sh env printed no IOTPIPE_KAFKA_PLAINTEXT_BROKERS for IOTPIPE_KAFKA_PLAINTEXT_PORT")
	}
	sasl = p.Env
	pe := *p.Env
	pe.KafkaSec.PlainStageBrokers = strings.Split(pb, ",")
	users := map[string]kafkaacl.Credentials{}
	for _, st := range kafkaacl.Stages {
		users[st] = kafkaacl.Credentials{User: AnonymousUser} // no password: ACLs only
	}
	sasl.ensurePrincipals(t, kafkaacl.StagePrincipals(testNames, users))
	return sasl, &pe
}
