package compose

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/iotpipe/iotpipe/internal/kafkaacl"
)

// secretVar is a variable that would hold a secret: a password, a secret
// key, a token or a DSN (it carries the password).
var secretVar = regexp.MustCompile(`(PASSWORD|SECRET|TOKEN|_DSN)`)

// TestComposeSecurity checks docker-compose.yml's security model as a
// whole (issue 15): no secret under environment: (a variable that would
// hold one is a *_FILE naming /run/secrets/<name> the service is given,
// declared top-level with a file); every iotpipe service that reaches
// Kafka does so over TLS with the stack's CA as a principal of its own
// (its stage's, iotpipe-<stage>, a Docker secret for the password) and
// init creates that principal; every DSN in a secret file is verify-full;
// every S3 endpoint is https.
func TestComposeSecurity(t *testing.T) {
	p := load(t)
	env := func(s types.ServiceConfig, k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	given := func(s types.ServiceConfig, name string) bool {
		return slices.ContainsFunc(s.Secrets, func(r types.ServiceSecretConfig) bool { return r.Source == name })
	}
	for _, s := range p.Services {
		for k, v := range s.Environment {
			if v == nil || *v == "" || !secretVar.MatchString(k) {
				continue
			}
			if !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s: %s is set under environment: (a secret belongs in a Docker secret, read through %s_FILE)", s.Name, k, k)
				continue
			}
			name, ok := strings.CutPrefix(*v, "/run/secrets/")
			if !ok {
				t.Errorf("%s: %s=%s is not a Docker secret (/run/secrets/<name>)", s.Name, k, *v)
				continue
			}
			if sc, declared := p.Secrets[name]; !declared || sc.File == "" || !given(s, name) {
				t.Errorf("%s: %s reads secret %s, which is not declared top-level with a file or not given to the service", s.Name, k, name)
			}
		}
	}
	for name, sc := range p.Secrets {
		b, err := os.ReadFile(sc.File)
		if err != nil {
			t.Errorf("secret %s: %v", name, err)
			continue
		}
		if v := string(b); strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://") {
			if !strings.Contains(v, "sslmode=verify-full") || !strings.Contains(v, "sslrootcert=") {
				t.Errorf("secret %s: the DSN is not sslmode=verify-full with an sslrootcert", name)
			}
		}
	}
	ini := p.Services["init"]
	stages := map[string]bool{}
	for _, st := range kafkaacl.Stages {
		stages[st] = true
	}
	var checked []string
	for _, s := range p.Services {
		if e := env(s, "IOTPIPE_S3_ENDPOINT"); e != "" && !strings.HasPrefix(e, "https://") {
			t.Errorf("%s: IOTPIPE_S3_ENDPOINT %s is not https", s.Name, e)
		}
		args := iotpipeArgs(s)
		if len(args) == 0 || env(s, "IOTPIPE_KAFKA_BROKERS") == "" && env(s, "IOTPIPE_KAFKA_SASL_USERNAME") == "" {
			continue
		}
		if env(s, "IOTPIPE_KAFKA_TLS") != "true" || env(s, "IOTPIPE_KAFKA_CA_FILE") != "/certs/ca.crt" || env(s, "IOTPIPE_KAFKA_SASL_MECHANISM") != "SCRAM-SHA-512" {
			t.Errorf("%s does not reach Kafka over SASL_SSL (SCRAM-SHA-512) with the stack's CA", s.Name)
		}
		checked = append(checked, s.Name)
		if args[0] == "init" {
			continue
		}
		stage := strings.Join(args, "-") // "sink lake" → sink-lake
		if !stages[stage] {
			t.Errorf("%s runs %q, which has no Kafka principal in internal/kafkaacl (Stages)", s.Name, strings.Join(args, " "))
			continue
		}
		secret := "kafka_" + strings.ReplaceAll(stage, "-", "_") + "_password"
		if env(s, "IOTPIPE_KAFKA_SASL_USERNAME") != "iotpipe-"+stage || env(s, "IOTPIPE_KAFKA_SASL_PASSWORD_FILE") != "/run/secrets/"+secret {
			t.Errorf("%s runs as Kafka principal %q, want its own, iotpipe-%s, with its password from the secret %s", s.Name, env(s, "IOTPIPE_KAFKA_SASL_USERNAME"), stage, secret)
		}
		v := "IOTPIPE_KAFKA_" + strings.ToUpper(strings.ReplaceAll(stage, "-", "_")) + "_PASSWORD_FILE"
		if env(ini, v) != "/run/secrets/"+secret || !given(ini, secret) {
			t.Errorf("init does not create %s's principal: %s is not /run/secrets/%s", s.Name, v, secret)
		}
	}
	slices.Sort(checked)
	if len(checked) < 5 {
		t.Errorf("only %v reach Kafka: the check missed the stages", checked)
	}
	t.Logf("Kafka clients checked: %v", checked)
}
