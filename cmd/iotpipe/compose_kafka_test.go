package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeKafkaIsSASLSSL checks that docker-compose.yml runs Kafka with
// a SASL_SSL listener only, its certificate from the certs volume, and
// every stage as a principal of its own over TLS; init creates them.
func TestComposeKafkaIsSASLSSL(t *testing.T) {
	root := filepath.Join("..", "..")
	opts, err := composecli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		composecli.WithWorkingDirectory(root), composecli.WithProfiles([]string{"*"}),
		composecli.WithEnv([]string{}), composecli.WithDiscardEnvFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	mounts := func(s types.ServiceConfig, source, target string) bool {
		for _, v := range s.Volumes {
			if (v.Source == source || strings.HasSuffix(v.Source, source)) && v.Target == target {
				return true
			}
		}
		return false
	}
	kafka := p.Services["kafka"]
	if !mounts(kafka, "certs", "/certs") {
		t.Error("kafka does not mount the certs volume at /certs")
	}
	if !mounts(kafka, filepath.Join("deploy", "kafka", "entrypoint.sh"), "/opt/iotpipe/entrypoint.sh") {
		t.Error("kafka does not run deploy/kafka/entrypoint.sh")
	}
	script, err := os.ReadFile(filepath.Join(root, "deploy", "kafka", "entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listeners=SASL_SSL://:9092,CONTROLLER://:9093", "listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL",
		"ssl.keystore.location=", "/certs/server/server.key", "StandardAuthorizer", "allow.everyone.if.no.acl.found=false", "--add-scram"} {
		if !strings.Contains(string(script), want) {
			t.Errorf("deploy/kafka/entrypoint.sh lacks %q", want)
		}
	}
	if strings.Contains(string(script), "PLAINTEXT://") || strings.Contains(string(script), ":PLAINTEXT") {
		t.Error("deploy/kafka/entrypoint.sh configures a PLAINTEXT listener")
	}
	env := func(s types.ServiceConfig, k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	users := map[string]string{}
	for _, name := range []string{"bridge", "processor", "sink-lake", "sink-timescale", "alert", "notify"} {
		s := p.Services[name]
		if env(s, "IOTPIPE_KAFKA_TLS") != "true" || env(s, "IOTPIPE_KAFKA_CA_FILE") != "/certs/ca.crt" || !mounts(s, "certs", "/certs") {
			t.Errorf("%s does not reach Kafka over TLS with the stack's CA (/certs/ca.crt on the certs volume)", name)
		}
		u := env(s, "IOTPIPE_KAFKA_SASL_USERNAME")
		secret := "kafka_" + strings.ReplaceAll(name, "-", "_") + "_password"
		if u != "iotpipe-"+name || env(s, "IOTPIPE_KAFKA_SASL_PASSWORD_FILE") != "/run/secrets/"+secret || !usesSecret(s, secret) {
			t.Errorf("%s runs as Kafka principal %q, want its own, iotpipe-%s, with its password from the Docker secret %s", name, u, name, secret)
		}
		if other, dup := users[u]; dup {
			t.Errorf("%s and %s share the Kafka principal %q", name, other, u)
		}
		users[u] = name
	}
	ini := p.Services["init"]
	if env(ini, "IOTPIPE_KAFKA_ACLS") != "true" || env(ini, "IOTPIPE_KAFKA_SASL_USERNAME") != "admin" {
		t.Error("init does not create the stages' principals and ACLs as the admin (IOTPIPE_KAFKA_ACLS, IOTPIPE_KAFKA_SASL_USERNAME)")
	}
	for _, name := range []string{"bridge", "processor", "sink-lake", "sink-timescale", "alert", "notify"} {
		v := "IOTPIPE_KAFKA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_PASSWORD_FILE"
		if env(ini, v) == "" || env(ini, v) != env(p.Services[name], "IOTPIPE_KAFKA_SASL_PASSWORD_FILE") {
			t.Errorf("init's %s is not the password file %s logs in with", v, name)
		}
	}
	if env(ini, "IOTPIPE_KAFKA_SASL_PASSWORD_FILE") != "/run/secrets/kafka_admin_password" || !usesSecret(ini, "kafka_admin_password") {
		t.Error("init does not read the Kafka admin's password from the Docker secret kafka_admin_password")
	}
	if k := p.Services["kafka"]; !usesSecret(k, "kafka_admin_password") || !usesSecret(k, "kafka_controller_password") {
		t.Error("kafka does not read its admin and controller passwords from Docker secrets")
	}
}

// usesSecret tells whether service s mounts the Docker secret name.
func usesSecret(s types.ServiceConfig, name string) bool {
	for _, sec := range s.Secrets {
		if sec.Source == name {
			return true
		}
	}
	return false
}
