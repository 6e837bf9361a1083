// Package kafkax holds the Kafka connection settings shared by every stage
// and turns them into franz-go client options.
package kafkax

import (
	"context"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
)

// Config is how a stage reaches Kafka.
type Config struct {
	// Brokers are the seed brokers, host:port each.
	Brokers []string
	// ClientID names this process in broker logs and quotas.
	ClientID string
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
}

// HostInstanceID is the default static group member id of a stage: the
// host name (a pod name in Kubernetes, the container id in Compose), so a
// restarted process takes its partitions back at once (KIP-345). Two
// copies on one host need their own --instance-id.
func HostInstanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// ParseBrokers splits a comma-separated broker list, trimming blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// DefaultConfig is the default connection of a stage that names itself
// clientID to the brokers: localhost:9092, 5 s dial timeout.
func DefaultConfig(clientID string) Config {
	return Config{Brokers: []string{"localhost:9092"}, ClientID: clientID, DialTimeout: 5 * time.Second}
}

// Validate checks that every broker is a host:port pair and that the dial
// timeout is positive; each problem is a *config.FieldError.
func (c *Config) Validate() error {
	var p config.Problems
	if len(c.Brokers) == 0 {
		p.Add("Brokers", "no Kafka broker given")
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			p.Add("Brokers", "broker %q is not host:port", b)
		}
	}
	p.Check(c.DialTimeout <= 0, "DialTimeout", "must be positive")
	return p.Err()
}

// Opts returns the franz-go options for c, followed by extra.
func (c *Config) Opts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.DialTimeout > 0 { // zero only in configs that skipped Validate (tests)
		opts = append(opts, kgo.DialTimeout(c.DialTimeout))
	}
	return append(opts, extra...)
}

// Ping asks the cluster for its metadata and returns a clear error when no
// broker answers within the context's deadline.
func Ping(ctx context.Context, adm *kadm.Client) (kadm.BrokerDetails, error) {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	return md.Brokers, nil
}
