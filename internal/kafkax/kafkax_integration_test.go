//go:build integration

package kafkax_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// ping connects with c and asks for the cluster's metadata.
func ping(t *testing.T, c kafkax.Config) error {
	t.Helper()
	cl, err := kgo.NewClient(c.Opts(kgo.RetryTimeout(5 * time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	_, err = kafkax.Ping(ctx, kadm.NewClient(cl))
	return err
}

// explained checks that err, explained, is a FieldError on field whose
// message holds want.
func explained(t *testing.T, c kafkax.Config, err error, field, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("connected; want a failure on %s", field)
	}
	var fe *config.FieldError
	if e := c.Explain(err); !errors.As(e, &fe) || fe.Field != field || !strings.Contains(fe.Error(), want) {
		t.Fatalf("explained %v as %v; want a FieldError on %s with %q", err, e, field, want)
	}
	if strings.Contains(c.Explain(err).Error(), c.SASL.Password) && c.SASL.Password != "" {
		t.Fatalf("the password is in the message: %v", c.Explain(err))
	}
}

func TestSASLSSL(t *testing.T) {
	env := testenv.Load(t)
	admin := env.KafkaConfig(t, testenv.Admin)
	if !admin.TLS.Enabled || !admin.SASL.Enabled() {
		t.Fatalf("the services' Kafka is not SASL_SSL (IOTPIPE_KAFKA_TLS=%v, principal %q): restart it with scripts/services.sh", admin.TLS.Enabled, admin.SASL.Username)
	}
	t.Run("admin over SCRAM-SHA-512", func(t *testing.T) {
		if err := ping(t, admin); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("admin over PLAIN", func(t *testing.T) {
		c := admin
		c.SASL.Mechanism = kafkax.MechanismPlain
		if err := ping(t, c); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c := admin
		c.SASL.Password = "not-" + c.SASL.Password
		explained(t, c, ping(t, c), "SASL.Password", `refused the credentials of principal "`+c.SASL.Username+`"`)
	})
	t.Run("unknown CA", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := certs.Init(dir, "another CA", time.Hour); err != nil {
			t.Fatal(err)
		}
		c := admin
		c.TLS.CAFile = filepath.Join(dir, "ca.crt")
		explained(t, c, ping(t, c), "TLS.CAFile", "not signed by a CA in")
	})
	t.Run("server name mismatch", func(t *testing.T) {
		c := admin
		c.TLS.ServerName = "kafka.example.com"
		explained(t, c, ping(t, c), "TLS.ServerName", "does not hold the expected name")
	})
	t.Run("plaintext client refused", func(t *testing.T) {
		c := admin
		c.TLS, c.SASL = kafkax.TLS{}, kafkax.SASL{Mechanism: kafkax.MechanismSCRAMSHA512}
		if err := ping(t, c); err == nil {
			t.Fatal("a PLAINTEXT client without credentials got the cluster's metadata")
		} else {
			t.Logf("plaintext client: %v", err)
		}
	})
	t.Run("TLS without credentials refused", func(t *testing.T) {
		c := admin
		c.SASL = kafkax.SASL{Mechanism: kafkax.MechanismSCRAMSHA512}
		if err := ping(t, c); err == nil {
			t.Fatal("a TLS client without credentials got the cluster's metadata")
		} else {
			t.Logf("TLS client without SASL: %v", err)
		}
	})
}
