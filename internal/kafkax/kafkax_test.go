package kafkax

import (
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
)

func TestValidateSecurity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"scram", func(c *Config) { c.SASL.Username, c.SASL.Password = "u", "p" }, ""},
		{"unknown mechanism", func(c *Config) { c.SASL.Mechanism = "SCRAM-SHA-1" }, "SASL.Mechanism"},
		{"password without user", func(c *Config) { c.SASL.Password = "p" }, "SASL.Username"},
		{"user without password", func(c *Config) { c.SASL.Username = "u" }, "SASL.Password"},
		{"plain without TLS", func(c *Config) { c.SASL = SASL{Mechanism: MechanismPlain, Username: "u", Password: "p"} }, "SASL.Mechanism"},
		{"CA file without TLS", func(c *Config) { c.TLS.CAFile = "/ca.crt" }, "TLS.Enabled"},
		{"missing CA file", func(c *Config) { c.TLS = TLS{Enabled: true, CAFile: "/does/not/exist.crt"} }, "TLS.CAFile"},
		{"cert without key", func(c *Config) { c.TLS = TLS{Enabled: true, CertFile: "/c.crt"} }, "TLS.KeyFile"},
		{"fetch tuned", func(c *Config) { c.Fetch = Fetch{MinBytes: 64 << 10, MaxWait: 50 * time.Millisecond} }, ""},
		{"fetch wait below 10ms", func(c *Config) { c.Fetch.MaxWait = 5 * time.Millisecond }, "Fetch.MaxWait"},
		{"fetch min bytes negative", func(c *Config) { c.Fetch.MinBytes = -1 }, "Fetch.MinBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig("x")
			tc.edit(&c)
			err := c.Validate()
			fields := config.Fields(err)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if len(fields) == 0 || fields[0].Field != tc.field {
				t.Fatalf("want a FieldError on %s, got %v", tc.field, err)
			}
		})
	}
}

func TestDescribeHidesPassword(t *testing.T) {
	c := DefaultConfig("x")
	c.SASL.Username, c.SASL.Password = "iotpipe-bridge", "s3cret-value"
	c.TLS.Enabled = true
	d := c.Describe()
	if strings.Contains(d, "s3cret") || !strings.Contains(d, "principal=iotpipe-bridge") || !strings.Contains(d, "tls=on") {
		t.Fatalf("Describe() = %q", d)
	}
}
