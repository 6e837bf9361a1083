package shadowconsumer

import (
	"testing"

	"github.com/iotpipe/iotpipe/internal/config"
)

func TestConfigValidateNamesFields(t *testing.T) {
	ok := DefaultConfig()
	ok.DSN = "postgres://x@localhost/x"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for field, mod := range map[string]func(*Config){
		"Topic":         func(c *Config) { c.Topic = "" },
		"DSN":           func(c *Config) { c.DSN = "" },
		"BatchMax":      func(c *Config) { c.BatchMax = 0 },
		"RetryMax":      func(c *Config) { c.RetryMax = c.RetryMin / 2 },
		"Kafka.Brokers": func(c *Config) { c.Kafka.Brokers = []string{"nohostport"} },
	} {
		c := ok
		mod(&c)
		found := false
		for _, fe := range config.Fields(c.Validate()) {
			found = found || fe.Field == field
		}
		if !found {
			t.Errorf("%s: not reported by %v", field, c.Validate())
		}
	}
}
