package api

import (
	"testing"

	"github.com/iotpipe/iotpipe/internal/config"
)

func TestConfigValidateNamesFields(t *testing.T) {
	ok := DefaultConfig()
	ok.DSN, ok.Insecure = "postgres://x@localhost/x", true
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"TLSCertFile", func(c *Config) { c.Insecure = false }},
		{"Insecure", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "a", "b" }},
		{"DSN", func(c *Config) { c.DSN = "" }},
		{"Listen", func(c *Config) { c.Listen = "nope" }},
		{"Limits.MaxBytes", func(c *Config) { c.Limits.MaxBytes = 10 }},
		{"RateBurst", func(c *Config) { c.RateBurst = 0 }},
		{"DefaultPageSize", func(c *Config) { c.DefaultPageSize = c.MaxPageSize + 1 }},
		{"Relay.URLs", func(c *Config) { c.Relay.URLs = []string{"http://x:1"} }},
		{"Relay.CertFile", func(c *Config) { c.Relay.CertFile = "/nonexistent.crt"; c.Relay.KeyFile = "/nonexistent.key" }},
	}
	for _, tc := range cases {
		c := ok
		c.Relay.URLs = append([]string(nil), ok.Relay.URLs...)
		tc.mod(&c)
		found := false
		for _, fe := range config.Fields(c.Validate()) {
			found = found || fe.Field == tc.field
		}
		if !found {
			t.Errorf("%s: not reported by %v", tc.field, c.Validate())
		}
	}
	c := ok
	c.Relay.Disabled, c.Relay.URLs = true, nil
	if err := c.Validate(); err != nil {
		t.Errorf("a disabled relay needs no broker: %v", err)
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []string{"admin", "operator", "viewer"} {
		if _, err := ParseRole(r); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("role root accepted")
	}
	if !(RoleAdmin.rank() > RoleOperator.rank() && RoleOperator.rank() > RoleViewer.rank()) {
		t.Error("roles out of order")
	}
}
