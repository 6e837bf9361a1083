package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
)

// TestDemoKafkaEnvEveryStage: every stage that has a Kafka principal
// (kafkaacl.Stages) runs in the demo as that principal, never as the
// admin the demo's own environment holds; init gets --kafka-acls.
func TestDemoKafkaEnvEveryStage(t *testing.T) {
	vars := map[string]string{"IOTPIPE_KAFKA_SASL_USERNAME": "admin", "IOTPIPE_KAFKA_SASL_PASSWORD": "admin-secret"}
	for _, st := range kafkaacl.Stages {
		v := "IOTPIPE_KAFKA_" + strings.ToUpper(strings.ReplaceAll(st, "-", "_"))
		vars[v+"_USERNAME"], vars[v+"_PASSWORD"] = "iotpipe-"+st, st+"-pw"
	}
	getenv := func(k string) string { return vars[k] }
	for _, st := range kafkaacl.Stages {
		name := strings.Replace(st, "sink-", "sink ", 1) // the demo's child names: "sink lake"
		got := demoKafkaEnv(name, getenv)
		for _, want := range []string{"IOTPIPE_KAFKA_SASL_USERNAME=iotpipe-" + st, "IOTPIPE_KAFKA_SASL_PASSWORD=" + st + "-pw", "IOTPIPE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"} {
			if !slices.Contains(got, want) {
				t.Errorf("demo child %q: %v lacks %s", name, got, want)
			}
		}
	}
	if got := demoKafkaEnv("init", getenv); !slices.Contains(got, "IOTPIPE_KAFKA_ACLS=true") {
		t.Errorf("init: %v, want IOTPIPE_KAFKA_ACLS=true", got)
	}
}
