package bridge

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
)

// TLS settings: each unusable file is reported on its own field, and TLS
// files without an mqtts:// URL are refused rather than ignored.
func TestConfigTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.Init(filepath.Join(dir, "ca"), "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := certs.NewKey()
	iss, _ := ca.IssueClient("iotpipe-bridge", &key.PublicKey, time.Hour)
	cp, kp, err := certs.WriteKeyPair(dir, "bridge", iss.PEM, key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := certs.NewKey()
	_, otherKey, _ := certs.WriteKeyPair(filepath.Join(dir, "o"), "other", iss.PEM, other)
	junk := filepath.Join(dir, "junk.pem")
	_ = os.WriteFile(junk, []byte("not pem"), 0o600)
	caFile := filepath.Join(dir, "ca", certs.CACertFile)

	good := validConfig()
	good.MQTT.URLs = []string{"mqtts://localhost:8883"}
	good.MQTT.CAFile, good.MQTT.CertFile, good.MQTT.KeyFile = caFile, cp, kp
	if err := good.Validate(); err != nil {
		t.Fatalf("valid TLS config: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"MQTT.CAFile", func(c *Config) { c.MQTT.CAFile = junk }},
		{"MQTT.CAFile", func(c *Config) { c.MQTT.CAFile = filepath.Join(dir, "missing.crt") }},
		{"MQTT.KeyFile", func(c *Config) { c.MQTT.KeyFile = "" }},
		{"MQTT.CertFile", func(c *Config) { c.MQTT.CertFile = "" }},
		{"MQTT.CertFile", func(c *Config) { c.MQTT.CertFile = junk }},
		{"MQTT.KeyFile", func(c *Config) { c.MQTT.KeyFile = otherKey }},
		{"MQTT.URLs", func(c *Config) { c.MQTT.URLs = []string{"mqtt://localhost:1883"} }},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		found := false
		for _, fe := range config.Fields(err) {
			found = found || fe.Field == tc.field
		}
		if !found {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

// Strict mode's settings are checked only when it is on.
func TestConfigRegistry(t *testing.T) {
	c := validConfig()
	c.Registry = RegistryConfig{DSN: "::bad", Refresh: 0}
	if err := c.Validate(); err != nil {
		t.Fatalf("strict mode off: %v", err)
	}
	c.Registry.Require = true
	want := map[string]bool{"Registry.DSN": false, "Registry.Schema": false, "Registry.Refresh": false}
	for _, fe := range config.Fields(c.Validate()) {
		if _, ok := want[fe.Field]; ok {
			want[fe.Field] = true
		}
	}
	for f, seen := range want {
		if !seen {
			t.Errorf("%s not reported", f)
		}
	}
}
